"""Training as a service of the app: /train, /job, /cancel, /resume, /adapters, /delete_adapter.

It also gives the tasks their adapter hooks: listing a task's adapters, and attaching one to a loaded model
after checking that it was trained for that task on those very weights.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from errors import UserError
from models import catalog, lora
from tasks.base import Context, Endpoint
from training import data, encoders, paths, presets, recipes
from training.adapters import engine_key, sanitize_name
from training.manager import JobManager

OWNER = "local"  # without login everything belongs to 'local' (DESIGN.md §2)
TRAINABLE = (*recipes.CONVERSATIONS, *encoders.TRAINERS)  # tasks whose training recipe exists


class TrainingService:
    id = "train"
    title = "Train"

    def __init__(self, ctx: Context, start_manager: bool = True):
        self.ctx = ctx
        self.settings = ctx.settings
        self.store = paths.job_store(ctx.settings)
        self.adapters = paths.adapter_store(ctx.settings)
        self.manager = JobManager(ctx.settings) if start_manager else None
        ctx.extras["attach_adapter"] = self.attach
        ctx.extras["list_adapters"] = self.adapter_names
        ctx.extras["adapter_base"] = self.adapter_base
        ctx.extras["adapted_model"] = self.adapted
        ctx.extras["training"] = self

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("job", self.job), Endpoint("cancel", self.cancel), Endpoint("resume", self.resume),
                Endpoint("adapters", self.list_adapters), Endpoint("delete_adapter", self.delete_adapter)]

    # ---- jobs --------------------------------------------------------------------------------------------
    def submit(self, task: str, data_path: str, base: str = "", name: str = "", preset: str = "quick",
               settings: dict | None = None, columns: dict | None = None, validation_path: str = "",
               owner: str = OWNER) -> dict:
        """Validate everything, copy the data into the job folder and queue the job: {job_id, position}."""
        task = (task or "chat").strip()
        if task not in TRAINABLE:
            raise UserError(f"Training for '{task}' is not available; choose one of: {', '.join(TRAINABLE)}.")
        if not data_path:
            raise UserError("Please upload a data file to train on.")
        name = sanitize_name(name or f"{task}-adapter")
        self._check_name_free(owner, name)
        train_settings = presets.build(preset, settings)
        source = self.base_source(base, task)
        report = data.load_examples(data_path, task, columns or None, self.settings.max_upload_mb)
        # A catalog model is stored by name (its offline source may move); anything else by its location.
        base_ref = source.name if catalog.find(source.name) else source.location
        job = self.store.create(owner, task, name, base_ref,
                                {"settings": train_settings.to_dict(), "preset": preset, "columns": columns or {}})
        folder = paths.job_folder(self.settings, job.id)
        spec = dict(job.spec, data=str(_copy_into(data_path, folder, "data")), rows=len(report.examples))
        if validation_path:
            data.load_examples(validation_path, task, columns or None, self.settings.max_upload_mb)
            spec["validation"] = str(_copy_into(validation_path, folder, "validation"))
        self.store.update(job.id, spec=spec)
        if self.manager:
            self.manager.wake()
        return {"job_id": job.id, "position": self.store.position(job.id)}

    def base_source(self, base: str, task: str) -> catalog.ModelSource:
        """The model a task trains on: a causal LM for the language tasks, an encoder for the others."""
        source = self.ctx.hub.source(base, recipes.model_task(task))
        # family is None for a folder or hub id: the worker finds out, with a readable reason
        if source.family not in (None, *recipes.base_families(task)):
            kind = "GPT-family" if catalog.DECODER in recipes.base_families(task) else "BERT-family"
            raise UserError(f"{source.name} cannot be trained for {task}: pick a {kind} model such as "
                            f"{catalog.TASK_DEFAULTS[recipes.model_task(task)]}.")
        return source

    def _check_name_free(self, owner: str, name: str) -> None:
        if self.adapters.exists(owner, name):
            raise UserError(f"An adapter named '{name}' already exists: choose another name or delete it first.")
        for job in self.store.list(owner, states=("queued", "running", "interrupted")):
            if job.name == name:
                raise UserError(f"A training job for an adapter named '{name}' is already waiting or running.")

    def _job(self, job_id: str, owner: str):
        job = self.store.get((job_id or "").strip())
        if job is None or job.owner != owner:
            raise UserError(f"There is no training job '{job_id}'.")
        return job

    def job(self, job_id: str) -> dict:
        """The job's state, progress, loss curve, metrics and report."""
        job = self._job(job_id, OWNER)
        status = job.public()
        status["position"] = self.store.position(job.id)
        return status

    def jobs(self, owner: str = OWNER) -> list[dict]:
        return [j.public() for j in reversed(self.store.list(owner))]

    def cancel(self, job_id: str) -> dict:
        """Cancel a waiting or running job; a running one stops at its next step and saves nothing."""
        job = self._job(job_id, OWNER)
        if job.state in ("succeeded", "failed", "cancelled"):
            raise UserError(f"The job '{job.id}' has already ended ({job.state}).")
        (self.manager.cancel if self.manager else self._cancel_offline)(job.id)
        return self.job(job.id)

    def _cancel_offline(self, job_id: str) -> None:
        if not self.store.transition(job_id, ("queued", "interrupted"), state="cancelled"):
            self.store.update(job_id, cancel=1)

    def resume(self, job_id: str) -> dict:
        """Queue an interrupted job again; it continues from its last checkpoint."""
        job = self._job(job_id, OWNER)
        if not self.store.transition(job.id, ("interrupted",), state="queued", error="", cancel=0):
            raise UserError(f"Only an interrupted job can be resumed; this one is {job.state}.")
        if self.manager:
            self.manager.wake()
        return self.job(job.id)

    def log_tail(self, job_id: str, lines: int = 12) -> str:
        path = paths.job_folder(self.settings, job_id) / "train.log"
        if not path.exists():
            return ""
        text = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if not line.startswith(("Traceback", "  "))]
        return "\n".join(text[-lines:])

    # ---- adapters ---------------------------------------------------------------------------------------
    def list_adapters(self, task: str = "") -> list[dict]:
        """Your adapters (optionally for one task), newest first."""
        return self.adapters.list(OWNER, (task or "").strip())

    def delete_adapter(self, name: str) -> list[dict]:
        """Delete an adapter; returns the remaining list."""
        self.adapters.delete(OWNER, name)
        return self.list_adapters()

    def adapter_names(self, task: str, model: str = "") -> list[str]:
        """Names of the adapters for task trained on model (the task's default model when empty)."""
        try:
            wanted = self.ctx.hub.source(model, task)
        except UserError:
            return []
        return [a["name"] for a in self.list_adapters(task) if a["base"] in (wanted.name, wanted.location)]

    def adapter_base(self, adapter: str) -> str:
        """The base model an adapter was trained on: the model to load when only the adapter is chosen."""
        meta = self.adapters.meta(OWNER, adapter)
        return meta["base_model"] if catalog.find(meta["base_model"]) else meta.get("base_location", "")

    def _meta_for(self, adapter: str, task: str) -> dict:
        meta = self.adapters.meta(OWNER, adapter)
        if meta["task"] != task:
            raise UserError(f"The adapter '{adapter}' was trained for {meta['task']}, not {task}.")
        return meta

    def adapted(self, kind: str, model: str, adapter: str, task: str):
        """The encoder model of kind (see models.loading.LOADERS) with adapter merged in, loaded once.

        model "" means the base the adapter was trained on; another model is refused unless its weights match.
        """
        meta = self._meta_for(adapter, task)
        files = lora.AdapterFiles(adapter, engine_key(OWNER, adapter, meta["created"]),
                                  str(self.adapters.folder(OWNER, adapter)), meta)
        return self.ctx.hub.get(kind, model or self.adapter_base(adapter), task, files)

    def attach(self, loaded, adapter: str, task: str) -> tuple[str, dict]:
        """Attach adapter to a loaded model (once) and return its engine key and training defaults."""
        meta = self._meta_for(adapter, task)
        if meta["base_fingerprint"] != loaded.fingerprint:
            raise UserError(f"The adapter '{adapter}' was trained on {meta['base_model']}, not on "
                            f"{loaded.name}: pick {meta['base_model']} as the model to use it.")
        key = engine_key(OWNER, adapter, meta["created"])
        lora.attach(loaded, key, str(self.adapters.folder(OWNER, adapter)))
        return key, {"system_prompt": meta.get("system_prompt", ""), "chat_template": meta.get("chat_template")}


def _copy_into(source: str, folder: Path, stem: str) -> Path:
    """Copy an uploaded file into the job folder (uploads are temporary), keeping its extension."""
    target = folder / (stem + Path(source).suffix.lower())
    tmp = target.with_suffix(target.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target

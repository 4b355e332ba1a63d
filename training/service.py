"""Training as a service of the app: /train, /job, /cancel, /resume, /adapters, /delete_adapter."""

from __future__ import annotations

import shutil
from pathlib import Path

from config import LOCAL_USER
from errors import UserError
from models import catalog
from models.adapters import sanitize_name
from tasks.base import Context, Endpoint, Upload
from tasks.spec import trainable_spec
from training import data, paths, presets, recipe
from training.manager import JobManager

OWNER = LOCAL_USER  # without login everything belongs to 'local' (DESIGN.md §2)


class TrainingService:
    def __init__(self, ctx: Context, start_manager: bool = True):
        self.ctx = ctx
        self.settings = ctx.settings
        self.store = paths.job_store(ctx.settings)
        self.adapters = ctx.adapters.store
        self.manager = JobManager(ctx.settings) if start_manager else None

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("train", self.train), Endpoint("job", self.job), Endpoint("cancel", self.cancel),
                Endpoint("resume", self.resume), Endpoint("adapters", self.list_adapters),
                Endpoint("delete_adapter", self.delete_adapter)]

    def train(self, task: str, data: Upload, base: str = "", name: str = "", preset: str = "quick",
              settings: dict | None = None, columns: dict | None = None, validation: Upload | None = None) -> dict:
        """Start a LoRA training job; returns {job_id, position} (poll /job with the id).

        validation: an optional file of held-out rows (same format) to score on instead of 10% of data."""
        return self.submit(task, data.path if data else "", base, name, preset, settings, columns,
                           validation.path if validation else "")

    # ---- jobs --------------------------------------------------------------------------------------------
    def submit(self, task: str, data_path: str, base: str = "", name: str = "", preset: str = "quick",
               settings: dict | None = None, columns: dict | None = None, validation_path: str = "",
               owner: str = OWNER) -> dict:
        """Validate everything, copy the data into the job folder and queue the job: {job_id, position}."""
        task = trainable_spec(task or "chat").id
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
        return recipe.base_source(self.settings, trainable_spec(task), base)

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

    def adapter_base(self, adapter: str) -> str:
        """The base model an adapter was trained on."""
        return self.ctx.adapters.base(OWNER, adapter)


def _copy_into(source: str, folder: Path, stem: str) -> Path:
    """Copy an uploaded file into the job folder (uploads are temporary), keeping its extension."""
    target = folder / (stem + Path(source).suffix.lower())
    tmp = target.with_suffix(target.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target

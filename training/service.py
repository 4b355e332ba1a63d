"""Training as a service of the app: /train, /job, /cancel, /resume, /adapters, /delete_adapter."""

from __future__ import annotations

import math
import shutil
import threading
from dataclasses import replace
from pathlib import Path

from config import LOCAL_USER
from errors import NotFound, OverLimit, UserError
from models import catalog
from models.adapters import sanitize_name
from tasks.base import Context, Endpoint, Upload
from tasks.spec import evaluated_spec, trainable_spec
from training import data, documents_data, evaluation, paths, presets, recipe, registry, trials
from training.manager import JobManager, placement
from training.plan import JobPlan
from training.store import JobState
from ui import zerogpu

OWNER = LOCAL_USER  # without login everything belongs to 'local' (DESIGN.md §2)


class TrainingService:
    def __init__(self, ctx: Context, start_manager: bool = True):
        self.ctx = ctx
        self.settings = ctx.settings
        self.store = paths.job_store(ctx.settings)
        self.adapters = ctx.adapters.store
        self.manager = JobManager(ctx.settings) if start_manager else None
        self._estimates = threading.BoundedSemaphore(ctx.settings.estimates)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("train", self.train), Endpoint("job", self.job), Endpoint("cancel", self.cancel),
                Endpoint("resume", self.resume), Endpoint("adapters", self.list_adapters),
                Endpoint("delete_adapter", self.delete_adapter), Endpoint("evaluate", self.evaluate),
                Endpoint("evaluation_csv", self.evaluation_csv)]

    def train(self, task: str, data: Upload | None = None, base: str = "", name: str = "", preset: str = "quick",
              settings: dict | None = None, columns: dict | None = None, validation: Upload | None = None, *,
              owner: str = OWNER) -> dict:
        """Start a LoRA training job; returns {job_id, position} (poll /job with the id).

        validation: an optional file of held-out rows (same format) to score on instead of 10% of data."""
        return self.submit(task, data.path if data else "", base, name, preset, settings, columns,
                           validation.path if validation else "", owner)

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
        self._check_room(owner)
        made = self._made_from(*documents_data.generated_job(data_path, settings), task, owner)
        settings, search_minutes = trials.requested(settings if isinstance(settings, dict) else None)
        if search_minutes and zerogpu.on_zero_gpu():  # a trial is a whole run, never resumed: it outlasts a call
            raise UserError(f"Finding settings needs longer GPU calls than ZeroGPU lends (at most {zerogpu.MAX_S} "
                            "seconds each): pick a preset instead.")
        settings = {k: v for k, v in settings.items() if k != "generated_from"} if settings else settings
        train_settings = presets.build(preset, settings)
        columns = _mapping(columns) or {}
        source = self.base_source(base, task)
        report = data.load_examples(data_path, task, columns or None, self.settings.max_upload_mb)
        train_settings = recipe.with_method(trainable_spec(task), train_settings, report.format,
                                            presets.explicit(settings if isinstance(settings, dict) else None))
        self._check_steps(train_settings, len(report.examples))
        if validation_path:
            held_out = data.load_examples(validation_path, task, columns or None, self.settings.max_upload_mb)
            if (held_out.format == "preference") != (report.format == "preference"):
                raise UserError("The validation file must hold the same kind of rows as the training file "
                                f"(it reads as {held_out.format} data, the training file as {report.format}).")
        # Everything is checked: the plan is what the worker runs, as it is.
        plan = JobPlan(columns=columns, rows=len(report.examples), settings=train_settings, preset=preset,
                       search_minutes=search_minutes, generated_from=made.plan.generated_from if made else "")
        # A catalog model is stored by name (its offline source may move); anything else by its location.
        base_ref = source.name if catalog.find(source.name) else source.location
        job = self.store.create(owner, task, name, base_ref, plan)
        folder = paths.job_folder(self.settings, job.id)
        validation = str(_copy_into(validation_path, folder, "validation")) if validation_path else ""
        plan = plan.placed(str(_copy_into(data_path, folder, "data")), validation)
        if made and made.plan.own_questions and task == "chat":
            plan = replace(plan, own_questions=str(_copy_into(made.plan.own_questions, folder, "own-questions")))
        self.store.update(job.id, plan=plan)
        if self.manager:
            self.manager.wake()
        return {"job_id": job.id, "position": self.store.position(job.id)}

    def _made_from(self, job_id: str, named: bool, task: str, owner: str):
        """The owner's make-data job whose rows a training file holds (None when it holds none such): its
        report then says where the rows came from. Only an id the user named is refused when it is none."""
        job = self.store.get(job_id) if job_id else None
        if job is None or job.owner != owner or job.kind != "make_data" or job.state != JobState.SUCCEEDED:
            if named:
                raise UserError(f"There are no generated training rows '{job_id[:40]}' of yours.")
            return None
        if job.task != task:
            raise UserError(f"These rows were made for {job.task}, not for {task}: train them as {job.task}.")
        return job

    # ---- evaluations -------------------------------------------------------------------------------------
    def evaluate(self, task: str, data: Upload | None = None, variants: list[dict] | None = None,
                 columns: dict | None = None, from_job: str = "", *, owner: str = OWNER) -> dict:
        """Score the base and adapters of a task on a set of rows with the task's own metric; returns {job_id}
        (poll /job: its report holds the scores and the rows side by side).

        data: a file in the task's training format; or from_job: a training job of yours, whose held-out rows
        are scored. variants: up to four {model, adapter}; columns maps the task's fields to the file's."""
        return self.submit_evaluation(task, data.path if data else "", variants, columns, from_job, owner)

    def submit_evaluation(self, task: str, data_path: str, variants: object, columns: object = None,
                          from_job: str = "", owner: str = OWNER) -> dict:
        spec = evaluated_spec(task if isinstance(task, str) else "")
        chosen = evaluation.parse_variants(variants, takes_model=spec.id != "search")
        for variant in chosen:
            self._check_variant(spec, variant, owner)
        self._check_room(owner)
        columns = _mapping(columns) or {}
        if data_path:
            plan = JobPlan(data=data_path, columns=columns)
        elif isinstance(from_job, str) and from_job.strip():
            plan = self._held_out_plan(from_job, spec.id, owner)
        else:
            raise UserError("Please upload a file of rows to evaluate on, or pick a training job whose held-out "
                            "rows to use.")
        rows = evaluation.rows(self.settings, spec.id, plan)
        if not rows:
            raise UserError("There are no rows to evaluate on.")
        if len(rows) > self.settings.max_eval_rows:
            raise OverLimit(f"The set has {len(rows):,} rows; this server evaluates at most "
                            f"{self.settings.max_eval_rows:,} at once. Use a sample of them.")
        registry.scorer_class(spec.id).check(rows)
        plan = replace(plan, rows=len(rows), variants=tuple(chosen))
        job = self.store.create(owner, spec.id, "evaluation", "", plan, kind="evaluate")
        folder = paths.job_folder(self.settings, job.id)
        self.store.update(job.id, plan=plan.placed(str(_copy_into(plan.data, folder, "data"))))
        if self.manager:
            self.manager.wake()
        return {"job_id": job.id, "position": self.store.position(job.id)}

    def _check_variant(self, spec, variant: evaluation.Variant, owner: str) -> None:
        """An adapter must be one of the owner's for this task, a model one the hub can name (neither loads)."""
        if variant.adapter:
            self.ctx.adapters.meta(owner, variant.adapter, spec.id)
        if variant.model:
            self.ctx.hub.source(self.ctx.adapters.reference(owner, variant.model), catalog.DEFAULTS[spec.families[0]])

    def _held_out_plan(self, job_id: str, task: str, owner: str) -> JobPlan:
        """The rows a training job held out: its validation file, or the part of its data it set aside."""
        job = self._job(job_id, owner)
        if job.kind != "train" or job.task != task:
            raise UserError(f"The job '{job.id}' is not a {task} training job.")
        trained = job.plan
        if trained.validation:
            return JobPlan(data=trained.validation, columns=trained.columns)
        plan = JobPlan(data=trained.data, columns=trained.columns, held_out_seed=trained.settings.seed,
                       from_job=job.id, generated_from=trained.generated_from)
        if not evaluation.rows(self.settings, task, plan):
            raise UserError(f"The job '{job.id}' held out no rows (it trained on fewer than 50); upload a set of "
                            "rows to evaluate on instead.")
        return plan

    def evaluation_csv(self, job_id: str, *, owner: str = OWNER) -> Upload:
        """A finished evaluation's rows as a CSV file: the input, the reference, and each variant's answer and
        score."""
        job = self._job(job_id, owner)
        path = paths.job_folder(self.settings, job.id) / "results.csv"
        if job.kind != "evaluate" or not path.is_file():
            raise UserError(f"The job '{job.id}' has no evaluation results (yet).")
        return Upload(str(path), f"evaluation-{job.id}.csv")

    def evaluations(self, owner: str = OWNER) -> list[dict]:
        """The owner's evaluations, newest first."""
        return [j.public() for j in reversed(self.store.list(owner, kind="evaluate"))]

    def estimate(self, task: str, data_path: str, base: str, preset: str, settings: dict | None,
                 columns: dict | None) -> dict:
        """The pre-flight estimate (parameters, memory, duration from steps timed here), one at a time per
        server setting: each loads the model in a subprocess."""
        from training import estimate as preflight

        if not self._estimates.acquire(blocking=False):
            raise UserError("Other estimates are running on this server right now; try again in a minute.")
        try:
            train_settings = presets.build(preset, trials.requested(settings)[0])
            rows = 24
            if data_path:
                report = data.load_examples(data_path, task, columns, self.settings.max_upload_mb)
                train_settings = recipe.with_method(trainable_spec(task), train_settings, report.format,
                                                    presets.explicit(settings))
                rows = len(report.examples)
            result = preflight.estimate(self.base_source(base, task).location, train_settings, rows, task)
            return {**result, "placement": placement(self.settings)}
        finally:
            self._estimates.release()

    def base_source(self, base: str, task: str) -> catalog.ModelSource:
        """The model a task trains on: a causal LM for the language tasks, an encoder for the others."""
        return recipe.base_source(self.settings, trainable_spec(task), base)

    def _check_name_free(self, owner: str, name: str) -> None:
        if self.adapters.exists(owner, name):
            raise UserError(f"An adapter named '{name}' already exists: choose another name or delete it first.")
        for job in self.store.list(owner, states=(*JobState.active(), JobState.INTERRUPTED)):
            if job.name == name:
                raise UserError(f"A training job for an adapter named '{name}' is already waiting or running.")

    def _check_room(self, owner: str) -> None:
        waiting = self.store.list(owner, states=JobState.active())
        if len(waiting) >= self.settings.jobs_per_user:
            raise OverLimit(f"You already have {len(waiting)} jobs waiting or running (the limit is "
                            f"{self.settings.jobs_per_user}); wait for one to finish or cancel one.")

    def _check_steps(self, settings: presets.TrainSettings, rows: int) -> None:
        per_epoch = math.ceil(rows / settings.batch_size) / settings.grad_accum
        steps = settings.max_steps or math.ceil(settings.epochs * per_epoch)
        if steps > self.settings.max_train_steps:
            raise UserError(f"This run would take {steps:,} training steps; this server allows at most "
                            f"{self.settings.max_train_steps:,}. Lower the epochs or set max steps.")

    def _job(self, job_id: str, owner: str):
        job = self.store.get(job_id.strip()) if isinstance(job_id, str) and job_id.strip() else None
        if job is None or (job.owner != owner and not self.ctx.accounts.is_admin(owner)):
            raise NotFound(f"There is no training job '{str(job_id)[:40]}'.")  # another's answers as unknown
        return job

    def job(self, job_id: str, *, owner: str = OWNER) -> dict:
        """The job's state, progress, loss curve, metrics and report."""
        job = self._job(job_id, owner)
        status = job.public()
        status["position"] = self.store.position(job.id)
        return status

    def jobs(self, owner: str = OWNER, kind: str = "train") -> list[dict]:
        """The owner's jobs of a kind, newest first (every user's for an admin)."""
        everyone = self.ctx.accounts.is_admin(owner)
        return [j.public() for j in reversed(self.store.list(None if everyone else owner, kind=kind))]

    def cancel(self, job_id: str, *, owner: str = OWNER) -> dict:
        """Cancel a waiting or running job; a running one stops at its next step and saves nothing."""
        job = self._job(job_id, owner)
        if job.state in JobState.ended():
            raise UserError(f"The job '{job.id}' has already ended ({job.state}).")
        (self.manager.cancel if self.manager else self._cancel_offline)(job.id)
        return self.job(job.id, owner=owner)

    def _cancel_offline(self, job_id: str) -> None:
        if not self.store.transition(job_id, (JobState.QUEUED, JobState.INTERRUPTED), state=JobState.CANCELLED):
            self.store.update(job_id, cancel=1)

    def resume(self, job_id: str, *, owner: str = OWNER) -> dict:
        """Queue an interrupted job again; it continues from its last checkpoint."""
        job = self._job(job_id, owner)
        if job.state == JobState.INTERRUPTED:
            self._check_room(job.owner)
        if not self.store.transition(job.id, (JobState.INTERRUPTED,), state=JobState.QUEUED, error="", cancel=0):
            raise UserError(f"Only an interrupted job can be resumed; this one is {job.state}.")
        if self.manager:
            self.manager.wake()
        return self.job(job.id, owner=owner)

    def log_tail(self, job_id: str, lines: int = 12) -> str:
        path = paths.job_folder(self.settings, job_id) / "train.log"
        if not path.exists():
            return ""
        text = [line for line in path.read_text(encoding="utf-8", errors="replace").splitlines()
                if not line.startswith(("Traceback", "  "))]
        return "\n".join(text[-lines:])

    # ---- adapters ---------------------------------------------------------------------------------------
    def list_adapters(self, task: str = "", *, owner: str = OWNER) -> list[dict]:
        """Your adapters and those shared with everyone (every adapter for an admin), optionally for one task,
        newest first."""
        task = task.strip() if isinstance(task, str) else ""
        return self.adapters.list(owner, task, everyone=self.ctx.accounts.is_admin(owner))

    def delete_adapter(self, name: str, *, owner: str = OWNER) -> list[dict]:
        """Delete one of your adapters; returns the remaining list."""
        self.adapters.delete(owner, name if isinstance(name, str) else "")
        return self.list_adapters(owner=owner)

    def adapter_base(self, adapter: str, owner: str = OWNER) -> str:
        """The base model an adapter was trained on."""
        return self.ctx.adapters.base(owner, adapter)


def _mapping(columns: object) -> dict | None:
    """/train's columns as {field: column} (a UserError for anything else)."""
    if columns in (None, "", {}):
        return None
    if not isinstance(columns, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in columns.items()):
        raise UserError("Columns must map task fields to file columns, like {\"text\": \"review\"}.")
    return columns


def _copy_into(source: str, folder: Path, stem: str) -> Path:
    """Copy an uploaded file into the job folder (uploads are temporary), keeping its extension."""
    target = folder / (stem + Path(source).suffix.lower())
    tmp = target.with_suffix(target.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    return target

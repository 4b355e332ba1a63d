"""The worker process: runs one training job outside the web server, so a crash or OOM fails only that job.

`python training/worker.py --settings FILE JOB_ID` (FILE: the server's settings as JSON, readable only by its
user). SIGTERM writes a checkpoint and marks the job interrupted (resumable); cancel (a flag in the job store)
stops it cleanly; any error fails the job with a readable reason.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import traceback
import warnings
from dataclasses import replace
from functools import partial
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # started as a script by the server
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import tasks  # noqa: E402,F401  (registers the tasks)
from config import Settings  # noqa: E402
from errors import UserError  # noqa: E402
from models import catalog, speculation  # noqa: E402
from models.adapter_meta import AdapterMeta  # noqa: E402
from models.device import set_threads  # noqa: E402
from models.loading import pretrained_options  # noqa: E402
from tasks.spec import trainable_spec  # noqa: E402
from training import answer_check, data, documents_data, evaluation, paths, recipe, registry, trials  # noqa: E402
from training.plan import JobProgress  # noqa: E402
from training.store import JobState  # noqa: E402
from training.manager import start_time  # noqa: E402
from training.trainer import Checkpoint, Hooks, Ranks, Stopped  # noqa: E402
from ui import zerogpu  # noqa: E402

_signals = {"term": False}
# peft 0.21 calls a transformers method that 5.24 deprecates; the warning means nothing to the user.
warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)


class JobLog:
    """Appends timestamped lines to the job's log file (the UI tails it)."""

    def __init__(self, path: Path, echo: bool = False):
        self.path, self.echo = path, echo

    def __call__(self, line: str) -> None:
        stamped = f"{time.strftime('%H:%M:%S')} {line}"
        with self.path.open("a", encoding="utf-8") as f:
            f.write(stamped + "\n")
        if self.echo:
            print(stamped, file=sys.stderr)


def run_job(settings: Settings, job_id: str, echo: bool = False, progress=None,
            ranks: Ranks | None = None, deadline: float | None = None) -> JobState:
    """Run job_id to its end; returns the final state. Every outcome is written to the job store (by rank 0 of
    a run on several processes; the others train their share and write nothing). deadline (time.monotonic()): a
    training job stops stepping then, saves a checkpoint and goes back in the queue as QUEUED (a ZeroGPU call's
    lease ends; the next call resumes it)."""
    ranks = ranks or Ranks()
    store, folder = paths.job_store(settings), paths.job_folder(settings, job_id)
    job = store.get(job_id)
    if not ranks.main:
        return _follow(settings, job, folder, ranks)
    log = JobLog(folder / "train.log", echo)
    store.update(job_id, state=JobState.RUNNING, pid=os.getpid(), started=start_time(os.getpid()), error="")
    last_write = {"t": 0.0, "cancel_checked": 0.0, "stage": "", "last_step": False}

    def report_progress(p: JobProgress) -> None:
        if progress:
            progress(p)
        last_write["stage"], last_write["last_step"] = p.stage, p.step >= p.total_steps
        now = time.monotonic()
        train, held_out = p.last_loss
        if now - last_write["t"] > 0.5 or p.step == p.total_steps or held_out is not None:
            store.update(job_id, progress=p)
            last_write["t"] = now
            log(f"{p.stage + ': ' if p.stage else ''}step {p.step}/{p.total_steps} epoch {p.epoch} loss {train}")

    parent = os.getppid()

    def stop_reason() -> JobState | None:
        # SIGTERM, or the app that started us is gone (killed): save a checkpoint and stop, resumable.
        if _signals["term"] or (parent != 1 and os.getppid() != parent):
            return JobState.INTERRUPTED
        now = time.monotonic()
        if now - last_write["cancel_checked"] > 0.5:
            last_write["cancel_checked"] = now
            if store.get(job_id).cancel:
                return JobState.CANCELLED
        # A settings trial is never resumed, so only the training itself stops at the lease's end; after its last
        # step the report is written in the room the lease keeps for it.
        if (deadline is not None and not last_write["stage"] and not last_write["last_step"]
                and time.monotonic() > deadline):
            return JobState.QUEUED
        return None

    if job.kind == "evaluate":
        return _finish_evaluation(settings, job, store, log, stop_reason)
    if job.kind == "make_data":
        from training import make_data

        return make_data.run(settings, job, store, log, stop_reason)
    checkpoint = Checkpoint(folder / "checkpoint")
    if ranks.count > 1:
        log(f"training on {ranks.count} processes ({ranks.state.backend} on {ranks.state.device.type}), "
            "each on its share of every batch")
    try:
        hooks = Hooks(report_progress, stop_reason, log, ranks, answer_check.sentence_embedder(settings, log))
        outcome, source, meta = _train(settings, job, log, hooks, checkpoint,
                                       lambda plan: store.update(job_id, plan=plan))
        final = paths.adapter_store(settings).save(job.owner, job.name, partial(_write_adapter, outcome), meta)
        if final != job.name:
            log(f"an adapter named '{job.name}' already existed, so this one is saved as '{final}'")
        store.update(job_id, state=JobState.SUCCEEDED, adapter=final, metrics=outcome.metrics,
                     report=outcome.report.to_json())
        checkpoint.remove()
        log(f"saved adapter '{final}': {outcome.report.summary}")
        return JobState.SUCCEEDED
    except Stopped as stop:
        if stop.reason == JobState.CANCELLED:
            checkpoint.remove()
        store.update(job_id, state=stop.reason, progress=stop.progress)
        log(f"the GPU call's time is up at step {stop.progress.step}; the next call continues from its checkpoint"
            if stop.reason == JobState.QUEUED else f"{stop.reason} at step {stop.progress.step}")
        return stop.reason
    except BaseException as error:  # the job fails with a reason; the server is never affected
        reason = readable(error)
        log(reason)
        log(traceback.format_exc())
        store.update(job_id, state=JobState.FAILED, error=reason)
        return JobState.FAILED


def _write_adapter(outcome: recipe.Outcome, folder: Path) -> None:
    """The adapter's weights, and the answers it learned (drafts for chats that use it)."""
    outcome.model.save_pretrained(folder)
    speculation.save_answers(folder, outcome.answers)


def _follow(settings: Settings, job, folder: Path, ranks: Ranks) -> JobState:
    """A process other than rank 0: trains its share of every batch and stops when rank 0 says so."""
    try:
        _train(settings, job, lambda line: None, Hooks(log=lambda line: None, ranks=ranks),
               Checkpoint(folder / "checkpoint"))
    except Stopped as stop:
        return stop.reason
    return JobState.SUCCEEDED


def _train(settings: Settings, job, log, hooks: Hooks, checkpoint: Checkpoint, keep_plan=lambda plan: None):
    plan = job.plan  # checked when the job was submitted: its settings already have the data's method
    report = data.load_examples(plan.data, job.task, plan.columns or None, settings.max_upload_mb)
    spec = trainable_spec(job.task)
    log(report.summary())
    if plan.validation:
        train_rows = report.examples
        val_rows = data.load_examples(plan.validation, job.task, plan.columns or None,
                                      settings.max_upload_mb).examples
    elif plan.generated_from:  # rows made from documents: a few are always held out to score the adapter on
        train_rows, val_rows = documents_data.hold_out(report.examples, plan.settings.seed)
    else:
        train_rows, val_rows = data.split_validation(report.examples, plan.settings.seed)
    log(f"training on {len(train_rows)} rows, checking on {len(val_rows) or 'the training'} rows")
    source = recipe.base_source(settings, spec, job.base)

    def run(train_settings, run_hooks: Hooks, run_checkpoint: Checkpoint, own=None):
        return recipe.train(registry.recipe_class(spec.id, train_settings.method)(train_settings), source,
                            pretrained_options(settings, source), train_rows, val_rows, run_checkpoint, run_hooks,
                            own)

    if plan.search_minutes and not plan.trials:  # a resumed job found its settings before it stopped
        language = catalog.DECODER in registry.recipe_class(spec.id, plan.settings.method).families
        plan = trials.search(plan, language, len(train_rows), run, hooks, checkpoint.folder.with_name("trials"))
        keep_plan(plan)
    train_settings = plan.settings
    started = time.time()
    own = documents_data.own_examples(plan.own_questions) if plan.generated_from else None
    outcome = run(train_settings, hooks, checkpoint, own)
    if outcome is None:  # not rank 0: nothing to save
        return None, source, {}
    if plan.trials:
        outcome.report = trials.reported(outcome.report, plan.trials)
    if plan.generated_from:
        outcome.report = documents_data.reported(outcome.report, plan.generated_from)
    meta = AdapterMeta(
        task=job.task, base_model=source.name, base_location=source.location,
        system_prompt=train_settings.system_prompt, **outcome.meta,
        data_fingerprint=data.examples_digest(report.examples),
        rows={"read": report.rows_read, "kept": len(report.examples), "train": len(train_rows),
              "validation": len(val_rows)},
        settings=train_settings.to_dict(), metrics=outcome.metrics, report=outcome.report.to_json(),
        duration_s=round(time.time() - started, 1), job_id=job.id, owner=job.owner)
    return outcome, source, meta


def _finish_evaluation(settings: Settings, job, store, log, stop_reason) -> JobState:
    """Run an evaluation job to its end; returns the final state. Every outcome is written to the job store."""
    try:
        result = _evaluate(settings, job, store, log, stop_reason)
        folder = paths.job_folder(settings, job.id)
        tmp = folder / "results.csv.tmp"
        tmp.write_text(evaluation.as_csv(result), encoding="utf-8")
        tmp.replace(folder / "results.csv")
        store.update(job.id, state=JobState.SUCCEEDED, report=evaluation.shortened(result),
                     metrics={v["label"]: v["metrics"] for v in result["variants"]})
        log(result["summary"])
        return JobState.SUCCEEDED
    except Stopped as stop:
        store.update(job.id, state=stop.reason, progress=replace(store.get(job.id).progress, step=stop.progress.step,
                                                                  total_steps=stop.progress.total_steps))
        log(f"{stop.reason} after {stop.progress.step} of {stop.progress.total_steps} answers")
        return stop.reason
    except BaseException as error:  # the job fails with a reason; the server is never affected
        reason = readable(error, "Evaluation")
        log(reason)
        log(traceback.format_exc())
        store.update(job.id, state=JobState.FAILED, error=reason)
        return JobState.FAILED


def _evaluate(settings: Settings, job, store, log, stop_reason) -> dict:
    """Load the task as the server does (the same models, adapters and defaults) and score every variant."""
    from models.loading import ModelHub
    from tasks import TASKS
    from tasks.base import Context

    examples = evaluation.rows(settings, job.task, job.plan)
    task = TASKS[job.task](Context(settings, ModelHub(settings)))
    scorer = registry.scorer_class(job.task)(task, job.owner)
    variants = list(job.plan.variants)
    log(f"evaluating {len(variants)} variants on {len(examples)} rows")
    started, last = time.monotonic(), {"t": 0.0}

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last["t"] > 0.5 or done == total:
            last["t"] = now
            store.update(job.id, progress=JobProgress(done, total, eta_s=evaluation.eta(started, done, total)))
    return evaluation.run(scorer, examples, variants, task.default(), progress, stop_reason)


def gpu_call(settings: Settings, job_id: str, lease_s: float) -> JobState:
    """One ZeroGPU call of a job (training.manager.GpuCall), in the process ZeroGPU forks for it: a training job
    trains until its lease nearly ends, then saves a checkpoint and queues itself for the next call."""
    deadline = time.monotonic() + zerogpu.training_room(lease_s)
    set_threads(settings.threads or os.cpu_count() or 1)
    resumable = paths.job_store(settings).get(job_id).kind == "train"  # the others run whole, within MAX_S
    return run_job(settings, job_id, deadline=deadline if resumable else None)


def readable(error: BaseException, what: str = "Training") -> str:
    """One sentence a user can act on."""
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, (MemoryError, torch.OutOfMemoryError)):
        if what != "Training":
            return f"The machine ran out of memory during this {what.lower()}: pick a smaller model."
        return ("The machine ran out of memory while training: lower the batch size or the max sequence "
                "length, or pick a smaller model.")
    if isinstance(error, KeyboardInterrupt):
        return f"{what} was interrupted."
    return f"{what} failed: {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--settings", required=True, help="a file with the server's settings as JSON")
    parser.add_argument("job_id")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: _signals.__setitem__("term", True))
    settings = Settings(**json.loads(Path(args.settings).read_text(encoding="utf-8")))
    ranks = Ranks()
    set_threads(max(1, (settings.threads or os.cpu_count() or 1) // ranks.count))  # the cores, shared out
    state = run_job(settings, args.job_id, ranks=ranks)
    # A process other than rank 0 that stopped as asked ends well: the launcher then leaves rank 0 to finish.
    return 0 if state == JobState.SUCCEEDED or (not ranks.main and state != JobState.FAILED) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""/make_training_data: training rows written from a collection or uploaded files, as a job like training.

The server reads the passages (the owner's collection, or the uploads cut into chunks as a collection would be)
into the job's folder and queues the job; the worker process asks the writer model about each passage through
the generation engine, keeps the supported pairs (training/documents_data.py) and writes the rows to a file by
rename, so a cancelled job leaves none. The rows come back in /job's `report.rows` and as that file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from errors import NotFound, UserError
from models import catalog
from tasks.base import Context, Endpoint, Upload
from tasks.collections import CollectionStore
from tasks.documents import document_name, read_document
from training import answer_check, documents_data, paths
from training.documents_data import COLUMNS, MakeSettings, Passage
from training.plan import JobPlan, JobProgress
from training.service import OWNER, TrainingService
from training.store import JobState
from training.trainer import Stopped

IN_FLIGHT = 4  # writer requests in the engine at once: they batch, and leave room for chat users
SHOWN_ROWS = 2000  # rows /job's report carries; the file has them all
DROPPED_WORDS = {"unparsed": "replies without a question and answer",
                 "unsupported": "answers the passage does not support",
                 "not_in_passage": "answers not found word for word in the passage", "duplicate": "repeated questions"}


class DataMaker:
    """Makes training rows from documents as jobs of kind 'make_data' in the training queue."""

    def __init__(self, ctx: Context, training: TrainingService, collections: CollectionStore):
        self.ctx, self.training, self.collections = ctx, training, collections

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("make_training_data", self.make_training_data),
                Endpoint("training_rows_file", self.rows_file)]

    def make_training_data(self, task: str = "chat", collection: str = "", files: list[Upload] | None = None,
                           model: str = "", settings: dict | None = None, *, owner: str = OWNER) -> dict:
        """Write training rows for task (chat, search or answer) from one of your collections or uploaded files;
        returns {job_id, position} (poll /job: its report holds the rows, what was dropped and why).

        model: the chat model that writes the questions ("" = the default). settings: questions_per_passage,
        inverse_cloze, write_questions, max_passages, max_new_tokens, seed, and own_questions (chat: a few
        {question, answer} of your own, or "question | answer" lines, that an adapter trained on the rows is also
        scored on)."""
        task = task.strip() if isinstance(task, str) and task.strip() else "chat"
        if task not in documents_data.TASKS:
            raise UserError(f"Training data can be made for {', '.join(documents_data.TASKS)}, not for '{task[:40]}'.")
        settings = settings if isinstance(settings, dict) else {}
        making = MakeSettings.from_json(settings)
        own = documents_data.own_questions(settings.get("own_questions"))
        if own and task != "chat":
            raise UserError("Your own questions score chat adapters; leave them out for the other tasks.")
        passages, label = self.passages(collection, files, owner)
        if documents_data.uses_writer(task, making):
            self._check_writer(model, owner)
        self.training._check_room(owner)
        plan = JobPlan(rows=min(len(passages), making.max_passages), generated_from=label, making=making.to_json())
        store = self.training.store
        job = store.create(owner, task, "training data", model.strip() if isinstance(model, str) else "", plan,
                           kind="make_data")
        folder = paths.job_folder(self.ctx.settings, job.id)
        data = documents_data.write_jsonl(folder / "passages.jsonl", [{"text": p.text, "source": p.source}
                                                                       for p in passages[:making.max_passages]])
        mine = str(documents_data.write_jsonl(folder / "own-questions.jsonl", own)) if own else ""
        store.update(job.id, plan=replace(plan, data=str(data), own_questions=mine))
        if self.training.manager:
            self.training.manager.wake()
        return {"job_id": job.id, "position": store.position(job.id)}

    def passages(self, collection: object, files: list[Upload] | None, owner: str) -> tuple[list[Passage], str]:
        """The passages to write from and what they are, in words: a collection's chunks, or the uploads'."""
        if isinstance(collection, str) and collection.strip() and files:
            raise UserError("Make training data from a collection or from files, not both.")
        if isinstance(collection, str) and collection.strip():
            manifest = self.collections.open(owner, collection.strip()).manifest()  # another's: as unknown
            found = [Passage(c["text"], c["source"]) for c in manifest["chunks"]]
            label = f"the collection '{collection.strip()}'"
        elif files:
            found = []
            for upload in files:
                document = read_document(upload.path, upload.name, self.ctx.settings.max_upload_mb)
                found += [Passage(chunk.text, document.name) for chunk in document.chunks()]
            names = [document_name(u.name) for u in files]
            label = f"the file{'s' * (len(names) > 1)} {', '.join(repr(n) for n in names[:3])}" + (
                f" and {len(names) - 3} more" if len(names) > 3 else "")
        else:
            raise UserError("Choose a collection or upload files to make training data from.")
        if not found:
            raise UserError("There is no text to make training data from.")
        return found, label

    def _check_writer(self, model: object, owner: str) -> None:
        """The writer must be a model the hub can name (it loads in the worker, not here)."""
        model = model.strip() if isinstance(model, str) else ""
        if model:
            self.ctx.hub.source(self.ctx.adapters.reference(owner, model), catalog.DEFAULTS[catalog.DECODER])

    def rows_file(self, job_id: str, *, owner: str = OWNER) -> Upload:
        """A finished make-data job's rows as a JSONL file with the task's columns."""
        job = self.training._job(job_id, owner)
        path = rows_path(self.ctx.settings, job.id)
        if job.kind != "make_data" or not path.is_file():
            raise UserError(f"The job '{job.id}' has no training rows (yet).")
        return Upload(str(path), path.name)

    def made_from(self, job_id: str, owner: str):
        """The owner's finished make-data job of that id, or a UserError."""
        try:
            job = self.training._job(job_id, owner)
        except NotFound:
            raise UserError(f"There are no generated rows '{str(job_id)[:40]}'.") from None
        if job.kind != "make_data" or job.state != JobState.SUCCEEDED:
            raise UserError(f"The job '{job.id}' did not make training rows.")
        return job


def rows_path(settings, job_id: str) -> Path:
    return paths.job_folder(settings, job_id) / f"generated-{job_id}.jsonl"


# ---- in the worker process ----------------------------------------------------------------------------------------
def run(settings, job, store, log, stop_reason) -> JobState:
    """Run a make-data job to its end; returns the final state. Every outcome is written to the job store."""
    from training.worker import readable

    target = rows_path(settings, job.id)
    try:
        making = MakeSettings.from_json(job.plan.making)
        passages = documents_data.read_passages(Path(job.plan.data))[:making.max_passages]
        log(f"making {job.task} rows from {len(passages)} passages of {job.plan.generated_from}")
        store.update(job.id, progress=JobProgress(0, len(passages)))
        writer = _writer(settings, job, making, store, stop_reason) if documents_data.uses_writer(
            job.task, making) else None
        made = documents_data.make_rows(job.task, passages, making, writer,
                                        answer_check.sentence_embedder(settings, log))
        if reason := stop_reason():
            raise Stopped(reason, JobProgress(len(passages), len(passages)))
        if not made.rows:
            raise UserError(f"No usable rows were made from {len(passages)} passages: "
                            f"{dropped_words(made.dropped) or 'the writer answered nothing'}. Try another writer "
                            "model.")
        documents_data.write_rows(made.rows, target, COLUMNS[job.task])
        report = made_report(job, made, target.name)
        store.update(job.id, state=JobState.SUCCEEDED, report=report, progress=JobProgress(len(passages),
                                                                                           len(passages)),
                     metrics={"made": made.made, **{f"dropped_{k}": v for k, v in made.dropped.items()}})
        log(report["summary"])
        return JobState.SUCCEEDED
    except Stopped as stop:
        store.update(job.id, state=stop.reason, progress=stop.progress)
        log(f"{stop.reason} after {stop.progress.step} of {stop.progress.total_steps} passages; no rows written")
        return stop.reason
    except BaseException as error:  # the job fails with a reason; the server is never affected
        reason = readable(error, "Making training data")
        log(reason)
        store.update(job.id, state=JobState.FAILED, error=reason)
        return JobState.FAILED
    finally:
        target.with_name(target.name + ".tmp").unlink(missing_ok=True)


def _writer(settings, job, making: MakeSettings, store, stop_reason):
    """The writer model as prompts -> replies: greedy, through the generation engine, progress written and the
    cancel flag read after every reply."""
    from models.loading import ModelHub
    from tasks import TASKS
    from tasks.base import Context as TaskContext
    from tasks.generation import instruction_lm, lm_replies

    chat = TASKS["chat"](TaskContext(settings, ModelHub(settings)))
    lm, _ = instruction_lm(chat, job.base, "", "question-writing", job.owner)

    def write(prompts: list[str]) -> list[str]:
        def progress(fraction: float, message: str) -> None:
            done = round(fraction * len(prompts))
            store.update(job.id, progress=JobProgress(done, len(prompts), stage=message))
            if reason := stop_reason():
                raise Stopped(reason, JobProgress(done, len(prompts)))
        return lm_replies(lm, prompts, [making.max_new_tokens] * len(prompts), None, progress, IN_FLIGHT,
                          "Writer reply")
    return write


def dropped_words(dropped: dict[str, int]) -> str:
    """What was dropped, by reason, as "3 repeated questions; 1 answers ..." (the page translates each item)."""
    return "; ".join(f"{n} {DROPPED_WORDS[k]}" for k, n in dropped.items() if n)


def made_report(job, made: documents_data.Made, file_name: str) -> dict:
    """/job's report of a make-data job: the rows and their columns, what was dropped and why."""
    columns = COLUMNS[job.task]
    summary = f"Made {made.made} rows from {made.passages} passages of {job.plan.generated_from}."
    if any(made.dropped.values()):
        summary += f" Dropped: {dropped_words(made.dropped)}."
    return {"kind": "make_data", "task": job.task, "source": job.plan.generated_from, "passages": made.passages,
            "made": made.made, "dropped": made.dropped, "columns": {c: c for c in columns if c != "answer_start"},
            "rows": made.rows[:SHOWN_ROWS], "file": file_name, "own_questions": bool(job.plan.own_questions),
            "summary": summary}

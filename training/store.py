"""Job records in SQLite under the data directory: settings, state, progress, metrics, report and error.

The web server and the worker process both open the store; each write is one short transaction (WAL mode),
so a crashed process never leaves a half-written record.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

import database
from training.plan import JobPlan, JobProgress


class JobState(str, Enum):
    """Where a job is (DESIGN.md §1); a state is stored and sent as its plain value."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"  # stopped with a checkpoint (app shutdown): resume continues it

    __str__ = str.__str__  # f-strings and str() give the value, as json and SQLite do

    @classmethod
    def ended(cls) -> tuple[JobState, ...]:
        return cls.SUCCEEDED, cls.FAILED, cls.CANCELLED

    @classmethod
    def active(cls) -> tuple[JobState, ...]:
        """Waiting or running: what counts towards a user's limit."""
        return cls.QUEUED, cls.RUNNING


STATES = tuple(JobState)

# Each entry upgrades the schema from version i to i + 1; an older store is migrated, never dropped.
MIGRATIONS = [
    """CREATE TABLE jobs (
        id TEXT PRIMARY KEY, owner TEXT NOT NULL, task TEXT NOT NULL, name TEXT NOT NULL, base TEXT NOT NULL,
        state TEXT NOT NULL, spec TEXT NOT NULL, progress TEXT NOT NULL DEFAULT '{}',
        metrics TEXT NOT NULL DEFAULT '{}', report TEXT NOT NULL DEFAULT '{}', error TEXT NOT NULL DEFAULT '',
        adapter TEXT NOT NULL DEFAULT '', pid INTEGER NOT NULL DEFAULT 0, cancel INTEGER NOT NULL DEFAULT 0,
        created REAL NOT NULL, updated REAL NOT NULL)""",
    # 2: the worker's process start time beside its pid, so a reused pid is never taken for the worker.
    "ALTER TABLE jobs ADD COLUMN started REAL NOT NULL DEFAULT 0",
    # 3: what a job does: 'train' (an adapter), 'evaluate' (scores of variants on a set of rows) or 'make_data'
    # (training rows written from documents).
    "ALTER TABLE jobs ADD COLUMN kind TEXT NOT NULL DEFAULT 'train'",
]
KINDS = ("train", "evaluate", "make_data")


@dataclass
class Job:
    id: str
    owner: str
    task: str
    name: str  # the adapter name asked for
    base: str  # the base model reference as given
    state: JobState
    plan: JobPlan  # everything the worker needs: data file, columns, settings or variants
    progress: JobProgress = field(default_factory=JobProgress)
    metrics: dict = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    error: str = ""
    adapter: str = ""  # the saved adapter's name once succeeded
    pid: int = 0
    started: float = 0.0  # the worker process's start time (with pid: that very process)
    cancel: int = 0
    created: float = 0.0
    updated: float = 0.0
    kind: str = "train"  # one of KINDS

    def public(self) -> dict:
        """The /job shape of DESIGN.md §1."""
        p = self.progress
        return {"job_id": self.id, "task": self.task, "name": self.name, "state": self.state.value,
                "step": p.step, "total_steps": p.total_steps, "epoch": p.epoch,
                "eta_s": p.eta_s, "loss": p.loss, "stage": p.stage, "metrics": self.metrics,
                "report": self.report, "error": self.error, "adapter": self.adapter, "kind": self.kind}


_JSON = ("metrics", "report")
_RECORDS = {"plan": "spec", "progress": "progress"}  # typed records and the columns they are stored in


def _columns(changes: dict) -> dict:
    """A change of a job as its table's columns (the plan is stored in the column 'spec')."""
    row = {k: json.dumps(v) if k in _JSON else v for k, v in changes.items()}
    for record, column in _RECORDS.items():
        if record in row:
            row[column] = json.dumps(row.pop(record).to_json())
    if "state" in row:
        row["state"] = JobState(row["state"]).value
    return row


class JobStore:
    def __init__(self, path: Path):
        self.path = database.create(path, tuple(MIGRATIONS))

    def _db(self):
        return database.transaction(self.path)

    def create(self, owner: str, task: str, name: str, base: str, plan: JobPlan, kind: str = "train") -> Job:
        now = time.time()
        job = Job(uuid.uuid4().hex[:12], owner, task, name, base, JobState.QUEUED, plan, created=now, updated=now,
                  kind=kind)
        row = _columns({**{k: v for k, v in asdict(job).items() if k not in _RECORDS}, "plan": plan,
                        "progress": job.progress})
        with self._db() as db:
            db.execute(f"INSERT INTO jobs ({', '.join(row)}) VALUES ({', '.join('?' * len(row))})",
                       list(row.values()))
        return job

    def get(self, job_id: str) -> Job | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row) if row else None

    def list(self, owner: str | None = None, states: tuple[JobState, ...] = STATES,
             kind: str | None = None) -> list[Job]:
        """Jobs (of one kind, or all), oldest first."""
        query = f"SELECT * FROM jobs WHERE state IN ({', '.join('?' * len(states))})"
        params: list = [JobState(s).value for s in states]
        if owner is not None:
            query += " AND owner = ?"
            params.append(owner)
        if kind is not None:
            query += " AND kind = ?"
            params.append(kind)
        with self._db() as db:
            rows = db.execute(query + " ORDER BY created", params).fetchall()
        return [_job(r) for r in rows]

    def update(self, job_id: str, **changes) -> None:
        changes = _columns({**changes, "updated": time.time()})
        with self._db() as db:
            db.execute(f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ?",
                       [*changes.values(), job_id])

    def transition(self, job_id: str, from_states: tuple[JobState, ...], **changes) -> bool:
        """Update only if the job is in one of from_states (atomic); whether it was."""
        changes = _columns({**changes, "updated": time.time()})
        with self._db() as db:
            cursor = db.execute(
                f"UPDATE jobs SET {', '.join(f'{k} = ?' for k in changes)} WHERE id = ? "
                f"AND state IN ({', '.join('?' * len(from_states))})",
                [*changes.values(), job_id, *(JobState(s).value for s in from_states)])
            return cursor.rowcount == 1

    def move_owner(self, old: str, new: str) -> int:
        """Give every job of old to new (the migration to accounts); how many moved."""
        with self._db() as db:
            return db.execute("UPDATE jobs SET owner = ? WHERE owner = ?", (new, old)).rowcount

    def position(self, job_id: str) -> int:
        """1-based place in the queue of waiting jobs (0 when not waiting)."""
        queued = [j.id for j in self.list(states=(JobState.QUEUED,))]
        return queued.index(job_id) + 1 if job_id in queued else 0


def _job(row: sqlite3.Row) -> Job:
    data = dict(row)
    for key in _JSON:
        data[key] = json.loads(data[key])
    data["plan"] = JobPlan.from_json(json.loads(data.pop("spec")))
    data["progress"] = JobProgress.from_json(json.loads(data["progress"]))
    data["state"] = JobState(data["state"])
    return Job(**data)

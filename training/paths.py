"""Where training keeps things under the data directory (named once, used by the server and the worker)."""

from __future__ import annotations

from pathlib import Path

from config import Settings
from models.adapters import AdapterStore, adapter_store  # noqa: F401  (the adapter store is named there)
from training.store import JobStore


def job_store(settings: Settings) -> JobStore:
    return JobStore(settings.state_path("jobs") / "jobs.sqlite3")


def job_folder(settings: Settings, job_id: str) -> Path:
    return settings.path("jobs", job_id)


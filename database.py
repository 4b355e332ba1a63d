"""SQLite files the app keeps its records in (jobs, feedback): one transaction per use, nothing half-written."""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path


def create(path: Path, migrations: tuple[str, ...] = ()) -> Path:
    """Make the database file (write-ahead log: readers never block a writer) and bring its schema up to date
    with the migrations it has not run yet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    setup = sqlite3.connect(path, timeout=30)
    setup.execute("PRAGMA journal_mode=WAL")
    setup.close()
    with transaction(path) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for step in migrations[version:]:
            db.execute(step)
        db.execute(f"PRAGMA user_version={len(migrations)}")
    return path


@contextmanager
def transaction(path: Path):
    """A connection inside one immediate transaction: committed at the end, rolled back on any error."""
    db = sqlite3.connect(path, timeout=30, isolation_level=None)
    db.row_factory = sqlite3.Row
    try:
        db.execute("BEGIN IMMEDIATE")
        yield db
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    finally:
        db.close()

"""SQLite files the app keeps its records in (jobs, feedback): one transaction per use, nothing half-written."""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path

# Held while a connection is open. A process forked while another thread is inside SQLite (ZeroGPU forks the
# server for each GPU call) inherits that thread's locks with no thread to release them, and every connection
# it opens then waits for "database is locked": so a fork waits until no connection is open, and the child
# starts with a lock of its own.
_open = threading.RLock()


def _fresh_lock() -> None:
    global _open
    _open = threading.RLock()


os.register_at_fork(before=lambda: _open.acquire(), after_in_parent=lambda: _open.release(),
                    after_in_child=_fresh_lock)


def create(path: Path, migrations: tuple[str, ...] = ()) -> Path:
    """Make the database file (write-ahead log: readers never block a writer) and bring its schema up to date
    with the migrations it has not run yet."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _open:
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
    with _open:
        db = sqlite3.connect(path, timeout=30, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # BEGIN itself may have failed (locked past the timeout)
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()

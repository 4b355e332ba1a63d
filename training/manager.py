"""The job queue in the web server: starts one worker process at a time and watches it.

The server never trains itself. A worker that dies without writing an outcome leaves its job failed with a
reason; after an app restart, a job whose worker is gone is marked interrupted and can be resumed.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import psutil
import torch

from config import Settings
from models.device import set_threads
from training import paths
from training.store import JobStore

log = logging.getLogger(__name__)
WORKER = Path(__file__).resolve().parent / "worker.py"


def alive(pid: int) -> bool:
    """Whether a process runs under pid (a finished child that is not reaped yet, a zombie, does not)."""
    try:
        return pid > 0 and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class JobManager:
    def __init__(self, settings: Settings, poll_s: float = 0.5):
        self.settings = settings
        self.store: JobStore = paths.job_store(settings)
        self.poll_s = poll_s
        self._process: subprocess.Popen | None = None
        self._job_id = ""
        self._wake = threading.Event()
        self._stopped = False
        self.recover()
        paths.adapter_store(settings).clean_partial()
        self._thread = threading.Thread(target=self._loop, name="job-manager", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        """Jobs left running by a previous app whose worker is gone are interrupted (resumable)."""
        for job in self.store.list(states=("running",)):
            if not alive(job.pid):
                self.store.update(job.id, state="interrupted",
                                  error="The app stopped while this job was training; resume it to continue.")

    def wake(self) -> None:
        self._wake.set()

    def close(self) -> None:
        self._stopped = True
        self._wake.set()

    def _loop(self) -> None:
        while not self._stopped:
            try:
                self._tick()
            except Exception:  # the queue must keep running whatever one job did
                log.exception("job manager tick failed")
            self._wake.wait(self.poll_s)
            self._wake.clear()

    def _tick(self) -> None:
        if self._process is not None:
            code = self._process.poll()
            if code is None:
                self._enforce_cancel()
                return
            self._finished(self._job_id, code)
            self._process, self._job_id = None, ""
            set_threads(self.settings.threads)
        if any(alive(j.pid) for j in self.store.list(states=("running",))):
            return  # another app process on this data directory is training: one job per device
        for job in self.store.list(states=("queued",)):
            if self.store.transition(job.id, ("queued",), state="running", error=""):
                self._start(job.id)
                return

    def _start(self, job_id: str) -> None:
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(self.settings).items()}
        settings["data_dir"] = str(self.settings.data_dir.resolve())
        logfile = paths.job_folder(self.settings, job_id) / "worker.out"
        with logfile.open("ab") as out:
            self._process = subprocess.Popen(
                [sys.executable, str(WORKER), "--settings", json.dumps(settings), job_id],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        self._job_id = job_id
        self._cancel_sent = 0.0
        # CPU threads are a budget: while the worker trains on the cores, the server keeps one for requests.
        torch.set_num_threads(1)
        self.store.update(job_id, pid=self._process.pid)
        log.info("started training job %s (pid %s)", job_id, self._process.pid)

    def _enforce_cancel(self) -> None:
        """A worker that ignores its cancel flag for 30 s is killed."""
        job = self.store.get(self._job_id)
        if job and job.cancel:
            self._cancel_sent = self._cancel_sent or time.monotonic()
            if time.monotonic() - self._cancel_sent > 30:
                self._process.kill()

    def _finished(self, job_id: str, code: int) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != "running":
            return  # the worker wrote its own outcome
        if job.cancel:
            self.store.update(job_id, state="cancelled")
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self.store.update(job_id, state="failed",
                          error=f"The training process stopped unexpectedly (it {how}); no adapter was saved.")

    def cancel(self, job_id: str) -> None:
        if self.store.transition(job_id, ("queued", "interrupted"), state="cancelled"):
            return
        self.store.update(job_id, cancel=1)
        self.wake()

    def terminate_running(self) -> None:
        """SIGTERM to the worker: it writes a checkpoint and marks the job interrupted (used at shutdown)."""
        if self._process is not None and self._process.poll() is None:
            os.kill(self._process.pid, signal.SIGTERM)

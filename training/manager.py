"""The job queue in the web server: starts one worker process at a time and watches it.

The server never trains itself. A worker that dies without writing an outcome leaves its job failed with a
reason; after an app restart, a job whose worker is gone is marked interrupted and can be resumed. On ZeroGPU,
which lends its GPU only to a decorated call, a job runs as successive such calls instead (GpuCall).
"""

from __future__ import annotations

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

from accounts import write_private_json
from config import Settings
from models import lazy
from models.device import set_threads
from training import paths
from training.store import Job, JobState, JobStore
from ui import zerogpu

torch = lazy.module("torch")

log = logging.getLogger(__name__)
WORKER = Path(__file__).resolve().parent / "worker.py"


def alive(pid: int, started: float = 0.0) -> bool:
    """Whether the process pid runs, and, with started (its start time as recorded), is that very process: a
    reused pid belongs to a process started later. A finished child not reaped yet (a zombie) does not run."""
    try:
        process = psutil.Process(pid) if pid > 0 else None
        if process is None or process.status() == psutil.STATUS_ZOMBIE:
            return False
        return not started or abs(process.create_time() - started) < 1.0
    except psutil.Error:
        return False


def start_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return 0.0


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
        for job in self.store.list(states=(JobState.RUNNING,)):
            if not alive(job.pid, job.started):
                self.store.update(job.id, state=JobState.INTERRUPTED,
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
            self._finished(self._job_id, code, getattr(self._process, "error", None))
            self._process, self._job_id = None, ""
            set_threads(self.settings.threads)
        if any(alive(j.pid, j.started) for j in self.store.list(states=(JobState.RUNNING,))):
            return  # another app process on this data directory is training: one job per device
        for job in self.store.list(states=(JobState.QUEUED,)):
            if self.store.transition(job.id, (JobState.QUEUED,), state=JobState.RUNNING, error=""):
                self._start(job.id)
                return

    def _start(self, job_id: str) -> None:
        self._cancel_sent = 0.0
        if zerogpu.on_zero_gpu():
            self._process, self._job_id = GpuCall(self.settings, self.store.get(job_id)), job_id
            return
        folder = paths.job_folder(self.settings, job_id)
        logfile = folder / "worker.out"
        worker = [str(WORKER), "--settings", str(write_settings(self.settings, folder)), job_id]
        count = processes(self.settings) if self.store.get(job_id).kind == "train" else 1
        with logfile.open("ab") as out:
            # Its own session: Ctrl-C in the app's terminal reaches the app, which then stops the worker cleanly;
            # the session's group holds every process of a run, which a signal to the group reaches.
            self._process = subprocess.Popen(
                launcher(count) + worker, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True)
        self._job_id = job_id
        # CPU threads are a budget: while the worker trains on the cores, the server keeps one for requests.
        torch.set_num_threads(1)
        self.store.update(job_id, pid=self._process.pid, started=start_time(self._process.pid))
        log.info("started training job %s (pid %s)", job_id, self._process.pid)

    def _enforce_cancel(self) -> None:
        """A worker that ignores its cancel flag for 30 s is killed."""
        job = self.store.get(self._job_id)
        if job and job.cancel and self._process.pid:  # a GpuCall has no process of ours: its lease bounds it
            self._cancel_sent = self._cancel_sent or time.monotonic()
            if time.monotonic() - self._cancel_sent > 30:
                os.killpg(self._process.pid, signal.SIGKILL)

    def _finished(self, job_id: str, code: int, call_error: BaseException | None = None) -> None:
        job = self.store.get(job_id)
        if job is None or job.state != JobState.RUNNING:
            return  # the worker wrote its own outcome
        if job.cancel:
            self.store.update(job_id, state=JobState.CANCELLED)
            return
        if call_error is not None:  # ZeroGPU refused the call (quota) or ended it (the lease ran out)
            why = str(call_error).strip().splitlines()[0][:300] if str(call_error).strip() else "no reason given"
            self.store.update(job_id, state=JobState.INTERRUPTED, error=(
                f"A GPU call of this job failed ({type(call_error).__name__}: {why}); what it trained so far is kept: "
                "resume it to continue."))
            return
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        self.store.update(job_id, state=JobState.FAILED,
                          error=f"The training process stopped unexpectedly (it {how}); no adapter was saved.")

    def cancel(self, job_id: str) -> None:
        if self.store.transition(job_id, (JobState.QUEUED, JobState.INTERRUPTED), state=JobState.CANCELLED):
            return
        self.store.update(job_id, cancel=1)
        self.wake()

    def shutdown(self, wait_s: float = 60.0) -> None:
        """At app shutdown: SIGTERM to the worker, which writes a checkpoint and marks its job interrupted
        (resumable), then wait for it; the queue starts nothing more."""
        self.close()
        process = self._process
        if process is None or process.poll() is not None or not process.pid:
            return  # a GpuCall's job stays running and a restart marks it interrupted (resumable)
        log.info("stopping training job %s: it saves a checkpoint and can be resumed", self._job_id)
        os.killpg(process.pid, signal.SIGTERM)  # every process of the run
        try:
            process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            self.store.transition(self._job_id, (JobState.RUNNING,), state=JobState.INTERRUPTED,
                                  error="The app stopped while this job was training; resume it to continue.")


class GpuCall:
    """A job's next ZeroGPU call, waited for in a thread of the server (the call itself runs in the process
    ZeroGPU forks for it). A training call's lease is sized from the steps left as its last call timed them;
    the call queues the job again before the lease ends, and the queue then starts the next one."""

    pid = 0  # no process of ours to signal: a call ends at its deadline, on the cancel flag, or with its lease

    def __init__(self, settings: Settings, job: Job):
        self.lease_s = zerogpu.training_lease(job.progress.eta_s) if job.kind == "train" else zerogpu.MAX_S
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._call, args=(settings, job.id), name=f"gpu-call-{job.id}",
                                        daemon=True)
        self._thread.start()

    def _call(self, settings: Settings, job_id: str) -> None:
        try:
            zerogpu.job_call()(settings, job_id, self.lease_s)
        except BaseException as error:  # the manager tells the job's owner
            log.warning("the GPU call of job %s failed: %s", job_id, error)
            self.error = error

    def poll(self) -> int | None:
        return None if self._thread.is_alive() else int(self.error is not None)


def processes(settings: Settings) -> int:
    """The processes a training job runs on: the operator's --train-processes, else one per visible GPU."""
    return settings.train_processes or torch.cuda.device_count() or 1


def placement(settings: Settings) -> str:
    """Where a training job runs, in words: its processes and their devices (the Estimate and System panel)."""
    count, gpus = processes(settings), torch.cuda.device_count()
    if gpus:
        return f"{count} process{'es' if count > 1 else ''} on {min(count, gpus)} of {gpus} GPUs"
    return "1 process on the CPU" if count == 1 else f"{count} processes sharing the CPU's cores (gloo)"


def launcher(count: int) -> list[str]:
    """The command that starts a worker on count processes: Python itself for one, torchrun (on a free port of
    its own) for several, whose processes join through accelerate: nccl on GPUs, gloo on CPUs."""
    if count == 1:
        return [sys.executable]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={count}"]


def write_settings(settings: Settings, folder: Path) -> Path:
    """The server's settings for a worker, in a file only this user can read (never on a command line, where
    `ps` shows it to everyone); the login password is left out: a worker needs none."""
    values = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    values.update(data_dir=str(settings.data_dir.resolve()), password="", username="", api_key="")
    path = folder / "settings.json"
    write_private_json(path, values)
    return path

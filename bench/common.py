"""Shared by the benchmark scripts: the machine/version header, timing, and the ratio line.

Every script compares our code path with the plain peer recipe in one run, on the same inputs, and prints both
figures and their ratio so the README table can be filled from its output.
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # benchmarks never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

PACKAGES = ("torch", "transformers", "sentence-transformers", "faiss-cpu", "numpy", "peft")


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> str:
    """The CPU's vector-instruction flags (AVX…, AMX…, F16C, FMA): which products are fastest depends on them."""
    try:
        line = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx", "amx", "f16c", "fma")
    return " ".join(sorted(flag for flag in line.split(":", 1)[1].split() if flag.startswith(wanted)))


def version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--data-dir", default=str(ROOT / "data"), help="the app's data directory (holds models/)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = all cores)")
    return p


def header(title: str, threads: int = 0) -> None:
    """Set torch's threads and print what the numbers below were measured on."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)
    print(f"== {title}")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}, "
          f"python {platform.python_version()}")
    print(f"CPU flags: {cpu_flags()}")
    print("versions: " + ", ".join(f"{p} {version(p)}" for p in PACKAGES))
    print(f"torch threads: {torch.get_num_threads()}; load average at start: {load()}")
    busy = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    if busy > 0.75 * (os.cpu_count() or 1):
        print(f"note: the machine is busy (load {busy:.1f} on {os.cpu_count()} cores): timings are pessimistic")
    sys.stdout.flush()


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


@contextmanager
def timer() -> Iterator[Callable[[], float]]:
    """with timer() as elapsed: ...; elapsed() gives the seconds so far, or the total after the block."""
    start = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - start
    end.append(time.perf_counter())


def best_of(repeats: int, fn: Callable[[], object]) -> float:
    """The shortest of repeats runs of fn, in seconds (the least disturbed by other work on the machine)."""
    times = []
    for _ in range(repeats):
        with timer() as elapsed:
            fn()
        times.append(elapsed())
    return min(times)


def best_of_each(repeats: int, baseline: Callable[[], object], ours: Callable[[], object]) -> tuple[float, float]:
    """Shortest time of each of two functions, run in turns (A B A B ...) so both see the same machine load."""
    a, b = [], []
    for _ in range(repeats):
        a.append(best_of(1, baseline))
        b.append(best_of(1, ours))
    return min(a), min(b)


def ratio(label: str, baseline: tuple[str, float], ours: tuple[str, float], unit: str,
          target: float | None = None) -> float:
    """Print baseline, ours and ours/baseline (higher is better), with the target when there is one."""
    (base_name, base_value), (our_name, our_value) = baseline, ours
    r = our_value / base_value if base_value else float("inf")
    verdict = "" if target is None else f" (target >= {target:g}x: {'met' if r >= target else 'NOT met'})"
    print(f"{label}:")
    print(f"  baseline  {base_name}: {base_value:,.2f} {unit}")
    print(f"  ours      {our_name}: {our_value:,.2f} {unit}")
    print(f"  ratio     {r:.2f}x{verdict}")
    sys.stdout.flush()
    return r


def progress_printer(what: str, every: float = 5.0) -> Callable[[int, int], None]:
    """A (done, total) callback that prints a line at most every `every` seconds, and at the end."""
    last = [0.0]

    def report(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= every or done >= total:
            last[0] = now
            print(f"  {what}: {done:,}/{total:,}", file=sys.stderr, flush=True)
    return report

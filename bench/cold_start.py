"""Cold start: `python app.py --help`, the page up (HTTP 200 on /) from a fresh data directory, the first offline
chat answer after it, then a second start on the same data directory (the model converted, its products measured).

Each start runs `python app.py` as a user would, in a process of its own, and asks /chat through gradio_client
(greedy, 8 new tokens, the default offline model). Beside each wall time, the CPU seconds the app used for it: on a
busy shared machine the wall time stretches with the load, the CPU time much less (imports run on one core, so on an
idle machine the page's wall time is close to its CPU time). With `--baseline PATH` (another checkout, e.g. a
worktree of an older commit) the same steps run there too, in turns with ours on the same machine, and each figure
gets its ratio (baseline / ours: higher is better). `--converted` starts from a data directory whose models/
already holds the converted SmolLM2, as after `make run`'s set-up step.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, cpu_flags, cpu_model, load, version

HELP_REPEATS = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def help_seconds(root: Path) -> float:
    """The shortest of a few `python app.py --help` runs."""
    times = []
    for _ in range(HELP_REPEATS):
        started = time.perf_counter()
        subprocess.run([sys.executable, "app.py", "--help"], cwd=root, capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return min(times)


def cpu_seconds(process: subprocess.Popen) -> float:
    """The CPU time the app's process has used: on a busy machine its wall time stretches, this much less."""
    import psutil

    times = psutil.Process(process.pid).cpu_times()
    return times.user + times.system


def start(root: Path, data_dir: Path, threads: int) -> tuple[subprocess.Popen, str, float]:
    """Start the app; (process, url, seconds until / answers 200)."""
    import httpx

    port = free_port()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(data_dir), "--port", str(port),
                                "--threads", str(threads)], cwd=root, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}/"
    while True:
        if process.poll() is not None:
            raise SystemExit(f"the app in {root} exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return process, url, time.perf_counter() - started
        except httpx.HTTPError:
            pass
        time.sleep(0.05)


def first_answer(url: str) -> float:
    """Seconds for a first greedy chat answer through the public API (the client's own start not counted)."""
    from gradio_client import Client

    client = Client(url, verbose=False)
    started = time.perf_counter()
    reply = client.predict("Name a colour.", [], "", "", "", 0.0, 0.9, 8, api_name="/chat")
    assert isinstance(reply, str) and reply, reply
    return time.perf_counter() - started


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def cold_start(roots: dict[str, Path], threads: int, converted: Path | None) -> dict[str, dict[str, float]]:
    """The figures of each checkout, each on a fresh data directory of its own that its second start reuses; the
    checkouts take each step in turn, so both see the machine's load of that moment."""
    data_dirs = {who: Path(tempfile.mkdtemp(prefix="cold-start-")) for who in roots}
    figures: dict[str, dict[str, float]] = {who: {} for who in roots}
    try:
        for who, data_dir in data_dirs.items():
            if converted is not None:
                shutil.copytree(converted, data_dir / "models" / converted.name)
            figures[who]["--help"] = help_seconds(roots[who])
        for run in ("first start", "second start"):
            for who, root in roots.items():
                process, url, page = start(root, data_dirs[who], threads)
                try:
                    figures[who][f"{run}: page up"] = page
                    figures[who][f"{run}: page up, CPU s"] = before = cpu_seconds(process)
                    figures[who][f"{run}: first answer after the page"] = first_answer(url)
                    figures[who][f"{run}: first answer, CPU s"] = cpu_seconds(process) - before
                finally:
                    stop(process)
        return figures
    finally:
        for data_dir in data_dirs.values():
            shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, help="another checkout to measure first, on the same machine")
    p.add_argument("--threads", type=int, default=0, help="the app's --threads (0 = all cores)")
    p.add_argument("--converted", action="store_true", help="start with SmolLM2 already converted (after set-up)")
    args = p.parse_args()
    print("== cold start: python app.py, a fresh data directory")
    print(f"machine: {cpu_model()}, {os.cpu_count()} cores; CPU flags: {cpu_flags()}")
    print(f"versions: python {sys.version.split()[0]}, torch {version('torch')}, gradio {version('gradio')}, "
          f"transformers {version('transformers')}; load average at start: {load()}")
    converted = None
    if args.converted:
        from models import offline

        converted = offline.smollm2(Path(tempfile.mkdtemp(prefix="converted-")))
    roots = {"baseline": args.baseline.resolve(), "ours": ROOT} if args.baseline else {"ours": ROOT}
    runs = cold_start(roots, args.threads, converted)
    for name in runs["ours"]:
        line = "  ".join(f"{who} {figures[name]:6.2f} s" for who, figures in runs.items())
        if "baseline" in runs:
            line += f"  ratio {runs['baseline'][name] / runs['ours'][name]:.2f}x"
        print(f"{name:38s} {line}")
    print(f"load average at the end: {load()}")


if __name__ == "__main__":
    main()

"""Check a Hugging Face Space's environment (or any machine's) for LoRA Studio and print what will and will not
work: the hardware, ZeroGPU, the data directory (a Storage Bucket's mount: writable, atomic renames), SQLite's
locking where the databases go (--state-dir) and on the bucket, Hugging Face sign-in, the hub, and MCP.

    python scripts/space_check.py [--data-dir DIR] [--state-dir DIR] [--json]

It takes the app's own settings (flags or LORA_STUDIO_* variables), writes only small files it removes again,
and never starts the app. Run it from the Space's terminal (Dev Mode) or as a one-off command.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import sys
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import config  # noqa: E402


def hardware() -> tuple[bool, str]:
    try:
        import torch
    except ImportError:
        return False, "torch is not installed: run the set-up first"
    cores = os.cpu_count() or 1
    if torch.cuda.is_available() and not os.environ.get("SPACES_ZERO_GPU"):
        props = torch.cuda.get_device_properties(0)
        return True, f"{torch.cuda.device_count()} × {props.name} ({props.total_memory / 2**30:.0f} GiB), {cores} CPUs"
    return True, f"CPU only ({cores} cores): small models chat and train; larger ones are slow"


def zero_gpu() -> tuple[bool, str]:
    if os.environ.get("SPACES_ZERO_GPU", "").lower() not in ("1", "t", "true"):
        return False, "not a ZeroGPU Space: every model runs on this machine's own hardware"
    try:
        import spaces  # noqa: F401
    except ImportError:
        return False, "ZeroGPU is on but the spaces package is missing: add it to requirements.txt"
    return True, ("each request leases the GPU for a duration computed from its size (at most 120 s); training "
                  "needs a GPU Space or another machine for now")


def writable(folder: Path) -> tuple[bool, str]:
    """Whether folder takes a file written to a temporary name and renamed into place (how adapters arrive)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".space-check-{uuid.uuid4().hex}.tmp"
        tmp.write_bytes(b"x" * 4096)
        final = tmp.with_suffix(".done")
        os.replace(tmp, final)
        final.unlink()
    except OSError as error:
        return False, f"{folder} is not writable: {error.strerror or error}"
    free = shutil.disk_usage(folder).free / 2**30
    return True, f"{folder} ({_mount(folder)}, {free:.0f} GiB free): writes and renames work"


def _mount(folder: Path) -> str:
    """The file system folder lives on, from /proc/mounts (a bucket shows as fuse)."""
    best, kind = "", "unknown file system"
    try:
        lines = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    real = str(folder.resolve())
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and (real == parts[1] or real.startswith(parts[1].rstrip("/") + "/")) \
                and len(parts[1]) > len(best):
            best, kind = parts[1], parts[2]
    return kind


def sqlite_locking(folder: Path) -> tuple[bool, str]:
    """Whether SQLite in WAL mode keeps a second writer out while one writes, and both see the same rows."""
    path = folder / f".space-check-{uuid.uuid4().hex}.sqlite"
    first = second = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        first = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        first.execute("PRAGMA journal_mode=WAL")
        first.execute("CREATE TABLE t (x)")
        first.execute("BEGIN IMMEDIATE")
        first.execute("INSERT INTO t VALUES (1)")
        second = sqlite3.connect(path, timeout=0.2, isolation_level=None)
        try:
            second.execute("BEGIN IMMEDIATE")
            return False, f"in {folder} two writers got in at once: file locking does not work there"
        except sqlite3.OperationalError:
            pass  # locked out, as it should be
        first.execute("COMMIT")
        if second.execute("SELECT count(*) FROM t").fetchone()[0] != 1:
            return False, f"in {folder} a second connection does not see the first one's rows"
        return True, f"in {folder}: locking and write-ahead log work"
    except sqlite3.Error as error:
        return False, f"in {folder} SQLite fails: {error}"
    finally:
        for db in (first, second):
            if db is not None:
                db.close()
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)


def sign_in() -> tuple[bool, str]:
    if os.environ.get("OAUTH_CLIENT_ID"):
        return True, "Hugging Face sign-in is on: each signed-in user owns their adapters, jobs and collections"
    if os.environ.get("SPACE_ID"):
        return False, "no sign-in: add `hf_oauth: true` to the README's front matter, or everyone shares one space"
    return False, "not a Space: use accounts (python app.py users add NAME) to tell people apart"


def hub() -> tuple[bool, str]:
    if os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0"):
        return False, "HF_HUB_OFFLINE is set: only the offline models and local folders load"
    try:
        import httpx

        status = httpx.head("https://huggingface.co/api/models/gpt2", timeout=5, follow_redirects=True).status_code
    except Exception as error:  # noqa: BLE001  (any failure means: not reachable)
        return False, f"the hub is not reachable ({type(error).__name__}): only the offline models load"
    return status < 500, f"the hub answers (HTTP {status}): models load by their hub id, adapters can be pushed"


def mcp() -> tuple[bool, str]:
    try:
        import mcp as _  # noqa: F401
    except ImportError:
        return False, "the mcp package is missing: --mcp will not start"
    return True, "start with --mcp (or LORA_STUDIO_MCP=1) to serve the tools at /gradio_api/mcp/"


def checks(settings: config.Settings) -> list[dict]:
    data = Path(settings.data_dir)
    state = Path(settings.state_dir).expanduser() if settings.state_dir else data
    rows = [("hardware", hardware()), ("ZeroGPU", zero_gpu()), ("data directory", writable(data)),
            ("SQLite", sqlite_locking(state))]
    if state != data:
        ok, detail = sqlite_locking(data)
        rows.append(("SQLite on the data directory", (ok, detail if ok else detail + "; keep --state-dir set")))
    elif os.environ.get("SPACE_ID"):
        rows.append(("state directory", (False, "--state-dir is not set: on a bucket mount set it to a local folder "
                                                "such as /tmp/lora-studio-state (jobs survive only a restart then)")))
    rows += [("sign-in", sign_in()), ("hub", hub()), ("MCP", mcp())]
    return [{"check": name, "ok": ok, "detail": detail} for name, (ok, detail) in rows]


def table(rows: list[dict]) -> str:
    width = max(len(row["check"]) for row in rows)
    lines = [f"{row['check']:<{width}}  {'yes' if row['ok'] else 'NO ':<3}  {row['detail']}" for row in rows]
    works = [row["check"] for row in rows if row["ok"]]
    fails = [row["check"] for row in rows if not row["ok"]]
    return "\n".join([f"{'check':<{width}}  ok   what it means", *lines, "",
                      "will work: " + (", ".join(works) or "nothing"),
                      "will not work: " + (", ".join(fails) or "nothing")])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    config.add_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")
    args = parser.parse_args(argv)
    options = {name: value for name, value in vars(args).items() if name != "json"}
    rows = checks(config.from_namespace(argparse.Namespace(**options)))
    print(json.dumps(rows, indent=2) if args.json else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""The adapter store: trained adapters on disk, per owner, with the metadata that travels with them.

An adapter folder holds standard PEFT files (adapter_config.json + adapter_model.safetensors, loadable by plain
`PeftModel.from_pretrained`), any trained heads (safetensors), and `lora_studio.json`: task, base model and its
fingerprint, chat template and system prompt, data fingerprint, hyperparameters, metrics, timings.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
import time
from pathlib import Path

from errors import UserError

META_FILE = "lora_studio.json"
META_VERSION = 1
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}[a-z0-9]$|^[a-z0-9]$")


def sanitize_name(name: str) -> str:
    """A safe folder name from what the user typed: lower case letters, digits, '.', '-' and '_'."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", (name or "").strip().lower()).strip("-._")[:64].strip("-._")
    if not cleaned or not _NAME.match(cleaned):
        raise UserError("Please give the adapter a name made of letters, digits, '-', '_' or '.'.")
    return cleaned


class AdapterStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def folder(self, owner: str, name: str) -> Path:
        owner_dir = self.root / sanitize_name(owner)
        return owner_dir / sanitize_name(name)

    def exists(self, owner: str, name: str) -> bool:
        return (self.folder(owner, name) / META_FILE).exists()

    def meta(self, owner: str, name: str) -> dict:
        """The metadata of an adapter, or a UserError naming it."""
        path = self.folder(owner, name) / META_FILE
        if not path.exists():
            raise UserError(f"There is no adapter named '{name}'.")
        return json.loads(path.read_text())

    def list(self, owner: str, task: str = "") -> list[dict]:
        """Adapters of owner (optionally for one task), newest first, in the /adapters shape."""
        owner_dir = self.root / sanitize_name(owner)
        found = []
        for meta_path in owner_dir.glob(f"*/{META_FILE}") if owner_dir.exists() else []:
            meta = json.loads(meta_path.read_text())
            if task and meta.get("task") != task:
                continue
            size = sum(p.stat().st_size for p in meta_path.parent.iterdir() if p.is_file())
            found.append({"name": meta_path.parent.name, "task": meta["task"], "base": meta["base_model"],
                          "created": meta["created"], "metrics": meta.get("metrics", {}),
                          "size_mb": round(size / 2**20, 2)})
        return sorted(found, key=lambda a: a["created"], reverse=True)

    def save(self, owner: str, name: str, write, meta: dict) -> str:
        """Write an adapter through write(tmp_folder) and rename it into place; returns the final name.

        A cancelled or crashed run leaves only a hidden temporary folder, never a half adapter. An existing
        name is never overwritten: the new adapter gets the next free suffix (-2, -3, ...).
        """
        owner_dir = self.root / sanitize_name(owner)
        owner_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=owner_dir))
        try:
            write(tmp)
            meta = {**meta, "version": META_VERSION, "created": meta.get("created", time.time())}
            (tmp / META_FILE).write_text(json.dumps(meta, indent=2, ensure_ascii=False))
            base = sanitize_name(name)
            for attempt in range(1, 1000):
                final = base if attempt == 1 else f"{base}-{attempt}"
                try:
                    tmp.rename(owner_dir / final)  # atomic; fails if the name is taken
                    return final
                except OSError:
                    continue
            raise UserError(f"Could not find a free name for the adapter '{name}'.")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete(self, owner: str, name: str) -> None:
        folder = self.folder(owner, name)
        if not (folder / META_FILE).exists():
            raise UserError(f"There is no adapter named '{name}'.")
        trash = folder.with_name(f".deleting-{folder.name}-{time.time_ns()}")
        folder.rename(trash)  # gone from the list at once, even if the removal below is slow
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, owner: str, name: str, new_name: str) -> str:
        folder, target = self.folder(owner, name), self.folder(owner, new_name)
        if not (folder / META_FILE).exists():
            raise UserError(f"There is no adapter named '{name}'.")
        if target.exists():
            raise UserError(f"An adapter named '{target.name}' already exists; choose another name.")
        folder.rename(target)
        return target.name

    def clean_partial(self) -> None:
        """Remove temporary folders a crashed save left behind."""
        for leftover in self.root.glob("*/.saving-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob("*/.deleting-*"):
            shutil.rmtree(leftover, ignore_errors=True)


def engine_key(owner: str, name: str, created: float) -> str:
    """The adapter's name inside a loaded model: unique per owner, name and version, safe for peft."""
    return "a" + hashlib.sha1(f"{owner}/{name}/{created}".encode()).hexdigest()[:12]

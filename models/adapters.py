"""Trained adapters: the store on disk (per owner, with the metadata that travels with them) and the service
the tasks use them through.

An adapter folder holds standard PEFT files (adapter_config.json + adapter_model.safetensors, loadable by plain
`PeftModel.from_pretrained`), any trained heads (safetensors), and `lora_studio.json`: task, base model and its
fingerprint, chat template and system prompt, data fingerprint, hyperparameters, metrics, timings.
"""

from __future__ import annotations

import errno
import hashlib
import re
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from errors import NotFound, UserError
from accounts import Shares
from models import catalog, lora
from models.adapter_meta import META_FILE, AdapterMeta, MergedMeta

NO_ADAPTER = "none"  # what pickers show for "no adapter"
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}[a-z0-9]$|^[a-z0-9]$")


def sanitize_name(name: str) -> str:
    """A safe folder name from what the user typed: lower case letters, digits, '.', '-' and '_'."""
    cleaned = re.sub(r"[^a-z0-9._-]+", "-", (name or "").strip().lower()).strip("-._")[:64].strip("-._")
    if not cleaned or not _NAME.match(cleaned):
        raise UserError("Please give the adapter a name made of letters, digits, '-', '_' or '.'.")
    return cleaned


def adapter_store(settings) -> "AdapterStore":
    """The adapter store under a data directory (the server and the worker open the same one)."""
    return AdapterStore(settings.path("adapters"), Shares(settings.data_dir, settings.state_path()))


def _unknown(name: str) -> NotFound:
    # Another user's adapter answers exactly as one that does not exist: names never leak.
    return NotFound(f"There is no adapter named '{str(name)[:80]}'.")


class AdapterStore:
    """Adapters per owner; an owner sees their own and those an admin shared with everyone (read-only)."""

    def __init__(self, root: Path, shares: Shares | None = None):
        self.root = Path(root)
        self.shares = shares

    def folder(self, owner: str, name: str) -> Path:
        """Where owner's own adapter of that name lives (or would be saved)."""
        owner_dir = self.root / sanitize_name(owner)
        return owner_dir / sanitize_name(name)

    def exists(self, owner: str, name: str) -> bool:
        return (self.folder(owner, name) / META_FILE).exists()

    def locate(self, owner: str, name: str) -> tuple[str, Path]:
        """(whose adapter it is, its folder): the owner's own, else one shared with everyone; else a UserError."""
        try:
            if self.exists(owner, name):
                return owner, self.folder(owner, name)
            for sharer in self.shares.owners_sharing("adapter", sanitize_name(name)) if self.shares else []:
                if self.exists(sharer, name):
                    return sharer, self.folder(sharer, name)
        except UserError:  # not even a possible name
            pass
        raise _unknown(name)

    def meta(self, owner: str, name: str) -> AdapterMeta:
        """The metadata of an adapter the owner may use, or a UserError naming it."""
        return AdapterMeta.read(self.locate(owner, name)[1])

    def own(self, owner: str, name: str) -> Path:
        """The folder of an adapter the owner may change: their own (a shared one says whose it is)."""
        sharer, folder = self.locate(owner, name)
        if sharer != owner:
            raise UserError(f"The adapter '{folder.name}' is shared with you by {sharer}; only they can change "
                            "or delete it.")
        return folder

    def list(self, owner: str, task: str = "", everyone: bool = False) -> list[dict]:
        """The adapters owner may use (every owner's with everyone=True, for an admin), newest first, in the
        /adapters shape with who owns each and whether it is shared."""
        shared = self.shares.items("adapter") if self.shares else set()
        if everyone:
            places = [(o.name, p) for o in self.root.iterdir() if o.is_dir() for p in o.glob(f"*/{META_FILE}")]
        else:
            owner_dir = self.root / sanitize_name(owner)
            places = [(owner, p) for p in owner_dir.glob(f"*/{META_FILE}")] if owner_dir.exists() else []
            places += [(o, self.folder(o, n) / META_FILE) for o, n in shared if o != owner]
        found = []
        for whose, meta_path in places:
            if not meta_path.exists() or (meta_path.parent.name.startswith(".")):
                continue
            meta = AdapterMeta.read(meta_path.parent)
            if task and meta.task != task:
                continue
            size = sum(p.stat().st_size for p in meta_path.parent.iterdir() if p.is_file())
            found.append({"name": meta_path.parent.name, "task": meta.task, "base": meta.base_model,
                          "created": meta.created, "metrics": meta.metrics,
                          "verdict": meta.report.get("verdict", ""),
                          "answer_check": meta.report.get("answer_check", {}),
                          "size_mb": round(size / 2**20, 2), "owner": whose,
                          "shared": (whose, meta_path.parent.name) in shared})
        return sorted(found, key=lambda a: a["created"], reverse=True)

    def save(self, owner: str, name: str, write, meta: AdapterMeta) -> str:
        """Write an adapter through write(tmp_folder) and rename it into place; returns the final name.

        A cancelled or crashed run leaves only a hidden temporary folder, never a half adapter. An existing
        name is never overwritten: the new adapter gets the next free suffix (-2, -3, ...).
        """
        owner_dir = self.root / sanitize_name(owner)
        owner_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=owner_dir))
        try:
            write(tmp)
            meta.stamped().write(tmp)
            return rename_free(tmp, owner_dir, name, "adapter").name
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def delete(self, owner: str, name: str) -> None:
        folder = self.own(owner, name)
        if self.shares:
            self.shares.set("adapter", owner, folder.name, False)
        trash = folder.with_name(f".deleting-{folder.name}-{time.time_ns()}")
        folder.rename(trash)  # gone from the list at once, even if the removal below is slow
        shutil.rmtree(trash, ignore_errors=True)

    def rename(self, owner: str, name: str, new_name: str) -> str:
        folder, target = self.own(owner, name), self.folder(owner, new_name)
        if target.exists():
            raise UserError(f"An adapter named '{target.name}' already exists; choose another name.")
        folder.rename(target)
        if self.shares and (owner, folder.name) in self.shares.items("adapter"):
            self.shares.set("adapter", owner, folder.name, False)
            self.shares.set("adapter", owner, target.name, True)
        return target.name

    def move_owner(self, old: str, new: str) -> int:
        """Give every adapter of old to new (the migration to accounts); a taken name gets a suffix."""
        source, target = self.root / sanitize_name(old), self.root / sanitize_name(new)
        moved = 0
        for meta_path in sorted(source.glob(f"*/{META_FILE}")) if source.exists() else []:
            replace(AdapterMeta.read(meta_path.parent), owner=new).write(meta_path.parent)
            name, suffix = meta_path.parent.name, 1
            while (target / name).exists():
                suffix += 1
                name = f"{meta_path.parent.name}-{suffix}"
            target.mkdir(parents=True, exist_ok=True)
            meta_path.parent.rename(target / name)
            moved += 1
        return moved

    def clean_partial(self) -> None:
        """Remove temporary folders a crashed save left behind."""
        for leftover in self.root.glob("*/.saving-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        for leftover in self.root.glob("*/.deleting-*"):
            shutil.rmtree(leftover, ignore_errors=True)


class MergedModels:
    """Full models made by merging an adapter into its base, per owner: each is a model folder (safetensors and
    `lora_studio.json` saying where it came from) that the owner's model boxes accept by its name."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def find(self, owner: str, name: str) -> Path | None:
        """The folder of owner's merged model called name, or None (also for anything that is not a name)."""
        try:
            folder = self.root / sanitize_name(owner) / sanitize_name(name)
        except UserError:
            return None
        return folder if folder.name == name.strip() and (folder / "config.json").exists() else None

    def list(self, owner: str) -> list[tuple[str, MergedMeta]]:
        """(name, where it came from) of owner's merged models, newest first."""
        owner_dir = self.root / sanitize_name(owner)
        found = [(p.parent.name, MergedMeta.read(p.parent))
                 for p in owner_dir.glob(f"*/{META_FILE}")] if owner_dir.exists() else []
        return sorted(found, key=lambda item: item[1].created, reverse=True)

    def save(self, owner: str, name: str, write) -> tuple[str, Path]:
        """Write a model through write(tmp_folder) and rename it into place (a taken name gets -2, -3, ...)."""
        owner_dir = self.root / sanitize_name(owner)
        owner_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".saving-", dir=owner_dir))
        try:
            write(tmp)
            final = rename_free(tmp, owner_dir, name, "model")
            return final.name, final
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


# Errors of a mount that cannot rename a folder (a Storage Bucket's, over FUSE): the folder is copied instead.
_NO_FOLDER_RENAME = {errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS, errno.EPERM, errno.EIO}


def rename_free(tmp: Path, folder: Path, name: str, what: str) -> Path:
    """Rename tmp to folder/name, or to the first free name-2, name-3, ... (never over an existing one)."""
    base = sanitize_name(name)
    for attempt in range(1, 1000):
        final = folder / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            tmp.rename(final)  # atomic; fails if the name is taken
            return final
        except OSError as error:
            if error.errno not in _NO_FOLDER_RENAME:
                continue  # taken
        try:
            return copy_into_place(tmp, final)
        except FileExistsError:
            continue
    raise UserError(f"Could not find a free name for the {what} '{name}'.")


def copy_into_place(tmp: Path, final: Path) -> Path:
    """Copy tmp's files into a new folder final, its metadata file last: lists and lookups go by that file, so
    the folder counts only once it is complete (where folders cannot be renamed, as on a bucket's mount)."""
    final.mkdir()  # FileExistsError: the name is taken
    files = sorted(tmp.rglob("*"), key=lambda p: p.name == META_FILE)
    for source in files:
        target = final / source.relative_to(tmp)
        if source.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
    return final


def engine_key(owner: str, name: str, created: float) -> str:
    """The adapter's name inside a loaded model: unique per owner, name and version, safe for peft."""
    return "a" + hashlib.sha1(f"{owner}/{name}/{created}".encode()).hexdigest()[:12]


def weights_size(folder: str) -> int:
    """Bytes an adapter's weights take (as saved: LoRA matrices and any trained head)."""
    return sum(p.stat().st_size for p in Path(folder).glob("*.safetensors"))


def selected(adapter: object) -> str | None:
    """The adapter name a request asks for, or None for none ("", "none" or nothing): the one place that decides."""
    name = adapter.strip() if isinstance(adapter, str) else ""
    return None if name in ("", NO_ADAPTER) else name


class AdapterService:
    """Trained adapters as the tasks use them: found by name for an owner, attached to a loaded language model
    (in its engine), or merged into a copy of an encoder; every use checks the adapter's task and base weights."""

    def __init__(self, store: AdapterStore, hub):
        self.store = store
        self.hub = hub  # models.loading.ModelHub
        self.merged = MergedModels(store.root.parent / "merged")

    def reference(self, owner: str, model: str) -> str | catalog.ModelSource:
        """What loads model for owner: their merged model by that name (resolved), else model itself."""
        folder = self.merged.find(owner, model) if isinstance(model, str) and model.strip() else None
        if folder is None:
            return model
        return catalog.ModelSource(folder.name, str(folder), MergedMeta.read(folder).family, local=True)

    def meta(self, owner: str, name: str, task: str) -> AdapterMeta:
        """The adapter's metadata, or a UserError when there is none by that name or it is for another task."""
        meta = self.store.meta(owner, name)
        if meta.task != task:
            raise UserError(f"The adapter '{name}' was trained for {meta.task}, not {task}.")
        return meta

    def files(self, owner: str, name: str, task: str) -> lora.AdapterFiles:
        meta = self.meta(owner, name, task)
        whose, folder = self.store.locate(owner, name)
        # Keyed by its real owner: users of one shared adapter share its loaded copy.
        return lora.AdapterFiles(folder.name, engine_key(whose, folder.name, meta.created), str(folder), meta)

    def usable(self, owner: str, task: str = "", bases: set[str] | None = None) -> list[dict]:
        """The adapters owner may use (their own and those shared with everyone), newest first in the store's list
        shape: for task ("" = any), trained on a model known by any of the names in bases (None = any): the one
        place the pickers, the compare panel and /v1 learn which adapters a user has."""
        return [a for a in self.store.list(owner, task) if bases is None or a["base"] in bases]

    def names(self, owner: str, task: str = "", bases: set[str] | None = None) -> list[str]:
        """The names of the adapters usable() lists, each once."""
        return list(dict.fromkeys(a["name"] for a in self.usable(owner, task, bases)))

    def base(self, owner: str, name: str) -> str:
        """The model an adapter was trained on, as a reference the model hub resolves."""
        return self.base_of(self.store.meta(owner, name))

    @staticmethod
    def base_of(meta: AdapterMeta) -> str:
        """The base in an adapter's metadata as a reference: its catalog name, else where it was loaded from."""
        return meta.base_model if catalog.find(meta.base_model) else meta.base_location

    def model_for(self, owner: str, model: str, adapter: object) -> str | catalog.ModelSource:
        """The model to load: the one asked for, or, when only an adapter is chosen, the base it was trained on."""
        name = selected(adapter)
        if name is None or not isinstance(model, str) or model.strip():
            return self.reference(owner, model)
        return self.base(owner, name)

    def attach(self, owner: str, lm, adapter: object, task: str) -> tuple[str | None, AdapterMeta | None]:
        """The engine key of the adapter on a loaded LM (attached once) and its metadata (the system prompt and
        chat template it was trained with); (None, None) without an adapter. The adapter must have been trained
        on these very weights."""
        name = selected(adapter)
        if name is None:
            return None, None
        files = self.files(owner, name, task)
        if files.meta.base_fingerprint != lm.fingerprint:
            raise UserError(f"The adapter '{name}' was trained on {files.meta.base_model}, not on {lm.name}: "
                            f"pick {files.meta.base_model} as the model to use it.")
        if lora.attach(lm, files.key, files.folder):
            answers = lm.engine.answers.get(files.key)
            self.hub.cache.grow(lm.cache_key, weights_size(files.folder) + (answers.memory if answers else 0))
        return files.key, files.meta

    def encoder(self, owner: str, kind: str, model: str, adapter: object, task: str, default: str = ""):
        """The loaded encoder of kind (see models.loading.LOADERS), with the adapter's LoRA and head merged into
        its own copy when one is chosen; model "" means the adapter's base (or default without an adapter)."""
        name = selected(adapter)
        if name is None:
            return self.hub.get(kind, self.reference(owner, model), default)
        files = self.files(owner, name, task)
        return self.hub.get(kind, self.reference(owner, model) or self.base(owner, name), default, files)

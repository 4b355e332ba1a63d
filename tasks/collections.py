"""Document collections on disk, per owner: a JSON manifest of documents and chunks, and per vector space
(embedding model + adapter) a float32 matrix of unit vectors with the chunk id of each row.

    collections/<owner>/<collection>/manifest.json
    collections/<owner>/<collection>/vectors/<space key>/{space.json, ids.npy, vectors.npy}
    collections/<owner>/.locks/<collection>.lock

The manifest is the truth; vectors are derived from it and keyed by chunk id, so a space that lacks some
chunks (a new model, a crash between writes) is filled in later instead of being wrong. Every file is written
to a temporary name and renamed into place; writers hold the collection's lock (threads and processes).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from filelock import FileLock

from accounts import Shares
from errors import NotFound, UserError
from tasks import vector_index
from tasks.documents import Document

VERSION = 1  # of the manifest's schema; an older manifest is migrated when read, never dropped
NAME_LIMIT = 64
_NAME = re.compile(r"\w[\w .-]*")  # \w: letters and digits of any script, and underscore


def check_name(name: object, what: str = "collection") -> str:
    """The stripped name if it is safe as a folder name, else a UserError saying what is allowed."""
    name = name.strip() if isinstance(name, str) else ""
    if not name:
        raise UserError(f"Please give the {what} a name.")
    if len(name) > NAME_LIMIT or not _NAME.fullmatch(name) or name.endswith("."):
        raise UserError(f"'{name[:80]}' cannot be a {what} name: use letters, digits, spaces, dashes, "
                        f"underscores and dots, start with a letter or digit, at most {NAME_LIMIT} characters.")
    return name


@dataclass(frozen=True)
class VectorSpace:
    """Which vectors: one embedding model with one adapter. A query never mixes two spaces."""

    model: str  # the name users see
    model_id: str  # what identifies the weights: catalog name, hub id or resolved folder
    adapter: str = ""
    adapter_key: str = ""  # the adapter's version: retraining under the same name gives new vectors

    @property
    def key(self) -> str:
        version = f"\n{self.adapter_key}" if self.adapter_key else ""
        return hashlib.sha256(f"{self.model_id}\n{self.adapter}{version}".encode()).hexdigest()[:16]

    @property
    def label(self) -> str:
        return f"{self.model} + {self.adapter}" if self.adapter else self.model


def nearest(matrix: np.ndarray, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Scores and row numbers of the k rows of matrix closest to query (unit vectors: cosine = dot product).

    Exact search below vector_index.EXACT_LIMIT rows; from there on an approximate FAISS index, built once per
    matrix content in the background (queries are answered exactly until it is ready).
    """
    return vector_index.search(matrix, query, k, wait=False)


@functools.lru_cache(maxsize=4)
def _load_vectors(ids: str, vectors: str, written_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """A generation's (ids, vectors), read once: generation files never change after they are written, so
    searches reuse the matrix in memory instead of reading it again (the write time guards a reused name)."""
    matrix = np.load(vectors)
    matrix.flags.writeable = False  # shared by every search of this generation
    found = np.load(ids)
    found.flags.writeable = False
    return found, matrix


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _replace(path: Path, write: Callable) -> None:
    """Write through write(file) to a temporary file beside path, then rename it into place."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _migrate(manifest: dict) -> dict:
    # Version 1 is the first schema; later versions upgrade older manifests here.
    manifest.setdefault("version", VERSION)
    return manifest


class Collection:
    """One owner's collection; get it from CollectionStore.open."""

    def __init__(self, folder: Path, lock_file: Path, thread_lock: threading.Lock, owner: str, name: str):
        self.folder, self.owner, self.name = folder, owner, name
        self._lock_file, self._thread_lock = lock_file, thread_lock

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the collection for a read-modify-write: threads here and other processes wait."""
        self._lock_file.parent.mkdir(parents=True, exist_ok=True)
        with self._thread_lock, FileLock(str(self._lock_file)):
            yield

    def exists(self) -> bool:
        return (self.folder / "manifest.json").is_file()

    def manifest(self) -> dict:
        """The manifest (documents and chunks); a new collection's is empty."""
        path = self.folder / "manifest.json"
        if not path.is_file():
            return {"version": VERSION, "owner": self.owner, "name": self.name, "created": _now(),
                    "next_chunk": 0, "documents": [], "chunks": []}
        return _migrate(json.loads(path.read_text(encoding="utf-8")))

    def spaces(self) -> list[VectorSpace]:
        """The vector spaces this collection has vectors in."""
        found = []
        for meta in sorted((self.folder / "vectors").glob("*/space.json")):
            fields = json.loads(meta.read_text(encoding="utf-8"))
            found.append(VectorSpace(fields["model"], fields["model_id"], fields.get("adapter", ""),
                                     fields.get("adapter_key", "")))
        return found

    def vectors(self, space: VectorSpace) -> tuple[np.ndarray, np.ndarray]:
        """(chunk ids, unit vectors) stored for space; empty when it has none yet."""
        folder = self.folder / "vectors" / space.key
        if not (folder / "space.json").is_file():
            return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
        generation = json.loads((folder / "space.json").read_text(encoding="utf-8"))["generation"]
        vectors = folder / f"vectors.{generation}.npy"
        return _load_vectors(str(folder / f"ids.{generation}.npy"), str(vectors), vectors.stat().st_mtime_ns)

    def snapshot(self, space: VectorSpace) -> tuple[dict, np.ndarray, np.ndarray]:
        """Manifest, chunk ids and vectors read together, so they belong to each other."""
        with self.locked():
            return self.manifest(), *self.vectors(space)

    def _write_manifest(self, manifest: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        body = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
        _replace(self.folder / "manifest.json", lambda f: f.write(body))

    def _write_vectors(self, space: VectorSpace, ids: np.ndarray, matrix: np.ndarray) -> None:
        # A new generation of both files, then space.json names it: a crash at any point leaves the
        # previous pair intact and matched, never ids of one write beside vectors of another.
        folder = self.folder / "vectors" / space.key
        folder.mkdir(parents=True, exist_ok=True)
        generation = uuid.uuid4().hex[:12]
        _replace(folder / f"vectors.{generation}.npy", lambda f: np.save(f, matrix.astype(np.float32)))
        _replace(folder / f"ids.{generation}.npy", lambda f: np.save(f, ids.astype(np.int64)))
        body = json.dumps({**asdict(space), "generation": generation}, ensure_ascii=False).encode("utf-8")
        _replace(folder / "space.json", lambda f: f.write(body))
        for stale in folder.glob("*.npy"):
            if generation not in stale.name:
                stale.unlink(missing_ok=True)

    def _merge_vectors(self, space: VectorSpace, keep: set[int], new_ids: list[int] | np.ndarray,
                       new_vectors: np.ndarray) -> None:
        """Store new rows for space; drop rows whose chunk left the manifest. The caller holds the lock."""
        ids, matrix = self.vectors(space)
        dim = new_vectors.shape[1]
        if len(ids) != len(matrix) or (len(ids) and matrix.shape[1] != dim):
            ids, matrix = np.zeros(0, np.int64), np.zeros((0, dim), np.float32)  # unusable: embed afresh
        have = set(ids.tolist())
        new_ids = np.asarray(new_ids, np.int64)
        old = np.fromiter((i in keep for i in ids.tolist()), bool, len(ids))
        fresh = np.fromiter((i in keep and i not in have for i in new_ids.tolist()), bool, len(new_ids))
        merged_ids = np.concatenate([ids[old], new_ids[fresh]])
        merged = np.concatenate([matrix[old].reshape(-1, dim), new_vectors[fresh].reshape(-1, dim)])
        self._write_vectors(space, merged_ids, merged)

    def store_vectors(self, space: VectorSpace, ids: list[int], vectors: np.ndarray) -> None:
        """Add vectors for existing chunks (a space that was missing some)."""
        with self.locked():
            keep = {c["id"] for c in self.manifest()["chunks"]}
            self._merge_vectors(space, keep, ids, vectors)

    def add(self, documents: list[tuple[Document, list, np.ndarray]], space: VectorSpace) -> dict:
        """Store (document, chunks, vectors) triples; the same content twice is skipped, a new version of a
        document (same name, other content) replaces the old one. Returns {added, replaced, skipped, chunks}."""
        added, replaced, skipped, new_ids, new_vectors = [], [], [], [], []
        with self.locked():
            manifest = self.manifest()
            for document, chunks, vectors in documents:
                known = next((d for d in manifest["documents"] if d["sha256"] == document.sha256), None)
                if known is not None:
                    skipped.append({"name": document.name, "reason": "already in the collection"
                                    + (f" as '{known['name']}'" if known["name"] != document.name else "")})
                    continue
                if any(d["name"] == document.name for d in manifest["documents"]):
                    if document.name in added:
                        skipped.append({"name": document.name,
                                        "reason": "another file with this name is in the same upload"})
                        continue
                    _drop_document(manifest, document.name)
                    replaced.append(document.name)
                first = manifest["next_chunk"]
                ids = list(range(first, first + len(chunks)))
                manifest["next_chunk"] = first + len(chunks)
                manifest["documents"].append({"name": document.name, "sha256": document.sha256,
                                              "added": _now(), "chunks": ids})
                manifest["chunks"] += [{"id": i, "text": c.text, "source": document.name, "index": n,
                                        "start": c.start, "end": c.end} for n, (i, c) in enumerate(zip(ids, chunks))]
                added.append(document.name)
                new_ids += ids
                new_vectors.append(vectors)
            if added or replaced:
                keep = {c["id"] for c in manifest["chunks"]}
                self._merge_vectors(space, keep, new_ids, np.concatenate(new_vectors))
                for other in self.spaces():
                    if other.key != space.key:
                        self._prune(other, keep)
                self._write_manifest(manifest)
        return {"added": added, "replaced": replaced, "skipped": skipped, "chunks": len(new_ids)}

    def _prune(self, space: VectorSpace, keep: set[int]) -> None:
        ids, matrix = self.vectors(space)
        rows = np.array([i in keep for i in ids.tolist()], bool)
        if len(ids) and not rows.all():
            self._write_vectors(space, ids[rows], matrix[rows])

    def remove(self, source: str) -> dict:
        """Remove a document by name; the collection goes away with its last document."""
        with self.locked():
            manifest = self.manifest()
            if not any(d["name"] == source for d in manifest["documents"]):
                raise NotFound(f"There is no document named '{source}' in the collection '{self.name}'.")
            _drop_document(manifest, source)
            if not manifest["documents"]:
                shutil.rmtree(self.folder)
            else:
                keep = {c["id"] for c in manifest["chunks"]}
                for space in self.spaces():
                    self._prune(space, keep)
                self._write_manifest(manifest)
        return {"removed": source, "documents": len(manifest["documents"]), "chunks": len(manifest["chunks"])}


def _drop_document(manifest: dict, name: str) -> None:
    manifest["documents"] = [d for d in manifest["documents"] if d["name"] != name]
    manifest["chunks"] = [c for c in manifest["chunks"] if c["source"] != name]


class CollectionStore:
    """All collections under one folder, one subfolder per owner; an owner also reads the collections an admin
    shared with everyone (read-only)."""

    def __init__(self, root: Path, shares: Shares | None = None):
        self.root = Path(root)
        self.shares = shares
        self._guard = threading.Lock()
        self._locks: dict[tuple[str, str], threading.Lock] = {}  # one per collection, made on first use

    def own_names(self, owner: str) -> list[str]:
        """The owner's own collections, sorted by name."""
        folder = self.root / check_name(owner, "owner")
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir()
                      if _NAME.fullmatch(p.name) and len(p.name) <= NAME_LIMIT and (p / "manifest.json").is_file())

    def names(self, owner: str) -> list[str]:
        """The collections owner may search (their own, then those shared with everyone), sorted by name."""
        own = self.own_names(owner)
        shared = {name for whose, name in self.shares.items("collection") if whose != owner} if self.shares else set()
        return own + sorted(shared - set(own))

    def owners(self) -> list[str]:
        """Everyone who has collections (an admin lists them all)."""
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.is_dir() else []

    def open(self, owner: str, name: str, must_exist: bool = True, writable: bool = False) -> Collection:
        """A collection owner may read (their own, else one shared with everyone), or with writable one they may
        change (their own; a new one when must_exist is False); a UserError when there is none by that name."""
        owner, name = check_name(owner, "owner"), check_name(name)
        collection = self._collection(owner, name)
        if collection.exists() or (writable and not must_exist):
            return collection
        for sharer in self.shares.owners_sharing("collection", name) if self.shares else []:
            shared = self._collection(sharer, name)
            if shared.exists():
                if writable:
                    raise UserError(f"The collection '{name}' is shared with you by {sharer}, read-only; only they "
                                    "can change it.")
                return shared
        raise NotFound(f"There is no collection named '{name}'; add documents to create it.")

    def _collection(self, owner: str, name: str) -> Collection:
        folder = (self.root / owner / name).resolve()
        if folder.parent != (self.root / owner).resolve():  # defence in depth: the name check already ensures it
            raise UserError(f"'{name}' cannot be a collection name.")
        with self._guard:
            lock = self._locks.setdefault((owner, name), threading.Lock())
        return Collection(folder, self.root / owner / ".locks" / f"{name}.lock", lock, owner, name)

    def move_owner(self, old: str, new: str) -> int:
        """Give every collection of old to new (the migration to accounts); a taken name gets a suffix."""
        moved = 0
        for name in self.own_names(old):
            target, suffix = name, 1
            while (self.root / new / target).exists():
                suffix += 1
                target = f"{name}-{suffix}"
            (self.root / new).mkdir(parents=True, exist_ok=True)
            (self.root / old / name).rename(self.root / new / target)
            moved += 1
        return moved

"""Semantic search over the user's document collections with sentence embeddings: exact nearest vectors for
small collections, an approximate index for large ones (tasks/vector_index.py)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from errors import UserError
from models import catalog
from models.embeddings import Embedder
from accounts import Shares
from config import LOCAL_USER
from tasks.base import Endpoint, Task, Upload, require_range, require_text
from tasks.collections import Collection, CollectionStore, VectorSpace, check_name, nearest
from tasks.spec import DataField, TaskSpec
from tasks.documents import Document, pasted_document, read_document

Progress = Callable[[float, str], None]  # (fraction done, what is happening)
MAX_RESULTS = 50
QUERY_LIMIT = 2_000  # characters; the model reads ~256 word pieces of it anyway


def _silent(fraction: float, message: str) -> None:
    pass


class SearchTask(Task):
    spec = TaskSpec(
        id="search", title="Search", endpoints=("add_documents", "search", "collections", "remove_document"),
        defaults={catalog.EMBEDDING: "all-MiniLM-L6-v2"},
        fields=(DataField("query", "what someone searches for"),
                DataField("positive", "the passage it should find"),
                DataField("negative", "a passage it should not find", required=False)),
        sample="search.csv",
        formats="Columns `query` and `positive` (the passage it should find); optional `negative` (one it should "
                "not).",
        metrics={"recall_at_1": "recall@1", "recall_at_5": "recall@5", "mrr": "MRR"},
        trainable=True, evaluated=True, adapter_kind="embedder")

    def __init__(self, ctx):
        super().__init__(ctx)
        self.store = CollectionStore(ctx.settings.path("collections"),
                                     Shares(ctx.settings.data_dir, ctx.settings.state_path()))

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("add_documents", self.add_documents), Endpoint("search", self.search),
                Endpoint("collections", self.collections), Endpoint("remove_document", self.remove_document)]

    # The public API: the owner comes from the request (ui/api.py), never from a parameter.
    def search(self, query: str, collection: str = "", k: int = 5, adapter: str = "", *, owner: str = LOCAL_USER,
               progress: Progress | None = None) -> list[dict]:
        """The k chunks closest in meaning to query, best first; collection "" searches all your collections."""
        return self.find(owner, query, collection, k, adapter, progress)

    def retrieve(self, query: str, collection: str = "", k: int = 5, *, owner: str = LOCAL_USER) -> list[dict]:
        """Same as search, without an adapter: the passages question answering reads."""
        return self.find(owner, query, collection, k)

    def collections(self, *, owner: str = LOCAL_USER) -> list[dict]:
        """Your collections (and those shared with everyone; every user's for an admin) with their documents,
        chunks and embedding models."""
        return self.summaries(owner, everyone=self.ctx.accounts.enabled and self.ctx.accounts.is_admin(owner))

    def remove_document(self, collection: str, source: str = "", *, owner: str = LOCAL_USER) -> dict:
        """Remove one document (by its source name) from one of your collections; returns what is left."""
        return self.remove(owner, collection, source)

    def add_documents(self, collection: str, files: list[Upload] | None = None, text: str = "", *,
                      owner: str = LOCAL_USER, progress: Progress | None = None) -> dict:
        """Add .txt, .md, .csv and .pdf files and/or pasted text to a collection, creating it if it is new."""
        return self.add(owner, collection, files, text, progress)

    @property
    def model(self) -> str:
        """The embedding model's catalog name (or what the operator configured)."""
        return self.default()

    # Per-owner work.
    def embedding(self, adapter: str = "", owner: str = LOCAL_USER) -> tuple[Embedder, VectorSpace]:
        """The embedding model (with the adapter attached) and the vector space it writes."""
        embedder = self.encoder("embedder", "", adapter, owner)
        source, trained = embedder.source, embedder.adapter
        # A catalog model is the same weights wherever it was installed from; other models are their location.
        model_id = source.name if catalog.find(source.name) else source.location
        return embedder, VectorSpace(source.name, model_id, trained.name if trained else "",
                                     trained.key if trained else "")

    def add(self, owner: str, collection: str, files: list[tuple[str, str]] | None, text: str = "",
            progress: Progress | None = None) -> dict:
        """Read, chunk, embed and store; a bad file is skipped with its reason while the others go in.

        Returns {added: [names], skipped: [{name, reason}], chunks: chunks added, replaced: [names]}.
        """
        progress = progress or _silent
        target = self.store.open(owner, collection, must_exist=False, writable=True)
        files = list(files or [])
        if not files and not (text or "").strip():
            raise UserError("Please upload a file or paste some text to add.")
        documents, skipped = self._read(files, text, progress)
        known = {d["sha256"]: d["name"] for d in target.manifest()["documents"]}
        fresh = []
        for document in documents:
            if document.sha256 in known:  # decided again under the lock on commit; this saves the embedding
                skipped.append({"name": document.name, "reason": "already in the collection"})
            else:
                known[document.sha256] = document.name
                fresh.append(document)
        result = {"added": [], "replaced": [], "chunks": 0}
        if fresh:
            result = self._embed_and_store(target, fresh, progress)
        progress(1.0, "Done")
        return {"added": result["added"], "skipped": skipped + result.get("skipped", []),
                "chunks": result["chunks"], "replaced": result["replaced"]}

    def _read(self, files: list[tuple[str, str]], text: str, progress: Progress) -> tuple[list[Document], list]:
        documents, skipped = [], []
        limit = self.ctx.settings.max_upload_mb
        if (text or "").strip():
            documents.append(pasted_document(require_text(text, "text", limit * 2**20)))
        for number, (path, name) in enumerate(files):
            progress(0.1 * number / len(files), f"Reading {name}")
            try:
                documents.append(read_document(path, name, limit))
            except UserError as error:
                skipped.append({"name": name, "reason": str(error)})
        return documents, skipped

    def _embed_and_store(self, target: Collection, documents: list[Document], progress: Progress) -> dict:
        embedder, space = self.embedding()
        pieces = [document.chunks() for document in documents]
        texts = [chunk.text for chunks in pieces for chunk in chunks]

        def embedded(done: int, total: int) -> None:
            progress(0.1 + 0.85 * done / total, f"Embedding chunk {done} of {total}")

        vectors = embedder.encode(texts, progress=embedded)
        progress(0.96, "Saving")
        bounds = np.cumsum([0] + [len(chunks) for chunks in pieces])
        triples = [(d, c, vectors[bounds[i]:bounds[i + 1]]) for i, (d, c) in enumerate(zip(documents, pieces))]
        return target.add(triples, space)

    def find(self, owner: str, query: str, collection: str = "", k: int = 5, adapter: str = "",
             progress: Progress | None = None) -> list[dict]:
        """Search one collection, or all the owner's collections when collection is ""."""
        query = require_text(query, "query", QUERY_LIMIT)
        require_range(k, "The number of results", 1, MAX_RESULTS)
        if (collection or "").strip():
            targets = [self.store.open(owner, collection)]
        else:
            targets = [self.store.open(owner, name) for name in self.store.names(owner)]
            if not targets:
                raise UserError("There are no collections yet: add documents first.")
        embedder, space = self.embedding(adapter, owner)
        vector = embedder.encode([query])[0]
        hits = [hit for target in targets
                for hit in self._search_one(target, embedder, space, vector, int(k), progress or _silent)]
        return sorted(hits, key=lambda hit: -hit["score"])[:int(k)]

    def _search_one(self, target: Collection, embedder: Embedder, space: VectorSpace, vector: np.ndarray, k: int,
                    progress: Progress) -> list[dict]:
        manifest, ids, matrix = target.snapshot(space)
        chunks = {chunk["id"]: chunk for chunk in manifest["chunks"]}
        missing = sorted(set(chunks) - set(ids.tolist()))
        if missing:  # first search with another model or adapter: embed the collection for it once
            def embedded(done: int, total: int) -> None:
                progress(done / total, f"Embedding '{target.name}' for {space.label}: {done} of {total}")

            target.store_vectors(space, missing, embedder.encode([chunks[i]["text"] for i in missing],
                                                                 progress=embedded))
            manifest, ids, matrix = target.snapshot(space)
            chunks = {chunk["id"]: chunk for chunk in manifest["chunks"]}
        scores, rows = nearest(matrix, vector, k)
        hits = []
        for score, row in zip(scores.tolist(), rows.tolist()):
            chunk = chunks.get(int(ids[row]))
            if chunk is not None:
                hits.append({"score": round(float(score), 4), "text": chunk["text"], "source": chunk["source"],
                             "chunk": chunk["index"], "collection": target.name})
        return hits

    def summaries(self, owner: str, everyone: bool = False) -> list[dict]:
        """The collections owner may search (every owner's with everyone=True, for an admin):
        {name, documents, chunks, model, owner, shared}."""
        shared = self.store.shares.items("collection") if self.store.shares else set()
        places = ([(whose, name) for whose in self.store.owners() for name in self.store.own_names(whose)]
                  if everyone else [(owner, name) for name in self.store.names(owner)])
        out = []
        for whose, name in places:
            target = self.store.open(whose, name)
            manifest = target.manifest()
            out.append({"name": name, "documents": len(manifest["documents"]), "chunks": len(manifest["chunks"]),
                        "model": ", ".join(space.label for space in target.spaces()), "owner": target.owner,
                        "shared": (target.owner, name) in shared})
        return out

    def documents(self, owner: str, collection: str) -> list[dict]:
        """The documents of a collection: name, chunks and when each was added ([] for a new collection)."""
        if not (collection or "").strip() or check_name(collection) not in self.store.names(owner):
            return []
        manifest = self.store.open(owner, collection).manifest()
        return [{"name": d["name"], "chunks": len(d["chunks"]), "added": d["added"]} for d in manifest["documents"]]

    def remove(self, owner: str, collection: str, source: str) -> dict:
        """Remove a document of the owner's; {removed, documents, chunks} left."""
        source = require_text(source, "document name", 1_000)
        return self.store.open(owner, collection, writable=True).remove(source)

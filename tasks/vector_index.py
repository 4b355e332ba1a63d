"""Nearest unit vectors by inner product: exact below a size threshold, an approximate FAISS index above it.

Small collections are searched exactly with one matrix product (a few milliseconds up to ~50,000 rows). Above
the threshold an inverted-file index (`faiss.IndexIVFFlat`, inner product) is built once per matrix content and
kept in a small LRU cache, so repeated queries reuse it. Its scores are exact inner products of the candidates
it finds; only rows in clusters it does not visit can be missed. `nprobe` (clusters visited per query) is tuned
at build time on sample queries until recall@10 against exact search reaches `TARGET_RECALL`.

Matrices are treated as immutable: a changed collection is a new matrix (new content, new cache entry).
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
import weakref
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EXACT_LIMIT = 50_000  # below this many rows exact search is fast enough and always right
TARGET_RECALL = 0.97  # recall@10 nprobe is tuned for, on queries sampled from the collection
CACHE_ENTRIES = 4  # indexes kept at once (least recently used dropped first)
CACHE_BYTES = 4 << 30  # and at most this much memory held by them (the newest is always kept)
_TRAIN_PER_LIST = 40  # k-means trains on this many rows per cluster (faiss wants >= 39)
_FINGERPRINT_ROWS = 1024


def exact_search(matrix: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k rows by inner product: (scores, rows), each (queries, min(k, rows)), best first."""
    queries = np.atleast_2d(queries)
    k = min(k, len(matrix))
    scores = np.zeros((len(queries), k), np.float32)
    rows = np.zeros((len(queries), k), np.int64)
    if k == 0:
        return scores, rows
    step = max(1, (1 << 26) // len(matrix))  # queries per block: at most 64M scores (256 MB) at once
    for start in range(0, len(queries), step):
        chunk = queries[start:start + step]
        block = (matrix @ chunk[0])[None] if len(chunk) == 1 else chunk @ matrix.T  # (block, rows)
        top = np.argpartition(-block, k - 1, axis=1)[:, :k]
        picked = np.take_along_axis(block, top, axis=1)
        order = np.argsort(-picked, axis=1, kind="stable")
        rows[start:start + step] = np.take_along_axis(top, order, axis=1)
        scores[start:start + step] = np.take_along_axis(picked, order, axis=1)
    return scores, rows


@dataclass
class ApproximateIndex:
    """A FAISS inverted-file index over one matrix, with the nprobe its build-time check chose."""

    index: object  # faiss.IndexIVFFlat
    rows: int
    nlist: int
    nprobe: int
    recall: float  # recall@10 measured at build time on sample queries
    build_s: float

    @property
    def nbytes(self) -> int:
        return self.rows * self.index.d * 4

    @classmethod
    def build(cls, matrix: np.ndarray, target_recall: float = TARGET_RECALL, seed: int = 0) -> ApproximateIndex:
        """Train k-means on a sample, add every row, then pick the smallest nprobe that reaches target_recall."""
        import faiss

        started = time.perf_counter()
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        n, dim = matrix.shape
        # 2 sqrt(n) lists (~2,000 for a million rows): half the usual 4 sqrt(n) keeps training and adding to
        # about a minute on 2 cores, for a few thousand more rows scanned per query; never fewer rows per
        # list than k-means needs.
        nlist = max(1, min(int(2 * math.sqrt(n)), n // 39))
        rng = np.random.default_rng(seed)
        sample = matrix[np.sort(rng.choice(n, min(n, nlist * _TRAIN_PER_LIST), replace=False))]
        quantizer = faiss.IndexFlatIP(dim)
        index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit vectors: keep the centroids on the sphere
        index.cp.niter = 10
        index.cp.seed = seed
        index.train(sample)
        index.add(matrix)
        nprobe, recall = _tune_nprobe(index, matrix, target_recall, rng)
        index.nprobe = nprobe
        built = cls(index, n, nlist, nprobe, recall, time.perf_counter() - started)
        log.info("built an IVF index over %d vectors: nlist %d, nprobe %d, recall@10 %.3f, %.1f s",
                 n, nlist, nprobe, recall, built.build_s)
        return built

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(scores, rows) like exact_search; a query with fewer than k candidates searches every list."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        k = min(k, self.rows)
        if k == 0:
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        scores, rows = self.index.search(queries, k)
        short = (rows < 0).any(axis=1)  # the visited clusters held fewer than k rows: visit them all
        if short.any():
            import faiss

            every = faiss.SearchParametersIVF(nprobe=self.nlist)
            scores[short], rows[short] = self.index.search(queries[short], k, params=every)
        return scores, rows


def _tune_nprobe(index, matrix: np.ndarray, target: float, rng: np.random.Generator,
                 queries: int = 200, k: int = 10) -> tuple[int, float]:
    """The smallest power-of-two nprobe whose recall@k on perturbed sample rows reaches target."""
    n, dim = matrix.shape
    picks = rng.choice(n, min(n, queries), replace=False)
    # A query is near a stored row but not on it (cosine ~0.9), like a question near its answer.
    sample = matrix[picks] + rng.standard_normal((len(picks), dim), dtype=np.float32) * (0.5 / math.sqrt(dim))
    sample /= np.linalg.norm(sample, axis=1, keepdims=True)
    k = min(k, n)
    _, truth = exact_search(matrix, sample, k)
    nprobe, recall = 1, 0.0
    while True:
        index.nprobe = nprobe
        _, found = index.search(sample, k)
        recall = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(found.tolist(), truth.tolist())]))
        if recall >= target or nprobe >= index.nlist:
            return nprobe, recall
        nprobe = min(nprobe * 2, index.nlist)


def fingerprint(matrix: np.ndarray) -> str:
    """A cheap identity of a matrix's content: its shape and a hash of evenly spaced rows and the last rows."""
    n = len(matrix)
    rows = np.unique(np.concatenate([np.linspace(0, n - 1, min(n, _FINGERPRINT_ROWS)).astype(np.int64),
                                     np.arange(max(0, n - 8), n)]))
    digest = hashlib.blake2b(np.ascontiguousarray(matrix[rows], dtype=np.float32).tobytes(), digest_size=16)
    return f"{matrix.shape}:{digest.hexdigest()}"


class IndexCache:
    """Approximate indexes by matrix content, least recently used dropped first; safe to share between threads."""

    def __init__(self, max_entries: int = CACHE_ENTRIES, max_bytes: int = CACHE_BYTES):
        self.max_entries, self.max_bytes = max_entries, max_bytes
        self.builds = 0  # indexes built so far (tests check reuse with it)
        self._entries: OrderedDict[str, ApproximateIndex] = OrderedDict()
        self._building: dict[str, threading.Lock] = {}  # one lock per content being built
        self._pending: set[str] = set()  # contents a background thread is building
        self._seen: dict[int, tuple[weakref.ref, str]] = {}  # id(matrix) -> its fingerprint, skips rehashing
        self._guard = threading.Lock()

    def search(self, matrix: np.ndarray, queries: np.ndarray, k: int, threshold: int = EXACT_LIMIT,
               wait: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows) of matrix for each query; 1-D query in, 1-D results out.

        Exact below threshold rows; approximate above. With wait=False a missing index is built in the
        background and this query is answered exactly, so no request stalls on a build.
        """
        single = np.ndim(queries) == 1
        if len(matrix) == 0:
            shape = (0,) if single else (len(queries), 0)
            return np.zeros(shape, np.float32), np.zeros(shape, np.int64)
        index = self.index(matrix, wait) if len(matrix) >= max(threshold, 1) else None
        scores, rows = (index.search if index else lambda q, n: exact_search(matrix, q, n))(queries, k)
        return (scores[0], rows[0]) if single else (scores, rows)

    def index(self, matrix: np.ndarray, wait: bool = True) -> ApproximateIndex | None:
        """The cached index for matrix, built now (wait) or in a background thread (None until it is ready)."""
        key = self._key(matrix)
        with self._guard:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key]
            lock = self._building.setdefault(key, threading.Lock())
            if not wait:
                if key in self._pending:
                    return None
                self._pending.add(key)
        if not wait:
            copy = np.array(matrix, dtype=np.float32)  # the caller may drop or change its array meanwhile
            threading.Thread(target=self._build, args=(key, lock, copy), name="vector-index-build",
                             daemon=True).start()
            return None
        return self._build(key, lock, matrix)

    def _build(self, key: str, lock: threading.Lock, matrix: np.ndarray) -> ApproximateIndex:
        with lock:  # one build per content; a second caller waits for the first and reuses its index
            with self._guard:
                if key in self._entries:
                    return self._entries[key]
            try:
                built = ApproximateIndex.build(matrix)
            except BaseException:
                with self._guard:
                    self._pending.discard(key)
                    self._building.pop(key, None)
                raise
            with self._guard:  # stored before the lock is forgotten, so no one starts a second build
                self.builds += 1
                self._entries[key] = built
                self._pending.discard(key)
                self._building.pop(key, None)
                while len(self._entries) > 1 and (len(self._entries) > self.max_entries or
                                                  sum(e.nbytes for e in self._entries.values()) > self.max_bytes):
                    self._entries.popitem(last=False)
            return built

    def _key(self, matrix: np.ndarray) -> str:
        seen = self._seen.get(id(matrix))
        if seen is not None and seen[0]() is matrix:
            return seen[1]
        key = fingerprint(matrix)
        try:
            with self._guard:
                self._seen = {i: s for i, s in self._seen.items() if s[0]() is not None}
                self._seen[id(matrix)] = (weakref.ref(matrix), key)
        except TypeError:  # a view or object that takes no weak references: hash it each time
            pass
        return key

    def clear(self) -> None:
        """Forget every index (tests; memory pressure)."""
        with self._guard:
            self._entries.clear()
            self._seen.clear()


_shared = IndexCache()  # the app's indexes: shared by all users, like the model cache


def search(matrix: np.ndarray, queries: np.ndarray, k: int, threshold: int = EXACT_LIMIT,
           wait: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Top-k (scores, rows) of unit-vector matrix for queries (1-D or 2-D), through the shared index cache."""
    return _shared.search(matrix, queries, k, threshold, wait)

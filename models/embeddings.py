"""Sentence embeddings: batched, normalised, with progress, safe to share between request threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from models import lazy
from models.threads import in_own_thread

torch = lazy.module("torch")

Progress = Callable[[int, int], None]  # (texts done, texts in all)
SHARED_BATCH = 32  # texts; requests up to this size are run together with others that wait at the same time


class _Request:
    """Texts waiting for a shared forward pass, and their vectors once it ran."""

    def __init__(self, texts: list[str]):
        self.texts = texts
        self.vectors: np.ndarray | None = None
        self.error: Exception | None = None


class Embedder:
    """A loaded sentence-transformers model; encode() returns unit-length float32 vectors."""

    def __init__(self, source, model, adapter=None, bf16: bool = False):
        self.source = source
        self.model = model
        self.adapter = adapter  # the lora.AdapterFiles merged into the model, if any
        # bf16 autocast where the hardware computes bf16 fast: measured quicker on a CPU with AVX512-BF16
        # (bench/README), and the vectors stay within cosine 0.9999 of fp32's (bench/embed.py checks it).
        self.bf16 = bf16
        self._lock = threading.Lock()  # one forward at a time: concurrent callers queue, not oversubscribe
        self._waiting_lock = threading.Lock()
        self._waiting: list[_Request] = []  # short requests not yet run
        self.forward_passes = 0  # how many batches ran: shows that concurrent requests share them

    @property
    def name(self) -> str:
        return self.source.name

    @property
    def dimension(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length or 256)

    def run(self, command):
        """command() while holding the model (a view that reads more than vectors, such as its attention), in a
        thread that ends with it (models.threads.in_own_thread says why)."""
        with self._lock:
            return in_own_thread(command, inference=True)

    def encode(self, texts: list[str], batch_size: int = 32, progress: Progress | None = None) -> np.ndarray:
        """(len(texts), dimension) unit vectors; longest texts are batched together to waste no padding.

        A short request (a query, a few sentences) waits to join others: whichever caller gets the model runs
        every waiting short request in one batch, so concurrent users share forward passes instead of queueing.
        """
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if len(texts) <= SHARED_BATCH and progress is None:
            return self._encode_shared(texts)
        # one thread of its own for the whole call: starting one per batch cost ~5% of the time
        return in_own_thread(lambda: self._encode_batches(texts, batch_size, progress))

    def _encode_batches(self, texts: list[str], batch_size: int, progress: Progress | None) -> np.ndarray:
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]), reverse=True)
        out = np.zeros((len(texts), self.dimension), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            batch = order[start:start + batch_size]
            with self._lock:
                out[batch] = self._forward([texts[i] for i in batch])
            if progress is not None:
                progress(min(start + batch_size, len(texts)), len(texts))
        return out

    def _encode_shared(self, texts: list[str]) -> np.ndarray:
        request = _Request(texts)
        with self._waiting_lock:
            self._waiting.append(request)
        with self._lock:  # holding the model, run waiting requests (oldest first) until this one has run
            while request.vectors is None and request.error is None:
                with self._waiting_lock:
                    batch, self._waiting = self._take(self._waiting)
                try:
                    vectors = in_own_thread(lambda: self._forward([text for r in batch for text in r.texts]))
                except Exception as error:  # each caller of the batch gets the error, not a silent None
                    for r in batch:
                        r.error = error
                    continue
                bounds = np.cumsum([0] + [len(r.texts) for r in batch])
                for i, r in enumerate(batch):
                    r.vectors = vectors[bounds[i]:bounds[i + 1]]
        if request.error is not None:
            raise request.error
        return request.vectors

    @staticmethod
    def _take(waiting: list) -> tuple[list, list]:
        """The waiting requests to run now (up to SHARED_BATCH texts, at least one request) and the rest."""
        taken, size = 0, 0
        while taken < len(waiting) and (taken == 0 or size + len(waiting[taken].texts) <= SHARED_BATCH):
            size += len(waiting[taken].texts)
            taken += 1
        return waiting[:taken], waiting[taken:]

    def _forward(self, texts: list[str]) -> np.ndarray:
        """One forward pass; the caller holds the model's lock, in a thread that ends with its work (in_own_thread:
        a request thread would keep an OpenMP pool that slows the chat engine's steps while it lives)."""
        self.forward_passes += 1
        with torch.inference_mode(), torch.autocast(self.model.device.type, torch.bfloat16, enabled=self.bf16):
            vectors = self.model.encode(texts, batch_size=len(texts), convert_to_numpy=True,
                                        normalize_embeddings=True, show_progress_bar=False)
        return vectors.astype(np.float32)

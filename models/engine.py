"""One generation engine per loaded language model.

Its single worker thread owns the model. Requests enter a queue with their own sampling settings, adapter and
stop flag; the loop runs batched decode steps over every active request (each row may use a different LoRA
adapter), hands each new token to its request as soon as it exists, and lets requests join and leave between
steps. Commands that change the model (attaching an adapter) run in the same thread, between steps.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache

log = logging.getLogger(__name__)

BASE = "__base__"  # peft's name for "no adapter" in a mixed-adapter batch
_END = object()


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 256
    temperature: float = 0.7  # 0 means greedy
    top_p: float = 0.95
    seed: int | None = None


@dataclass(eq=False)
class Request:
    prompt_ids: list[int]
    params: SamplingParams
    adapter: str | None = None
    stop: threading.Event = field(default_factory=threading.Event)
    tokens: queue.Queue = field(default_factory=queue.Queue)  # token ids, then _END or an exception

    def token_ids(self) -> Iterator[int]:
        """Each generated token id as soon as the engine has it; closing the iterator stops the request."""
        try:
            while True:
                item = self.tokens.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.stop.set()


@dataclass(eq=False)
class _Row:
    request: Request
    generator: torch.Generator | None
    produced: int = 0
    last: int = 0  # the token the next step feeds in
    done: bool = False


class GenerationEngine:
    """Continuous batching over a causal LM (optionally a peft model with several adapters)."""

    def __init__(self, model, eos_ids: set[int], pad_id: int, context_length: int, max_batch: int = 16):
        self.model = model
        self.device = next(model.parameters()).device
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.context_length = context_length
        self.max_batch = max_batch
        self._inbox: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="generation-engine", daemon=True)
        self._thread.start()

    # ---- called from request threads ------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None) -> Request:
        if self._closed:
            raise RuntimeError("the engine is closed")
        request = Request(list(prompt_ids), params, adapter)
        self._inbox.put(request)
        return request

    def call(self, command: Callable[[], object]) -> object:
        """Run command in the engine thread between decode steps and return its result."""
        future: Future = Future()
        self._inbox.put((command, future))
        return future.result()

    def close(self) -> None:
        self._closed = True
        self._inbox.put(None)

    # ---- the engine thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        rows: list[_Row] = []
        cache: DynamicCache | None = None
        mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        while True:
            newcomers = self._collect(block=not rows, room=self.max_batch - len(rows))
            if newcomers is None:
                break
            try:
                with torch.inference_mode():
                    if newcomers:
                        rows, cache, mask = self._admit(rows, cache, mask, newcomers)
                    elif rows:
                        cache, mask = self._step(rows, cache, mask)
                    rows, cache, mask = self._retire(rows, cache, mask)
            except Exception as error:  # a failed step fails its requests, never the engine
                log.exception("generation step failed")
                for row in rows + newcomers:
                    row.request.tokens.put(RuntimeError(f"generation failed: {error}"))
                rows, cache = [], None
                mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        for row in rows:
            row.request.tokens.put(_END)

    def _collect(self, block: bool, room: int) -> list[_Row] | None:
        """New requests waiting in the inbox (running commands on the way); None once the engine is closed."""
        newcomers: list[_Row] = []
        while room > len(newcomers):
            try:
                item = self._inbox.get(block=block and not newcomers)
            except queue.Empty:
                break
            if item is None:
                return None
            if isinstance(item, tuple):
                command, future = item
                try:
                    future.set_result(command())
                except Exception as error:
                    future.set_exception(error)
                continue
            if not item.stop.is_set():
                newcomers.append(_Row(item, _generator(item.params.seed, self.device)))
        return newcomers

    def _forward(self, rows: list[_Row], input_ids, mask, cache, positions):
        kwargs = {}
        if hasattr(self.model, "peft_config"):
            kwargs["adapter_names"] = [row.request.adapter or BASE for row in rows]
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[:, -1, :], out.cache

    def _admit(self, rows, cache, mask, newcomers):
        """Prefill the newcomers as one left-padded batch, emit their first token and merge them into the batch."""
        width = max(len(r.request.prompt_ids) for r in newcomers)
        ids = torch.full((len(newcomers), width), self.pad_id, dtype=torch.long)
        new_mask = torch.zeros(len(newcomers), width, dtype=torch.long)
        for i, row in enumerate(newcomers):
            prompt = row.request.prompt_ids
            ids[i, width - len(prompt):] = torch.tensor(prompt)
            new_mask[i, width - len(prompt):] = 1
        ids, new_mask = ids.to(self.device), new_mask.to(self.device)
        positions = (new_mask.cumsum(-1) - 1).clamp(min=0)
        logits, new_cache = self._forward(newcomers, ids, new_mask, DynamicCache(), positions)
        self._emit(newcomers, logits)
        if not rows:
            return newcomers, new_cache, new_mask
        cache, mask = _merge(cache, mask, new_cache, new_mask)
        return rows + newcomers, cache, mask

    def _step(self, rows, cache, mask):
        last = torch.tensor([[r.last] for r in rows], dtype=torch.long, device=self.device)
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=mask.dtype, device=self.device)], dim=1)
        positions = mask.sum(-1, keepdim=True) - 1
        logits, cache = self._forward(rows, last, mask, cache, positions)
        self._emit(rows, logits)
        return cache, mask

    def _emit(self, rows: list[_Row], logits: torch.Tensor) -> None:
        for row, row_logits in zip(rows, logits):
            token = _sample(row_logits.float(), row.request.params, row.generator)
            row.last = token
            row.produced += 1
            if token in self.eos_ids:
                row.done = True
                continue
            row.request.tokens.put(token)
            row.done = row.produced >= row.request.params.max_new_tokens

    def _retire(self, rows, cache, mask):
        """Drop finished or stopped rows, and cache columns no remaining row attends to."""
        keep = []
        for i, row in enumerate(rows):
            length = int(mask[i].sum()) + 1
            if row.done or row.request.stop.is_set() or length >= self.context_length:
                row.request.tokens.put(_END)
            else:
                keep.append(i)
        if not keep:
            return [], None, torch.zeros(0, 0, dtype=torch.long, device=self.device)
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=self.device)
            cache.batch_select_indices(index)
            mask = mask.index_select(0, index)
            rows = [rows[i] for i in keep]
            first = int(mask.any(dim=0).nonzero()[0])
            if first > 0:
                cache = DynamicCache([(k[:, :, first:], v[:, :, first:]) for k, v, *_ in cache])
                mask = mask[:, first:]
        return rows, cache, mask


def _merge(cache, mask, new_cache, new_mask):
    """Stack two left-padded batches: pad the shorter on the left so both end at the current token."""
    width = max(mask.shape[1], new_mask.shape[1])

    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - t.shape[dim]
        if missing == 0:
            return t
        shape = list(t.shape)
        shape[dim] = missing
        return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

    layers = [(torch.cat([pad(k1, 2), pad(k2, 2)]), torch.cat([pad(v1, 2), pad(v2, 2)]))
              for (k1, v1, *_), (k2, v2, *_) in zip(cache, new_cache)]
    return DynamicCache(layers), torch.cat([pad(mask, 1), pad(new_mask, 1)])


def _generator(seed: int | None, device: torch.device) -> torch.Generator | None:
    if seed is None:
        return None
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed)
    return generator


def _sample(logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None) -> int:
    if params.temperature <= 0:
        return int(logits.argmax())
    probs = torch.softmax(logits / params.temperature, dim=-1)
    if params.top_p < 1.0:
        sorted_probs, order = probs.sort(descending=True)
        # keep the smallest set of tokens whose mass reaches top_p (always at least the most likely one)
        drop = sorted_probs.cumsum(-1) - sorted_probs > params.top_p
        sorted_probs[drop] = 0
        probs = torch.zeros_like(probs).scatter(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))

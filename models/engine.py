"""One generation engine per loaded language model.

Its single worker thread owns the model. Requests enter a queue with their own sampling settings, adapter and
stop flag; the loop runs batched decode steps over every active request (each row may use a different LoRA
adapter), hands each new token to its request as soon as it exists, and lets requests join and leave between
steps. Commands that change the model (attaching an adapter) run in the same thread, between steps.

Admission is fair: waiting requests are taken round-robin across callers (one caller is one task request: a chat,
or a whole translation's lines), so one caller's thousand requests never delay another's first token by more than
a few steps. A row whose sampling fails fails alone. Closing drains: requests already submitted still finish.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections import Counter, OrderedDict, deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field

from models import lazy
from models.lora import PEFT_BASE
from models.speculation import MIN_SHARE, STEP_DRAFTS, AnswerCorpus, Drafter, verify

torch = lazy.module("torch")
DynamicCache = lazy.attribute("transformers", "DynamicCache")

log = logging.getLogger(__name__)

GREEDY_BELOW = 0.01  # a temperature under this is greedy: dividing logits by ~0 overflows to inf/nan
_END = object()
_callers = itertools.count()


def new_caller() -> int:
    """An id for one task request, so the engine can take turns between requests."""
    return next(_callers)


class EngineClosed(RuntimeError):
    """The model was unloaded: the engine takes no new requests."""


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
    caller: int = field(default_factory=new_caller)  # requests of one caller take turns with other callers'
    stop: threading.Event = field(default_factory=threading.Event)
    tokens: queue.Queue = field(default_factory=queue.Queue)  # token ids, then _END or an exception
    produced: int = 0  # tokens read from it so far

    def token_ids(self) -> Iterator[int]:
        """Each generated token id as soon as the engine has it; closing the iterator stops the request."""
        try:
            while True:
                item = self.tokens.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                self.produced += 1
                yield item
        finally:
            self.stop.set()

    def texts(self, tokenizer) -> Iterator[str]:
        """The whole reply so far, decoded, once per new token that changes it; closing it stops the request."""
        ids: list[int] = []
        shown = ""
        for token in self.token_ids():
            ids.append(token)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            # A token can end inside a multi-byte character; wait for the rest.
            if text != shown and not text.endswith("\ufffd"):
                shown = text
                yield shown


@dataclass(eq=False)
class _Row:
    request: Request
    generator: torch.Generator | None
    drafter: Drafter | None = None  # None: this row is decoded one token per step
    produced: int = 0
    last: int = 0  # the token the next step feeds in
    done: bool = False


class GenerationEngine:
    """Continuous batching over a causal LM (optionally a peft model with several adapters)."""

    def __init__(self, model, eos_ids: set[int], pad_id: int, context_length: int, max_batch: int = 16,
                 speculate: bool = True, decoder=None):
        self.model = model
        self.decoder = decoder  # a lean forward pass for this model (models/decoder.py), or None: the model's own
        self.speculate = speculate  # prompt-lookup drafts (models/speculation.py); the answers are the same either way
        self.answers: dict[str, AnswerCorpus] = {}  # adapter key -> its training answers, drafted from too
        self.device = next(model.parameters()).device
        self.eos_ids = eos_ids
        self.pad_id = pad_id
        self.context_length = context_length
        self.max_batch = max_batch
        self._inbox: queue.Queue = queue.Queue()
        self._waiting: OrderedDict[int, deque[Request]] = OrderedDict()  # caller -> requests, in turn order
        self._unfinished = 0  # requests submitted and not yet ended (guarded by _count_lock)
        self.forward_passes = 0  # batched model calls so far: shows that concurrent requests share them
        self.drafted = self.accepted = 0  # draft tokens proposed and kept so far: the acceptance rate
        self._count_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="generation-engine", daemon=True)
        self._thread.start()

    # ---- called from request threads ------------------------------------------------------------------
    def submit(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
               caller: int | None = None) -> Request:
        if self._closed:
            raise EngineClosed("the engine is closed")
        request = Request(list(prompt_ids), params, adapter, **({} if caller is None else {"caller": caller}))
        with self._count_lock:
            self._unfinished += 1
        self._inbox.put(request)
        return request

    @property
    def busy(self) -> bool:
        """Whether requests are waiting or being generated (an engine in use must not be unloaded)."""
        return self._unfinished > 0

    def call(self, command: Callable[[], object]) -> object:
        """Run command in the engine thread between decode steps and return its result."""
        if self._closed:
            raise EngineClosed("the engine is closed")
        future: Future = Future()
        self._inbox.put((command, future))
        while True:
            try:
                return future.result(timeout=1.0)
            except TimeoutError:
                if not self._thread.is_alive():  # closed while the command waited
                    raise EngineClosed("the engine is closed") from None

    def close(self) -> None:
        """Take no new requests; the ones submitted still finish, then the thread ends."""
        self._closed = True
        self._inbox.put(None)

    # ---- the engine thread -------------------------------------------------------------------------------
    def _run(self) -> None:
        rows: list[_Row] = []
        cache: DynamicCache | None = None
        mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        draining = False
        while not (draining and not rows and not self._waiting):
            draining = self._receive(block=not rows and not self._waiting and not draining) or draining
            newcomers = self._admit_waiting(rows)
            if not newcomers and not rows:
                continue
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
                    self._finish(row.request, RuntimeError(f"generation failed: {error}"))
                rows, cache = [], None
                mask = torch.zeros(0, 0, dtype=torch.long, device=self.device)
        self._refuse_late()

    def _finish(self, request: Request, outcome: object = _END) -> None:
        """End a request with its last item: _END, or the exception its reader raises."""
        request.tokens.put(outcome)
        with self._count_lock:
            self._unfinished -= 1

    def _receive(self, block: bool) -> bool:
        """Move what is in the inbox to the waiting lines (running commands on the way); True once closed."""
        closed = False
        while True:
            try:
                item = self._inbox.get(block=block)
            except queue.Empty:
                return closed
            block = False
            if item is None:
                closed = True
            elif isinstance(item, tuple):
                command, future = item
                try:
                    future.set_result(command())
                except Exception as error:
                    future.set_exception(error)
                if self.decoder is not None:  # the command may have attached adapters or changed the model
                    self.decoder.forget()
            else:
                self._waiting.setdefault(item.caller, deque()).append(item)

    def _admit_waiting(self, rows: list[_Row]) -> list[_Row]:
        """Waiting requests for the free rows, one per caller in turn (a caller just served goes to the back).

        No caller holds more than half the rows, so another caller's request always finds one free soon."""
        newcomers: list[_Row] = []
        held = Counter(row.request.caller for row in rows)
        for caller in list(self._waiting):
            line = self._waiting[caller]
            while line and line[0].stop.is_set():  # stopped before it started
                self._finish(line.popleft())
            if not line:
                del self._waiting[caller]
        while len(rows) + len(newcomers) < self.max_batch:
            ready = [c for c in self._waiting if held[c] < max(1, self.max_batch // 2)]
            if not ready:
                break
            caller = ready[0]
            line = self._waiting[caller]
            request = line.popleft()
            held[caller] += 1
            if line:
                self._waiting.move_to_end(caller)
            else:
                del self._waiting[caller]
            drafter = Drafter(request.prompt_ids, self.answers.get(request.adapter)) if self.speculate else None
            newcomers.append(_Row(request, _generator(request.params.seed, self.device), drafter))
        return newcomers

    def _refuse_late(self) -> None:
        """Requests that raced close() into the inbox after the engine's last step end with EngineClosed."""
        while True:
            try:
                item = self._inbox.get(block=False)
            except queue.Empty:
                return
            if isinstance(item, Request):
                self._finish(item, EngineClosed("the model was unloaded"))
            elif isinstance(item, tuple):
                item[1].set_exception(EngineClosed("the model was unloaded"))

    def _forward(self, rows: list[_Row], input_ids, mask, cache, positions, keep: int = 1):
        """Logits of the last `keep` positions of each row, and the grown cache."""
        self.forward_passes += 1
        kwargs = {}
        if hasattr(self.model, "peft_config"):
            kwargs["adapter_names"] = [row.request.adapter or PEFT_BASE for row in rows]
        if self.decoder is not None:
            logits = self.decoder.forward(input_ids, mask, positions, cache, keep, kwargs.get("adapter_names"))
            if logits is not None:
                return logits, cache
        out = self.model(input_ids=input_ids, attention_mask=mask, position_ids=positions, cache=cache,
                         use_cache=True, logits_to_keep=keep, **kwargs)
        return out.logits[:, -keep:, :], out.cache

    def _admit(self, rows, cache, mask, newcomers):
        """Prefill the newcomers in batches of similar prompt lengths, emit their first tokens and merge them into
        the batch (left-padding a short prompt to a long one would make it cost the long one's work)."""
        for group in _similar_lengths(newcomers):
            rows, cache, mask = self._prefill(rows, cache, mask, group)
        return rows, cache, mask

    def _prefill(self, rows, cache, mask, newcomers):
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
        self._emit(newcomers, logits, [[] for _ in newcomers])
        if not rows:
            return newcomers, new_cache, new_mask
        cache, mask = _merge(cache, mask, new_cache, new_mask)
        return rows + newcomers, cache, mask

    def _step(self, rows, cache, mask):
        """One decode step: each row's next token, followed by its draft where it has one, in one forward pass.

        Rows with shorter drafts are padded on the right; the cache columns of padding and of rejected draft tokens
        are masked out (and dropped once no row uses them), so every row attends to exactly its own accepted text."""
        share = STEP_DRAFTS // len(rows)
        share = share if share >= MIN_SHARE else 0
        drafts = [self._draft(row, mask[i], share) for i, row in enumerate(rows)]
        width = 1 + max(map(len, drafts))
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        fed = torch.zeros(len(rows), width, dtype=mask.dtype)
        for i, (row, draft) in enumerate(zip(rows, drafts)):
            ids[i, :1 + len(draft)] = torch.tensor([row.last, *draft])
            fed[i, :1 + len(draft)] = 1
        start = mask.shape[1]
        mask = torch.cat([mask, fed.to(self.device)], dim=1)
        positions = (mask.cumsum(-1) - 1)[:, start:].clamp(min=0)  # holes left by rejected drafts take no position
        logits, cache = self._forward(rows, ids.to(self.device), mask, cache, positions, keep=width)
        accepted = self._emit(rows, logits, drafts)
        if width > 1:
            for i, kept in enumerate(accepted):
                mask[i, start + 1 + kept:] = 0
            cache, mask = _drop_holes(cache, mask)
        return cache, mask

    def _draft(self, row: _Row, row_mask: torch.Tensor, share: int) -> list[int]:
        """The row's draft: no longer than its share of the step, the tokens it may still produce or the room left
        in its context."""
        if row.drafter is None or share == 0:
            return []
        remaining = row.request.params.max_new_tokens - row.produced - 1  # the step's own token comes on top
        room = self.context_length - int(row_mask.sum()) - 2
        return row.drafter.propose(min(share, remaining, room))

    def _emit(self, rows: list[_Row], logits: torch.Tensor, drafts: list[list[int]]) -> list[int]:
        """Hand each row its tokens of this step: the verified part of its draft, then the model's own next token.

        Returns how many draft tokens each row kept."""
        accepted = []
        for row, row_logits, draft in zip(rows, logits, drafts):
            kept = 0
            params = row.request.params
            try:
                for position in range(len(draft) + 1):
                    guess = draft[position] if position < len(draft) else None
                    token, agreed = verify(row_logits[position].float(), guess, params.temperature, params.top_p,
                                           row.generator, GREEDY_BELOW)
                    self._hand(row, token)
                    if not agreed or row.done:
                        break
                    kept += 1
            except (RuntimeError, ValueError) as error:  # this row's settings failed: only this row ends
                row.request.tokens.put(RuntimeError(f"sampling failed: {error}"))
                row.done = True
            if draft:
                row.drafter.adapt(len(draft), kept)
                self.drafted += len(draft)
                self.accepted += kept
            accepted.append(kept)
        return accepted

    def _hand(self, row: _Row, token: int) -> None:
        row.last = token
        row.produced += 1
        if row.drafter is not None:
            row.drafter.append(token)
        if token in self.eos_ids:
            row.done = True
            return
        row.request.tokens.put(token)
        row.done = row.produced >= row.request.params.max_new_tokens

    def _retire(self, rows, cache, mask):
        """Drop finished or stopped rows, and cache columns no remaining row attends to."""
        keep = []
        for i, row in enumerate(rows):
            length = int(mask[i].sum()) + 1
            if row.done or row.request.stop.is_set() or length >= self.context_length:
                self._finish(row.request)
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


HOLES_KEPT = 16  # masked columns tolerated inside the cache before it is compacted
PADDING_KEPT = 1.25  # a prefill batch may compute this many times its prompts' own tokens


def _similar_lengths(rows: list[_Row]) -> list[list[_Row]]:
    """Rows in batches, shortest prompts first, each padded to at most PADDING_KEPT times its real tokens."""
    groups: list[list[_Row]] = []
    for row in sorted(rows, key=lambda r: len(r.request.prompt_ids)):
        length = len(row.request.prompt_ids)
        group = groups[-1] if groups else None
        if group and (len(group) + 1) * length <= PADDING_KEPT * (sum(len(r.request.prompt_ids) for r in group)
                                                                  + length):
            group.append(row)
        else:
            groups.append([row])
    return groups


def _drop_holes(cache, mask):
    """Crop columns no row uses at the end; when rejected drafts have left many inside, move each row's columns
    to the right (left-padded again) so attention stops paying for them."""
    used = mask.any(dim=0)
    end = int(used.nonzero()[-1]) + 1 if used.any() else 0
    if end < mask.shape[1]:
        cache.crop(end - mask.shape[1])
        mask = mask[:, :end]
    lengths = mask.sum(-1)
    width = int(lengths.max())
    if mask.shape[1] - width <= HOLES_KEPT:
        return cache, mask
    # each row's used columns, in order, right-aligned into `width` columns; padding reads column 0 (masked)
    order = torch.sort(mask * torch.arange(1, mask.shape[1] + 1, device=mask.device), dim=1, stable=True).indices
    index = order[:, -width:]
    new_mask = mask.gather(1, index)
    index = index * new_mask  # masked slots all read column 0
    layers = []
    for k, v, *_ in cache:
        gather = index[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
        layers.append((k.gather(2, gather), v.gather(2, gather)))
    return DynamicCache(layers), new_mask


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

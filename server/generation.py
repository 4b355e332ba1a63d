"""Generation for /v1: a request's sampling settings, n and stop strings read and checked, its choices run in the
app's engine (one request takes one turn, however many choices it has), each read in its own thread with stop
strings cut out of the text, streamed or collected, and the token counts OpenAI reports as usage.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import replace

from fastapi import Request

from models.engine import SamplingParams, new_caller
from server.edge import ApiError
from tasks.chat import Prompt, Reply, sampling

MAX_CHOICES = 8  # n per request, as the Chat tab's alternatives
MAX_STOPS = 4  # OpenAI's own limit on stop sequences
MAX_STOP_CHARS = 200  # a longer stop string would hold back the whole stream
CHECK_EVERY_S = 0.5  # how often a generation checks that its client is still there
IGNORED_WHEN_EMPTY = ("functions", "logit_bias", "response_format")  # sent empty by some clients


def _number(body: dict, name: str, default, kind=float):
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and int(value) != value):
        raise ApiError(400, f"'{name}' must be a number, not {str(value)[:40]!r}.", param=name)
    return kind(value)


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    stops = [] if stop is None else [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or len(stops) > MAX_STOPS or not all(
            isinstance(s, str) and 0 < len(s) <= MAX_STOP_CHARS for s in stops):
        raise ApiError(400, f"'stop' must be a string or a list of at most {MAX_STOPS} strings of 1 to "
                            f"{MAX_STOP_CHARS} characters.", param="stop")
    return stops


def _refuse_unsupported(body: dict) -> None:
    for name in IGNORED_WHEN_EMPTY:
        if body.get(name):
            raise ApiError(400, f"'{name}' is not supported by this server.", param=name)
    if body.get("logprobs") or body.get("echo") or body.get("suffix"):
        name = next(n for n in ("logprobs", "echo", "suffix") if body.get(n))
        raise ApiError(400, f"'{name}' is not supported by this server.", param=name)
    if body.get("best_of") is not None and _number(body, "best_of", 1, int) != _number(body, "n", 1, int):
        raise ApiError(400, "'best_of' is not supported by this server.", param="best_of")


def generation_settings(body: dict, max_tokens_default: int) -> tuple[SamplingParams, int, list[str]]:
    """Sampling parameters, n and the stop strings of a chat or completion request."""
    _refuse_unsupported(body)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    max_tokens = max_tokens_default if max_tokens is None else _number({"max_tokens": max_tokens}, "max_tokens",
                                                                          None, int)
    n = _number(body, "n", 1, int)
    if not 1 <= n <= MAX_CHOICES:
        raise ApiError(400, f"'n' must be between 1 and {MAX_CHOICES}, not {n}.", param="n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ApiError(400, "'seed' must be a whole number.", param="seed")
    temperature = _number(body, "temperature", 1.0)
    top_p = max(0.01, _number(body, "top_p", 1.0))  # top_p 0 means "only the likeliest token", as 0.01 does
    return sampling(temperature, top_p, max_tokens, seed), n, _stops(body)


def _stop_at(text: str, stops: list[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


class Generation:
    """The choices of one request (n per prompt), each read in its own thread; their text arrives in one
    asyncio queue as ("text", index, piece), ("end", index, finish_reason) or ("error", index, exception).

    Text that could be the start of a stop string is held back until it is not, so streamed pieces always add
    up to the non-streamed text."""

    def __init__(self, prompts: list[Prompt], params: SamplingParams, n: int, stops: list[str]):
        self.loop = asyncio.get_running_loop()
        self.events: asyncio.Queue = asyncio.Queue()
        self.stops = stops
        self.params = params
        caller = new_caller()  # one request takes one turn in the engine, however many choices it has
        self.replies: list[Reply] = []
        for prompt in prompts:
            for j in range(n):
                seeded = params if params.seed is None else replace(params, seed=params.seed + j)
                self.replies.append(prompt.start(seeded, caller))
        self.prompt_tokens = sum(len(prompt.ids) for prompt in prompts)
        for index in range(len(self.replies)):
            threading.Thread(target=self._read, args=(index,), name="openai-choice", daemon=True).start()

    @property
    def completion_tokens(self) -> int:
        return sum(reply.tokens for reply in self.replies)

    def _put(self, *event) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)

    def _read(self, index: int) -> None:
        reply = self.replies[index]
        hold = max((len(s) for s in self.stops), default=1) - 1
        texts = reply.texts()
        text, sent, searched, reason = "", 0, 0, None
        try:
            for text in texts:
                # Only the new text (and the few characters before it a stop string may start in) is searched.
                start = max(0, searched - hold)
                cut = _stop_at(text[start:], self.stops)
                searched = len(text)
                if cut is not None:
                    cut += start
                    text, reason = text[:cut], "stop"
                    break
                if len(text) - hold > sent:
                    self._put("text", index, text[sent:len(text) - hold])
                    sent = len(text) - hold
        except Exception as error:  # noqa: BLE001  (the reader hands every failure to the request)
            self._put("error", index, error)
            return
        finally:
            texts.close()  # stops the row when a stop string ended it early
        if len(text) > sent:
            self._put("text", index, text[sent:])
        reason = reason or reply.finish_reason
        self._put("end", index, reason)

    def stop(self) -> None:
        for reply in self.replies:
            reply.request.stop.set()

    async def collect(self, request: Request) -> tuple[list[str], list[str]]:
        """Every choice's text and finish reason; a client that goes away stops the rows."""
        texts, reasons = [""] * len(self.replies), [""] * len(self.replies)
        async for kind, index, value in self.stream(request):
            if kind == "text":
                texts[index] += value
            else:
                reasons[index] = value
        return texts, reasons

    async def stream(self, request: Request) -> AsyncIterator[tuple]:
        """The events until every choice ended; raises the first error; always stops the rows it leaves."""
        ended, checked = 0, time.monotonic()
        try:
            while ended < len(self.replies):
                try:
                    kind, index, value = await asyncio.wait_for(self.events.get(), timeout=CHECK_EVERY_S)
                except TimeoutError:
                    kind = None
                if time.monotonic() - checked >= CHECK_EVERY_S:  # also while tokens flow
                    if await request.is_disconnected():
                        return
                    checked = time.monotonic()
                if kind is None:
                    continue
                if kind == "error":
                    raise value
                ended += kind == "end"
                yield kind, index, value
        finally:
            self.stop()


def usage(generation: Generation) -> dict:
    """A request's token counts, as OpenAI reports them."""
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


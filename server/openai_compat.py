"""OpenAI-compatible routes (/v1) on the app's own server and port.

They call the same task code as the UI, so a request through the `openai` client batches in the same generation
engine as a chat in the browser, reads the same adapters and obeys the same ownership and limits. The caller is
the owner of the API key in `Authorization: Bearer ...` (with accounts), else the single local user. `model` is a
base model, one of the caller's adapters (listed in /v1/models with `parent` = its base, as vLLM does) or
`base:adapter` (as SGLang also accepts). Errors come in OpenAI's JSON shape with the status of the app's error
kind (errors.py) and its one sentence.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import json
import os
import secrets
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from config import LOCAL_USER
from errors import NotFound, OverLimit, TooLarge, UserError, internal_sentence
from models import catalog, offline
from models.adapters import META_FILE, sanitize_name
from models.engine import SamplingParams, new_caller
from models.remote import ADAPTER_FILES
from tasks.base import Context, Upload
from tasks.chat import Prompt, Reply, message_text, sampling

MAX_CHOICES = 8  # n per request, as the Chat tab's alternatives
MAX_STOPS = 4  # OpenAI's own limit on stop sequences
MAX_STOP_CHARS = 200  # a longer stop string would hold back the whole stream
MAX_INPUTS = 2048  # embedding inputs per request, OpenAI's own limit
CHECK_EVERY_S = 0.5  # how often a generation checks that its client is still there
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
               413: "invalid_request_error", 429: "rate_limit_error", 500: "server_error",
               503: "server_error"}
IGNORED_WHEN_EMPTY = ("tools", "functions", "logit_bias", "response_format")  # sent empty by some clients


class ApiError(Exception):
    """An error with its HTTP status and OpenAI error code (a UserError carries its status itself)."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.code, self.param = status, code, param


def error_body(error: BaseException) -> tuple[int, dict]:
    """Any error as (status, OpenAI's error object): the app's sentence for the ones a user caused, a sentence
    with a reference otherwise."""
    if isinstance(error, ApiError):
        status, message, code, param = error.status, str(error), error.code, error.param
    elif isinstance(error, UserError):
        status, message, code, param = error.status, str(error), error.code, None
    else:
        status, message, code, param = 500, internal_sentence(error), None, None
    return status, {"message": message, "type": ERROR_TYPES.get(status, "invalid_request_error"), "param": param,
                    "code": code}


def as_response(error: BaseException) -> JSONResponse:
    status, body = error_body(error)
    return JSONResponse({"error": body}, status_code=status)


def _chunk(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


# ---- reading a request ---------------------------------------------------------------------------------------

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


# ---- generating ------------------------------------------------------------------------------------------------

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
                self.replies.append(Reply(prompt.lm, prompt.lm.generate(prompt.ids, seeded, prompt.adapter, caller)))
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
        if reason is None:
            full = len(reply.request.prompt_ids) + reply.tokens >= reply.lm.context_length
            reason = "length" if reply.tokens >= self.params.max_new_tokens or full else "stop"
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


# ---- the routes ------------------------------------------------------------------------------------------------

class OpenAIRoutes:
    """/v1/models, /v1/chat/completions, /v1/completions and /v1/embeddings over the app's tasks."""

    def __init__(self, ctx: Context, chat, search, library):
        self.ctx = ctx
        self.chat = chat  # tasks.chat.ChatTask
        self.search = search  # tasks.search.SearchTask
        self.library = library  # tasks.library.AdapterLibrary
        self._running: Counter[str] = Counter()
        self._lock = threading.Lock()

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1")
        router.add_api_route("/models", self._route(self.models), methods=["GET"])
        router.add_api_route("/models/{model:path}", self._route(self.model), methods=["GET"])
        router.add_api_route("/chat/completions", self._route(self.chat_completions), methods=["POST"])
        router.add_api_route("/completions", self._route(self.completions), methods=["POST"])
        router.add_api_route("/embeddings", self._route(self.embeddings), methods=["POST"])
        router.add_api_route("/load_lora_adapter", self._route(self.load_lora_adapter), methods=["POST"])
        return router

    @staticmethod
    def _route(handler: Callable) -> Callable:
        async def route(request: Request):
            try:
                return await handler(request)
            except Exception as error:  # noqa: BLE001  (every error becomes OpenAI's error JSON)
                return as_response(error)
        route.__name__ = handler.__name__
        return route

    # ---- who is asking, and how much they run ---------------------------------------------------------------
    def caller(self, request: Request) -> str:
        """The owner the request acts as: its API key's user with accounts, else the local user."""
        header = request.headers.get("authorization", "")
        key = header[7:].strip() if header[:7].lower() == "bearer " else ""
        accounts = self.ctx.accounts
        if accounts.enabled or os.environ.get("OAUTH_CLIENT_ID"):
            owner = accounts.keys.owner_of(key)
            if owner is None or (accounts.enabled and not owner.startswith("hf-") and not accounts.exists(owner)):
                raise ApiError(401, "This server needs an API key: create one in the Account panel and send it "
                                    "as 'Authorization: Bearer KEY'.", code="invalid_api_key")
            return owner
        expected = self.ctx.settings.api_key
        if expected and not hmac.compare_digest(key.encode(), expected.encode()):
            raise ApiError(401, "This server needs its API key, sent as 'Authorization: Bearer KEY'.",
                           code="invalid_api_key")
        return LOCAL_USER

    def check_room(self, owner: str, count: int) -> None:
        """An OverLimit (429) when count more generations would take owner over the per-user limit."""
        limit = self.ctx.settings.api_requests_per_user
        if self._running[owner] + count > limit:
            raise OverLimit(f"You have {self._running[owner]} generations running and the limit is {limit}; "
                            "wait for one to finish and try again.")

    @contextmanager
    def running(self, owner: str, count: int):
        """Count count generations as owner's until the block ends; over the per-user limit is a 429."""
        with self._lock:
            self.check_room(owner, count)
            self._running[owner] += count
        try:
            yield
        finally:
            with self._lock:
                self._running[owner] -= count

    async def body(self, request: Request) -> dict:
        """The request's JSON object, read with a size limit: a stranger's gigabyte never reaches memory."""
        limit = self.ctx.settings.max_chars * 8 + 2**20  # max_chars of text even fully \u-escaped, plus the rest
        too_large = TooLarge(f"The request is larger than {limit / 2**20:.1f} MB, more than this server reads.")
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:  # refused before a byte of it is read
            raise too_large
        received, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:  # a client that sent no length, or a wrong one
                raise too_large
            received.append(chunk)
        try:
            body = json.loads(b"".join(received))
        except ValueError:  # not JSON, or not UTF-8
            raise ApiError(400, "The request body must be a JSON object.") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.")
        return body

    # ---- which model ---------------------------------------------------------------------------------------
    def _is_adapter(self, owner: str, name: str) -> bool:
        try:
            if name != sanitize_name(name):  # a hub id such as org/name is never an adapter
                return False
            self.ctx.adapters.store.locate(owner, name)
            return True
        except UserError:
            return False

    def choose(self, owner: str, model: object, family: str) -> tuple[str | catalog.ModelSource, str]:
        """(base reference, adapter) that a request's `model` names: one of the caller's adapters,
        `base:adapter` or a base ("" = the default); an unknown one is a NotFound (404)."""
        if model is not None and not isinstance(model, str):
            raise ApiError(400, "'model' must be a string.", param="model")
        model = (model or "").strip()
        if model and self._is_adapter(owner, model):
            return "", model
        base, adapter = model, ""
        if ":" in model and not os.path.isdir(model):
            base, _, adapter = model.rpartition(":")
            if not self._is_adapter(owner, adapter):
                raise NotFound(f"There is no adapter named '{adapter[:80]}'.")
        return self.base_reference(owner, base, family), adapter

    def base_reference(self, owner: str, base: str, family: str) -> str | catalog.ModelSource:
        """What loads the base a request names: the caller's merged model by its name, the model as typed, or
        the folder a listed name stands for; an unknown one is refused before anything loads."""
        merged = self.ctx.adapters.reference(owner, base)
        if merged is not base:
            return merged
        try:
            self.ctx.hub.source(base, self.ctx.hub.default(family))
            return base
        except NotFound:
            listed = self.bases(family).get(base)  # a loaded model is listed by its name, not its folder
            if listed is None:
                raise
            return listed

    def bases(self, family: str) -> dict[str, str]:
        """The base models of a family to list, by the name clients see (never a server path): the default,
        the catalog's offline ones and the loaded ones; each with the reference that loads it."""
        kind = "lm" if family == catalog.DECODER else "embedder"
        default = self.ctx.hub.default(family)
        try:
            named = {self.ctx.hub.source(default).name: default}
        except UserError:  # the operator's default is not reachable now: not listed
            named = {}
        for backbone in catalog.CATALOG.values():
            if backbone.family == family and backbone.offline is not None and offline.installed(backbone.offline):
                named.setdefault(backbone.name, backbone.name)
        for source in self.ctx.hub.loaded_sources(kind):
            named.setdefault(source.name, source.location)
        return named

    # ---- GET /v1/models ----------------------------------------------------------------------------------
    async def models(self, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(self.caller, request)  # it reads the accounts' files
        return JSONResponse({"object": "list", "data": await run_in_threadpool(self.model_list, owner)})

    async def model(self, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(self.caller, request)
        wanted = request.path_params["model"]
        found = next((m for m in await run_in_threadpool(self.model_list, owner) if m["id"] == wanted), None)
        if found is None:
            raise NotFound(f"There is no model '{wanted[:80]}' here; GET /v1/models lists them.")
        return JSONResponse(found)

    def model_list(self, owner: str) -> list[dict]:
        """The bases that are loaded or available offline, the embedding models, and the caller's adapters."""
        entries: dict[str, dict] = {}

        def add(name: str, task: str, owned_by: str = "lora-studio", created: float = 0, parent: str | None = None):
            entries.setdefault(name, {"id": name, "object": "model", "created": int(created), "owned_by": owned_by,
                                      "parent": parent, "task": task})

        for family in (catalog.DECODER, catalog.EMBEDDING):
            for name in self.bases(family):
                add(name, self._base_task(name, family))
        for merged in self.ctx.adapters.merged.list(owner):  # language and embedding models (not classifiers)
            task = {catalog.DECODER: "chat" if merged.get("task") == "chat" else "completion",
                    catalog.EMBEDDING: "embeddings"}.get(merged.get("family", catalog.DECODER))
            if task:
                add(merged["name"], task, owner, merged.get("created", 0), merged.get("base_model"))
        for adapter in self.ctx.adapters.store.list(owner):
            task = {"chat": "chat", "search": "embeddings"}.get(adapter["task"])
            if task:
                add(adapter["name"], task, adapter["owner"], adapter["created"], adapter["base"])
        return list(entries.values())

    def _base_task(self, name: str, family: str) -> str:
        if family == catalog.EMBEDDING:
            return "embeddings"
        backbone = catalog.find(name)
        if backbone is not None:
            return "chat" if backbone.chat else "completion"
        loaded = next((v for k, v in self.ctx.hub.cache.values() if k.startswith("lm:") and v.name == name), None)
        return "chat" if loaded is not None and loaded.has_chat_template else "completion"

    # ---- POST /v1/chat/completions ------------------------------------------------------------------------
    async def chat_completions(self, request: Request):
        owner = await run_in_threadpool(self.caller, request)  # it reads the accounts' files
        body = await self.body(request)
        params, n, stops = generation_settings(body, max_tokens_default=512)
        system, turns, message = split_messages(body.get("messages"))
        base, adapter = await run_in_threadpool(self.choose, owner, body.get("model"), catalog.DECODER)
        prompt = await run_in_threadpool(self.chat.prompt, message, turns, system, base, adapter,
                                         params.max_new_tokens, owner=owner)
        if prompt.dropped:
            raise ApiError(400, f"The messages are longer than {prompt.lm.name} can read with a reply of "
                                f"{params.max_new_tokens} tokens (it reads {prompt.lm.context_length} in all): leave "
                                "out older messages or ask for fewer max_tokens.", code="context_length_exceeded")
        model_id = (body.get("model") or "").strip() or prompt.lm.name
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._respond(request, owner, [prompt], params, n, stops, bool(body.get("stream")),
                                   include_usage, ChatFormat(model_id))

    # ---- POST /v1/completions ----------------------------------------------------------------------------
    async def completions(self, request: Request):
        owner = await run_in_threadpool(self.caller, request)  # it reads the accounts' files
        body = await self.body(request)
        params, n, stops = generation_settings(body, max_tokens_default=16)  # OpenAI's own default
        texts = prompts_of(body.get("prompt"))
        if len(texts) * n > MAX_CHOICES:
            raise ApiError(400, f"Ask for at most {MAX_CHOICES} completions per request (prompts times n).",
                           param="n")
        base, adapter = await run_in_threadpool(self.choose, owner, body.get("model"), catalog.DECODER)
        prompts = [await run_in_threadpool(self.chat.continuation, text, base, adapter, params.max_new_tokens,
                                           owner=owner) for text in texts]
        model_id = (body.get("model") or "").strip() or prompts[0].lm.name
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._respond(request, owner, prompts, params, n, stops, bool(body.get("stream")),
                                   include_usage, CompletionFormat(model_id))

    async def _respond(self, request: Request, owner: str, prompts: list[Prompt], params: SamplingParams, n: int,
                       stops: list[str], stream: bool, include_usage: bool, shape: "ChatFormat"):
        count = len(prompts) * n
        if not stream:
            with self.running(owner, count):
                generation = Generation(prompts, params, n, stops)
                texts, reasons = await generation.collect(request)
            return JSONResponse(shape.whole(texts, reasons, usage(generation)))
        self.check_room(owner, count)  # over the limit: a 429 status, before the stream starts

        async def events() -> AsyncIterator[str]:
            try:
                with self.running(owner, count):  # held, and the rows stopped, however the stream ends
                    generation = Generation(prompts, params, n, stops)
                    for index in range(count):
                        yield _chunk(shape.start(index))
                    async for kind, index, value in generation.stream(request):
                        yield _chunk(shape.piece(index, value) if kind == "text" else shape.end(index, value))
                    if include_usage:
                        yield _chunk(shape.usage(usage(generation)))
                    yield "data: [DONE]\n\n"
            except Exception as error:  # noqa: BLE001  (a stream can only end with an error event)
                yield _chunk({"error": error_body(error)[1]})

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- POST /v1/load_lora_adapter (vLLM's route: a LoRA Studio in front registers its adapters here) ------
    async def load_lora_adapter(self, request: Request) -> PlainTextResponse:
        owner = await run_in_threadpool(self.caller, request)
        accounts = self.ctx.accounts
        if not (accounts.is_admin(owner) if accounts.enabled else bool(self.ctx.settings.api_key)):
            raise ApiError(403, "Only this server's operator may load adapters from its folders: with accounts an "
                                "admin's API key, without them the key set with --api-key.")
        body = await self.body(request)
        name = body.get("lora_name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "'lora_name' must name the adapter.", param="lora_name")
        if not self._is_adapter(owner, name.strip()):
            files = adapter_uploads(body.get("lora_path"))
            base = await run_in_threadpool(self._served_base, owner, body.get("base_model_name"))
            await run_in_threadpool(self.library.import_adapter, files, name.strip(), "chat", base, owner=owner)
        return PlainTextResponse(f"Success: LoRA adapter '{name.strip()}' added successfully.")  # as vLLM says

    def _served_base(self, owner: str, name: object) -> str:
        """The base a loaded adapter goes on: the one named (as /v1/models lists it), else the default."""
        if name is not None and not isinstance(name, str):
            raise ApiError(400, "'base_model_name' must be a string.", param="base_model_name")
        reference = self.base_reference(owner, (name or "").strip() or self.ctx.hub.default(catalog.DECODER),
                                        catalog.DECODER)
        return reference.location if isinstance(reference, catalog.ModelSource) else reference

    # ---- POST /v1/embeddings -------------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(self.caller, request)  # it reads the accounts' files
        body = await self.body(request)
        texts = body.get("input")
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, list) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise ApiError(400, "'input' must be a non-empty text or a list of non-empty texts (token ids are not "
                                "accepted).", param="input")
        limit = self.ctx.settings.max_chars
        if len(texts) > MAX_INPUTS or sum(map(len, texts)) > limit:
            raise TooLarge(f"Send at most {MAX_INPUTS} texts and {limit:,} characters in all per request.")
        encoding = body.get("encoding_format") or "float"
        if encoding not in ("float", "base64"):
            raise ApiError(400, "'encoding_format' must be float or base64.", param="encoding_format")
        if body.get("dimensions") is not None:
            raise ApiError(400, "'dimensions' is not supported by this server.", param="dimensions")
        base, adapter = await run_in_threadpool(self.choose, owner, body.get("model"), catalog.EMBEDDING)
        embedder = await run_in_threadpool(self.search.encoder, "embedder", base, adapter, owner)
        vectors = await run_in_threadpool(embedder.encode, texts)
        tokens = sum(min(len(ids), embedder.max_tokens) for ids in embedder.model.tokenizer(texts)["input_ids"])
        data = [{"object": "embedding", "index": i,
                 "embedding": (base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
                               if encoding == "base64" else [float(x) for x in v])}
                for i, v in enumerate(vectors)]
        model_id = (body.get("model") or "").strip() or embedder.name
        return JSONResponse({"object": "list", "data": data, "model": model_id,
                             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})


def adapter_uploads(path: object) -> list[Upload]:
    """The PEFT files of an adapter folder on this server, for the library's import (which checks them)."""
    folder = Path(path.strip()) if isinstance(path, str) and path.strip() else None
    if folder is None or not folder.is_dir() or not all((folder / f).is_file() for f in ADAPTER_FILES):
        raise ApiError(400, "'lora_path' must be a folder on this server holding adapter_config.json and "
                            "adapter_model.safetensors.", param="lora_path")
    return [Upload(str(folder / f), f) for f in (*ADAPTER_FILES, META_FILE) if (folder / f).is_file()]


def prompts_of(prompt: object) -> list[str | list[int]]:
    """A completion request's prompts: a text, a list of texts, token ids or a list of token-id lists."""
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return prompt
    raise ApiError(400, "'prompt' must be a text, a list of texts, or token ids.", param="prompt")


def usage(generation: Generation) -> dict:
    prompt, completion = generation.prompt_tokens, generation.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def split_messages(messages: object) -> tuple[str, list[dict], str]:
    """(system prompt, earlier turns, the last user message) from OpenAI chat messages."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} messages.", param="messages")
    system, turns = [], []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(message_text(message.get("content")))
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": message_text(message.get("content"))})
        else:
            raise ApiError(400, "Each message needs a role of system, user or assistant (tool messages are not "
                                "supported).", param="messages")
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's.", param="messages")
    return "\n\n".join(s for s in system if s.strip()), turns[:-1], turns[-1]["content"]


class ChatFormat:
    """The shapes of a chat completion: whole, and streamed as chunks."""

    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str):
        self.model = model
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, texts: list[str], reasons: list[str], counts: dict) -> dict:
        return {**self._head(self.object), "usage": counts,
                "choices": [self.choice(i, text, reason) for i, (text, reason) in enumerate(zip(texts, reasons))]}

    def choice(self, index: int, text: str, reason: str) -> dict:
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": reason}

    def start(self, index: int) -> dict:
        return self._streamed(index, {"role": "assistant", "content": ""}, None)

    def piece(self, index: int, text: str) -> dict:
        return self._streamed(index, {"content": text}, None)

    def end(self, index: int, reason: str) -> dict:
        return self._streamed(index, {}, reason)

    def _streamed(self, index: int, delta, reason: str | None) -> dict:
        return {**self._head(self.chunk_object),
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]}

    def usage(self, counts: dict) -> dict:
        return {**self._head(self.chunk_object), "choices": [], "usage": counts}


class CompletionFormat(ChatFormat):
    """The shapes of a (legacy) text completion: the same events, with text instead of messages."""

    object = chunk_object = "text_completion"

    def __init__(self, model: str):
        super().__init__(model)
        self.id = "cmpl-" + secrets.token_hex(12)

    def choice(self, index: int, text: str, reason: str) -> dict:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    def start(self, index: int) -> dict:
        return self._streamed(index, "", None)

    def piece(self, index: int, text: str) -> dict:
        return self._streamed(index, text, None)

    def end(self, index: int, reason: str) -> dict:
        return self._streamed(index, "", reason)

    def _streamed(self, index: int, text, reason: str | None) -> dict:
        return {**self._head(self.chunk_object),
                "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": reason}]}

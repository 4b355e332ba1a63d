"""OpenAI-compatible routes (/v1) on the app's own server and port.

They call the same task code as the UI, so a request through the `openai` client batches in the same generation
engine as a chat in the browser, reads the same adapters and obeys the same ownership and limits. This module holds
the routes themselves; the HTTP edge (caller, limits, errors) is server/edge.py, model naming server/naming.py,
generation with stop strings server/generation.py and OpenAI's shapes server/formats.py.
"""

from __future__ import annotations

import base64
import threading
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from errors import NotFound, TooLarge
from models import catalog
from models.adapters import META_FILE
from models.engine import SamplingParams
from models.remote import ADAPTER_FILES
from server.edge import ApiError, Edge, error_body, route
from server.formats import ChatFormat, CompletionFormat, chunk, prompts_of, read_messages
from server.generation import MAX_CHOICES, Generation, generation_settings, usage
from server.naming import ModelNames
from server.tools import CallStream, ToolUse, tool_use
from tasks.base import Context, Upload
from tasks.chat import Prompt
from tasks.grounding import asks_documents

MAX_INPUTS = 2048  # embedding inputs per request, OpenAI's own limit


class OpenAIRoutes:
    """/v1/models, /v1/chat/completions, /v1/completions and /v1/embeddings over the app's tasks."""

    def __init__(self, ctx: Context, chat, search, library):
        self.ctx = ctx
        self.chat = chat  # tasks.chat.ChatTask
        self.search = search  # tasks.search.SearchTask
        self.library = library  # tasks.library.AdapterLibrary
        self.edge = Edge(ctx)
        self.naming = ModelNames(ctx)
        self._loading = threading.Lock()

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1")
        router.add_api_route("/models", route(self.models), methods=["GET"])
        router.add_api_route("/models/{model:path}", route(self.model), methods=["GET"])
        router.add_api_route("/chat/completions", route(self.chat_completions), methods=["POST"])
        router.add_api_route("/completions", route(self.completions), methods=["POST"])
        router.add_api_route("/embeddings", route(self.embeddings), methods=["POST"])
        router.add_api_route("/load_lora_adapter", route(self.load_lora_adapter), methods=["POST"])
        router.add_api_route("/unload_lora_adapter", route(self.unload_lora_adapter), methods=["POST"])
        return router

    # ---- GET /v1/models ----------------------------------------------------------------------------------
    async def models(self, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(self.edge.caller, request)  # it reads the accounts' files
        return JSONResponse({"object": "list", "data": await run_in_threadpool(self.naming.model_list, owner)})

    async def model(self, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(self.edge.caller, request)
        wanted = request.path_params["model"]
        found = next((m for m in await run_in_threadpool(self.naming.model_list, owner) if m["id"] == wanted), None)
        if found is None:
            raise NotFound(f"There is no model '{wanted[:80]}' here; GET /v1/models lists them.")
        return JSONResponse(found)

    # ---- POST /v1/chat/completions ------------------------------------------------------------------------
    async def chat_completions(self, request: Request):
        owner = await run_in_threadpool(self.edge.caller, request)  # it reads the accounts' files
        body = await self.edge.body(request)
        params, n, stops = generation_settings(body, max_tokens_default=512)
        system, turns = read_messages(body.get("messages"))
        tools = tool_use(body, turns)
        collection = body.get("collection")  # an extra field: answer from this collection, with citations
        if asks_documents(collection) and tools:
            raise ApiError(400, "Give either tools or a collection, not both.", param="collection")
        base, adapter = await run_in_threadpool(self.naming.choose, owner, body.get("model"), catalog.DECODER)
        if asks_documents(collection):
            searcher = body.get("search_adapter") or ""  # another extra field: the adapter that searches it
            if not isinstance(searcher, str):  # never silently searched without the adapter asked for
                raise ApiError(400, "The search_adapter must be a search adapter's name.", param="search_adapter")
            prompt = await run_in_threadpool(partial(self.chat.grounded, turns, collection, system, base, adapter,
                                                     params.max_new_tokens, owner=owner, sources_line=False,
                                                     search_adapter=searcher))
        else:
            prompt = await run_in_threadpool(
                partial(self.chat.conversation, turns, system, base, adapter, params.max_new_tokens, owner=owner,
                        tools=tools.tools or None if tools else None, opening=tools.prepare if tools else None))
        if prompt.dropped:
            raise ApiError(400, f"The messages are longer than {prompt.lm.name} can read with a reply of "
                                f"{params.max_new_tokens} tokens (it reads {prompt.lm.context_length} in all): leave "
                                "out older messages or ask for fewer max_tokens.", code="context_length_exceeded")
        model_id = (body.get("model") or "").strip() or prompt.lm.name
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._respond(request, owner, [prompt], params, n, stops, bool(body.get("stream")),
                                   include_usage, ChatFormat(model_id), tools if tools and tools.offered else None,
                                   cites=asks_documents(collection))

    # ---- POST /v1/completions ----------------------------------------------------------------------------
    async def completions(self, request: Request):
        owner = await run_in_threadpool(self.edge.caller, request)  # it reads the accounts' files
        body = await self.edge.body(request)
        params, n, stops = generation_settings(body, max_tokens_default=16)  # OpenAI's own default
        texts = prompts_of(body.get("prompt"))
        if len(texts) * n > MAX_CHOICES:
            raise ApiError(400, f"Ask for at most {MAX_CHOICES} completions per request (prompts times n).",
                           param="n")
        base, adapter = await run_in_threadpool(self.naming.choose, owner, body.get("model"), catalog.DECODER)
        prompts = [await run_in_threadpool(self.chat.continuation, text, base, adapter, params.max_new_tokens,
                                           owner=owner) for text in texts]
        model_id = (body.get("model") or "").strip() or prompts[0].lm.name
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._respond(request, owner, prompts, params, n, stops, bool(body.get("stream")),
                                   include_usage, CompletionFormat(model_id))

    async def _respond(self, request: Request, owner: str, prompts: list[Prompt], params: SamplingParams, n: int,
                       stops: list[str], stream: bool, include_usage: bool, shape: ChatFormat,
                       tools: ToolUse | None = None, cites: bool = False):
        """The answer, whole or streamed; with tools, each reply read for the calls the model made; cites: each
        message has the passages its reply cites (`citations`)."""
        count = len(prompts) * n
        if not stream:
            with self.edge.running(owner, count):
                generation = Generation(prompts, params, n, stops)
                texts, reasons = await generation.collect(request)
            if tools is None:
                whole = shape.whole(texts, reasons, usage(generation))
                for choice, reply in zip(whole["choices"], generation.replies) if cites else ():
                    choice["message"]["citations"] = [p.public() for p in reply.citations]
                return JSONResponse(whole)
            read = [tools.read(prompts[0].opening + text) for text in texts]
            return JSONResponse(shape.whole([content for content, _ in read],
                                            ["tool_calls" if calls else reason for (_, calls), reason
                                             in zip(read, reasons)], usage(generation), [c for _, c in read]))
        self.edge.check_room(owner, count)  # over the limit: a 429 status, before the stream starts

        async def events() -> AsyncIterator[str]:
            try:
                with self.edge.running(owner, count):  # held, and the rows stopped, however the stream ends
                    generation = Generation(prompts, params, n, stops)
                    for index in range(count):
                        yield chunk(shape.start(index))
                    if tools is None:
                        async for kind, index, value in generation.stream(request):
                            if kind == "end" and cites:
                                sources = generation.replies[index].citations
                                yield chunk(shape.cited(index, [p.public() for p in sources]))
                            yield chunk(shape.piece(index, value) if kind == "text" else shape.end(index, value))
                    else:
                        async for event in tool_events(generation.stream(request), shape, tools, count,
                                                       prompts[0].opening):
                            yield event
                    if include_usage:
                        yield chunk(shape.usage(usage(generation)))
                    yield "data: [DONE]\n\n"
            except Exception as error:  # noqa: BLE001  (a stream can only end with an error event)
                yield chunk({"error": error_body(error)[1]})

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    # ---- POST /v1/load_lora_adapter, /v1/unload_lora_adapter (vLLM's routes: a LoRA Studio in front uses them) ----
    async def load_lora_adapter(self, request: Request) -> PlainTextResponse:
        """Import a PEFT folder from under the data directory as one of the caller's chat adapters (the operator
        only), usable by its name in /v1 at once; loading a name already there succeeds, as vLLM's does."""
        owner, name, body = await self._operator_adapter_request(request)

        def load() -> None:
            with self._loading:  # two loads of one name (a front's first use and its library's sync) import once
                if not self.naming.is_adapter(owner, name):
                    files = adapter_uploads(body.get("lora_path"), self.ctx.settings.data_dir)
                    base = self.naming.served_base(owner, body.get("base_model_name"))
                    self.library.import_adapter(files, name, "chat", base, owner=owner)

        await run_in_threadpool(load)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")  # as vLLM says

    async def unload_lora_adapter(self, request: Request) -> PlainTextResponse:
        """Remove one of the caller's adapters (the operator only), as vLLM unloads one."""
        owner, name, _ = await self._operator_adapter_request(request)
        if not self.naming.is_adapter(owner, name):
            raise NotFound(f"There is no adapter named '{name[:80]}' here.")
        await run_in_threadpool(self.ctx.adapters.store.delete, owner, name)
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")  # as vLLM says

    async def _operator_adapter_request(self, request: Request) -> tuple[str, str, dict]:
        """(owner, lora_name, body) of a request to load or unload an adapter, which only the operator makes."""
        owner = await run_in_threadpool(self.edge.caller, request)
        accounts = self.ctx.accounts
        if not (accounts.is_admin(owner) if accounts.enabled else bool(self.ctx.settings.api_key)):
            raise ApiError(403, "Only this server's operator may load and unload adapters by path: with accounts "
                                "an admin's API key, without them the key set with --api-key.")
        body = await self.edge.body(request)
        name = body.get("lora_name")
        if not isinstance(name, str) or not name.strip():
            raise ApiError(400, "'lora_name' must name the adapter.", param="lora_name")
        return owner, name.strip(), body

    # ---- POST /v1/embeddings -------------------------------------------------------------------------------
    async def embeddings(self, request: Request) -> JSONResponse:
        owner = await run_in_threadpool(self.edge.caller, request)  # it reads the accounts' files
        body = await self.edge.body(request)
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
        base, adapter = await run_in_threadpool(self.naming.choose, owner, body.get("model"), catalog.EMBEDDING)
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


async def tool_events(events: AsyncIterator[tuple], shape: ChatFormat, tools: ToolUse, count: int,
                      opening: str) -> AsyncIterator[str]:
    """A chat stream's events with each choice read for tool calls: content as it comes, a call once it is whole,
    and finish_reason tool_calls for a choice that made one."""
    readers, sent = [CallStream(tools, opening) for _ in range(count)], [0] * count
    async for kind, index, value in events:
        reader = readers[index]
        content, calls = reader.feed(value) if kind == "text" else reader.end()
        if content:
            yield chunk(shape.piece(index, content))
        for event in shape.calls(index, calls, sent[index]):
            yield chunk(event)
        sent[index] += len(calls)
        if kind == "end":
            yield chunk(shape.end(index, "tool_calls" if sent[index] else value))


def adapter_uploads(path: object, data_dir: Path) -> list[Upload]:
    """The PEFT files of an adapter folder under the data directory, for the library's import (which checks
    them); a path elsewhere (after links are followed) is refused."""
    root = Path(data_dir).resolve()
    folder = Path(path.strip()).resolve() if isinstance(path, str) and path.strip() else None
    if folder is not None and not folder.is_relative_to(root):
        raise ApiError(400, "'lora_path' must be a folder under this server's data directory.", param="lora_path")
    if folder is None or not folder.is_dir() or not all((folder / f).is_file() for f in ADAPTER_FILES):
        raise ApiError(400, "'lora_path' must be a folder on this server holding adapter_config.json and "
                            "adapter_model.safetensors.", param="lora_path")
    files = [folder / f for f in (*ADAPTER_FILES, META_FILE) if (folder / f).is_file()]
    if not all(f.resolve().is_relative_to(root) for f in files):  # a link inside that leads out
        raise ApiError(400, "'lora_path' must be a folder under this server's data directory.", param="lora_path")
    return [Upload(str(f), f.name) for f in files]

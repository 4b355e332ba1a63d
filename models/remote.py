"""Chat and completion on an external OpenAI-compatible engine (`--serve-backend URL`): vLLM, SGLang or another
LoRA Studio serves the tokens, and this app keeps its UI, prompts, adapters, ownership and limits in front.

The prompt is built here exactly as for a local model (the adapter's chat template and system prompt, the oldest
turns dropped until it fits) and sent as token ids to the backend's /v1/completions, which vLLM, SGLang and LoRA
Studio all accept, so a reply is the one the local engine would give the same weights. An adapter is registered
on the backend the first time it is used (vLLM's and LoRA Studio's /v1/load_lora_adapter, SGLang's
/load_lora_adapter) from a folder the backend can read: `--serve-adapter-dir` (a shared folder) or, without one,
the adapter's own folder (a backend on the same machine). Views that need logits keep using local models.
"""

from __future__ import annotations

import json
import logging
import queue
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from errors import UserError
from models import catalog, engines
from models.adapter_meta import META_FILE, AdapterMeta
from models.adapters import engine_key, sanitize_name, selected
from models.engine import SamplingParams
from models.text_model import TextModel

log = logging.getLogger(__name__)
LISTED_FOR_S = 5.0  # how long the backend's model list is trusted before it is asked again
CONNECT_S, READ_S = 5.0, 300.0  # a backend that does not connect is down; a slow first token is not
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_END = object()


class BackendDown(UserError):
    """The serving backend did not answer; the same request works once it is back."""

    status = 503
    code = "backend_unavailable"


@dataclass(eq=False)
class RemoteRequest:
    """A completion streaming from the backend: the engine Request's shape (prompt_ids, stop, produced, texts)."""

    prompt_ids: list[int]
    params: SamplingParams
    stop: threading.Event = field(default_factory=threading.Event)
    produced: int = 0  # tokens generated so far (the backend's count once it sends one)
    pieces: queue.Queue = field(default_factory=queue.Queue)  # text pieces, then _END or an exception

    def texts(self, tokenizer=None) -> Iterator[str]:
        """The whole reply so far, once per piece the backend sends; closing the iterator stops the request."""
        text = ""
        try:
            while True:
                item = self.pieces.get()
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                text += item
                yield text
        finally:
            self.stop.set()


@dataclass(eq=False)
class RemoteLM(TextModel):
    """A base model the backend serves, as the tasks use a loaded LM: its name, tokenizer and context length
    (read here, from its files or the hub), and generate() that streams from the backend. Its weights are not
    here: what needs logits says so (TextModel)."""

    backend: "ServingBackend"
    source: catalog.ModelSource
    served_id: str  # the base's id on the backend
    tokenizer: object
    context_length: int
    eos_ids: tuple[int, ...]

    def generate(self, prompt_ids: list[int], params: SamplingParams, adapter: str | None = None,
                 caller: int | None = None) -> RemoteRequest:
        """Start a completion of prompt_ids on the base (or the adapter's id on the backend); the per-user turn
        taking (caller) is the backend's own scheduling there."""
        request = RemoteRequest(list(prompt_ids), params)
        threading.Thread(target=self.backend.stream, args=(self, adapter or self.served_id, request),
                         name="serve-backend", daemon=True).start()
        return request


class ServingBackend:
    """One OpenAI-compatible server that chat and completion go to."""

    def __init__(self, url: str, api_key: str = "", adapter_dir: str = ""):
        url = url.strip().rstrip("/")
        self.url = url[:-3] if url.endswith("/v1") else url
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.adapter_dir = Path(adapter_dir).expanduser() if adapter_dir else None
        self.client = httpx.Client(timeout=httpx.Timeout(READ_S, connect=CONNECT_S), headers=self.headers)
        self._listed: tuple[float, list[dict]] = (0.0, [])
        self.runtime_loading: bool | None = None  # whether it loads adapters while it runs (None: not tried yet)
        self._folders: dict[str, tuple[str, Path]] = {}  # adapter id on the backend -> (its base's id, its folder)
        self._lms: dict[str, RemoteLM] = {}
        self._lock = threading.Lock()

    # ---- talking to it -------------------------------------------------------------------------------------
    def _down(self, error: Exception) -> BackendDown:
        self._listed = (0.0, [])  # it may come back with other models (or without our adapters)
        return BackendDown(f"The serving backend at {self.url} does not answer ({type(error).__name__}); try again "
                           "in a moment, or ask the operator to start it.")

    def _refused(self, response: httpx.Response) -> UserError:
        try:
            body = response.json()
            message = (body.get("error") or {}).get("message") if isinstance(body.get("error"), dict) else None
            message = message or body.get("message") or body.get("detail") or body.get("error_message")
        except ValueError:
            message = response.text[:200]
        return UserError(f"The serving backend at {self.url} refused the request ({response.status_code}): "
                         f"{str(message or 'no reason given')[:300]}")

    def _post(self, route: str, body: dict) -> httpx.Response:
        try:
            return self.client.post(self.url + route, json=body)
        except httpx.HTTPError as error:
            raise self._down(error) from None

    def models(self, fresh: bool = False) -> list[dict]:
        """The backend's /v1/models entries (bases, and adapters with their `parent`), asked again after a few
        seconds."""
        when, entries = self._listed
        if fresh or not entries or time.monotonic() - when > LISTED_FOR_S:
            try:
                response = self.client.get(self.url + "/v1/models")
            except httpx.HTTPError as error:
                raise self._down(error) from None
            if response.status_code != 200:
                raise self._refused(response)
            entries = [m for m in _json(response).get("data", []) if isinstance(m, dict) and "id" in m]
            self._listed = (time.monotonic(), entries)
        return entries

    def model_ids(self, fresh: bool = False) -> list[str]:
        """The ids the backend's /v1/models lists (bases and adapters)."""
        return [m["id"] for m in self.models(fresh)]

    # ---- bases ---------------------------------------------------------------------------------------------
    def served_id(self, source: catalog.ModelSource) -> str:
        """The backend's id for a base: the one whose name, hub id or folder name matches; else a sentence
        naming what it serves and the command that would serve this one."""
        backbone = catalog.find(source.name)
        wanted = {source.name, Path(source.location).name, *([backbone.hub_id] if backbone else [])}
        wanted = {w.lower() for w in wanted} | {w.lower().rsplit("/", 1)[-1] for w in wanted}
        ids = self.model_ids()
        for served in ids:
            if served.lower() in wanted or served.lower().rsplit("/", 1)[-1] in wanted:
                return served
        command = engines.vllm_command(backbone.hub_id if backbone else source.name, [])
        raise UserError(f"The serving backend at {self.url} does not serve {source.name} (it serves: "
                        f"{', '.join(ids[:8]) or 'nothing'}); pick one of those, or start it with `{command}`.")

    def lm(self, hub, source: catalog.ModelSource) -> RemoteLM:
        """The RemoteLM for a base the backend serves; its tokenizer is read here once."""
        served = self.served_id(source)
        with self._lock:
            lm = self._lms.get(source.location)
            if lm is None or lm.served_id != served:
                lm = self._lms[source.location] = self._remote_lm(hub, source, served)
        return lm

    def _remote_lm(self, hub, source: catalog.ModelSource, served: str) -> RemoteLM:
        from transformers import AutoTokenizer, GenerationConfig

        from models.loading import load_error, read_config, token_limit

        options = hub.options(source)
        config = read_config(source, options)
        try:
            tokenizer = AutoTokenizer.from_pretrained(source.location, **options)
        except (OSError, ValueError, KeyError) as error:
            raise load_error(source, error, "a text-generation (GPT-family) model") from error
        try:
            generation = GenerationConfig.from_pretrained(source.location, **options).eos_token_id
        except OSError:
            generation = None
        eos = {tokenizer.eos_token_id, *(generation if isinstance(generation, list) else [generation])}
        context = token_limit(config, tokenizer, hub.settings.context_limit)
        return RemoteLM(self, source, served, tokenizer, context, tuple(sorted(i for i in eos if i is not None)))

    # ---- adapters ------------------------------------------------------------------------------------------
    def attach(self, adapters, owner: str, lm: RemoteLM, adapter: object,
               task: str) -> tuple[str | None, AdapterMeta | None]:
        """The adapter's id on the backend (registered there on first use) and its metadata; (None, None)
        without one. The adapter must have been trained on the base the backend serves."""
        name = selected(adapter)
        if name is None:
            return None, None
        files = adapters.files(owner, name, task)
        meta = files.meta
        if lm.name != meta.base_model and lm.source.location != meta.base_location:
            raise UserError(f"The adapter '{name}' was trained on {meta.base_model}, not on {lm.name}: pick "
                            f"{meta.base_model} as the model to use it.")
        whose = adapters.store.locate(owner, name)[0]
        return self.register(lm.served_id, remote_name(whose, files.name, meta.created), Path(files.folder)), meta

    def register(self, base_id: str, name: str, folder: Path) -> str:
        """The adapter's id on the backend, loading it there from a folder the backend reads if it is not
        listed yet; a backend that cannot load adapters at run time is a sentence with the command that would."""
        if name in self.model_ids():  # vLLM and LoRA Studio list the adapters they have
            with self._lock:
                self._folders[name] = (base_id, folder)
            return name
        path = str(self._readable(name, folder))
        body = {"lora_name": name, "lora_path": path, "base_model_name": base_id}  # the last for LoRA Studio
        for route, served in (("/v1/load_lora_adapter", name), ("/load_lora_adapter", f"{base_id}:{name}")):
            response = self._post(route, body)
            if _no_route(response):
                continue
            if response.status_code != 200 and "already" not in response.text.lower():
                raise self._refused(response)
            with self._lock:
                self._folders[served] = (base_id, folder)
            self._listed = (0.0, [])
            self.runtime_loading = True
            log.info("loaded adapter %s on the serving backend %s", name, self.url)
            return served
        self.runtime_loading = False
        adapter = engines.Served(name, path, engines.adapter_rank(folder))
        command = engines.vllm_command(base_id, [adapter])
        raise UserError(f"The serving backend at {self.url} cannot load adapters while it runs: restart it with "
                        f"`{command}` (or with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True, which lets it load them).")

    def unregister(self, served: str) -> bool:
        """Unload an adapter this app loaded on the backend (by its id there); False when the backend has no
        route for it (it keeps the adapter until it restarts)."""
        base_id = self._folders.get(served, ("", None))[0]
        name = served.removeprefix(f"{base_id}:") if base_id else served
        for route in ("/v1/unload_lora_adapter", "/unload_lora_adapter"):
            response = self._post(route, {"lora_name": name})
            if _no_route(response):
                continue
            if response.status_code not in (200, 404):  # 404: it was gone already (the backend restarted)
                raise self._refused(response)
            with self._lock:
                self._folders.pop(served, None)
            self._listed = (0.0, [])
            if self.adapter_dir is not None:  # the copy made for it to read
                shutil.rmtree(self.adapter_dir / sanitize_name(name), ignore_errors=True)
            log.info("unloaded adapter %s from the serving backend %s", name, self.url)
            return True
        with self._lock:
            self._folders.pop(served, None)
        log.warning("the serving backend %s cannot unload adapters while it runs: %s stays until it restarts",
                    self.url, name)
        return False

    def loaded(self) -> dict[str, str]:
        """The adapters this app loaded on the backend: their name there -> their id there (SGLang's is
        base:name)."""
        with self._lock:
            return {served.removeprefix(f"{base_id}:"): served for served, (base_id, _) in self._folders.items()}

    def holds(self, operator: bool) -> str:
        """What the backend serves, in words for the System panel: its bases, its adapters (their names for the
        operator, how many for anyone else) and whether it loads adapters while it runs."""
        try:
            entries = self.models(fresh=True)
        except UserError as error:
            return str(error)
        adapters = [m["id"] for m in entries if m.get("parent")]
        bases = ", ".join(m["id"] for m in entries if not m.get("parent")) or "nothing"
        held = (", ".join(adapters) if operator else f"{len(adapters)}") if adapters else "none"
        how = {True: "it loads and unloads adapters as they are trained, imported, renamed and deleted here",
               False: "it cannot load adapters while it runs (it has no load_lora_adapter route): new adapters reach "
                      "it when it is restarted with them (the Adapters tab writes that command)",
               None: "no adapter was loaded on it yet"}[self.runtime_loading]
        return f"It serves {bases}; adapters: {held}; {how}."

    def _readable(self, name: str, folder: Path) -> Path:
        """A folder holding the adapter's files that the backend can read: a copy in the shared folder, written
        under a temporary name and renamed, or the adapter's own folder."""
        if self.adapter_dir is None:
            return folder
        target = self.adapter_dir / sanitize_name(name)
        if not target.exists():
            self.adapter_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.adapter_dir / f".copying-{target.name}-{time.time_ns()}"
            tmp.mkdir()
            for file in (*ADAPTER_FILES, META_FILE):
                if (folder / file).exists():
                    shutil.copy2(folder / file, tmp / file)
            try:
                tmp.rename(target)
            except OSError:  # another request copied it first
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    # ---- generating ----------------------------------------------------------------------------------------
    def stream(self, lm: RemoteLM, model_id: str, request: RemoteRequest) -> None:
        """Stream a completion into request (run in a thread); a backend that lost a registered adapter gets it
        again and the completion starts over once."""
        try:
            for attempt in range(2):
                status = self._complete(lm, model_id, request)
                if status != 404 or attempt or model_id not in self._folders:
                    break
                base_id, folder = self._folders.pop(model_id)
                name = model_id.split(":", 1)[1] if model_id.startswith(f"{base_id}:") else model_id
                model_id = self.register(base_id, name, folder)
        except Exception as error:  # noqa: BLE001  (every failure reaches the reader as its error)
            request.pieces.put(error)
        finally:
            request.pieces.put(_END)

    def _complete(self, lm: RemoteLM, model_id: str, request: RemoteRequest) -> int | None:
        """Stream one completion; returns 404 (nothing sent) when the backend does not know model_id."""
        params = request.params
        body = {"model": model_id, "prompt": request.prompt_ids, "max_tokens": params.max_new_tokens,
                "temperature": params.temperature, "top_p": params.top_p, "stream": True,
                "stream_options": {"include_usage": True}, "stop_token_ids": list(lm.eos_ids)}
        if params.seed is not None:
            body["seed"] = params.seed
        try:
            with self.client.stream("POST", self.url + "/v1/completions", json=body) as response:
                if response.status_code == 404 and model_id in self._folders:
                    return 404
                if response.status_code != 200:
                    response.read()
                    raise self._refused(response)
                pieces = 0
                for line in response.iter_lines():
                    if request.stop.is_set():
                        return None  # leaving the stream disconnects: the backend stops the row
                    taken = self._take(line, request)
                    if taken is None:
                        break
                    pieces += taken
                request.produced = request.produced or pieces
        except httpx.HTTPError as error:
            raise self._down(error) from None
        return None

    @staticmethod
    def _take(line: str, request: RemoteRequest) -> int | None:
        """Hand one server-sent event's text to request; its piece count (None at the end of the stream)."""
        if not line.startswith("data:"):
            return 0
        data = line[5:].strip()
        if data == "[DONE]":
            return None
        chunk = json.loads(data)
        if chunk.get("error"):
            error = chunk["error"]
            raise UserError(f"The serving backend stopped the reply: {str(error.get('message', error))[:300]}")
        if chunk.get("usage"):
            request.produced = int(chunk["usage"].get("completion_tokens") or 0)
        count = 0
        for choice in chunk.get("choices") or []:
            if choice.get("text"):
                request.pieces.put(choice["text"])
                count += 1
        return count


def remote_name(owner: str, name: str, created: float) -> str:
    """An adapter's id on the backend: its name and a short key of its owner and version (names never clash)."""
    return f"{name}-{engine_key(owner, name, created)[1:9]}"


def _no_route(response: httpx.Response) -> bool:
    """Whether the backend answered that it has no such route (a web framework's bare 404 or 405), not an error
    of the route itself."""
    body = _json(response)
    return response.status_code in (404, 405) and (not body or body.get("detail") in ("Not Found",
                                                                                      "Method Not Allowed"))


def _json(response: httpx.Response) -> dict:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

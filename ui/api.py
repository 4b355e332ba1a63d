"""The edge between plain task functions and Gradio, the same for the public API and the UI's own events.

- A UserError reaches the caller as gr.Error with its one sentence; any other error as one plain sentence with
  a reference that is also in the server's log (never a traceback or a server path).
- The caller is taken from the request (the login, the Hugging Face profile on a Space), never from a parameter:
  a task function's `owner` parameter is filled in here and is not part of the public API.
- A task function's `progress` parameter gets the caller's progress bar, and stops the work (raises ClientGone)
  once the client has gone away.
- A parameter typed `Upload` takes a file upload: only a file Gradio received (in its upload folder) is accepted;
  a function that returns an `Upload` returns that file (the client downloads it).
"""

from __future__ import annotations

import functools
import inspect
import os
import time
import types
import typing
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from config import LOCAL_USER
from errors import UserError, internal_sentence
from tasks.base import Upload
from tasks.spec import EXAMPLES
from ui.i18n import in_page_language, phrase
from ui import zerogpu
from ui.tool_docs import TOOL_DOCS

HIDDEN = ("owner", "progress")  # task parameters the edge fills in
NOT_UPLOADED = "Upload the file; paths on the server are not accepted."


class ClientGone(Exception):
    """The client that asked went away (closed the page, cancelled): the work it asked for stops."""


def _translated(error: BaseException, page: bool = False) -> BaseException:
    """The error as the caller sees it; page: in the page's language, its title too (UI events; the public API
    stays English)."""
    if isinstance(error, UserError):
        return user_error(in_page_language(str(error)) if page else str(error), page)
    if isinstance(error, gr.Error):  # a view's own sentence for the user's mistake (Chat's "type a message first")
        return user_error(error.message, page, error.title)
    if isinstance(error, ClientGone):
        return error
    sentence = internal_sentence(error)  # logged there with its traceback
    return gr.Error(in_page_language(sentence) if page else sentence, title=_title(page))


def user_error(message: str, page: bool = False, title: str = "Error") -> gr.Error:
    """A user's mistake as Gradio shows it: titled in the page's language (page) and with no traceback in the
    server's console, since the server did nothing wrong. A title of the raiser's own (not Gradio's "Error") stays."""
    return gr.Error(message, title=_title(page) if title == "Error" else title, print_exception=False)


def _title(page: bool) -> str:
    """An error's title: Gradio's English "Error", in the page's language on a page."""
    return phrase("toast.error") if page else "Error"


def expose(fn: Callable, page: bool = False) -> Callable:
    """Wrap fn (a function or a generator function) so errors reach the caller as one sentence (see above);
    page: a UI event's, whose known sentences are shown in the page's language."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as error:  # noqa: BLE001  (every error becomes one sentence)
                raise _translated(error, page) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as error:  # noqa: BLE001
            raise _translated(error, page) from None
    return call


# ---- who is asking -------------------------------------------------------------------------------------------

# The MCP server's own client (its calls carry the caller's API key): a name no account can have (ui/mcp.py).
LOOPBACK_USER = ":mcp-loopback"


def user_of(request: gr.Request | None) -> str:
    """The caller's name: the login or API key's user, else the Hugging Face profile (a Space with hf_oauth),
    else `local`."""
    name = getattr(request, "username", None) if request is not None else None
    if name == LOOPBACK_USER:  # the MCP server's client without a caller's key: never anybody's work
        raise UserError("Send your API key with the call (Authorization: Bearer KEY).")
    if not name and request is not None:
        name = oauth_owner(request)
    if not name and os.environ.get("OAUTH_CLIENT_ID"):  # a Space with Hugging Face login: anonymous owns nothing
        raise UserError("Please sign in with Hugging Face first (the button at the top of the page).")
    return name or LOCAL_USER


def oauth_owner(request) -> str | None:
    """The owner for the Hugging Face user signed in on this request's session (`hf-<username>`), or None when
    nobody is, the sign-in expired, or the server has no Hugging Face sign-in."""
    underlying = getattr(request, "request", None) or request  # gr.Request wraps Starlette's
    scope = getattr(underlying, "scope", None)
    session = scope.get("session") if isinstance(scope, dict) else None  # none: no sign-in on this server
    info = session.get("oauth_info") if isinstance(session, dict) else None
    if not isinstance(info, dict) or (info.get("expires_at") or float("inf")) < time.time():
        return None
    profile = (info.get("userinfo") or {}).get("preferred_username")
    return f"hf-{profile.lower()}" if isinstance(profile, str) and profile else None


# ---- uploads -------------------------------------------------------------------------------------------------

def _received(path: str) -> bool:
    """Whether path is a file Gradio received (its upload folder) or one of the app's samples."""
    real = Path(os.path.realpath(path))
    roots = [Path(os.path.realpath(gr.utils.get_upload_folder())), Path(os.path.realpath(EXAMPLES))]
    return real.is_file() and any(real.is_relative_to(root) for root in roots)


def upload(item: object) -> Upload:
    """An uploaded file as the task's plain (path, name), from what Gradio passes (FileData, a dict or a path);
    anything that is not a real upload is refused with one sentence."""
    if isinstance(item, dict):
        path, name = item.get("path"), item.get("orig_name")
    elif isinstance(item, (str, Path)):
        path, name = str(item), None
    else:
        path, name = getattr(item, "path", None), getattr(item, "orig_name", None)
    if not isinstance(path, (str, Path)) or not str(path) or "\x00" in str(path):
        raise UserError("An uploaded file arrived without its content; please upload it again.")
    if not _received(str(path)):
        raise UserError(NOT_UPLOADED)
    return Upload(str(path), name if isinstance(name, str) and name.strip() else Path(str(path)).name)


def uploads(value: object) -> list[Upload]:
    """Every upload in a file parameter (one file, a list of files, or nothing)."""
    items = value if isinstance(value, (list, tuple)) else [value]
    return [upload(item) for item in items if item not in (None, "")]


# ---- public endpoints ----------------------------------------------------------------------------------------

def _gradio_type(hint):
    """The Gradio type of a task parameter's type: Upload becomes gr.FileData, inside lists and optionals too."""
    if hint is Upload:
        return gr.FileData
    args = typing.get_args(hint)
    if not args:
        return hint
    mapped = tuple(_gradio_type(arg) for arg in args)
    if mapped == args:
        return hint
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return typing.Union[mapped]
    return origin[mapped]


def _converter(hint) -> Callable | None:
    """How to turn what Gradio passes into the task's value, for a parameter that takes uploads (else None)."""
    if hint is Upload:
        return upload
    args = typing.get_args(hint)
    if any(arg is Upload or Upload in typing.get_args(arg) for arg in args):
        lists = typing.get_origin(hint) is list or any(typing.get_origin(arg) is list for arg in args)
        return uploads if lists else (lambda value: None if value in (None, "") else upload(value))
    return None


def progress_for(progress=None) -> Callable[[float, str], None]:
    """A task's progress callback: it moves the caller's progress bar and raises ClientGone once the client went
    away (closed the page or cancelled), so long work stops instead of running for nobody."""
    from gradio.context import LocalContext

    blocks, event_id = LocalContext.blocks.get(None), LocalContext.event_id.get(None)
    # Asked now, while the event runs: a client that cancels before the first report is caught too.
    seen = blocks is not None and event_id is not None and _event_alive(blocks, event_id) is True

    def report(fraction: float, message: str) -> None:
        nonlocal seen
        if blocks is not None and event_id is not None:
            alive = _event_alive(blocks, event_id)
            # Gradio marks a disconnected client's event dead, but a cancelled one leaves its running jobs
            # altogether: an event seen running that is no longer listed was cancelled.
            if alive is False or (alive is None and seen):
                raise ClientGone(message)
            seen = seen or alive is True
        if progress is not None:
            progress(fraction, desc=message)
    return report


def _event_alive(blocks, event_id: str) -> bool | None:
    """Whether the event's client is still there; None when the event is not among the running jobs."""
    for job in blocks._queue.active_jobs:
        for event in job or []:
            if event._id == event_id:
                return event.alive
    return None


def endpoint_function(fn: Callable, exposed: Callable | None = None) -> Callable:
    """fn as Gradio calls it: upload parameters typed for Gradio and checked, the caller and a progress callback
    filled in from the request (they are not API parameters), errors as one sentence."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    converters = {name: c for name in signature.parameters if (c := _converter(hints.get(name))) is not None}
    hidden = [name for name in HIDDEN if name in signature.parameters]
    run = exposed or expose(fn)

    def prepare(args: tuple, kwargs: dict, request: gr.Request | None) -> tuple[tuple, dict]:
        bound = signature.bind_partial(*args, **kwargs)
        for name, to_task in converters.items():
            if name in bound.arguments:
                bound.arguments[name] = to_task(bound.arguments[name])
        extra = {}
        if "owner" in hidden:
            extra["owner"] = user_of(request)
        if "progress" in hidden:
            extra["progress"] = progress_for(None)  # an API call has no progress bar; it can still be cancelled
        return bound.args, {**bound.kwargs, **extra}

    returns_file = hints.get("return") is Upload
    if returns_file:
        run = _as_file(run)
        hints = {**hints, "return": gr.FileData}
    public = [p.replace(annotation=_gradio_type(hints.get(name, p.annotation)))
              for name, p in signature.parameters.items() if name not in hidden]
    count = len(public)

    def arguments(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        # Gradio passes the request positionally after the public parameters (see the signature below).
        request = args[count] if len(args) > count else kwargs.pop("request", None)
        try:
            return prepare(args[:count], kwargs, request)
        except Exception as error:  # noqa: BLE001
            raise _translated(error) from None

    if inspect.isgeneratorfunction(fn):
        def wrapper(*args, **kwargs):
            args, kwargs = arguments(args, kwargs)
            yield from run(*args, **kwargs)
    else:
        def wrapper(*args, **kwargs):
            args, kwargs = arguments(args, kwargs)
            return run(*args, **kwargs)
    functools.update_wrapper(wrapper, fn)
    del wrapper.__wrapped__  # Gradio must read the signature below, not fn's
    request = inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request,
                                default=None)
    wrapper.__signature__ = signature.replace(parameters=[p.replace(kind=inspect.Parameter.POSITIONAL_OR_KEYWORD)
                                                          for p in public] + [request],
                                              return_annotation=hints.get("return", signature.return_annotation))
    wrapper.__annotations__ = {**{p.name: _gradio_type(hints[p.name]) for p in public if p.name in hints},
                               "request": gr.Request, **({"return": hints["return"]} if "return" in hints else {})}
    return wrapper


def _as_file(run: Callable) -> Callable:
    """run with its returned Upload as the FileData Gradio sends to the client as a file."""
    @functools.wraps(run)
    def call(*args, **kwargs):
        result = run(*args, **kwargs)
        return gr.FileData(path=result.path, orig_name=result.name)
    return call


GENERATION = {"concurrency_id": "generation", "concurrency_limit": 16}  # the engine batches up to 16 rows


def publish(endpoints) -> None:
    """Register each task endpoint under its fixed api_name (call inside the Blocks context).

    Chats have a queue of their own: they batch in the engine, so a long summary or translation holding the
    general queue's slots never keeps a one-line chat waiting. Every public name is taken once: a clash between
    a task's endpoints and a service's is refused here, where all of them are known."""
    endpoints = list(endpoints)
    names = [endpoint.api_name for endpoint in endpoints]
    clash = sorted({name for name in names if names.count(name) > 1})
    if clash:
        raise ValueError(f"Two endpoints would be published as {', '.join(clash)}.")
    for endpoint in endpoints:
        # On ZeroGPU an endpoint that runs a model asks for the GPU per call (ui/zerogpu.py).
        fn = endpoint_function(endpoint.fn, expose(zerogpu.gpu(endpoint.api_name, endpoint.fn)))
        # An MCP tool is named after the function: the public name, and the description a model reads.
        fn.__name__ = fn.__qualname__ = endpoint.api_name
        fn.__doc__ = TOOL_DOCS.get(endpoint.api_name, fn.__doc__)
        gr.api(fn, api_name=endpoint.api_name, **(GENERATION if endpoint.generates else {}))


def handler(fn: Callable, *bound, gpu: str = "") -> Callable:
    """A UI event handler: fn with its first arguments bound (the task), errors as one sentence, and its
    gr.Request / gr.Progress parameters still filled in by Gradio. gpu: the endpoint whose work fn does (it runs a
    model): on ZeroGPU it asks for the GPU per call as that endpoint does, sized by the same estimate."""
    hints = typing.get_type_hints(fn)
    full = inspect.signature(fn)
    signature = full.replace(parameters=list(full.parameters.values())[len(bound):])
    call = bound_function(fn, bound, signature)
    if gpu:
        call = zerogpu.gpu(gpu, call, next((b.ctx for b in bound if hasattr(b, "ctx")), None))
    wrapper = expose(call, page=True)
    del wrapper.__wrapped__
    wrapper.__signature__ = signature
    wrapper.__annotations__ = {name: hints[name] for name in signature.parameters if name in hints}
    return wrapper


def bound_function(fn: Callable, bound: tuple, signature: inspect.Signature) -> Callable:
    """fn with its first arguments bound, as a function of its own name and the rest of its signature (a
    generator function stays one: ZeroGPU streams those)."""
    if inspect.isgeneratorfunction(fn):
        def call(*args, **kwargs):
            yield from fn(*bound, *args, **kwargs)
    else:
        def call(*args, **kwargs):
            return fn(*bound, *args, **kwargs)
    call.__name__ = call.__qualname__ = fn.__name__
    call.__doc__, call.__signature__ = fn.__doc__, signature
    return call


def first_cell(evt: gr.SelectData) -> str:
    """The first cell of a clicked table row (a name or an id), for the box that names what to act on."""
    return str(evt.row_value[0]) if evt.row_value else ""


def on_load(fn: Callable, inputs, outputs) -> None:
    """Run fn when the page loads (inside a tab builder, which has no handle on the whole page)."""
    from gradio.context import get_blocks_context

    get_blocks_context().root_block.load(fn, inputs, outputs, show_progress="hidden", api_visibility="undocumented")

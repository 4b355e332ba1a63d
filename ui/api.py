"""The edge between plain task functions and Gradio: user errors become gr.Error with the same sentence, and
parameters typed Upload take Gradio file uploads."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from errors import UserError
from tasks.base import Upload


def expose(fn: Callable) -> Callable:
    """Wrap fn (a function or a generator function) so a UserError reaches the caller as gr.Error."""
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except UserError as error:
                raise gr.Error(str(error)) from None
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as error:
            raise gr.Error(str(error)) from None
    return call


def upload(item: object) -> Upload:
    """An uploaded file as the task's plain (path, name), from what Gradio passes (FileData, a dict or a path)."""
    if isinstance(item, Upload):
        return item
    if isinstance(item, dict):
        path, name = item.get("path"), item.get("orig_name")
    elif isinstance(item, (str, Path)):
        path, name = str(item), None
    else:
        path, name = getattr(item, "path", None), getattr(item, "orig_name", None)
    if not isinstance(path, (str, Path)) or not str(path):
        raise UserError("An uploaded file arrived without its content; please upload it again.")
    return Upload(str(path), name if isinstance(name, str) and name else Path(str(path)).name)


def uploads(value: object) -> list[Upload]:
    """Every upload in a file parameter (one file, a list of files, or nothing)."""
    items = value if isinstance(value, (list, tuple)) and not isinstance(value, Upload) else [value]
    return [upload(item) for item in items if item not in (None, "")]


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
    if Upload in args and typing.get_origin(hint) is list:
        return uploads
    if Upload in args:  # Upload | None
        return lambda value: None if value in (None, "") else upload(value)
    if any(typing.get_origin(arg) is list and Upload in typing.get_args(arg) for arg in args):  # list | None
        return uploads
    return None


def endpoint_function(fn: Callable) -> Callable:
    """fn as a public endpoint: its Upload parameters typed for Gradio and converted, its UserErrors as gr.Error."""
    hints = typing.get_type_hints(fn)
    signature = inspect.signature(fn)
    converters = {name: c for name in signature.parameters if (c := _converter(hints.get(name))) is not None}
    exposed = expose(fn)
    if not converters:
        return exposed

    def convert(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        bound = signature.bind(*args, **kwargs)
        for name, to_task in converters.items():
            if name in bound.arguments:
                bound.arguments[name] = to_task(bound.arguments[name])
        return bound.args, bound.kwargs

    if inspect.isgeneratorfunction(fn):
        def wrapper(*args, **kwargs):
            args, kwargs = convert(args, kwargs)
            yield from exposed(*args, **kwargs)
    else:
        def wrapper(*args, **kwargs):
            try:
                args, kwargs = convert(args, kwargs)
            except UserError as error:
                raise gr.Error(str(error)) from None
            return exposed(*args, **kwargs)
    functools.update_wrapper(wrapper, fn)
    del wrapper.__wrapped__  # Gradio must read the signature below, not fn's
    wrapper.__annotations__ = {name: _gradio_type(hint) for name, hint in hints.items()}
    wrapper.__signature__ = signature.replace(parameters=[
        p.replace(annotation=_gradio_type(hints.get(name, p.annotation))) for name, p in signature.parameters.items()],
        return_annotation=hints.get("return", signature.return_annotation))
    return wrapper


def publish(endpoints) -> None:
    """Register each task endpoint under its fixed api_name (call inside the Blocks context)."""
    for endpoint in endpoints:
        gr.api(endpoint_function(endpoint.fn), api_name=endpoint.api_name)

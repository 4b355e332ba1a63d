"""The edge between plain task functions and Gradio: user errors become gr.Error with the same sentence."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import gradio as gr

from errors import UserError


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


def publish(endpoints) -> None:
    """Register each task endpoint under its fixed api_name (call inside the Blocks context)."""
    for endpoint in endpoints:
        gr.api(expose(endpoint.fn), api_name=endpoint.api_name)

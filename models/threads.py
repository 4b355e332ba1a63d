"""Torch work in a thread of its own, so that OpenMP keeps one pool of workers per process."""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable
from typing import TypeVar

from models import lazy

torch = lazy.module("torch")

T = TypeVar("T")


def in_own_thread(work: Callable[[], T], inference: bool = False) -> T:
    """work()'s result (or its exception), computed in a thread that ends with it, in the caller's context (its
    context variables: Gradio finds a request's progress bar through them) and in inference mode if `inference`
    (the mode belongs to a thread).

    Why: OpenMP gives each thread that runs parallel torch work a pool of worker threads, kept while that thread
    lives. Once two pools hold more workers than there are cores, libgomp has them sleep between operations, and
    each of the ~300 parallel operations of a decode step waits for a worker to wake: the engine's steps were
    measured much slower while the request thread that loaded its model lived on, or one that had run an encoder
    model (bench/README, "Figures quoted from code"). Loading a model or running one in a thread of its own leaves
    the engine's pool alone."""
    outcome: dict[str, object] = {}
    context = contextvars.copy_context()

    def run() -> None:
        try:
            with torch.inference_mode(inference):
                outcome["value"] = work()
        except BaseException as error:  # handed to the caller, whatever it is
            outcome["error"] = error

    thread = threading.Thread(target=context.run, args=(run,), name="torch-work", daemon=True)
    thread.start()
    thread.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]

"""Holding the generation engine where a test chooses, so that a test of stopping waits on events, never on time:
a row that is held cannot end on its own, however fast the machine."""

from __future__ import annotations

import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field

from models import engine as engine_module


@contextmanager
def held(engine):
    """The engine thread waits inside this block, between two steps: what is submitted meanwhile is admitted at
    once when it ends."""
    inside, release = threading.Event(), threading.Event()
    holder = threading.Thread(target=engine.call, args=(lambda: (inside.set(), release.wait()),))
    holder.start()
    assert inside.wait(60), "the engine thread never ran the command"
    try:
        yield
    finally:
        release.set()
        holder.join()


class Gate(queue.Queue):
    """A request's token queue that, once armed, holds the engine thread in the hand-over of the next token (in
    the middle of a step) until it is opened."""

    def __init__(self, armed: bool = False):
        super().__init__()
        self.armed, self.holding, self.opened = threading.Event(), threading.Event(), threading.Event()
        if armed:
            self.armed.set()
        self.tokens = 0  # token ids the engine handed over

    def put(self, item, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        self.tokens += isinstance(item, int)
        if self.armed.is_set() and not self.opened.is_set():
            self.holding.set()
            self.opened.wait(300)  # only a failed test leaves it closed; then the engine goes on after a while


def gate_requests(monkeypatch, armed: bool = False) -> list:
    """From now on every request an engine takes has a Gate for its token queue; returns the list of them."""
    made = []

    @dataclass(eq=False)
    class GatedRequest(engine_module.Request):
        tokens: queue.Queue = field(default_factory=lambda: Gate(armed))

        def __post_init__(self) -> None:
            made.append(self)

    monkeypatch.setattr(engine_module, "Request", GatedRequest)
    return made


def open_all(requests: list) -> None:
    for request in requests:
        request.tokens.opened.set()

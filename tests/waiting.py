"""Waiting on a condition, never for a fixed time: a loaded machine is slower, not wrong."""

from __future__ import annotations

import threading
import time

import pytest


def wait_for(condition, timeout: float = 540, what: str = "condition", every: float = 0.05):
    """Poll until condition() is truthy (returns it) or fail after timeout seconds (generous: CI gets busy)."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        pause.wait(every)
    pytest.fail(f"timed out waiting for {what}")


def seconds_until(condition, timeout: float, what: str = "condition") -> float:
    """How long condition() took to become truthy (a failure after timeout)."""
    started = time.monotonic()
    wait_for(condition, timeout, what)
    return time.monotonic() - started

"""The one shared thing: loaded models, each loaded once, evicted least recently used first under a budget.

A model in use (its engine still has requests) is never unloaded; a model bigger than the whole budget is
refused with a sentence naming both sizes.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from errors import UserError
from models.kinds import CacheKey

log = logging.getLogger(__name__)


@dataclass
class Entry:
    value: Any
    size: int  # bytes the entry holds (weights), as reported by the loader


class ModelCache:
    """Thread-safe LRU cache keyed by model location; concurrent requests for one key share a single load."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self._entries: OrderedDict[CacheKey, Entry] = OrderedDict()
        self._lock = threading.Lock()  # guards _entries and _loading
        self._loading: dict[CacheKey, threading.Lock] = {}
        self.loads = 0  # how many loads ran (tests and the system panel read it)

    def get(self, key: CacheKey, load: Callable[[], tuple[Any, int]], name: str = "") -> Any:
        """The cached value for key, or the result of load() -> (value, size_bytes), run once per key; a value
        bigger than the whole budget is refused (named as name)."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return self._entries[key].value
            key_lock = self._loading.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._entries:  # another thread finished the load while we waited
                    self._entries.move_to_end(key)
                    return self._entries[key].value
            value, size = load()
            if size > self.budget:
                _close(value)
                with self._lock:
                    self._loading.pop(key, None)
                raise too_big(name or str(key), size, self.budget)
            with self._lock:
                self.loads += 1
                self._entries[key] = Entry(value, size)
                self._loading.pop(key, None)
                evicted = self._evict_over_budget(keep=key)
        for entry in evicted:
            _close(entry.value)
        return value

    def _evict_over_budget(self, keep: CacheKey) -> list[Entry]:
        """Unload the least recently used models that are not in use until the rest fit the budget."""
        evicted = []
        while sum(e.size for e in self._entries.values()) > self.budget:
            idle = [k for k, e in self._entries.items() if k != keep and not getattr(e.value, "busy", False)]
            if not idle:  # every other model is serving requests: stay over budget until they finish
                log.warning("over the memory budget: the other models are in use")
                break
            log.info("unloading %s to stay under the memory budget", idle[0])
            evicted.append(self._entries.pop(idle[0]))
        return evicted

    def grow(self, key: CacheKey, size: int) -> None:
        """Count size more bytes for a loaded model (an adapter attached to it), unloading others if need be."""
        with self._lock:
            if key not in self._entries:
                return
            self._entries[key].size += size
            evicted = self._evict_over_budget(keep=key)
        for entry in evicted:
            _close(entry.value)

    def peek(self, key: CacheKey) -> Any | None:
        with self._lock:
            entry = self._entries.get(key)
            return entry.value if entry else None

    def values(self) -> list[tuple[CacheKey, Any]]:
        """(key, loaded value) of every loaded model."""
        with self._lock:
            return [(k, e.value) for k, e in self._entries.items()]

    def items(self) -> list[tuple[CacheKey, int]]:
        """(key, size in bytes) of every loaded model, most recently used last."""
        with self._lock:
            return [(k, e.size) for k, e in self._entries.items()]

    def clear(self) -> None:
        with self._lock:
            entries = list(self._entries.values())
            self._entries.clear()
        for entry in entries:
            _close(entry.value)


def _close(value: Any) -> None:
    close = getattr(value, "close", None)
    if callable(close):
        close()


def too_big(name: str, size: int, budget: int) -> UserError:
    return UserError(f"The model '{name}' needs about {size / 2**30:.1f} GB, more than this "
                     f"server's whole memory budget of {budget / 2**30:.1f} GB; pick a smaller model (the operator "
                     "sets the budget with --memory-budget-gb).")

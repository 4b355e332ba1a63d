"""Heavy libraries on first use: `torch = lazy.module("torch")` reads like `import torch`, but torch is imported at
the first attribute read, so the page is drawn before torch, transformers or plotly load (seconds on 2 cores).

The stand-in forwards reads, writes and deletes (a test's monkeypatch), calls and isinstance() to the real object,
and once loaded it puts the real object in its place in the module that made it, so the code there pays nothing
afterwards (through the stand-in an attribute read costs ~2 µs, and a decode step makes hundreds). The import is
Python's own, and one at a time (IMPORTS): two threads that import transformers at once can see it half made
("cannot import name 'AutoModelForCausalLM'"), so a stand-in's import waits for one in progress, and so does
`settled()`, which the model hub calls before any model work (that code imports these libraries directly too).
What a stand-in cannot be: a base class or a decorator applied at import time (both read it at once), or an
operand of `[]`, `in` or arithmetic; import those where they are used.
"""

from __future__ import annotations

import functools
import importlib
import sys
import threading
from collections.abc import Callable
from typing import Any


IMPORTS = threading.RLock()  # held while a heavy library is imported, by a stand-in or by a warm-up


class Lazy:
    """A module, or one attribute of a module, imported on first use."""

    __slots__ = ("_lazy_module", "_lazy_attribute", "_lazy_target", "_lazy_owner")

    def __init__(self, module: str, attribute: str = "", owner: dict | None = None) -> None:
        object.__setattr__(self, "_lazy_module", module)
        object.__setattr__(self, "_lazy_attribute", attribute)
        object.__setattr__(self, "_lazy_target", None)
        object.__setattr__(self, "_lazy_owner", owner)  # the globals of the module that holds this stand-in

    def _load(self) -> Any:
        target = self._lazy_target
        if target is None:
            with IMPORTS:
                target = importlib.import_module(self._lazy_module)
                if self._lazy_attribute:
                    target = getattr(target, self._lazy_attribute)
            object.__setattr__(self, "_lazy_target", target)
            owner = self._lazy_owner or {}
            for name in [name for name, value in owner.items() if value is self]:
                owner[name] = target
        return target

    def __getattr__(self, name: str) -> Any:
        return getattr(self._load(), name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._load(), name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._load(), name)

    def __call__(self, *args, **kwargs) -> Any:
        return self._load()(*args, **kwargs)

    def __instancecheck__(self, instance: Any) -> bool:
        return isinstance(instance, self._load())

    def __subclasscheck__(self, subclass: type) -> bool:
        return issubclass(subclass, self._load())

    def __dir__(self) -> list[str]:
        return dir(self._load())

    def __repr__(self) -> str:
        name = f"{self._lazy_module}.{self._lazy_attribute}" if self._lazy_attribute else self._lazy_module
        return f"<lazy {name}{'' if self._lazy_target is None else ' (loaded)'}>"


def module(name: str) -> Any:
    """A stand-in for `import name` (a dotted name for a submodule: "torch.nn.functional")."""
    return Lazy(name, owner=sys._getframe(1).f_globals)


def attribute(module_name: str, name: str) -> Any:
    """A stand-in for `from module_name import name`: a class or function, called or read through."""
    return Lazy(module_name, name, owner=sys._getframe(1).f_globals)


def settled() -> None:
    """Wait for an import of a heavy library in progress (the warm-up after the page is up) to finish."""
    with IMPORTS:
        pass


def inference_mode(function: Callable) -> Callable:
    """`@torch.inference_mode()` for a function defined before torch is imported."""
    @functools.wraps(function)
    def run(*args, **kwargs):
        import torch

        with torch.inference_mode():
            return function(*args, **kwargs)
    return run

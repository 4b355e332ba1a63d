"""What every task shares: the app context, input checks, and the shape of a task's public API."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from config import Settings
from errors import UserError
from models.loading import ModelHub


@dataclass
class Context:
    """The shared services a task is built with (never per-user state)."""

    settings: Settings
    hub: ModelHub
    extras: dict[str, Any] = field(default_factory=dict)  # services added by later layers (adapters, jobs)


@dataclass(frozen=True)
class Endpoint:
    api_name: str  # fixed public name, without the slash
    fn: Callable  # a fully typed function: JSON in, JSON out (a generator for streams)


def require_text(value: object, what: str = "text", limit: int = 100_000) -> str:
    """The stripped text, or a UserError when it is missing, blank or too long."""
    if not isinstance(value, str) or not value.strip():
        raise UserError(f"Please enter some {what}: it is empty.")
    if len(value) > limit:
        raise UserError(f"The {what} is too long ({len(value):,} characters); the limit is {limit:,}.")
    return value.strip()


def require_range(value: float, name: str, low: float, high: float) -> float:
    if not isinstance(value, (int, float)) or not low <= value <= high:
        raise UserError(f"{name} must be between {low} and {high}, not {value!r}.")
    return value


def attach_adapter(ctx: Context, loaded: object, adapter: str, task: str) -> tuple[str | None, dict]:
    """The adapter name to use with a loaded model (attaching it if needed) and its training defaults.

    "" means no adapter. The adapter store (training layer) provides the hook; without it no adapter exists.
    """
    adapter = (adapter or "").strip()
    if not adapter or adapter == "none":
        return None, {}
    attach = ctx.extras.get("attach_adapter")
    if attach is None:
        raise UserError(f"There is no adapter named '{adapter}'.")
    return attach(loaded, adapter, task)


def encoder_model(ctx: Context, kind: str, model: str, adapter: str, task: str):
    """The loaded encoder model of kind for a task, with the trained adapter (LoRA and head) merged in if chosen."""
    adapter = (adapter or "").strip()
    if not adapter or adapter == "none":
        return ctx.hub.get(kind, model, task)
    adapted = ctx.extras.get("adapted_model")
    if adapted is None:
        raise UserError(f"There is no adapter named '{adapter}'.")
    return adapted(kind, model, adapter, task)


def model_for(ctx: Context, model: str, adapter: str) -> str:
    """The model to use: the one asked for, or, when only an adapter is chosen, the base it was trained on."""
    adapter = (adapter or "").strip()
    if (model or "").strip() or not adapter or adapter == "none" or "adapter_base" not in ctx.extras:
        return model
    return ctx.extras["adapter_base"](adapter)

"""The adapter picker every task tab shares: 'none' plus the adapters trained for the task on the chosen model."""

from __future__ import annotations

import gradio as gr

NO_ADAPTER = "none"


def adapter_value(choice: str | None) -> str:
    """The API's adapter argument for a dropdown choice ("" for none)."""
    return "" if choice in (None, "", NO_ADAPTER) else choice


def adapter_choices(task, model: str) -> list[str]:
    """'none' plus the adapters trained for this task and model."""
    lister = task.ctx.extras.get("list_adapters")
    return [NO_ADAPTER] + (lister(task.id, model) if lister else [])


def fresh(task, model: str, current: str | None):
    """The picker's update for model: its adapters, keeping the current choice when it still applies."""
    choices = adapter_choices(task, model or "")
    return gr.update(choices=choices, value=current if current in choices else NO_ADAPTER)


def keep_fresh(tab: gr.Tab, task, model, adapter: gr.Dropdown) -> None:
    """Re-list the adapters whenever the tab opens: one trained since the page loaded must be selectable.

    model is the tab's model component, or a fixed model name for tabs without a model picker.
    """
    quiet = {"show_progress": "hidden", "api_visibility": "undocumented"}
    if isinstance(model, gr.components.Component):
        tab.select(lambda m, a: fresh(task, m, a), [model, adapter], adapter, **quiet)
    else:
        tab.select(lambda a: fresh(task, model, a), adapter, adapter, **quiet)

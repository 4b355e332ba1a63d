"""The ui layer's own registry: each task's tab builder, keyed by task id (each is given ui.services.TabServices).

A task joins the page by one `register(task_id, build)` here, beside its spec in tasks/ (which knows nothing of
Gradio); tests/test_registry.py checks that every registered task has exactly one builder.
"""

from __future__ import annotations

from collections.abc import Callable

from ui import answer_tab, chat_tab, search_tab, sentiment_tab, summarize_tab, translate_tab
from ui.i18n import task_title


BUILDERS: dict[str, Callable] = {}  # task id -> build(task, tab, services), which returns the tab's picker


def register(task_id: str, build: Callable) -> None:
    """Add a task's tab builder; a second builder for one task is refused."""
    if task_id in BUILDERS:
        raise ValueError(f"The task {task_id!r} already has a tab builder.")
    BUILDERS[task_id] = build


def unregister(task_id: str) -> None:
    BUILDERS.pop(task_id, None)


def builder(task_id: str) -> Callable:
    """The tab builder of a task, or a ValueError naming the task that has none; the tab it fills is titled in the
    page's language (the spec's title is English, and tasks/ knows nothing of the page)."""
    if task_id not in BUILDERS:
        raise ValueError(f"The task {task_id!r} has no tab builder: register one in ui/tabs.py.")
    build = BUILDERS[task_id]

    def titled(task, tab, services):
        tab.label = task_title(task.id, task.title)
        return build(task, tab, services)
    return titled


for _task_id, _build in (("chat", chat_tab.build), ("summarize", summarize_tab.build),
                         ("translate", translate_tab.build), ("sentiment", sentiment_tab.build),
                         ("answer", answer_tab.build), ("search", search_tab.build)):
    register(_task_id, _build)

"""The task registry: a new task is a module here and one entry below."""

from __future__ import annotations

from tasks.chat import ChatTask

# Order is the order of the tabs.
TASKS: dict[str, type] = {}


def register(task_class: type) -> type:
    if task_class.id in TASKS:
        raise ValueError(f"task {task_class.id!r} is already registered")
    TASKS[task_class.id] = task_class
    return task_class


register(ChatTask)

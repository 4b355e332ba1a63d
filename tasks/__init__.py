"""The task registry: a new task is a module here and one entry below."""

from __future__ import annotations

from tasks.answer import AnswerTask
from tasks.chat import ChatTask
from tasks.search import SearchTask
from tasks.sentiment import SentimentTask
from tasks.summarize import SummarizeTask
from tasks.translate import TranslateTask

# Order is the order of the tabs.
TASKS: dict[str, type] = {}


def register(task_class: type) -> type:
    if task_class.id in TASKS:
        raise ValueError(f"task {task_class.id!r} is already registered")
    TASKS[task_class.id] = task_class
    return task_class


register(ChatTask)
register(SummarizeTask)
register(TranslateTask)
register(SentimentTask)
register(AnswerTask)
register(SearchTask)

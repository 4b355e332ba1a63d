"""The task registry: a new task is a module here (its logic, with its TaskSpec) and one register line below."""

from __future__ import annotations

from tasks.answer import AnswerTask
from tasks.chat import ChatTask
from tasks.search import SearchTask
from tasks.sentiment import SentimentTask
from tasks.spec import TASKS, register
from tasks.summarize import SummarizeTask
from tasks.translate import TranslateTask

# The order is the order of the tabs.
for _task in (ChatTask, SummarizeTask, TranslateTask, SentimentTask, AnswerTask, SearchTask):
    register(_task)

__all__ = ["TASKS", "register"]

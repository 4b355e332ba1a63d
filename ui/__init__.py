"""One tab builder per task id: a new task's tab is a module here and one entry below."""

from __future__ import annotations

from ui import chat_tab
from ui import summarize_tab
from ui import translate_tab
from ui import sentiment_tab
from ui import answer_tab
from ui import search_tab

TABS = {
    "chat": chat_tab.build,
    "summarize": summarize_tab.build,
    "translate": translate_tab.build,
    "sentiment": sentiment_tab.build,
    "answer": answer_tab.build,
    "search": search_tab.build,
}

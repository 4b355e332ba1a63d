"""One tab builder per task id: a new task's tab is a module here and one entry below."""

from __future__ import annotations

from ui import chat_tab

TABS = {
    "chat": chat_tab.build,
}

"""What a task's tab builder is given besides its task: the app's shared services, built once by the app."""

from __future__ import annotations

from dataclasses import dataclass

from tasks.feedback import FeedbackService
from tasks.inside import InsideModel


@dataclass(frozen=True)
class TabServices:
    """What a tab builder may use besides its task: the app's shared services, built once."""

    browser_secret: str  # the key of what the browser keeps (chat history survives a reload and a restart)
    inside: InsideModel  # next-token views: the chat tab's alternatives with their probabilities
    feedback: FeedbackService  # likes and corrections of chat replies

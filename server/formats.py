"""OpenAI's wire formats for /v1: the chat messages and completion prompts a request sends, and the shapes of the
answer: a whole chat or text completion, or its server-sent-event chunks (the first, each piece, each choice's end
and the usage).
"""

from __future__ import annotations

import json
import secrets
import time

from server.edge import ApiError
from tasks.chat import message_text


def chunk(data: dict) -> str:
    """One server-sent event."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


def prompts_of(prompt: object) -> list[str | list[int]]:
    """A completion request's prompts: a text, a list of texts, token ids or a list of token-id lists."""
    if isinstance(prompt, str) or (isinstance(prompt, list) and prompt and isinstance(prompt[0], int)):
        prompt = [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
        return prompt
    raise ApiError(400, "'prompt' must be a text, a list of texts, or token ids.", param="prompt")


def split_messages(messages: object) -> tuple[str, list[dict], str]:
    """(system prompt, earlier turns, the last user message) from OpenAI chat messages."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} messages.", param="messages")
    system, turns = [], []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(message_text(message.get("content")))
        elif role in ("user", "assistant"):
            turns.append({"role": role, "content": message_text(message.get("content"))})
        else:
            raise ApiError(400, "Each message needs a role of system, user or assistant (tool messages are not "
                                "supported).", param="messages")
    if not turns or turns[-1]["role"] != "user":
        raise ApiError(400, "The last message must be the user's.", param="messages")
    return "\n\n".join(s for s in system if s.strip()), turns[:-1], turns[-1]["content"]


class ChatFormat:
    """The shapes of a chat completion: whole, and streamed as chunks."""

    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str):
        self.model = model
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, texts: list[str], reasons: list[str], counts: dict) -> dict:
        return {**self._head(self.object), "usage": counts,
                "choices": [self.choice(i, text, reason) for i, (text, reason) in enumerate(zip(texts, reasons))]}

    def choice(self, index: int, text: str, reason: str) -> dict:
        return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                "finish_reason": reason}

    def start(self, index: int) -> dict:
        return self._streamed(index, {"role": "assistant", "content": ""}, None)

    def piece(self, index: int, text: str) -> dict:
        return self._streamed(index, {"content": text}, None)

    def end(self, index: int, reason: str) -> dict:
        return self._streamed(index, {}, reason)

    def _streamed(self, index: int, delta, reason: str | None) -> dict:
        return {**self._head(self.chunk_object),
                "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}]}

    def usage(self, counts: dict) -> dict:
        return {**self._head(self.chunk_object), "choices": [], "usage": counts}


class CompletionFormat(ChatFormat):
    """The shapes of a (legacy) text completion: the same events, with text instead of messages."""

    object = chunk_object = "text_completion"

    def __init__(self, model: str):
        super().__init__(model)
        self.id = "cmpl-" + secrets.token_hex(12)

    def choice(self, index: int, text: str, reason: str) -> dict:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": reason}

    def start(self, index: int) -> dict:
        return self._streamed(index, "", None)

    def piece(self, index: int, text: str) -> dict:
        return self._streamed(index, text, None)

    def end(self, index: int, reason: str) -> dict:
        return self._streamed(index, "", reason)

    def _streamed(self, index: int, text, reason: str | None) -> dict:
        return {**self._head(self.chunk_object),
                "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": reason}]}

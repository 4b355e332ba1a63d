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


def read_messages(messages: object) -> tuple[str, list[dict]]:
    """(system prompt, the turns as chat templates take them) from OpenAI chat messages: user, assistant (with
    its tool calls, their arguments as objects) and tool messages; the last must be the user's or a tool's."""
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list of {role, content} messages.", param="messages")
    system, turns = [], []
    for message in messages:
        role = message.get("role") if isinstance(message, dict) else None
        if role in ("system", "developer"):
            system.append(message_text(message.get("content")))
        elif role in ("user", "assistant", "tool"):
            turn = {"role": role, "content": message_text(message.get("content"))}
            if role == "assistant" and message.get("tool_calls"):
                turn["tool_calls"] = [_template_call(call) for call in _listed(message["tool_calls"])]
            if role == "tool" and isinstance(message.get("tool_call_id"), str):
                turn["tool_call_id"] = message["tool_call_id"]
            turns.append(turn)
        else:
            raise ApiError(400, "Each message needs a role of system, user, assistant or tool.", param="messages")
    if not turns or turns[-1]["role"] not in ("user", "tool"):
        raise ApiError(400, "The last message must be the user's (or a tool's result).", param="messages")
    if turns[-1]["role"] == "user" and not turns[-1]["content"].strip():
        raise ApiError(400, "Please enter some message: the last user message is empty.", param="messages")
    return "\n\n".join(s for s in system if s.strip()), turns


def _listed(calls: object) -> list:
    if not isinstance(calls, list):
        raise ApiError(400, "An assistant message's 'tool_calls' must be a list.", param="messages")
    return calls


def _template_call(call: object) -> dict:
    """An assistant's tool call as chat templates take it: {id, type, function: {name, arguments}} with the
    arguments as an object (OpenAI sends them as JSON text)."""
    function = call.get("function") if isinstance(call, dict) else None
    arguments = function.get("arguments") if isinstance(function, dict) else None
    try:
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        arguments = None
    if not isinstance(function.get("name") if function else None, str) or not isinstance(arguments, dict):
        raise ApiError(400, "Each tool call of an assistant message needs a function with a name and arguments "
                            "(a JSON object).", param="messages")
    return {"id": str(call.get("id") or ""), "type": "function",
            "function": {"name": function["name"], "arguments": arguments}}


class ChatFormat:
    """The shapes of a chat completion: whole, and streamed as chunks."""

    object, chunk_object = "chat.completion", "chat.completion.chunk"

    def __init__(self, model: str):
        self.model = model
        self.id = "chatcmpl-" + secrets.token_hex(12)
        self.created = int(time.time())

    def _head(self, kind: str) -> dict:
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def whole(self, texts: list[str | None], reasons: list[str], counts: dict, calls: list[list] | None = None) -> dict:
        calls = calls or [[] for _ in texts]
        return {**self._head(self.object), "usage": counts,
                "choices": [self.choice(i, text, reason, called) for i, (text, reason, called)
                            in enumerate(zip(texts, reasons, calls))]}

    def choice(self, index: int, text: str | None, reason: str, calls: list | None = None) -> dict:
        """A whole choice; with tool calls (server.tools.ToolCall) its message carries them."""
        message = {"role": "assistant", "content": text}
        if calls:
            message["tool_calls"] = [call.wire() for call in calls]
        return {"index": index, "message": message, "logprobs": None, "finish_reason": reason}

    def start(self, index: int) -> dict:
        return self._streamed(index, {"role": "assistant", "content": ""}, None)

    def piece(self, index: int, text: str) -> dict:
        return self._streamed(index, {"content": text}, None)

    def end(self, index: int, reason: str) -> dict:
        return self._streamed(index, {}, reason)

    def cited(self, index: int, citations: list[dict]) -> dict:
        """A streamed reply's citations (an extra field, as its whole message has them), just before its end."""
        return self._streamed(index, {"citations": citations}, None)

    def calls(self, index: int, calls: list, first: int) -> list[dict]:
        """Streamed tool calls (server.tools.ToolCall), numbered from first: each as OpenAI streams one, its id
        and name, then its arguments."""
        chunks = []
        for number, call in enumerate(calls, first):
            wire = call.wire()
            chunks.append(self._streamed(index, {"tool_calls": [
                {"index": number, "id": wire["id"], "type": "function",
                 "function": {"name": call.name, "arguments": ""}}]}, None))
            chunks.append(self._streamed(index, {"tool_calls": [
                {"index": number, "function": {"arguments": call.arguments}}]}, None))
        return chunks

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

    def choice(self, index: int, text: str, reason: str, calls: list | None = None) -> dict:
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

"""Tool calls on /v1/chat/completions: a request's `tools` and `tool_choice` read and checked, the tools handed to
the model's own chat template, and the model's reply read back as OpenAI `tool_calls`, whole or streamed.

A model calls tools in the format its chat template teaches it. Two are read here:
- tags: `<tool_call>{"name": ..., "arguments": ...}</tool_call>`, anywhere in the reply (Qwen2.5 and later,
  Hermes, and every template that writes those tags), several per reply;
- JSON: a reply that is nothing but one call object `{"name": ..., "arguments" or "parameters": ...}` or a list
  of them, after an optional `<|python_tag|>` or `[TOOL_CALLS]` (Llama 3.1 and later, Mistral).
A template takes tools when it reads the `tools` variable; a request with tools for one that does not is refused.

`tool_choice`: "none" leaves the tools out of the prompt; "auto" (the default) lets the model choose; a named
function and "required" open the assistant's turn with the start of a call (a named one with its name), so the
model can only go on with it. Nothing constrains the arguments it writes: a call that does not parse comes back as
plain content.
"""

from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass, field

import jinja2
import jinja2.meta

from server.edge import ApiError

TAG_OPEN, TAG_CLOSE = "<tool_call>", "</tool_call>"
JSON_MARKERS = ("<|python_tag|>", "[TOOL_CALLS]")  # what Llama and Mistral put before a call
MAX_TOOLS = 128  # OpenAI's own limit
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")  # OpenAI's rule for function names
_TAGGED = re.compile(re.escape(TAG_OPEN) + r"(.*?)" + re.escape(TAG_CLOSE), re.DOTALL)


def takes_tools(template: str) -> bool:
    """Whether a chat template reads the `tools` variable (renders the tools it is given)."""
    try:
        return "tools" in jinja2.meta.find_undeclared_variables(jinja2.Environment().parse(template))
    except jinja2.TemplateError:
        return False


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text, as OpenAI sends it
    id: str = field(default_factory=lambda: "call_" + secrets.token_hex(12))

    def wire(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def _call(data: object) -> ToolCall | None:
    """A call object as models write it ({"name", "arguments" or "parameters"}), or None."""
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    arguments = data.get("arguments", data.get("parameters", {}))
    if isinstance(arguments, str):  # already JSON text (some models write it so)
        try:
            json.loads(arguments)
        except ValueError:
            return None
        return ToolCall(data["name"], arguments)
    return ToolCall(data["name"], json.dumps(arguments, ensure_ascii=False))


def _loads(text: str) -> object:
    try:
        return json.loads(text.strip())
    except ValueError:
        return None


class ToolFormat:
    """How a template's model writes calls: how to open a forced one, and how to read them from a reply."""

    def __init__(self, template: str):
        self.tagged = TAG_OPEN in template

    def opening(self, name: str | None) -> str:
        """The start of a call the assistant's turn is opened with (a named function's, or any one's)."""
        # Cut before a space: BPE tokenizers join a space to the word after it, which the model then writes itself.
        start = f'{{"name": "{name}", "arguments":' if name else '{"name":'
        return f"{TAG_OPEN}\n{start}" if self.tagged else start

    def read(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of a whole reply; content None when the reply is only calls."""
        if self.tagged:
            calls, kept, last = [], [], 0
            for match in _TAGGED.finditer(text):
                call = _call(_loads(match.group(1)))
                if call is not None:
                    calls.append(call)
                    kept.append(text[last:match.start()])
                    last = match.end()
            rest = text[last:]
            opened = rest.find(TAG_OPEN)  # a last call the reply ended inside (no closing tag before the end)
            call = _call(_loads(rest[opened + len(TAG_OPEN):])) if opened >= 0 else None
            if call is not None:
                calls.append(call)
                rest = rest[:opened]
            content = "".join(kept) + rest
        else:
            body = text.strip()
            for marker in JSON_MARKERS:
                body = body.removeprefix(marker).strip()
            found = _loads(body)
            found = found if isinstance(found, list) else [found]
            calls = [c for c in map(_call, found) if c is not None]
            if not calls or len(calls) != len(found):
                return text, []
            content = ""
        return (content.strip() or None) if calls else text, calls

    def held(self, text: str) -> int:
        """How much of a reply so far is surely plain content (not the start of a call): streamed at once."""
        if self.tagged:
            opened = text.find(TAG_OPEN)
            if opened >= 0:
                return opened
            return len(text) - next((k for k in range(min(len(TAG_OPEN) - 1, len(text)), 0, -1)
                                     if TAG_OPEN.startswith(text[-k:])), 0)
        start = text.lstrip()
        could_be = not start or start[0] in "{[" or any(m.startswith(start[:len(m)]) for m in JSON_MARKERS)
        return 0 if could_be else len(text)


class ToolUse:
    """The tools of one request: what goes into the prompt, how the reply opens, and how it is read back."""

    def __init__(self, tools: list[dict], choice: str | None):
        self.tools = tools  # OpenAI's tool objects, checked
        self.choice = choice  # None (the model chooses), "required", or a function's name
        self.format: ToolFormat | None = None

    def prepare(self, template: str) -> str:
        """Called with the chat template the prompt is built with: its reply's opening ("" = none); a template
        that takes no tools is a 400."""
        if not takes_tools(template):
            raise ApiError(400, "This model's chat template has no tool support, so it cannot take 'tools' or "
                                "tool messages: pick a model whose template has (such as Qwen2.5), or send none.",
                           param="tools")
        self.format = ToolFormat(template)
        return "" if self.choice is None else self.format.opening(None if self.choice == "required" else
                                                                  self.choice)

    @property
    def offered(self) -> bool:
        """Whether the model was offered tools (so its reply is read for calls)."""
        return bool(self.tools)

    def read(self, text: str) -> tuple[str | None, list[ToolCall]]:
        """(content, calls) of a whole reply; no calls when no tools were offered."""
        return self.format.read(text) if self.offered else (text, [])


def tool_use(body: dict, messages: list[dict]) -> ToolUse | None:
    """The request's tool use, checked; None when it sends no tools and no tool messages, or tool_choice "none"
    (the tools left out of the prompt; tool messages still reach it)."""
    tools, choice = body.get("tools"), body.get("tool_choice")
    if tools is not None and (not isinstance(tools, list) or len(tools) > MAX_TOOLS or not all(map(_tool, tools))):
        raise ApiError(400, f"'tools' must be a list of at most {MAX_TOOLS} {{type: function, function: {{name, "
                            "description, parameters}}}} objects, each name made of letters, digits, '_' or '-'.",
                       param="tools")
    names = [t["function"]["name"] for t in tools or []]
    if isinstance(choice, dict):
        function = choice.get("function")
        choice = function.get("name") if isinstance(function, dict) and choice.get("type") == "function" else None
        if choice not in names:
            raise ApiError(400, "'tool_choice' must name one of the request's tools: {type: function, function: "
                                f"{{name}}}} with a name among {', '.join(names) or 'none'}.", param="tool_choice")
    elif choice not in (None, "auto", "none", "required"):
        raise ApiError(400, "'tool_choice' must be none, auto, required or {type: function, function: {name}}.",
                       param="tool_choice")
    elif choice == "required" and not names:
        raise ApiError(400, "'tool_choice' required needs 'tools'.", param="tool_choice")
    has_tool_turns = any(m["role"] == "tool" or m.get("tool_calls") for m in messages)
    if not names and not has_tool_turns:
        return None
    return ToolUse((tools or []) if choice != "none" else [], None if choice in (None, "auto", "none") else choice)


def _tool(tool: object) -> bool:
    function = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
    return (isinstance(function, dict) and isinstance(function.get("name"), str) and bool(_NAME.match(function["name"]))
            and isinstance(function.get("parameters", {}), dict))


class CallStream:
    """One streamed choice with tools: content pieces pass as they come, except what may start a call, which is
    held until the call is whole (then it passes as a call) or the reply ends (then it is read as a whole)."""

    def __init__(self, tools: ToolUse, opening: str):
        self.format = tools.format
        self.text, self.sent, self.calls = opening, 0, 0

    def feed(self, piece: str) -> tuple[str, list[ToolCall]]:
        """(content to send now, calls complete now) after a new piece of the reply."""
        self.text += piece
        calls: list[ToolCall] = []
        if self.format.tagged:  # whole calls are sent as soon as their closing tag arrives
            done = [_call(_loads(m.group(1))) for m in _TAGGED.finditer(self.text)]
            if all(done) and len(done) > self.calls:
                calls, self.calls = done[self.calls:], len(done)
        upto = self.format.held(self.text)
        content = self.text[self.sent:upto] if upto > self.sent and not self.calls else ""
        self.sent = max(self.sent, upto) if content else self.sent
        return content, calls

    def end(self) -> tuple[str, list[ToolCall]]:
        """(content not sent yet, calls not sent yet) once the reply is whole."""
        content, calls = self.format.read(self.text)
        if not calls:
            return self.text[self.sent:], []
        sent = self.text[:self.sent].strip()  # what was streamed before the first call, as read() keeps it
        rest = content or ""
        return (rest[len(sent):] if rest.startswith(sent) else ""), calls[self.calls:]

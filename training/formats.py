"""Data formats: a record read from a file becomes a task's fields. Column formats map the file's columns to the
task's fields; a conversational task also reads whole conversations (messages, ShareGPT, Alpaca, plain text) and
preference pairs. A new conversation format is one entry in CONVERSATION_FORMATS."""

from __future__ import annotations

from collections.abc import Callable

from errors import UserError
from tasks.spec import TaskSpec
from training.readers import kind

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bot": "assistant", "system": "system"}


class RowError(ValueError):
    """A row is unusable; the message is the reason shown in the report."""


def _text(record: dict, column: str, shown: str, required: bool = True) -> str:
    """record[column] as stripped text (numbers become text); RowError when required and missing or empty."""
    value = record.get(column)
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # a label 4.0 read from JSON means "4"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = str(value)
    if value is None and column not in record:
        if required:
            raise RowError(f"missing '{shown}'")
        return ""
    if value is not None and not isinstance(value, str):
        raise RowError(f"'{shown}' must be text, not {kind(value)}")
    value = (value or "").strip()
    if not value and required:
        raise RowError(f"empty '{shown}'")
    return value


def _content(message: object, number: int, role_key: str, content_key: str) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise RowError(f"message {number} is {kind(message)}, not an object")
    role, content = message.get(role_key), message.get(content_key)
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)  # OpenAI's list-of-parts content
    if not isinstance(role, str):
        raise RowError(f"message {number} has no '{role_key}'")
    if not isinstance(content, str):
        raise RowError(f"message {number} has {kind(content)} as '{content_key}', not text")
    return role.strip().lower(), content.strip()


def _conversation(messages: list[dict]) -> dict:
    """Check a list of {role, content}: system first if at all, a user turn, an assistant turn last."""
    messages = [m for m in messages if m["content"] or m["role"] != "system"]  # an empty system prompt is no prompt
    for number, message in enumerate(messages, 1):
        if not message["content"]:
            raise RowError(f"message {number} ({message['role']}) is empty")
        if message["role"] == "system" and number > 1:
            raise RowError(f"message {number} is a system message; only the first message may be one")
    if not any(m["role"] == "user" for m in messages):
        raise RowError("the conversation has no user message")
    if messages[-1]["role"] != "assistant":
        raise RowError("the conversation must end with an assistant message")
    return {"messages": messages}


def _messages(record: dict) -> dict:
    turns = record.get("messages")
    if not isinstance(turns, list) or not turns:
        raise RowError("missing 'messages'" if turns is None else "'messages' must be a non-empty list")
    messages = []
    for number, turn in enumerate(turns, 1):
        role, content = _content(turn, number, "role", "content")
        if role not in ("system", "user", "assistant"):
            raise RowError(f"message {number} has role '{role}'; use system, user or assistant")
        messages.append({"role": role, "content": content})
    return _conversation(messages)


def _sharegpt(record: dict) -> dict:
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise RowError("missing 'conversations'" if turns is None else "'conversations' must be a non-empty list")
    messages = []
    for number, turn in enumerate(turns, 1):
        keys = ("from", "value") if isinstance(turn, dict) and "from" in turn else ("role", "content")
        speaker, content = _content(turn, number, *keys)
        if speaker not in SHAREGPT_ROLES:
            raise RowError(f"message {number} is from '{speaker}'; use human, gpt or system")
        messages.append({"role": SHAREGPT_ROLES[speaker], "content": content})
    return _conversation(messages)


def _alpaca(record: dict) -> dict:
    instruction, extra = _text(record, "instruction", "instruction"), _text(record, "input", "input", False)
    system = _text(record, "system", "system", False)
    prompt = instruction + ("\n\n" + extra if extra else "")
    return turns(system, prompt, _text(record, "output", "output"))


def turns(system: str, prompt: str, response: str) -> dict:
    """One exchange as a conversation's fields: the system prompt (if any), the prompt and the response."""
    return {"messages": ([{"role": "system", "content": system}] if system else [])
            + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def _columns(spec: TaskSpec, recipe: type, mapping: dict[str, str]) -> Callable[[dict], dict]:
    """Records of a column format → the task's fields, then as its recipe reads them."""
    def normalize(record: dict) -> dict:
        fields = {f: _text(record, mapping[f], f) for f in spec.required}
        fields.update({f: v for f in spec.optional if f in mapping and (v := _text(record, mapping[f], f, False))})
        # The recipe sees the raw values under the field names (an offset refers to the unstripped text).
        return recipe.row(fields, {**record, **{f: record.get(column) for f, column in mapping.items()}})
    return normalize


def _mapping(spec: TaskSpec, columns: list[str], given: dict[str, str] | None, name: str) -> dict[str, str]:
    """Task field -> file column: the user's mapping, else a column of the same name (any case)."""
    required, optional = spec.required, spec.optional
    given = {f: c.strip() for f, c in (given or {}).items() if isinstance(c, str) and c.strip()}
    found = ", ".join(f"'{c}'" for c in columns) or "none"
    for task_field, column in given.items():
        if task_field not in required + optional:
            raise UserError(f"'{task_field}' is not a field of the {spec.id} task; its fields are "
                            f"{', '.join(required + optional)}.")
        if column not in columns:
            raise UserError(f"The file '{name}' has no column '{column}' (mapped to '{task_field}'); "
                            f"columns found: {found}.")
    by_name = {c.strip().lower(): c for c in columns}
    mapping = {f: given.get(f) or by_name.get(f) for f in required + optional}
    unclaimed = [c for c in columns if c not in mapping.values()]
    missing = [f for f in required if not mapping[f]]
    if missing:
        names = " and ".join(f"'{f}'" for f in missing)
        hint = f"; map {'them' if len(missing) > 1 else 'it'} to one of: {', '.join(unclaimed)}" if unclaimed else ""
        expected = " and ".join(f"'{f}'" for f in required)
        raise UserError(f"The file '{name}' has no {names} column (columns found: {found}; expected: "
                        f"{expected}){hint}.")
    return {f: c for f, c in mapping.items() if c}


def _conversation_format(columns: list[str], given: dict[str, str] | None, suffix: str) -> str:
    keys = set(columns)
    if suffix == ".txt":
        return "text"
    if {"chosen", "rejected"} <= keys | set(given or {}):
        return "preference"
    if given and any(isinstance(c, str) and c.strip() for c in given.values()):
        return "columns"  # the user mapped prompt/response columns explicitly
    if suffix in (".json", ".jsonl") and "messages" in keys:
        return "messages"
    if suffix in (".json", ".jsonl") and "conversations" in keys:
        return "sharegpt"
    return "alpaca" if {"instruction", "output"} <= keys else "columns"


def _prompt_turns(value: object) -> list[dict]:
    """A preference row's prompt: text, or OpenAI messages (a system message first if at all) ending with the
    user's turn."""
    if isinstance(value, str):
        if not value.strip():
            raise RowError("empty 'prompt'")
        return [{"role": "user", "content": value.strip()}]
    if not isinstance(value, list) or not value:
        raise RowError("'prompt' must be text or a non-empty list of messages")
    messages = [dict(zip(("role", "content"), _content(turn, n, "role", "content"))) for n, turn in enumerate(value, 1)]
    for number, message in enumerate(messages, 1):
        if message["role"] not in ("system", "user", "assistant"):
            raise RowError(f"message {number} has role '{message['role']}'; use system, user or assistant")
        if not message["content"] or (message["role"] == "system" and number > 1):
            raise RowError(f"message {number} ({message['role']}) is empty" if not message["content"] else
                           f"message {number} is a system message; only the first message may be one")
    if messages[-1]["role"] != "user":
        raise RowError("the prompt must end with a user message")
    return messages


def _answer(value: object, shown: str) -> tuple[str, list[dict]]:
    """(the answer, the messages before it) of a chosen or rejected value: text, one assistant message, or a
    whole conversation ending with the assistant's answer (UltraFeedback's layout)."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list) and value:
        messages = [dict(zip(("role", "content"), _content(turn, n, "role", "content")))
                    for n, turn in enumerate(value, 1)]
        if messages[-1]["role"] != "assistant":
            raise RowError(f"'{shown}' must end with an assistant message")
        value, before = messages[-1]["content"], messages[:-1]
    else:
        before = []
    if not isinstance(value, str):
        raise RowError(f"'{shown}' must be text or messages, not {kind(value)}" if value is not None
                       else f"missing '{shown}'")
    if not value.strip():
        raise RowError(f"empty '{shown}'")
    return value.strip(), before


def _preference(mapping: dict[str, str] | None):
    """Pairs of answers to one prompt, the better first: `prompt` (text or messages; TRL's implicit prompt, the
    messages shared before the answers, also works), `chosen` and `rejected` (text, or messages)."""
    names = {f: (mapping or {}).get(f) or f for f in ("prompt", "chosen", "rejected", "system")}

    def normalize(record: dict) -> dict:
        for name in ("chosen", "rejected"):
            if names[name] not in record:
                raise RowError(f"missing '{name}'")
        chosen, before = _answer(record[names["chosen"]], "chosen")
        rejected, _ = _answer(record[names["rejected"]], "rejected")
        raw = record.get(names["prompt"])
        if before:  # the answer's own conversation holds the prompt (UltraFeedback, TRL's implicit prompt)
            prompt = _prompt_turns(before)
        elif raw in (None, "", []):
            raise RowError("missing 'prompt'")
        else:
            prompt = _prompt_turns(raw)
        system = _text(record, names["system"], "system", False)
        if system and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": system}] + prompt
        if chosen == rejected:
            raise RowError("'chosen' and 'rejected' are the same answer; a pair needs two different ones")
        return {"prompt": prompt, "chosen": chosen, "rejected": rejected}
    return normalize


# The whole-conversation formats a conversational task also reads; a new format is one entry here (and a rule in
# _conversation_format that recognises it). Each takes the user's column mapping.
CONVERSATION_FORMATS = {"messages": lambda mapping: _messages, "sharegpt": lambda mapping: _sharegpt,
                        "alpaca": lambda mapping: _alpaca, "preference": _preference,
                        "text": lambda mapping: lambda record: {"text": record["text"]}}


def normalizer(spec: TaskSpec, recipe: type, columns: list[str], given: dict[str, str] | None, suffix: str,
               name: str) -> tuple[str, Callable[[dict], dict]]:
    """(the file's format, what turns one of its records into the task's fields or raises RowError): a column
    format mapped to the task's fields (given: the user's mapping), or a whole-conversation format."""
    fmt = _conversation_format(columns, given, suffix) if spec.conversations else "columns"
    if fmt in CONVERSATION_FORMATS:
        return fmt, CONVERSATION_FORMATS[fmt](given)
    return fmt, _columns(spec, recipe, _mapping(spec, columns, given, name))

"""Training data: read a user's JSONL, JSON, CSV or TXT file into normalized examples with a line-numbered report."""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from errors import UserError
from tasks.spec import TaskSpec, resolve, trainable_spec
from tasks.spec import spec as task_spec
from tasks.text import csv_rows, read_text_file

EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".txt")
MAX_LISTED = 10  # rejects listed by name in a summary; the rest are counted
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "model": "assistant",
                  "chatgpt": "assistant", "bot": "assistant", "system": "system"}


@dataclass
class Example:
    """One usable row: its line in the file and its normalized fields."""
    line: int
    fields: dict


@dataclass
class Rejected:
    """One unusable row: its line in the file and why, in one plain sentence."""
    line: int
    reason: str


@dataclass
class DataReport:
    """What reading a data file gave: the detected format, the columns seen, the kept and the rejected rows."""
    format: str  # messages, sharegpt, alpaca, preference, columns or text
    columns: list[str]
    rows_read: int
    examples: list[Example] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    unit: str = "line"  # what Example.line counts: "line", or "item" for a JSON array

    def summary(self) -> str:
        """The report in plain words, listing the first rejected rows and their reasons."""
        rows = f"{self.rows_read} row{'s' * (self.rows_read != 1)}"
        text = f"Read {rows}, kept {len(self.examples)}"
        if not self.rejected:
            return text + "."
        listed = "; ".join(f"{self.unit} {r.line}: {r.reason}" for r in self.rejected[:MAX_LISTED])
        more = len(self.rejected) - MAX_LISTED
        return f"{text}; {len(self.rejected)} rejected: {listed}" + (f"; and {more} more." if more > 0 else ".")


class RowError(ValueError):
    """A row is unusable; the message is the reason shown in the report."""


# ---- reading files into (line, record) rows -------------------------------------------------------------------

def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in EXTENSIONS:
        raise UserError(f"The file '{path.name}' has an unsupported type ('{suffix or 'no extension'}'); "
                        f"upload a {', '.join(EXTENSIONS[:-1])} or {EXTENSIONS[-1]} file.")
    return suffix


def _jsonl_rows(text: str) -> tuple[list[tuple[int, dict]], list[Rejected], int]:
    rows, rejected, read = [], [], 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not raw.strip():
            continue
        read += 1
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as error:
            rejected.append(Rejected(number, f"not valid JSON: {error.msg}"))
            continue
        if isinstance(record, dict):
            rows.append((number, record))
        else:
            rejected.append(Rejected(number, f"not a JSON object but {_kind(record)}"))
    return rows, rejected, read


def _json_rows(text: str, name: str) -> tuple[list[tuple[int, dict]], list[Rejected], int, str]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        if error.msg == "Extra data":  # one object per line saved as .json: read it as JSON Lines
            return *_jsonl_rows(text), "line"
        raise UserError(f"The file '{name}' is not valid JSON (line {error.lineno}: {error.msg}).") from None
    if isinstance(data, dict):
        data = next((data[key] for key in ("data", "rows", "examples") if isinstance(data.get(key), list)), data)
    if not isinstance(data, list):
        raise UserError(f"The file '{name}' must hold a JSON array of objects (or one object per line as .jsonl).")
    rows, rejected = [], []
    for index, record in enumerate(data, 1):
        if isinstance(record, dict):
            rows.append((index, record))
        else:
            rejected.append(Rejected(index, f"not a JSON object but {_kind(record)}"))
    return rows, rejected, len(data), "item"


def _csv_rows(text: str, name: str, delimiter: str) -> tuple[list[str], list[tuple[int, dict]], list[Rejected], int]:
    rows = csv_rows(text, name, delimiter)
    if not rows:
        return [], [], [], 0
    header = [v.strip() or f"column {i}" for i, v in enumerate(rows[0][1], 1)]
    kept, rejected = [], []
    for line, values in rows[1:]:
        if len(values) > len(header):
            rejected.append(Rejected(line, f"has {len(values)} values but the header names {len(header)} "
                                           "columns (quote values that contain the delimiter)"))
        else:
            kept.append((line, dict(zip(header, values))))
    return header, kept, rejected, len(rows) - 1


def _paragraphs(text: str) -> list[tuple[int, str]]:
    """Blank-line separated paragraphs with the line each starts on."""
    paragraphs, lines, start = [], [], 0
    for number, raw in enumerate(text.splitlines() + [""], 1):
        if raw.strip():
            start = start or number
            lines.append(raw.rstrip())
        elif lines:
            paragraphs.append((start, "\n".join(lines).strip()))
            lines, start = [], 0
    return paragraphs


class _Table(NamedTuple):
    """A file read into records: the columns seen, (line, record) rows, unreadable rows, rows read, line unit."""
    columns: list[str]
    rows: list[tuple[int, dict]]
    rejected: list[Rejected]
    read: int
    unit: str = "line"


def _read(path: Path, max_mb: float) -> _Table:
    """The records of a JSONL/JSON/CSV/TSV file; a TXT file gives one {"text"} record per paragraph."""
    suffix = _suffix(path)
    text = read_text_file(path, max_mb)
    if suffix == ".txt":
        rows = [(line, {"text": paragraph}) for line, paragraph in _paragraphs(text)]
        return _Table(["text"], rows, [], len(rows))
    if suffix in (".csv", ".tsv"):
        return _Table(*_csv_rows(text, path.name, "," if suffix == ".csv" else "\t"))
    rows, rejected, read, unit = (*_jsonl_rows(text), "line") if suffix == ".jsonl" else _json_rows(text, path.name)
    return _Table(list(dict.fromkeys(key for _, record in rows for key in record)), rows, rejected, read, unit)


def preview(path: str | Path, max_rows: int = 5, max_mb: float = 50) -> tuple[list[str], list[list[str]]]:
    """Column names and the first rows as strings for the column-mapping preview (.txt: ["text"] and paragraphs)."""
    table = _read(Path(path), max_mb)
    if not table.rows:
        raise _nothing_usable(Path(path).name, table.rejected, table.unit)
    return table.columns, [[_cell(record.get(c)) for c in table.columns] for _, record in table.rows[:max_rows]]


def _cell(value: object, width: int = 200) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


# ---- normalizing records ----------------------------------------------------------------------------------------

def _kind(value: object) -> str:
    kinds = {dict: "an object", list: "a list", bool: "true/false", type(None): "null", str: "text"}
    return kinds.get(type(value), "a number")


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
        raise RowError(f"'{shown}' must be text, not {_kind(value)}")
    value = (value or "").strip()
    if not value and required:
        raise RowError(f"empty '{shown}'")
    return value


def _content(message: object, number: int, role_key: str, content_key: str) -> tuple[str, str]:
    if not isinstance(message, dict):
        raise RowError(f"message {number} is {_kind(message)}, not an object")
    role, content = message.get(role_key), message.get(content_key)
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        content = "".join(str(p.get("text", "")) for p in content)  # OpenAI's list-of-parts content
    if not isinstance(role, str):
        raise RowError(f"message {number} has no '{role_key}'")
    if not isinstance(content, str):
        raise RowError(f"message {number} has {_kind(content)} as '{content_key}', not text")
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
    return {"messages": ([{"role": "system", "content": system}] if system else [])
            + [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}


def _columns(spec: TaskSpec, mapping: dict[str, str]):
    """Records of a column format → the task's fields, then as its recipe reads them."""
    recipe = resolve(spec.recipe)

    def normalize(record: dict) -> dict:
        fields = {f: _text(record, mapping[f], f) for f in spec.required}
        fields.update({f: v for f in spec.optional if f in mapping and (v := _text(record, mapping[f], f, False))})
        # The recipe sees the raw values under the field names (an offset refers to the unstripped text).
        return recipe.row(fields, {**record, **{f: record.get(column) for f, column in mapping.items()}})
    return normalize


# ---- the public entry points ------------------------------------------------------------------------------------

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


def _nothing_usable(name: str, rejected: list[Rejected], unit: str) -> UserError:
    reasons = "; ".join(f"{unit} {r.line}: {r.reason}" for r in rejected[:3])
    return UserError(f"The file '{name}' has no usable rows" + (f" ({reasons})." if reasons else "."))


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
        raise RowError(f"'{shown}' must be text or messages, not {_kind(value)}" if value is not None
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


def load_examples(path: str | Path, task: str, columns: dict[str, str] | None = None,
                  max_mb: float = 50, name: str | None = None) -> DataReport:
    """Read and validate a data file for task: usable rows become Examples, bad rows are reported by line."""
    spec = trainable_spec(task_spec(task).id)
    name = name or Path(path).name
    if not spec.conversations and Path(path).suffix.lower() == ".txt":
        raise UserError(f"The file '{name}' is plain text, which only chat training reads; for {task} upload a "
                        f".jsonl, .json or .csv file with the columns {', '.join(spec.required)}.")
    table = _read(Path(path), max_mb)
    found, rejected, unit = table.columns, list(table.rejected), table.unit
    if not table.rows:
        raise _nothing_usable(name, rejected, unit)
    fmt = _conversation_format(found, columns, Path(path).suffix.lower()) if spec.conversations else "columns"
    normalize = CONVERSATION_FORMATS[fmt](columns) if fmt in CONVERSATION_FORMATS else \
        _columns(spec, _mapping(spec, found, columns, name))
    examples = []
    for line, record in table.rows:
        try:
            examples.append(Example(line, normalize(record)))
        except RowError as error:
            rejected.append(Rejected(line, str(error)))
    rejected.sort(key=lambda r: r.line)
    if not examples:
        raise _nothing_usable(name, rejected, unit)
    resolve(spec.recipe).check_rows(examples, name)
    return DataReport(fmt, found, table.read, examples, rejected, unit)


def split_validation(examples: list[Example], seed: int) -> tuple[list[Example], list[Example]]:
    """With >= 50 examples hold out 10% (at least 5, at most 200) chosen with seed; with fewer, hold out none."""
    if len(examples) < 50:
        return list(examples), []
    size = min(200, max(5, len(examples) // 10))
    held = set(random.Random(seed).sample(range(len(examples)), size))
    # Both parts keep the file's order, so a report lists rows the way the user wrote them.
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def examples_digest(examples: list[Example]) -> str:
    """sha256 hex of the normalized examples (stable JSON, in order; line numbers do not count)."""
    payload = json.dumps([e.fields for e in examples], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()

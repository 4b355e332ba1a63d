"""File readers: a user's JSONL, JSON, CSV, TSV or TXT file read into (line, record) rows, with the rows that cannot
be read. What a record means for a task is training/formats.py's."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from errors import UserError
from tasks.text import csv_rows, read_text_file

EXTENSIONS = (".jsonl", ".json", ".csv", ".tsv", ".txt")


@dataclass
class Rejected:
    """One unusable row: its line in the file and why, in one plain sentence."""
    line: int
    reason: str


class Table(NamedTuple):
    """A file read into records: the columns seen, (line, record) rows, unreadable rows, rows read, line unit."""
    columns: list[str]
    rows: list[tuple[int, dict]]
    rejected: list[Rejected]
    read: int
    unit: str = "line"


def read_table(path: Path, max_mb: float) -> Table:
    """The records of a JSONL/JSON/CSV/TSV file; a TXT file gives one {"text"} record per paragraph."""
    suffix = _suffix(path)
    text = read_text_file(path, max_mb)
    if suffix == ".txt":
        rows = [(line, {"text": paragraph}) for line, paragraph in _paragraphs(text)]
        return Table(["text"], rows, [], len(rows))
    if suffix in (".csv", ".tsv"):
        return Table(*_csv_rows(text, path.name, "," if suffix == ".csv" else "\t"))
    rows, rejected, count, unit = (*_jsonl_rows(text), "line") if suffix == ".jsonl" else _json_rows(text, path.name)
    return Table(list(dict.fromkeys(key for _, record in rows for key in record)), rows, rejected, count, unit)


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
            rejected.append(Rejected(number, f"not a JSON object but {kind(record)}"))
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
            rejected.append(Rejected(index, f"not a JSON object but {kind(record)}"))
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


def kind(value: object) -> str:
    """What a JSON value is, in words, for a reason that says what was found instead."""
    kinds = {dict: "an object", list: "a list", bool: "true/false", type(None): "null", str: "text"}
    return kinds.get(type(value), "a number")


def nothing_usable(name: str, rejected: list[Rejected], unit: str) -> UserError:
    """The error for a file with no row to use, naming the first reasons."""
    reasons = "; ".join(f"{unit} {r.line}: {r.reason}" for r in rejected[:3])
    return UserError(f"The file '{name}' has no usable rows" + (f" ({reasons})." if reasons else "."))

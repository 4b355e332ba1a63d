"""Training data: read a user's JSONL, JSON, CSV or TXT file into normalized examples with a line-numbered report.

Reading a file into records is training/readers.py's, turning a record into a task's fields training/formats.py's;
this file puts them together for a task and its recipe, and holds the records the rest of training uses.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from errors import UserError
from tasks.spec import trainable_spec
from tasks.spec import spec as task_spec
from training import formats
from training.formats import RowError
from training.readers import EXTENSIONS  # noqa: F401  (the tabs name the file types they take as data.EXTENSIONS)
from training.readers import Rejected, nothing_usable, read_table

MAX_LISTED = 10  # rejects listed by name in a summary; the rest are counted


@dataclass
class Example:
    """One usable row: its line in the file and its normalized fields."""
    line: int
    fields: dict


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


def preview(path: str | Path, max_rows: int = 5, max_mb: float = 50) -> tuple[list[str], list[list[str]]]:
    """Column names and the first rows as strings for the column-mapping preview (.txt: ["text"] and paragraphs)."""
    table = read_table(Path(path), max_mb)
    if not table.rows:
        raise nothing_usable(Path(path).name, table.rejected, table.unit)
    return table.columns, [[_cell(record.get(c)) for c in table.columns] for _, record in table.rows[:max_rows]]


def _cell(value: object, width: int = 200) -> str:
    text = "" if value is None else value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[:width - 1] + "…"


def load_examples(path: str | Path, task: str, columns: dict[str, str] | None = None,
                  max_mb: float = 50, name: str | None = None) -> DataReport:
    """Read and validate a data file for task: usable rows become Examples, bad rows are reported by line."""
    from training.registry import recipe_class  # imported here: the recipes it imports import this module

    spec = trainable_spec(task_spec(task).id)
    name = name or Path(path).name
    if not spec.conversations and Path(path).suffix.lower() == ".txt":
        raise UserError(f"The file '{name}' is plain text, which only chat training reads; for {task} upload a "
                        f".jsonl, .json or .csv file with the columns {', '.join(spec.required)}.")
    table = read_table(Path(path), max_mb)
    found, rejected, unit = table.columns, list(table.rejected), table.unit
    if not table.rows:
        raise nothing_usable(name, rejected, unit)
    recipe = recipe_class(spec.id)
    fmt, normalize = formats.normalizer(spec, recipe, found, columns, Path(path).suffix.lower(), name)
    examples = []
    for line, record in table.rows:
        try:
            examples.append(Example(line, normalize(record)))
        except RowError as error:
            rejected.append(Rejected(line, str(error)))
    rejected.sort(key=lambda r: r.line)
    if not examples:
        raise nothing_usable(name, rejected, unit)
    recipe.check_rows(examples, name)
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

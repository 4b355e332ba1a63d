"""Text helpers shared by the tasks: sentences, paragraphs, highlighting and reading user files safely."""

from __future__ import annotations

import html
import re
from pathlib import Path

from errors import UserError

# A sentence ends at . ! ? … or a CJK full stop, followed by space (or directly, for CJK) and an upper-case
# letter, digit, quote or CJK character. Abbreviations such as "e.g." followed by lower case stay joined.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"'“(\[]?[A-ZÀ-ÖØ-Þ0-9\u3040-\u30ff\u4e00-\u9fff])|(?<=[。！？])")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|vs|etc|No|Fig|Inc|Ltd|[A-Z])\.$")


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs: blocks separated by one or more blank lines, stripped, never empty."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences of text, in order; line breaks inside a paragraph count as spaces."""
    sentences = []
    for paragraph in split_paragraphs(text):
        flat = re.sub(r"\s*\n\s*", " ", paragraph)
        for part in (s.strip() for s in _SENTENCE_END.split(flat) if s.strip()):
            if sentences and _ABBREVIATION.search(sentences[-1]) and not sentences[-1].endswith(tuple("。！？")):
                sentences[-1] += " " + part  # "Dr. Smith" is one sentence
            else:
                sentences.append(part)
    return sentences


def highlight(text: str, start: int, end: int) -> str:
    """HTML of text with text[start:end] marked (everything else escaped)."""
    return (html.escape(text[:start]) + "<mark>" + html.escape(text[start:end]) + "</mark>"
            + html.escape(text[end:]))


def snippet(text: str, query: str, width: int = 300) -> str:
    """HTML of up to width characters of text with the query's words marked."""
    words = {w.lower() for w in re.findall(r"\w{3,}", query)}
    shown = text if len(text) <= width else text[:width].rsplit(" ", 1)[0] + " …"
    parts = re.split(r"(\w+)", shown)
    return "".join(f"<mark>{html.escape(p)}</mark>" if p.lower() in words else html.escape(p) for p in parts)


def read_text_file(path: str | Path, max_mb: float, name: str | None = None) -> str:
    """The UTF-8 text of an uploaded file, or a UserError naming the file: missing, too big, binary, not UTF-8."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise UserError(f"The file '{name}' could not be found; please upload it again.")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        raise UserError(f"The file '{name}' is {size_mb:.1f} MB; the limit is {max_mb:g} MB.")
    data = path.read_bytes()
    if b"\x00" in data[:8192]:
        raise UserError(f"The file '{name}' looks binary, not text; upload a .txt, .md, .csv or .jsonl file.")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise UserError(f"The file '{name}' is not UTF-8 text (first bad byte on line {line}); "
                        "save it as UTF-8 and upload it again.") from None
    if not text.strip():
        raise UserError(f"The file '{name}' is empty.")
    return text

"""Text helpers shared by the tasks: sentences, paragraphs, highlighting, and reading user files (text, CSV)
safely."""

from __future__ import annotations

import csv
import html
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errors import TooLarge, UserError

# English function words: they say nothing of what a passage is about (retrieval follow-ups, support checks).
STOPWORDS = frozenset(
    "a an the and or but of to in on at by for with from into about as than then is are was were be been being "
    "do does did has have had can could will would should not no yes it its this that these those there their "
    "they them he she his her him i me my you your we our us what which who whom whose when where why how".split())

# A sentence ends at . ! ? … followed by space and an upper-case letter, digit, quote or CJK character.
# Abbreviations such as "e.g." followed by lower case stay joined.
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[\"'“(\[]?[A-ZÀ-ÖØ-Þ0-9\u3040-\u30ff\u4e00-\u9fff])")
_ABBREVIATION = re.compile(r"(?:^|\s)(?:Mr|Mrs|Ms|Dr|Prof|St|Sr|Jr|vs|etc|No|Fig|Inc|Ltd|[A-Z])\.$")
CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"  # kana and Han characters
HAN = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
CJK_STOPS = tuple("。！？｡．")
# Chinese is written without spaces: a sentence ends at a full stop, exclamation or question mark (full-width, or
# half-width right after a CJK character), with the closing quotes and brackets that belong to it. A semicolon
# only separates clauses: chunking cuts a sentence too long for a chunk there (_CLAUSE), a summary never does.
_CJK_SENTENCE = re.compile(rf".+?(?:(?:[。！？｡．]|(?<=[{CJK}])[.!?])[。！？｡．!?]*[」』”’）》】〕\"')]*|$)", re.DOTALL)
_CLAUSE = re.compile(r"[^，、；：,;:]+[，、；：,;:]*[」』”’）》】〕\"')]*")
_WORD = re.compile(rf"[{CJK}]|[^\s{CJK}]+")
_WIDE_END = re.compile(rf"[{CJK}\u3000-\u303f\uff00-\uffef][.!?]?[」』”’）》】〕\"')]*$")  # ends in CJK (or its stop)
_WIDE_START = re.compile(rf"[“‘「『（《\"'(]*[{CJK}]")
_FINISHED = re.compile(rf"[.!?…。！？｡．][」』”’）》】〕\"')]*(?=\s|$|[{CJK}])")  # the end of a finished sentence


def split_paragraphs(text: str) -> list[str]:
    """Paragraphs: blocks separated by one or more blank lines, stripped, never empty."""
    return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def split_sentences(text: str) -> list[str]:
    """Sentences of text, in order; line breaks inside a paragraph count as spaces. A Chinese sentence keeps its
    closing quote (他说：“好。” is one sentence)."""
    sentences = []
    for paragraph in split_paragraphs(text):
        flat = re.sub(r"\s*\n\s*", " ", paragraph)
        for part in (s.strip() for piece in _SENTENCE_END.split(flat) for s in _CJK_SENTENCE.findall(piece)):
            if not part:
                continue
            if sentences and _ABBREVIATION.search(sentences[-1]) and not sentences[-1].endswith(CJK_STOPS):
                sentences[-1] += " " + part  # "Dr. Smith" is one sentence
            else:
                sentences.append(part)
    return sentences


def join_sentences(sentences: list[str]) -> str:
    """Sentences as running text: a space between them, none between two Chinese ones (Chinese has no spaces)."""
    out = ""
    for sentence in sentences:
        tight = _WIDE_END.search(out) and _WIDE_START.match(sentence)
        out += sentence if not out or tight else " " + sentence
    return out


def whole_sentences(text: str) -> str:
    """text without its unfinished last sentence (a summary cut off by its token cap), when a finished sentence
    comes before it; text as it is otherwise."""
    text = text.rstrip()
    ends = [m.end() for m in _FINISHED.finditer(text)]
    return text[:ends[-1]] if ends and ends[-1] < len(text) else text


def chinese_share(text: str) -> float:
    """The share of Han characters among the words of text, each CJK character counting as a word (0 without
    any words)."""
    words = [w for w in _WORD.findall(text[:4_000]) if any(c.isalnum() for c in w)]  # the start says enough
    return sum(1 for w in words if HAN.match(w)) / len(words) if words else 0.0


def is_chinese(text: str) -> bool:
    """Whether text is mostly Chinese: 40% or more of its words are Han characters. A cheap test, not langdetect:
    Japanese kana count as words, so Japanese written mostly in kana is not taken for Chinese."""
    return chinese_share(text) >= 0.4


def highlight(text: str, start: int, end: int) -> str:
    """HTML of text with text[start:end] marked (everything else escaped)."""
    return (html.escape(text[:start]) + "<mark>" + html.escape(text[start:end]) + "</mark>"
            + html.escape(text[end:]))


def snippet(text: str, query: str, width: int = 300) -> str:
    """HTML of up to width characters of text with the query's words marked (for Chinese, the query's pairs of
    characters, since it has no spaces to find words by)."""
    words = {w.lower() for w in re.findall(r"\w{3,}", query) if not HAN.search(w)} - STOPWORDS  # "the", "when"
    pairs = {run[i:i + 2] for run in re.findall(f"[{CJK}]+", query) for i in range(len(run) - 1)}
    shown = text
    if len(text) > width:
        cut = text[:width]
        space = cut.rfind(" ")
        shown = (cut[:space] if space > width - 40 else cut) + " …"  # end between words where there are any
    parts = re.split(r"(\w+)", shown)
    html_parts = "".join(f"<mark>{html.escape(p)}</mark>" if p.lower() in words else html.escape(p) for p in parts)
    if not pairs:
        return html_parts
    marked = re.compile("(?:" + "|".join(map(re.escape, sorted(pairs))) + ")+")
    return marked.sub(lambda m: f"<mark>{m.group(0)}</mark>", html_parts)


def read_text_file(path: str | Path, max_mb: float, name: str | None = None) -> str:
    """The UTF-8 text of an uploaded file, or a UserError naming the file: missing, too big, binary, not UTF-8."""
    path = Path(path)
    name = name or path.name
    if not path.is_file():
        raise UserError(f"The file '{name}' could not be found; please upload it again.")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        raise TooLarge(f"The file '{name}' is {size_mb:.1f} MB; the limit is {max_mb:g} MB.")
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


def csv_rows(text: str, name: str, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    """The non-blank rows of CSV (or TSV) text with the line each starts on (a quoted value may span lines).

    The one CSV reader of the app. A first line without the delimiter is read with ';', tab or '|' if it has one
    (European spreadsheets save with ';'); a long document is one value, never an error."""
    first = text.lstrip("\r\n").split("\n", 1)[0]
    if delimiter not in first:
        delimiter = next((d for d in ";\t|," if d in first), delimiter)
    csv.field_size_limit(max(csv.field_size_limit(), len(text)))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, line = [], 1
    try:
        for values in reader:
            start, line = line, reader.line_num + 1  # a row starts on the line after the previous one ended
            if any(v.strip() for v in values):
                rows.append((start, values))
    except csv.Error as error:
        raise UserError(f"The file '{name}' is not a readable CSV file (line {reader.line_num}: {error}).") from None
    return rows


def csv_column(path: str | Path, column: str, max_mb: float, name: str | None = None) -> list[str]:
    """The values of one column of a CSV file (by its header), or a UserError naming the columns there are."""
    header, rows = csv_table(path, max_mb, name)
    if column not in header:
        raise UserError(f"The file has no column '{column}'; its columns are: {', '.join(header)}.")
    index = header.index(column)
    return [values[index] if index < len(values) else "" for _, values in rows]


def csv_table(path: str | Path, max_mb: float, name: str | None = None) -> tuple[list[str], list]:
    """(header, [(line, values)]) of a CSV file whose first row names its columns."""
    rows = csv_rows(read_text_file(path, max_mb, name), name or Path(path).name)
    if not rows:
        raise UserError(f"The file '{name or Path(path).name}' is empty.")
    header = [v.strip() or f"column {i}" for i, v in enumerate(rows[0][1], 1)]
    return header, rows[1:]


# ---- the one text chunker ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets of the chunk in the text it was cut from
    end: int


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    size: int
    paragraph: int


def word_count(text: str) -> int:
    """Words, each CJK character counting as one: Chinese has no spaces, and a model reads about a token per
    character, so a limit in words is a limit in characters for Chinese."""
    return len(_WORD.findall(text))


def _atoms(text: str, start: int, end: int, max_size: int, size: Callable[[str], int]) -> list[tuple[int, int]]:
    """The pieces a sentence too big for max_size is cut between: words; a word (or an unspaced Chinese sentence)
    too big alone is cut after its clauses (，；： and the like), and a clause too big between characters."""
    atoms = []
    for word in re.finditer(r"\S+", text[start:end]):
        a, b = start + word.start(), start + word.end()
        if size(text[a:b]) <= max_size:
            atoms.append((a, b))
            continue
        for clause in _CLAUSE.finditer(text, a, b):
            c, d = clause.span()
            atoms += [(c, d)] if size(text[c:d]) <= max_size else [(i, i + 1) for i in range(c, d)]
    return atoms


def _windows(text: str, start: int, end: int, max_size: int, size: Callable[[str], int]) -> list[tuple[int, int, int]]:
    """A sentence too big for max_size as (start, end, size) windows cut between words, clauses or characters."""
    windows, first, last, used = [], None, 0, 0
    for a, b in _atoms(text, start, end, max_size, size):
        # A word counts as it does inside the sentence: with its leading space (one BPE token, not two).
        cost = size((" " if first is not None and a > 0 and text[a - 1].isspace() else "") + text[a:b])
        if first is not None and used + cost > max_size:
            windows.append((first, last, used))
            first, used = None, 0
        first = a if first is None else first
        last, used = b, used + cost
    return windows + [(first, last, used)] if first is not None else windows


def _units(text: str, max_size: int, size: Callable[[str], int]) -> list[_Unit]:
    """Sentences with their offsets in text; a sentence over max_size is cut into windows."""
    units, position = [], 0
    for number, paragraph in enumerate(split_paragraphs(text)):
        begins = text.find(paragraph, position)
        position = max(begins, position)
        for sentence in split_sentences(paragraph):
            # split_sentences joins lines with spaces: find the sentence with any whitespace between words.
            found = re.compile(r"\s+".join(map(re.escape, sentence.split()))).search(text, position)
            start, end = (found.start(), found.end()) if found else (position, min(position + len(sentence),
                                                                                    len(text)))
            whole = size(text[start:end])
            parts = [(start, end, whole)] if whole <= max_size else _windows(text, start, end, max_size, size)
            units += [_Unit(a, b, n, number) for a, b, n in parts]
            position = end
        position = max(position, begins + len(paragraph))  # searched again, a repeated paragraph is found later
    return units


def chunk_text(text: str, max_size: int, min_size: int | None = None, size: Callable[[str], int] = word_count,
               overlap: bool = True) -> list[Chunk]:
    """text cut into chunks of at most max_size (as size measures: words, or a tokenizer's tokens).

    Chunks end at a paragraph once they hold min_size (default max_size: as full as they can be), else at a
    sentence; a sentence too big alone is cut between words (or a Chinese one after a clause). With overlap, each
    chunk after the first repeats the previous chunk's last sentence, so no idea is cut in two."""
    min_size = max_size if min_size is None else min_size
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    for unit in _units(text, max_size, size):
        used = sum(u.size for u in current)
        full = used + unit.size > max_size
        paragraph_end = bool(current) and used >= min_size and unit.paragraph != current[-1].paragraph
        if current and (full or paragraph_end):
            groups.append(current)
            repeat = overlap and len(current) > 1 and current[-1].size + unit.size <= max_size
            current = current[-1:] if repeat else []
        current.append(unit)
    if current:
        previous = groups[-1] if groups else None
        fresh = [u for u in current if previous is None or u not in previous]
        small = sum(u.size for u in current) < min_size
        if previous is not None and small and sum(u.size for u in previous + fresh) <= max_size:
            previous.extend(fresh)  # a short tail reads better inside the chunk before it
        elif fresh:
            groups.append(current)
    return [Chunk(text[g[0].start:g[-1].end], g[0].start, g[-1].end) for g in groups]

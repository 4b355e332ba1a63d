"""Documents for search: reading uploaded files (.txt, .md, .csv, .pdf) and cutting text into chunks."""

from __future__ import annotations

import csv
import hashlib
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errors import UserError
from tasks.text import read_text_file, split_paragraphs, split_sentences

MIN_WORDS = 80  # a chunk shorter than this grows by the next paragraph (when it fits)
MAX_WORDS = 200  # all-MiniLM-L6-v2 reads ~256 word pieces: longer chunks would be cut silently
NAME_LIMIT = 200  # characters kept of a document's name


@dataclass(frozen=True)
class Chunk:
    text: str
    start: int  # character offsets of the chunk in its document's text
    end: int


@dataclass(frozen=True)
class Document:
    name: str  # what search results show as their source; unique within a collection
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def chunks(self) -> list[Chunk]:
        return chunk_text(self.text)


def document_name(name: str) -> str:
    """A display name from an uploaded file's name: no folders, no control characters, not too long."""
    name = re.sub(r"[\x00-\x1f\x7f]", "", Path(str(name).replace("\\", "/")).name).strip()
    return name[:NAME_LIMIT] or "unnamed"


def pasted_document(text: str) -> Document:
    """Pasted text as a document named by its content, so pasting it twice is recognised."""
    text = text.strip()
    return Document(f"pasted text {hashlib.sha256(text.encode('utf-8')).hexdigest()[:8]}", text)


def _size_checked(path: Path, name: str, max_mb: float) -> Path:
    if not path.is_file():
        raise UserError(f"The file '{name}' could not be found; please upload it again.")
    size_mb = path.stat().st_size / 2**20
    if size_mb > max_mb:
        raise UserError(f"The file '{name}' is {size_mb:.1f} MB; the limit is {max_mb:g} MB.")
    return path


def read_plain(path: Path, name: str, max_mb: float) -> str:
    return read_text_file(path, max_mb, name)


def read_csv(path: Path, name: str, max_mb: float) -> str:
    """Each row becomes a paragraph of its cells that hold words; numbers and ids alone say little to a search."""
    text = read_text_file(path, max_mb, name)
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t|")
    except csv.Error:
        dialect = csv.excel
    try:
        rows = list(csv.reader(io.StringIO(text), dialect))
        header = csv.Sniffer().has_header(sample) if len(rows) > 1 else False
    except csv.Error as error:
        raise UserError(f"The file '{name}' could not be read as CSV ({error}).") from None
    rows = rows[1:] if header else rows
    paragraphs = [" — ".join(c.strip() for c in row if re.search(r"[^\W\d_]", c)) for row in rows]
    paragraphs = [p for p in paragraphs if p]
    if not paragraphs:
        raise UserError(f"The CSV file '{name}' has no cells with text in them.")
    return "\n\n".join(paragraphs)


def read_pdf(path: Path, name: str, max_mb: float) -> str:
    """The text of every page; scanned PDFs (images only) have none and are refused with that reason."""
    from pypdf import PdfReader
    from pypdf.errors import PyPdfError

    _size_checked(path, name, max_mb)
    try:
        reader = PdfReader(path)
        if reader.is_encrypted and not reader.decrypt(""):
            raise UserError(f"The PDF '{name}' is password-protected; upload an unprotected copy.")
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except (PyPdfError, ValueError, KeyError, OSError) as error:
        raise UserError(f"The file '{name}' could not be read as a PDF ({type(error).__name__}).") from None
    text = "\n\n".join(p for p in pages if p)
    if not text.strip():
        raise UserError(f"The PDF '{name}' has no text that can be extracted (it may be scanned images).")
    return text


# One reader per file type; a new format is one entry here.
Reader = Callable[[Path, str, float], str]
READERS: dict[str, Reader] = {".txt": read_plain, ".md": read_plain, ".csv": read_csv, ".pdf": read_pdf}


def read_document(path: str | Path, name: str, max_mb: float) -> Document:
    """The document in an uploaded file, or a UserError naming the file and saying what is wrong with it."""
    name = document_name(name or Path(path).name)
    reader = READERS.get(Path(name).suffix.lower())
    if reader is None:
        kinds = ", ".join(READERS)
        raise UserError(f"The file '{name}' is not a supported type; upload {kinds} files.")
    return Document(name, reader(Path(path), name, max_mb).strip())


@dataclass(frozen=True)
class _Unit:
    start: int
    end: int
    words: int
    paragraph: int


def _sentence_units(text: str) -> list[_Unit]:
    """Sentences with their offsets in text; sentences over MAX_WORDS are cut into word windows."""
    units, position = [], 0
    for number, paragraph in enumerate(split_paragraphs(text)):
        position = max(text.find(paragraph, position), position)
        for sentence in split_sentences(paragraph):
            # split_sentences joins lines with spaces: find the sentence with any whitespace between words.
            pattern = r"\s+".join(map(re.escape, sentence.split()))
            found = re.compile(pattern).search(text, position)
            start, end = (found.start(), found.end()) if found else (position, min(position + len(sentence),
                                                                                    len(text)))
            words = [m.span() for m in re.finditer(r"\S+", text[start:end])]
            for i in range(0, max(len(words), 1), MAX_WORDS):
                window = words[i:i + MAX_WORDS] or [(0, end - start)]
                units.append(_Unit(start + window[0][0], start + window[-1][1], len(window), number))
            position = end
        position = max(position, text.find(paragraph, position) + len(paragraph))
    return units


def chunk_text(text: str, min_words: int = MIN_WORDS, max_words: int = MAX_WORDS) -> list[Chunk]:
    """Chunks of about min_words..max_words words, cut at paragraph ends when long enough, else at sentence
    ends; each chunk after the first repeats the previous chunk's last sentence, so no idea is cut in two."""
    groups: list[list[_Unit]] = []
    current: list[_Unit] = []
    for unit in _sentence_units(text):
        size = sum(u.words for u in current)
        full = size + unit.words > max_words
        paragraph_end = bool(current) and size >= min_words and unit.paragraph != current[-1].paragraph
        if current and (full or paragraph_end):
            groups.append(current)
            overlap = current[-1:] if len(current) > 1 and current[-1].words + unit.words <= max_words else []
            current = list(overlap)
        current.append(unit)
    if current:
        previous = groups[-1] if groups else None
        fresh = [u for u in current if previous is None or u not in previous]
        small = sum(u.words for u in current) < min_words
        if previous is not None and small and sum(u.words for u in previous + fresh) <= max_words:
            previous.extend(fresh)  # a short tail reads better inside the chunk before it
        elif fresh:
            groups.append(current)
    return [Chunk(text[g[0].start:g[-1].end], g[0].start, g[-1].end) for g in groups]

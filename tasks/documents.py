"""Documents for search: reading uploaded files (.txt, .md, .csv, .pdf) and cutting text into chunks."""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from errors import TooLarge, UserError
from tasks.text import Chunk, chunk_text, csv_rows, read_text_file

# Words, or characters of Chinese (tasks.text.word_count): a model reads about one token per Chinese character.
MIN_WORDS = 80  # a chunk shorter than this grows by the next paragraph (when it fits)
MAX_WORDS = 200  # all-MiniLM-L6-v2 reads ~256 word pieces: longer chunks would be cut silently
NAME_LIMIT = 200  # characters kept of a document's name


@dataclass(frozen=True)
class Document:
    name: str  # what search results show as their source; unique within a collection
    text: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()

    def chunks(self) -> list[Chunk]:
        """Chunks of MIN_WORDS to MAX_WORDS words (characters of Chinese), each repeating the last sentence of the
        one before."""
        return chunk_text(self.text, MAX_WORDS, MIN_WORDS)


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
        raise TooLarge(f"The file '{name}' is {size_mb:.1f} MB; the limit is {max_mb:g} MB.")
    return path


def read_plain(path: Path, name: str, max_mb: float) -> str:
    return read_text_file(path, max_mb, name)


def read_csv(path: Path, name: str, max_mb: float) -> str:
    """Each row becomes a paragraph of its cells that hold words; numbers and ids alone say little to a search."""
    text = read_text_file(path, max_mb, name)
    rows = [values for _, values in csv_rows(text, name)]
    try:  # a header names columns, which says nothing about the document
        header = len(rows) > 1 and csv.Sniffer().has_header(text[:8192])
    except csv.Error:
        header = False
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

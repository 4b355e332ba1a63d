"""Chat from the user's documents: the passages a conversation needs, fitted into the model's context, and the
sources its reply cites (DESIGN §1: `/chat`'s reply ends with a `Sources:` line naming each cited passage).

A small model rarely writes `[1]` itself, so a reply's sources are also read from what it says: the passages
whose words it uses. When no passage is relevant the model is not asked at all: the reply says it does not know,
instead of a guess that reads like an answer."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

from tasks.text import STOPWORDS

MIN_RELEVANCE = 0.3  # cosine (MiniLM) below which a passage is not about the question; bench/grounded_chat.py
PASSAGES = 3  # the best passages the model reads
QUERY_CHARS = 1_000  # of a message, searched for
PASSAGE_SHARE = 0.5  # of the prompt's room; the older turns get the rest
SOURCES = "\n\nSources:"  # where a cited reply's sources line starts
SUPPORT = 0.25  # the share of a reply's words that must come from a passage for it to be cited
NOTHING_FOUND = ("I don't know: nothing in the collection '{collection}' is about this. Ask with other words, or "
                 "add the document that answers it.")
INSTRUCTION = ("Answer the question using only the passages below. If they do not say, answer that you don't "
               "know.")
_MARKER = re.compile(r"\[(\d{1,2})\]")
_STATED = re.compile(r"\b[A-Z][\w-]*[a-z][\w-]*\b|\d[\d,.:]*\d|\d")  # a capitalised word or a number
_WORD = re.compile(r"[^\W_]+")
_CJK = re.compile(r"[\u3400-\u9fff]")
_REFERRING = frozenset("it its they them their that this these those there he she his her him".split())


@dataclass(frozen=True)
class Passage:
    """A retrieved chunk as the model reads it: its number in the prompt, its text and where it comes from."""

    number: int
    text: str
    source: str
    chunk: int
    score: float
    collection: str

    def public(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """How a Sources line names it: `[1] handbook.md`."""
        return f"[{self.number}] {self.source or 'pasted text'}"


def follows_up(message: str) -> bool:
    """Whether a message leans on the one before for its subject: "How long?", "When does it open?"."""
    words = _WORD.findall(message.lower())
    return len(words) <= 2 or any(word in _REFERRING for word in words) or any(c in message for c in "它他她这那其该")


def retrieval_queries(turns: list[dict]) -> list[str]:
    """What to search for: the newest message, and for a follow-up also it joined to the message before (its
    subject is there; a new question searched with the old one would find the old answer again)."""
    asked = [turn["content"] for turn in turns if turn["role"] == "user" and turn["content"].strip()]
    queries = asked[-1:] + ([f"{asked[-2]}\n{asked[-1]}"] if len(asked) > 1 and follows_up(asked[-1]) else [])
    return [query[-QUERY_CHARS:] for query in queries]  # the embedder reads ~256 word pieces anyway


def relevant(hit_lists: list[list[dict]], count: int = PASSAGES) -> list[Passage]:
    """The best distinct hits of several searches scoring at least MIN_RELEVANCE, numbered from 1."""
    best: dict[tuple, dict] = {}
    for hits in hit_lists:
        for hit in hits:
            key = (hit["collection"], hit["source"], hit["chunk"])
            if hit["score"] >= MIN_RELEVANCE and hit["score"] > best.get(key, {"score": -1.0})["score"]:
                best[key] = hit
    ranked = sorted(best.values(), key=lambda hit: -hit["score"])[:count]
    return [Passage(n, hit["text"], hit["source"], hit["chunk"], hit["score"], hit["collection"])
            for n, hit in enumerate(ranked, 1)]


def fitted(passages: list[Passage], count_tokens: Callable[[str], int], budget: int) -> list[Passage]:
    """The passages, best first, that fit in budget tokens; the first that does not fit is cut at a word to what
    is left when that is worth reading (a long chunk still gives its opening)."""
    kept, left = [], budget
    for passage in passages:
        size = count_tokens(passage.text) + 8  # its number and source around it
        if size <= left:
            kept.append(passage)
            left -= size
            continue
        if left >= 48:
            words = passage.text.split()
            keep = max(1, int(len(words) * (left - 8) / size))
            while keep > 1 and count_tokens(" ".join(words[:keep])) + 8 > left:
                keep = int(keep * 0.8)
            kept.append(Passage(passage.number, " ".join(words[:keep]) + " …", passage.source, passage.chunk,
                                passage.score, passage.collection))
        break
    return kept


def asks_documents(collection: object) -> bool:
    """Whether a request names a collection to answer from: blank or missing means none (a name that is not a
    string counts, to be refused by name)."""
    return not (collection is None or isinstance(collection, str) and not collection.strip())


def grounded_message(message: str, passages: list[Passage]) -> str:
    """The user's turn as the model reads it: the instruction, the numbered passages, then the question."""
    blocks = "\n\n".join(f"[{p.number}] ({p.source or 'pasted text'})\n{p.text}" for p in passages)
    return f"{INSTRUCTION}\n\n{blocks}\n\nQuestion: {message}"


def _words(text: str) -> set[str]:
    """The words that carry meaning (Chinese: each character pair), lower-cased."""
    words = {w for w in _WORD.findall(text.lower()) if w not in STOPWORDS and (len(w) > 2 or w.isdigit())}
    han = "".join(_CJK.findall(text))
    return words | {han[i:i + 2] for i in range(len(han) - 1)}


def cited(reply: str, passages: list[Passage]) -> list[Passage]:
    """The passages a reply cites: those it marks `[n]`, else those whose words it uses (at least SUPPORT of its
    own, and at least half the best passage's share)."""
    marked = {int(n) for n in _MARKER.findall(reply)}
    if marked & {p.number for p in passages}:
        return [p for p in passages if p.number in marked]
    said = _words(reply)
    if not said:
        return []
    shares = [len(said & _words(p.text)) / len(said) for p in passages]
    top = max(shares, default=0.0)
    return [p for p, share in zip(passages, shares) if share >= SUPPORT and share >= top / 2]


def unsupported(reply: str, passages: list[Passage], question: str = "") -> list[str]:
    """The names and numbers a reply states that neither its passages nor the question hold: where a small model
    made something up beside what it quotes."""
    known = set().union(*(_words(p.text) for p in passages), _words(question))
    text = _MARKER.sub("", reply)
    stated = [found.group() for found in _STATED.finditer(text)
              if found.group()[0].isdigit() or not _opens_sentence(text, found.start())]
    fresh = [word for word in stated if word.lower() not in STOPWORDS | known
             and not set(_WORD.findall(word.lower())) <= known]
    return list(dict.fromkeys(fresh))


def _opens_sentence(text: str, start: int) -> bool:
    """Whether a word at start opens a sentence or a list item ("According to…", "However,"): a capital there says
    nothing of a name."""
    before = text[:start].rstrip(" \t\"'“(*-•")
    return not before or before[-1] in ".!?:;\n"


def with_citations(reply: str, passages: list[Passage], sources_line: bool = True) -> tuple[str, list[Passage]]:
    """The reply with its citations: `[n]` marks at its end when it wrote none, then (sources_line) the line
    naming each cited passage; also the cited passages."""
    sources = cited(reply, passages)
    if not sources:
        return reply, []
    text = reply  # only ever added to: a streamed reply's last piece is what follows the text already sent
    if not _MARKER.search(text):
        text += ("" if text[-1:].isspace() else " ") + "".join(f"[{p.number}]" for p in sources)
    if sources_line:
        text += SOURCES + " " + "; ".join(p.label for p in sources)
    return text, sources


def without_sources(text: str) -> str:
    """A reply as the model wrote it: its Sources line, when it has one, left out (old turns go back to it)."""
    cut = text.rfind(SOURCES)
    return text[:cut] if cut >= 0 else text

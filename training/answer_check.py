"""The answer check: read what the adapter answers, beside the base model's answers to the same prompts, before a
report may say *learned* (DESIGN.md §4). A loss can fall while the answers are ruined: every prompt answered alike,
words looped, the question forgotten, nothing said, one label for every text, one passage for every query.

Every measure is compared with the base's own answers, so a base that always repeats a little is not punished.
Similarity is a sentence-embedding model's (MiniLM) when the run has one, else cosine over character 3-grams
(which also reads Chinese, where words have no spaces).
"""

from __future__ import annotations

import itertools
import math
import re
import zlib
from collections import Counter
from collections.abc import Callable

import numpy as np

from training.report import AnswerCheck, Sample

Embed = Callable[[list[str]], np.ndarray]  # texts -> unit vectors
SHOWN = 3  # the worst answers a failing check shows

# A problem is called when the adapter is this much worse than the base (and worse than this in itself).
REPEATED = (0.25, 0.35)  # share of repeated 3-grams: above the base's by, and at least
ALIKE = (0.2, 0.8)  # mean similarity between answers to different prompts: above the base's by, and at least
DRIFT = 0.25  # mean similarity of answer to prompt: below the base's by
EMPTY = 0.5  # share of empty answers: above the base's by
CUT = 0.5  # share of answers cut at the length limit where their reference ends far sooner: above the base's by
ONE_LABEL = (0.9, 0.75)  # one label for at least this share of rows, when the expected labels' top share is at most
MIN_ROWS = 4  # fewer answers than this say nothing about collapse

ADVICE = "Try the preference preset, a lower learning rate or fewer epochs."
SENTENCES = {
    "collapse": "It now gives nearly the same answer to every question. " + ADVICE,
    "repetition": "Its answers now repeat the same words over and over. Try a lower learning rate or fewer epochs.",
    "drift": "Its answers no longer address the question asked. " + ADVICE,
    "empty": "It now gives empty answers to most questions. Try a lower learning rate or fewer epochs.",
    "cut": "Its answers now run on until the length limit cuts them off, where the examples stop much sooner. Try "
           "a lower learning rate or fewer epochs.",
    "one_label": "It now gives the label '{label}' to nearly every text. Try more rows of the other labels, fewer "
                 "epochs or a lower learning rate.",
    "one_passage": "It now ranks the same passage first for nearly every query. Try a lower learning rate or fewer "
                   "epochs.",
}


def sentence(check: AnswerCheck) -> str:
    """What went wrong and what to do, in one plain sentence ("" when it passed)."""
    if check.passed:
        return ""
    label = Counter(s.adapter for s in check.examples).most_common(1)[0][0] if check.examples else ""
    return SENTENCES[check.problem].format(label=label)


def sentence_embedder(settings, log: Callable[[str], None]) -> Embed:
    """The default sentence-embedding model (MiniLM) as an Embed, loaded on first use; where it cannot be loaded,
    the model-free similarity (logged once)."""
    loaded: list = []

    def embed(texts: list[str]) -> np.ndarray:
        if not loaded:
            loaded.append(_load_embedder(settings, log))
        model = loaded[0]
        if model is None:
            return lexical_embed(texts)
        return model.encode(texts, batch_size=32, normalize_embeddings=True, convert_to_numpy=True)

    return embed


def _load_embedder(settings, log: Callable[[str], None]):
    from models import catalog
    from models.loading import load_sentence_transformer, operator_default, pretrained_options

    try:
        default = operator_default(settings, catalog.EMBEDDING) or catalog.DEFAULTS[catalog.EMBEDDING]
        source = catalog.resolve("", settings.path("models"), default)
        return load_sentence_transformer(source, pretrained_options(settings, source))
    except Exception as error:  # noqa: BLE001  (the check still runs, on the model-free similarity)
        log(f"the answer check compares answers by their letters: {error}")
        return None


# ---- measures ---------------------------------------------------------------------------------------------------
def tokens(text: str) -> list[str]:
    """Words, with each CJK character a word of its own (Chinese has no spaces)."""
    return re.findall(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]|[^\W\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]+",
                      text.lower())


def repetition(text: str) -> float:
    """The share of the answer's word 3-grams, or of its 6-letter runs, that repeat an earlier one: 0 for none,
    near 1 for a loop (the letters catch loops inside one "word", such as "028028028")."""
    return max(_repeated(tokens(text), 3), _repeated("".join(text.split()), 6))


def _repeated(items, size: int) -> float:
    grams = [tuple(items[i:i + size]) for i in range(len(items) - size + 1)]
    return 1 - len(set(grams)) / len(grams) if len(grams) > 1 else 0.0


def runs_on(answer: str, reference: str) -> bool:
    """The token limit cut the answer (`training.language.Reply.cut`) where its reference is under half as long."""
    return getattr(answer, "cut", False) and 2 * len(tokens(reference)) < len(tokens(answer))


def lexical_embed(texts: list[str]) -> np.ndarray:
    """Unit vectors of hashed character 3-gram counts: a similarity that needs no model."""
    vectors = np.zeros((len(texts), 4096), dtype=np.float32)
    for row, text in enumerate(texts):
        padded = f"  {' '.join(text.lower().split())} "
        for i in range(len(padded) - 2):
            vectors[row, zlib.crc32(padded[i:i + 3].encode()) % 4096] += 1  # stable across runs
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-9)


def alike(vectors: np.ndarray) -> float:
    """Mean cosine similarity between every two rows."""
    pairs = list(itertools.combinations(range(len(vectors)), 2))
    return float(np.mean([vectors[i] @ vectors[j] for i, j in pairs])) if pairs else 0.0


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


# ---- checks -----------------------------------------------------------------------------------------------------
def check_text(rows: list[Sample], embed: Embed | None = None) -> AnswerCheck:
    """Generated answers (chat, summaries, translations): collapse, repetition, empty or cut answers, drift."""
    rows = [row for row in rows if row.base is not None and row.adapter is not None]  # unanswered: not read
    if not rows:
        return AnswerCheck()
    embed = embed or lexical_embed
    texts = [r.adapter for r in rows] + [r.base for r in rows] + [r.prompt for r in rows] + [r.expected for r in rows]
    vectors = embed([t or " " for t in texts])
    n = len(rows)
    adapter, base, prompt, expected = vectors[:n], vectors[n:2 * n], vectors[2 * n:3 * n], vectors[3 * n:]
    rep_a = [repetition(r.adapter) for r in rows]
    rep_b = max(_mean(repetition(r.base) for r in rows), _mean(repetition(r.expected) for r in rows))
    on_a, on_b = (adapter * prompt).sum(1), (base * prompt).sum(1)
    measures = {"repetition": round(_mean(rep_a) - rep_b, 3),
                "collapse": round(alike(adapter) - max(alike(base), alike(expected)), 3) if n >= MIN_ROWS else None,
                "drift": round(float(on_b.mean() - on_a.mean()), 3)}
    empty = _mean(not r.adapter.strip() for r in rows) - _mean(not r.base.strip() for r in rows)
    cut_a = [runs_on(r.adapter, r.expected) for r in rows]
    cut = _mean(cut_a) - _mean(runs_on(r.base, r.expected) for r in rows)
    found = [  # the most specific problem first: looping answers are also alike
        ("repetition", measures["repetition"] >= REPEATED[0] and _mean(rep_a) >= REPEATED[1], lambda i: -rep_a[i]),
        ("collapse", n >= MIN_ROWS and measures["collapse"] >= ALIKE[0] and alike(adapter) >= ALIKE[1],
         lambda i: -float(adapter[i] @ adapter.mean(0))),
        ("empty", empty >= EMPTY, lambda i: len(rows[i].adapter.strip())),
        ("cut", cut >= CUT, lambda i: (not cut_a[i], -len(rows[i].adapter))),
        ("drift", measures["drift"] >= DRIFT, lambda i: float(on_a[i] - on_b[i])),
    ]
    return _verdict(rows, measures, found)


def check_labels(rows: list[Sample], embed: Embed | None = None) -> AnswerCheck:
    """A classifier: one label for nearly every row, where the expected labels are mixed."""
    if len(rows) < MIN_ROWS:
        return AnswerCheck()
    top, count = Counter(r.adapter for r in rows).most_common(1)[0]
    expected_top = Counter(r.expected for r in rows).most_common(1)[0][1] / len(rows)
    one = count / len(rows) >= ONE_LABEL[0] and expected_top <= ONE_LABEL[1]
    measures = {"collapse": round(count / len(rows) - expected_top, 3)}
    return _verdict(rows, measures, [("one_label", one, lambda i: (rows[i].adapter != top, rows[i].expected == top))])


def check_ranking(rows: list[Sample], embed: Embed | None = None) -> AnswerCheck:
    """Search: the same passage ranked first for nearly every query, where each query has its own passage."""
    if len(rows) < MIN_ROWS or len({r.expected for r in rows}) < 2:
        return AnswerCheck()
    top, count = Counter(r.adapter for r in rows).most_common(1)[0]
    base_count = Counter(r.base for r in rows).most_common(1)[0][1]
    one = count / len(rows) >= ONE_LABEL[0] and count > base_count
    measures = {"collapse": round((count - base_count) / len(rows), 3)}
    return _verdict(rows, measures, [("one_passage", one, lambda i: rows[i].adapter != top)])


def check_spans(rows: list[Sample], embed: Embed | None = None) -> AnswerCheck:
    """Extractive answers are cut from the text, so they cannot loop or drift: only empty answers count."""
    empty = _mean(not r.adapter.strip() for r in rows) - _mean(not r.base.strip() for r in rows)
    return _verdict(rows, {}, [("empty", bool(rows) and empty >= EMPTY, lambda i: len(rows[i].adapter.strip()))])


def _verdict(rows: list[Sample], measures: dict, found: list) -> AnswerCheck:
    """The first problem found, with its worst rows (worst first by the problem's own key), or a pass."""
    measures = {key: value for key, value in measures.items() if value is None or math.isfinite(value)}
    for problem, failed, badness in found:
        if failed:
            worst = sorted(range(len(rows)), key=badness)[:SHOWN]
            return AnswerCheck(False, problem, examples=tuple(rows[i] for i in worst), **measures)
    return AnswerCheck(True, **measures)

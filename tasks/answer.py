"""Extractive question answering: the exact span with a QA model, else the best sentence by embeddings.

The answer comes from a pasted context, or from the top passages of a document collection, found by the search
task's retrieval.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from config import LOCAL_USER
from errors import TooLarge, UserError
from models import catalog, lazy
from models.loading import token_limit
from tasks.base import Endpoint, Task, require_text
from tasks.search import SearchTask
from tasks.spec import DataField, TaskSpec
from tasks.text import split_sentences

torch = lazy.module("torch")

Progress = Callable[[float, str], None]

MAX_QUESTION = 1_000
SPAN_THRESHOLD = 0.1  # P(start) * P(end) below this means the model is guessing: report no answer
SENTENCE_THRESHOLD = 0.3  # MiniLM cosine: unrelated question/sentence pairs stay below ~0.2, answers ~0.45+
MAX_ANSWER_TOKENS = 30
WINDOW_TOKENS = 384  # question + context tokens per window; longer contexts slide with STRIDE tokens of overlap
STRIDE = 128
WINDOW_BATCH = 8
PASSAGES = 5  # passages retrieved from a collection
SENTENCE_NOTE = ("Sentence-level answer (offline fallback): the sentence most similar to the question; "
                 "a question-answering model or a trained adapter finds the exact words.")


@dataclass
class Answer:
    """An answer, with the passage its offsets refer to (which the API leaves out)."""

    found: bool
    answer: str
    score: float  # in [0, 1]: span probability, or cosine similarity for a sentence
    start: int  # character offsets of the answer in `passage`; -1 when nothing was found
    end: int
    level: str  # "span" or "sentence"
    source: str  # "" for pasted context, else the document's name in the collection
    passage: str = ""  # the text the offsets refer to (the context, or the retrieved passage)
    notice: str = ""  # a line for the page (Chinese text on an English-first model), not part of the API

    def public(self) -> dict:
        """The API's shape: everything but the passage and the notice."""
        result = asdict(self)
        del result["passage"], result["notice"]
        return result


@dataclass
class Candidate:
    """The best place found so far: a score and a character span in one passage."""

    score: float
    start: int
    end: int
    passage: int  # index into the passages


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) character offsets in text of each sentence from split_sentences."""
    spans, position = [], 0
    for sentence in split_sentences(text):
        # split_sentences joins line breaks with spaces, so match any run of whitespace between words.
        match = re.compile(r"\s+".join(map(re.escape, sentence.split()))).search(text, position)
        if match:
            spans.append((match.start(), match.end()))
            position = match.end()
    return spans


class AnswerTask(Task):
    spec = TaskSpec(
        id="answer", title="Question answering", endpoints=("answer",),
        defaults={catalog.EMBEDDING: "all-MiniLM-L6-v2", catalog.ENCODER: "DistilBERT-SQuAD"},
        fields=(DataField("question", "the question"), DataField("context", "the text that holds the answer"),
                DataField("answer", "the answer, word for word as it occurs in the context")),
        sample="answer.csv",
        formats="Columns `question`, `context` and `answer`; the answer must appear word for word in the context.",
        metrics={"exact_match": "exact match", "f1": "F1"}, trainable=True, evaluated=True,
        adapter_kind="span", head=("qa_outputs",))

    def __init__(self, ctx):
        super().__init__(ctx)
        self.search = SearchTask(ctx)  # answers from a collection come from its best passages

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("answer", self.answer)]

    def answer(self, question: str, context: str = "", collection: str = "", model: str = "", adapter: str = "",
               *, owner: str = LOCAL_USER, progress: Progress | None = None) -> dict:
        """The answer to question from context (or from a collection's best passages), or found=False."""
        return self.find(question, context, collection, model, adapter, progress, owner=owner).public()

    def sentence_level(self, model: str = "", adapter: str = "", owner: str = LOCAL_USER) -> bool:
        """Whether this model (and adapter) answers with whole sentences (the offline fallback), not spans."""
        return not self.has_head(model, adapter, "ForQuestionAnswering", owner)

    def find(self, question: str, context: str = "", collection: str = "", model: str = "", adapter: str = "",
             progress: Progress | None = None, threshold: float | None = None, *,
             owner: str = LOCAL_USER) -> Answer:
        """The best answer with the passage it comes from; threshold overrides the level's default."""
        question = require_text(question, "question", MAX_QUESTION)
        passages = self._passages(question, context, collection, owner)
        texts = [text for text, _ in passages]
        if self.sentence_level(model, adapter, owner):
            level, (best, name) = "sentence", self._best_sentence(question, texts, model, progress)
            threshold = SENTENCE_THRESHOLD if threshold is None else threshold
        else:
            level, (best, name) = "span", self._best_span(question, texts, model, adapter, progress, owner)
            threshold = SPAN_THRESHOLD if threshold is None else threshold
        notice = self.language_notice([question, *texts], name)
        if best is None or best.score < threshold:
            score = 0.0 if best is None else best.score
            return Answer(False, "", score, -1, -1, level, "", passages[best.passage][0] if best else "", notice)
        text, source = passages[best.passage]
        return Answer(True, text[best.start:best.end], best.score, best.start, best.end, level, source, text,
                      notice)

    def _passages(self, question: str, context: str, collection: str, owner: str) -> list[tuple[str, str]]:
        """(text, source) pairs to answer from: the pasted context, or passages retrieved from a collection."""
        has_context = isinstance(context, str) and bool(context.strip())
        collection = (collection or "").strip() if isinstance(collection, str) else ""
        if has_context and collection:
            raise UserError("Give either a context or a collection to answer from, not both.")
        if has_context:
            require_text(context, "context", self.ctx.settings.max_chars)
            return [(context, "")]
        if not collection:
            raise UserError("Please paste a context to answer from, or name a document collection.")
        hits = self.search.retrieve(question, collection, PASSAGES, owner=owner)
        passages = [(hit["text"], hit["source"]) for hit in hits if hit.get("text", "").strip()]
        if not passages:
            raise UserError(f"The collection '{collection}' has no documents to answer from.")
        return passages

    def _best_span(self, question: str, passages: list[str], model: str, adapter: str,
                   progress: Progress | None, owner: str) -> tuple[Candidate | None, str]:
        loaded = self.encoder("span", model, adapter, owner)
        best = None
        for index, passage in enumerate(passages):
            for score, start, end in window_spans(loaded, question, passage, progress):
                if best is None or score > best.score:
                    best = Candidate(score, start, end, index)
        return best, loaded.name

    def _best_sentence(self, question: str, passages: list[str], model: str,
                       progress: Progress | None) -> tuple[Candidate | None, str]:
        embedder = self.ctx.hub.embedder(model, self.default(catalog.EMBEDDING))
        spans = [(index, start, end) for index, passage in enumerate(passages)
                 for start, end in sentence_spans(passage)]
        if not spans:
            return None, embedder.name
        report = None if progress is None else (
            lambda done, total: progress(done / total, f"Compared {done} of {total} sentences"))
        sentences = [passages[i][start:end] for i, start, end in spans]
        vectors = embedder.encode(sentences, 32, report)
        similarity = vectors @ embedder.encode([question])[0]
        best = int(np.argmax(similarity))
        index, start, end = spans[best]
        return Candidate(float(np.clip(similarity[best], 0.0, 1.0)), start, end, index), embedder.name


def window_limit(loaded) -> int:
    """Tokens per window: WINDOW_TOKENS, or less for a model that reads fewer."""
    return token_limit(loaded.model.config, loaded.tokenizer, cap=WINDOW_TOKENS, fallback=WINDOW_TOKENS)


def window_spans(loaded, question: str, passage: str, progress: Progress | None = None) -> list[tuple[float, int, int]]:
    """(probability, start char, end char) of the best span in each window over passage."""
    tokenizer = loaded.tokenizer
    if not getattr(tokenizer, "is_fast", False):
        raise UserError(f"'{loaded.name}' has no fast tokenizer, which finding answer spans needs.")
    limit = window_limit(loaded)
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    if question_tokens > limit // 2:
        raise TooLarge(f"The question is too long ({question_tokens} tokens); keep it under {limit // 2}.")
    inputs = tokenizer(question, passage, truncation="only_second", max_length=limit,
                       stride=min(STRIDE, limit // 4), return_overflowing_tokens=True,
                       return_offsets_mapping=True, padding=True, return_tensors="pt")
    offsets = inputs.pop("offset_mapping").tolist()
    inputs.pop("overflow_to_sample_mapping", None)
    windows = len(offsets)
    results = []
    for first in range(0, windows, WINDOW_BATCH):
        batch = {k: v[first:first + WINDOW_BATCH].to(loaded.model.device) for k, v in inputs.items()}
        rows = len(batch["input_ids"])

        def spans(batch=batch, first=first, rows=rows) -> list[tuple[float, int, int]]:
            output = loaded.model(**batch)
            return [best_in_window(output.start_logits[row].float(), output.end_logits[row].float(),
                                   [i == 1 for i in inputs.sequence_ids(first + row)], offsets[first + row])
                    for row in range(rows)]
        results += loaded.compute(spans)
        if progress is not None and windows > 1:
            progress(min(first + rows, windows) / windows, f"Read {min(first + rows, windows)} of {windows} parts")
    return results


def best_in_window(start_logits: torch.Tensor, end_logits: torch.Tensor, in_context: list[bool],
                   offsets: list[list[int]]) -> tuple[float, int, int]:
    """The likeliest span of context tokens, at most MAX_ANSWER_TOKENS long, as (p_start * p_end, start, end)."""
    allowed = torch.tensor(in_context)
    # The first token ([CLS]) stays in the softmax: models trained with unanswerable questions put their
    # "no answer" mass there, which rightly lowers every span's probability.
    allowed[0] = True
    p_start = start_logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    p_end = end_logits.masked_fill(~allowed, float("-inf")).softmax(-1)
    context = torch.tensor(in_context)
    pairs = p_start[:, None] * p_end[None, :]  # (start token, end token)
    length = torch.arange(len(in_context))
    valid = (length[None, :] >= length[:, None]) & (length[None, :] - length[:, None] < MAX_ANSWER_TOKENS)
    pairs = pairs.masked_fill(~(valid & context[:, None] & context[None, :]), 0.0)
    flat = int(torch.argmax(pairs))
    i, j = divmod(flat, len(in_context))
    return float(pairs[i, j]), offsets[i][0], offsets[j][1]

"""Summaries: extractive (the most central sentences, by sentence embeddings; the offline default) or
abstractive (a seq2seq summarizer, or an instruction LM through the generation engine). A text longer than the
model reads is summarized in parts whose summaries are combined, and summarized again while still too long.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import numpy as np

from errors import UserError
from models import catalog
from models.adapters import selected
from config import LOCAL_USER
from tasks.base import Endpoint, Task, require_text
from tasks.generation import (
    Counter,
    Progress,
    backbone_family,
    instruction_lm,
    lm_replies,
    no_progress,
    offline_fallback,
    pack,
    prompt_ids,
    refuse_adapter,
    seq2seq_context,
    seq2seq_generate,
    token_counter,
)
from tasks.spec import DataField, TaskSpec
from tasks.text import join_sentences, split_sentences, whole_sentences, word_count

LENGTHS = ("short", "medium", "bullets")
SUMMARY_TOKENS = {"short": 96, "medium": 220, "bullets": 220}  # the longest abstractive summary per length
MAX_ROUNDS = 3  # summaries of parts are summarized again at most this often
LM_INSTRUCTIONS = {
    "short": "Summarize the following text in two or three sentences.",
    "medium": "Summarize the following text in about five sentences.",
    "bullets": "Summarize the following text as three to six short bullet points, one per line, each starting "
               "with '- '.",
}
T5_TYPES = ("t5", "mt5", "umt5", "longt5")  # they expect a task prefix such as "summarize: "


def lm_prompt(text: str, length: str = "medium") -> str:
    """The instruction an LM gets to summarize text (training uses the same, so adapters see what they learned)."""
    return f"{LM_INSTRUCTIONS[length]}\n\n{text}"


# ---- extractive ------------------------------------------------------------------------------------------------

def sentence_count(total: int, length: str) -> int:
    """Sentences an extractive summary keeps: short 2-3, medium (and bullets) about a quarter, 5 to 12."""
    want = (2 if total < 8 else 3) if length == "short" else min(12, max(5, round(total / 4)))
    return max(1, min(want, math.ceil(total / 2)))


def centrality(vectors: np.ndarray, damping: float = 0.85, steps: int = 60) -> np.ndarray:
    """LexRank: PageRank over the cosine-similarity graph; a sentence is central when it shares content with many."""
    n = len(vectors)
    similarity = np.clip(vectors @ vectors.T, 0.0, None)
    np.fill_diagonal(similarity, 0.0)
    totals = similarity.sum(axis=1, keepdims=True)
    walk = np.divide(similarity, totals, out=np.full_like(similarity, 1.0 / n), where=totals > 0)
    rank = np.full(n, 1.0 / n)
    for _ in range(steps):
        rank = (1 - damping) / n + damping * walk.T @ rank
    return rank


def considered(sentences: list[str], limit: int) -> tuple[list[str], int]:
    """At most limit sentences, spread evenly over the text (in order), and how many there were: ranking compares
    every pair, so memory and time grow with the square of this number."""
    if len(sentences) <= limit:
        return sentences, len(sentences)
    step = len(sentences) / limit
    return [sentences[int(i * step)] for i in range(limit)], len(sentences)


def pick_sentences(sentences: list[str], vectors: np.ndarray, keep: int) -> list[int]:
    """Indexes of the keep most central sentences, in document order, skipping fragments and near-repeats."""
    order = list(np.argsort(-centrality(vectors), kind="stable"))
    chosen: list[int] = []
    for i in order:
        fragment = word_count(sentences[i]) < 4 and len(sentences[i]) < 20  # headings, "Yes.", "是的。"
        repeat = any(float(vectors[i] @ vectors[j]) > 0.95 for j in chosen)
        if not fragment and not repeat and len(chosen) < keep:
            chosen.append(int(i))
    for i in order:  # the filters may leave too few: top up with the next most central
        if len(chosen) < keep and int(i) not in chosen:
            chosen.append(int(i))
    return sorted(chosen)


def as_bullets(text: str) -> str:
    """A summary as '- ' lines: existing list lines are normalised, running text is split into sentences."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    marker = re.compile(r"^(?:[-*•–]|\d+[.)])\s*")
    if len(lines) > 1 and all(marker.match(line) for line in lines):
        items = [marker.sub("", line) for line in lines]
    else:
        items = split_sentences(text) or [text.strip()]
    return "\n".join(f"- {item}" for item in items if item)


# ---- the task ----------------------------------------------------------------------------------------------------

class SummarizeTask(Task):
    spec = TaskSpec(
        id="summarize", title="Summarize", endpoints=("summarize",),
        defaults={catalog.EMBEDDING: "all-MiniLM-L6-v2", catalog.SEQ2SEQ: "BART-large-CNN",
                  catalog.DECODER: "SmolLM2-135M-Instruct"},
        fields=(DataField("text", "the text to summarize"), DataField("summary", "the summary it should get")),
        sample="summarize.csv", formats="Columns `text` and `summary` (CSV or JSONL).",
        metrics={"rouge_l": "ROUGE-L"}, trainable=True, evaluated=True)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("summarize", self.summarize)]

    def summarize(self, text: str, method: str = "", length: str = "medium", model: str = "", adapter: str = "",
                  *, owner: str = LOCAL_USER, progress: Progress | None = None) -> dict:
        """Summarize text: method extractive/abstractive ("" = decided by the model), length short/medium/bullets.

        With method "" a model that writes (seq2seq or instruction LM) summarizes abstractively and an embedding
        model (the offline default, all-MiniLM-L6-v2) picks the most central sentences; "abstractive" with no
        model uses the default chat model.
        """
        return self.run(text, method, length, model, adapter, progress, owner=owner)

    def run(self, text: str, method: str = "", length: str = "medium", model: str = "", adapter: str = "",
            progress: Progress | None = None, max_new_tokens: int | None = None, *,
            owner: str = LOCAL_USER) -> dict:
        """summarize() with progress reports; max_new_tokens caps each abstractive generation (tests keep it small)."""
        text = require_text(text, "text to summarize", self.ctx.settings.max_chars)
        progress = progress or no_progress
        method = (method or "").strip().lower()
        length = (length or "medium").strip().lower()
        if method not in ("", "auto", "extractive", "abstractive"):
            raise UserError(f"Unknown method '{method}': use extractive, abstractive, or leave it empty.")
        if length not in LENGTHS:
            raise UserError(f"Unknown length '{length}': use short, medium or bullets.")
        model = self.model_for(model, adapter, owner)  # the adapter's base, or the owner's merged model
        if selected(adapter):
            method = method or "abstractive"  # adapters are trained on the abstractive (LM) path
        if method == "abstractive" and isinstance(model, str) and not model.strip():
            model = self.default(catalog.DECODER)  # the default model that writes
        source, family = backbone_family(self, model)
        picks_sentences = family in (catalog.EMBEDDING, catalog.ENCODER)
        # Auto: a model that writes text writes the summary; an embedding model (the offline default) picks sentences.
        if method in ("", "auto"):
            method = "extractive" if picks_sentences else "abstractive"
        if method == "abstractive" and picks_sentences:
            raise UserError(f"'{source.name}' is a sentence-embedding model: it can only pick sentences (method "
                            "extractive); for an abstractive summary pick a sequence-to-sequence summarizer such "
                            "as BART-large-CNN or an instruction model such as SmolLM2-135M-Instruct.")
        if method == "extractive":
            # A generating model cannot rank sentences: the default embedding model does, and the note says so.
            return self._extractive(text, length, model if picks_sentences else "", adapter,
                                    None if picks_sentences else source.name, progress)
        cap = max_new_tokens or SUMMARY_TOKENS[length]
        if family == catalog.SEQ2SEQ:
            return self._seq2seq(text, length, model, adapter, cap, progress)
        return self._lm(text, length, model, adapter, cap, progress, owner)

    def _extractive(self, text: str, length: str, model: str, adapter: str, instead_of: str | None,
                    progress: Progress) -> dict:
        embedder = self.ctx.hub.embedder(model, self.default(catalog.EMBEDDING))
        if selected(adapter):
            raise UserError("Adapters change how a model writes: use them with the abstractive method.")
        sentences, total = considered(split_sentences(text), self.ctx.settings.summary_sentences)
        keep = sentence_count(len(sentences), length)
        if len(sentences) <= keep:
            chosen = list(range(len(sentences)))
        else:
            vectors = embedder.encode(sentences, progress=lambda done, total: progress(
                done / total, f"Reading sentence {done} of {total}"))
            chosen = pick_sentences(sentences, vectors, keep)
        kept = [sentences[i] for i in chosen]
        summary = "\n".join(f"- {s}" for s in kept) if length == "bullets" else join_sentences(kept)
        note = (f"Extractive summary, the offline fallback: the {len(kept)} most central of the text's "
                f"{total} sentences, picked with {embedder.name} and kept word for word.")
        if total > len(sentences):
            note += (f" The text is long, so {len(sentences):,} of its sentences, spread evenly over it, were "
                     "compared.")
        if instead_of:
            note += f" {instead_of} writes abstractive summaries only, so {embedder.name} ranked the sentences."
        else:
            note += " For a rewritten summary pick a summarizer (e.g. BART-large-CNN) or an instruction model."
        note = " ".join(filter(None, [note, self.language_notice(text, embedder.name)]))
        return {"summary": summary, "method": "extractive", "model": embedder.name, "note": note}

    def _seq2seq(self, text: str, length: str, model: str, adapter: str, cap: int, progress: Progress) -> dict:
        loaded = self.ctx.hub.get("seq2seq", model, self.default(catalog.SEQ2SEQ))
        refuse_adapter(adapter, loaded.name)
        prefix = "summarize: " if loaded.model.config.model_type in T5_TYPES else ""
        count = token_counter(loaded.tokenizer)
        budget = seq2seq_context(loaded) - count(prefix) - 8  # room for special tokens

        def summarize_all(chunks: list[str], size: str, report: Progress) -> list[str]:
            outs = []
            for i, chunk in enumerate(chunks):
                outs.append(seq2seq_generate(loaded, prefix + chunk, min(cap, SUMMARY_TOKENS[size])))
                report((i + 1) / len(chunks), f"Summarizing part {i + 1} of {len(chunks)}")
            return outs

        return self._abstractive(text, length, loaded.name, budget, count, summarize_all, progress)

    def _lm(self, text: str, length: str, model: str, adapter: str, cap: int, progress: Progress,
            owner: str) -> dict:
        lm, adapter_name = instruction_lm(self, model, adapter, "summarization", owner)
        count = token_counter(lm.tokenizer)
        overhead = len(prompt_ids(lm, LM_INSTRUCTIONS["bullets"] + "\n\n")) + 8
        budget = lm.context_length - overhead - cap
        if budget < 32:
            raise UserError(f"'{lm.name}' reads too few tokens ({lm.context_length}) to summarize with; "
                            "pick a model with a longer context.")

        def summarize_all(chunks: list[str], size: str, report: Progress) -> list[str]:
            prompts = [lm_prompt(chunk, size) for chunk in chunks]
            return lm_replies(lm, prompts, [min(cap, SUMMARY_TOKENS[size])] * len(chunks), adapter_name, report,
                              self.ctx.settings.lines_in_flight,
                              "Summarizing part")

        return self._abstractive(text, length, lm.name, budget, count, summarize_all, progress)

    def _abstractive(self, text: str, length: str, name: str, budget: int, count: Counter,
                     summarize_all: Callable[[list[str], str, Progress], list[str]], progress: Progress) -> dict:
        """Map-reduce: summarize the parts, join their summaries, and repeat while the result is still too long."""
        parts = 0
        summary = text
        for round_ in range(1, MAX_ROUNDS + 1):
            chunks = pack(summary, budget, count)
            if len(chunks) == 1:
                summary = summarize_all(chunks, length, lambda f, m: progress(f, "Summarizing"))[0]
                break
            parts = parts or len(chunks)
            label = f"Round {round_}: " if round_ > 1 else ""
            summaries = summarize_all(chunks, "medium", lambda f, m, label=label: progress(f, label + m))
            joined = "\n\n".join(s for s in summaries if s)
            shrinking = count(joined) < count(summary)
            summary = joined
            if not shrinking:  # a model whose summaries do not get shorter: stop instead of looping
                break
        if not summary.strip():
            raise UserError(f"'{name}' returned an empty summary; try another model or the extractive method.")
        summary = as_bullets(summary) if length == "bullets" else whole_sentences(summary)
        note = f"Abstractive summary written by {name}."
        if parts:
            note += f" The text was longer than {name} reads at once, so it was summarized in {parts} parts."
        if offline_fallback(name):
            note += " This small offline model can miss or invent details: check the summary against the text."
        note = " ".join(filter(None, [note, self.language_notice(text, name)]))
        return {"summary": summary.strip(), "method": "abstractive", "model": name, "note": note}

"""Summaries: extractive (the most central sentences, by sentence embeddings; the offline default) or
abstractive (a seq2seq summarizer, or an instruction LM through the generation engine). A text longer than the
model reads is summarized in parts whose summaries are combined, and summarized again while still too long.

Also holds the generation plumbing that translation shares: a model's family, cutting text to a token budget,
seq2seq generation under the model's lock, and instruction-LM replies through the engine.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable

import numpy as np
import torch
from transformers import AutoConfig

from errors import UserError
from models import catalog
from models.engine import SamplingParams
from models.loading import LoadedLM, LoadedModel
from tasks.base import Context, Endpoint, attach_adapter, model_for, require_text
from tasks.chat import Reply
from tasks.text import split_paragraphs, split_sentences

Progress = Callable[[float, str], None]  # (fraction done, what is happening)
Counter = Callable[[str], int]  # tokens in a text

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


def no_progress(fraction: float, message: str) -> None:
    pass


# ---- generation plumbing (shared with translation) ----------------------------------------------------------

def backbone_family(ctx: Context, model: str, task: str) -> tuple[catalog.ModelSource, str]:
    """The resolved model and its family (decoder, encoder, embedding, seq2seq), read from the config if typed."""
    source = ctx.hub.source(model, task)
    if source.family:
        return source, source.family
    try:
        config = AutoConfig.from_pretrained(source.location, **ctx.hub.pretrained_kwargs(source))
    except (OSError, ValueError, KeyError) as error:
        raise UserError(f"Could not read the configuration of '{source.name}': "
                        f"{str(error).splitlines()[0]}") from error
    architectures = " ".join(getattr(config, "architectures", None) or [])
    if getattr(config, "is_encoder_decoder", False):
        return source, catalog.SEQ2SEQ
    if "CausalLM" in architectures or "LMHead" in architectures:
        return source, catalog.DECODER
    return source, catalog.ENCODER  # a BERT-like encoder: sentence-transformers mean-pools it into embeddings


def offline_fallback(name: str) -> bool:
    """Whether a model is one of the small ones that ship offline (weaker than the hub's choices)."""
    backbone = catalog.find(name)
    return backbone is not None and backbone.offline is not None


def token_counter(tokenizer) -> Counter:
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def pack(text: str, budget: int, count: Counter) -> list[str]:
    """Text cut into chunks of at most ~budget tokens: whole paragraphs where they fit, else sentences, else words."""
    chunks: list[str] = []
    current, used = "", 0
    for piece, new_paragraph in _pieces(text, budget, count):
        size = count(piece)
        if current and used + size > budget:
            chunks.append(current)
            current, used = "", 0
        joiner = ("\n\n" if new_paragraph else " ") if current else ""
        current, used = current + joiner + piece, used + size
    return chunks + [current] if current else chunks


def _pieces(text: str, budget: int, count: Counter) -> list[tuple[str, bool]]:
    """(piece, starts a paragraph), each piece within the budget."""
    pieces = []
    for paragraph in split_paragraphs(text):
        if count(paragraph) <= budget:
            pieces.append((paragraph, True))
            continue
        first = True
        for sentence in split_sentences(paragraph):
            for part in [sentence] if count(sentence) <= budget else _windows(sentence, budget, count):
                pieces.append((part, first))
                first = False
    return pieces


def _windows(sentence: str, budget: int, count: Counter) -> list[str]:
    """A sentence too long for the budget, cut between words (between characters for unspaced scripts)."""
    joiner = " " if " " in sentence.strip() else ""
    words = sentence.split() if joiner else list(sentence)
    windows, current, used = [], [], 0
    for word in words:
        size = count(word) + 1  # +1: a word alone can count a token fewer than inside the sentence
        if current and used + size > budget:
            windows.append(joiner.join(current))
            current, used = [], 0
        current.append(word)
        used += size
    return windows + [joiner.join(current)] if current else windows


def seq2seq_context(loaded: LoadedModel) -> int:
    """How many input tokens an encoder-decoder reads."""
    limit = getattr(loaded.tokenizer, "model_max_length", 0)
    if isinstance(limit, int) and 0 < limit < 100_000:
        return limit
    for attr in ("max_position_embeddings", "n_positions"):
        value = getattr(loaded.model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 512


@contextlib.contextmanager
def _adapter_scope(model, adapter_name: str | None):
    """Run a (possibly peft) seq2seq model with the given adapter, or with none."""
    if not hasattr(model, "peft_config"):
        yield
    elif adapter_name is None:
        with model.disable_adapter():
            yield
    else:
        model.set_adapter(adapter_name)
        yield


def seq2seq_generate(loaded: LoadedModel, text: str, max_new_tokens: int, adapter_name: str | None = None,
                     src_lang: str | None = None, **generate_kwargs) -> str:
    """The encoder-decoder's output for one input, run under the model's lock (models are not re-entrant)."""
    tokenizer, model = loaded.tokenizer, loaded.model
    with loaded.lock, torch.inference_mode(), _adapter_scope(model, adapter_name):
        if src_lang is not None:
            tokenizer.src_lang = src_lang  # NLLB/M2M tokenizers mark the source language; shared, hence the lock
        inputs = tokenizer(text, return_tensors="pt", truncation=True, max_length=seq2seq_context(loaded))
        out = model.generate(**inputs.to(model.device), max_new_tokens=max_new_tokens, **generate_kwargs)
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def prompt_ids(lm: LoadedLM, prompt: str) -> list[int]:
    return list(lm.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                 tokenize=True, return_dict=False))


def lm_replies(lm: LoadedLM, prompts: list[str], max_new_tokens: list[int], adapter_name: str | None,
               progress: Progress, label: str) -> list[str]:
    """Greedy replies of an instruction LM, one user message each; submitted together so the engine batches them."""
    requests = [lm.generate(prompt_ids(lm, p), SamplingParams(max_new_tokens=n, temperature=0), adapter_name)
                for p, n in zip(prompts, max_new_tokens)]
    replies = []
    try:
        for i, request in enumerate(requests):
            replies.append(Reply(lm, request).text().strip())
            progress((i + 1) / len(requests), f"{label} {i + 1} of {len(requests)}")
    finally:
        for request in requests:  # after an error, the rest must not keep the engine busy
            request.stop.set()
    return replies


def instruction_lm(ctx: Context, model: str, adapter: str, task: str, what: str) -> tuple[LoadedLM, str | None]:
    """The instruction LM and adapter for an LM-backed task, or a UserError for a base model."""
    lm = ctx.hub.lm(model, task)
    if not lm.has_chat_template:
        raise UserError(f"'{lm.name}' is a base model without a chat template, so it cannot follow a {what} "
                        "request; pick an instruction model or a sequence-to-sequence model.")
    adapter_name, _ = attach_adapter(ctx, lm, adapter, task)
    return lm, adapter_name


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


def pick_sentences(sentences: list[str], vectors: np.ndarray, keep: int) -> list[int]:
    """Indexes of the keep most central sentences, in document order, skipping fragments and near-repeats."""
    order = list(np.argsort(-centrality(vectors), kind="stable"))
    chosen: list[int] = []
    for i in order:
        fragment = len(sentences[i].split()) < 4 and len(sentences[i]) < 20  # headings, "Yes." (CJK is unspaced)
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

class SummarizeTask:
    id = "summarize"
    title = "Summarize"

    def __init__(self, ctx: Context):
        self.ctx = ctx

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("summarize", self.summarize)]

    def summarize(self, text: str, method: str = "", length: str = "medium", model: str = "",
                  adapter: str = "") -> dict:
        """Summarize text: method extractive/abstractive ("" = decided by the model), length short/medium/bullets.

        With method "" a model that writes (seq2seq or instruction LM) summarizes abstractively and an embedding
        model (the offline default, all-MiniLM-L6-v2) picks the most central sentences; "abstractive" with no
        model uses the default chat model.
        """
        return self.run(text, method, length, model, adapter)

    def run(self, text: str, method: str = "", length: str = "medium", model: str = "", adapter: str = "",
            progress: Progress | None = None, max_new_tokens: int | None = None) -> dict:
        """summarize() with progress reports; max_new_tokens caps each abstractive generation (tests keep it small)."""
        text = require_text(text, "text to summarize")
        progress = progress or no_progress
        method = (method or "").strip().lower()
        length = (length or "medium").strip().lower()
        if method not in ("", "auto", "extractive", "abstractive"):
            raise UserError(f"Unknown method '{method}': use extractive, abstractive, or leave it empty.")
        if length not in LENGTHS:
            raise UserError(f"Unknown length '{length}': use short, medium or bullets.")
        if (adapter or "").strip() not in ("", "none"):
            model = model_for(self.ctx, model, adapter)
            method = method or "abstractive"  # adapters are trained on the abstractive (LM) path
        if method == "abstractive" and not (model or "").strip():
            model = self.ctx.settings.chat_model or catalog.TASK_DEFAULTS["chat"]  # the default model that writes
        source, family = backbone_family(self.ctx, model, "summarize")
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
        return self._lm(text, length, model, adapter, cap, progress)

    def _extractive(self, text: str, length: str, model: str, adapter: str, instead_of: str | None,
                    progress: Progress) -> dict:
        embedder = self.ctx.hub.embedder(model)
        if attach_adapter(self.ctx, embedder, adapter, self.id)[0] is not None:
            raise UserError("Adapters change how a model writes: use them with the abstractive method.")
        sentences = split_sentences(text)
        keep = sentence_count(len(sentences), length)
        if len(sentences) <= keep:
            chosen = list(range(len(sentences)))
        else:
            vectors = embedder.encode(sentences, progress=lambda done, total: progress(
                done / total, f"Reading sentence {done} of {total}"))
            chosen = pick_sentences(sentences, vectors, keep)
        kept = [sentences[i] for i in chosen]
        summary = "\n".join(f"- {s}" for s in kept) if length == "bullets" else " ".join(kept)
        note = (f"Extractive summary, the offline fallback: the {len(kept)} most central of the text's "
                f"{len(sentences)} sentences, picked with {embedder.name} and kept word for word.")
        if instead_of:
            note += f" {instead_of} writes abstractive summaries only, so {embedder.name} ranked the sentences."
        else:
            note += " For a rewritten summary pick a summarizer (e.g. BART-large-CNN) or an instruction model."
        return {"summary": summary, "method": "extractive", "model": embedder.name, "note": note}

    def _seq2seq(self, text: str, length: str, model: str, adapter: str, cap: int, progress: Progress) -> dict:
        loaded = self.ctx.hub.get("seq2seq", model, self.id)
        adapter_name, _ = attach_adapter(self.ctx, loaded, adapter, self.id)
        prefix = "summarize: " if loaded.model.config.model_type in T5_TYPES else ""
        count = token_counter(loaded.tokenizer)
        budget = seq2seq_context(loaded) - count(prefix) - 8  # room for special tokens

        def summarize_all(chunks: list[str], size: str, report: Progress) -> list[str]:
            outs = []
            for i, chunk in enumerate(chunks):
                outs.append(seq2seq_generate(loaded, prefix + chunk, min(cap, SUMMARY_TOKENS[size]), adapter_name))
                report((i + 1) / len(chunks), f"Summarizing part {i + 1} of {len(chunks)}")
            return outs

        return self._abstractive(text, length, loaded.name, budget, count, summarize_all, progress)

    def _lm(self, text: str, length: str, model: str, adapter: str, cap: int, progress: Progress) -> dict:
        lm, adapter_name = instruction_lm(self.ctx, model, adapter, self.id, "summarization")
        count = token_counter(lm.tokenizer)
        overhead = len(prompt_ids(lm, LM_INSTRUCTIONS["bullets"] + "\n\n")) + 8
        budget = lm.context_length - overhead - cap
        if budget < 32:
            raise UserError(f"'{lm.name}' reads too few tokens ({lm.context_length}) to summarize with; "
                            "pick a model with a longer context.")

        def summarize_all(chunks: list[str], size: str, report: Progress) -> list[str]:
            prompts = [lm_prompt(chunk, size) for chunk in chunks]
            return lm_replies(lm, prompts, [min(cap, SUMMARY_TOKENS[size])] * len(chunks), adapter_name, report,
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
        if length == "bullets":
            summary = as_bullets(summary)
        note = f"Abstractive summary written by {name}."
        if parts:
            note += f" The text was longer than {name} reads at once, so it was summarized in {parts} parts."
        if offline_fallback(name):
            note += " This small offline model can miss or invent details: check the summary against the text."
        return {"summary": summary.strip(), "method": "abstractive", "model": name, "note": note}

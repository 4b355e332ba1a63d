"""The kinds of loaded model, in one table: what each is in words, the family whose default it loads, the
transformers class its folders load with, and whether trained adapters apply to it. models.loading loads each
kind; a new kind is one entry here and its loader there.

Also the one key a loaded model has in the model cache (its kind, where it came from and any adapter merged
into its copy), so no caller builds or parses key strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from models import catalog


@dataclass(frozen=True)
class ModelKind:
    name: str
    family: str  # the model family whose default is loaded when none is named
    wanted: str  # what a model that cannot load as this kind is not, in words
    auto_class: str  # the transformers class a saved folder of this kind loads with
    adapted: bool = False  # whether a task's trained adapters apply to it
    merged_family: str | None = None  # the family a model merged from its adapter is listed under (None: its config)


KINDS: dict[str, ModelKind] = {kind.name: kind for kind in (
    ModelKind("lm", catalog.DECODER, "a text-generation (GPT-family) model, so it cannot chat",
              "AutoModelForCausalLM", adapted=True, merged_family=catalog.DECODER),
    ModelKind("embedder", catalog.EMBEDDING, "a sentence-embedding model", "AutoModel", adapted=True,
              merged_family=catalog.EMBEDDING),
    ModelKind("seq2seq", catalog.SEQ2SEQ, "a sequence-to-sequence model (BART, T5, Marian)",
              "AutoModelForSeq2SeqLM"),
    ModelKind("classifier", catalog.ENCODER, "a text-classification model", "AutoModelForSequenceClassification",
              adapted=True),
    ModelKind("span", catalog.ENCODER, "an extractive question-answering model", "AutoModelForQuestionAnswering",
              adapted=True),
    ModelKind("masked", catalog.ENCODER, "a masked language model (BERT, RoBERTa)", "AutoModelForMaskedLM"),
)}


def adapted_kinds() -> tuple[str, ...]:
    """The kinds a task's adapters can apply to."""
    return tuple(name for name, kind in KINDS.items() if kind.adapted)


@dataclass(frozen=True)
class CacheKey:
    """A loaded model's key in the model cache: its kind, its source's key, and the adapter merged into this copy
    ("" for the shared model; language models take adapters in their engine, never as copies)."""

    kind: str
    source: str
    adapter: str = ""

    def __str__(self) -> str:  # how the System panel names it
        return f"{self.kind}:{self.source}" + (f"+{self.adapter}" if self.adapter else "")

"""Sentiment of many texts: a trained classifier when the model has one, else zero-shot on sentence embeddings."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from config import LOCAL_USER
from errors import TooLarge, UserError
from models import catalog
from models.loading import token_limit
from tasks.base import Endpoint, Task
from tasks.spec import DataField, TaskSpec

Progress = Callable[[float, str], None]

MAX_TEXTS = 1_000  # one request; more would hold the model for minutes
MAX_CHARS = 5_000  # per text; a classifier reads only its first ~512 tokens anyway
BATCH = 32
TEMPERATURE = 0.05  # cosine gaps between labels are ~0.05-0.2: this turns them into clear but not absolute odds
TOP_K = 3  # a text is compared with its 3 nearest examples of each label (robust to one odd example)

# Zero-shot prototypes: varied everyday examples per label, since a bare label word ("positive") is a poor
# anchor for short sentence embeddings. Topics repeat across labels so that sentiment, not topic, decides.
PROTOTYPES = {
    "negative": [
        "I hate it, this is awful.", "Terrible service and rude staff.",
        "The movie was boring and a waste of time.", "Poor quality, do not buy.",
        "I'm so disappointed with how it turned out.", "What a horrible experience.",
        "It broke after one day, useless.", "Worst purchase I have made this year.",
    ],
    "neutral": [
        "The meeting is scheduled for 3 pm on Tuesday.", "The package contains two cables and a manual.",
        "The film is two hours long.", "The store opens at nine in the morning.",
        "It is available in blue and black.", "The report was published last week.",
        "He walked to the station and took the train.", "The river flows into the sea.",
        "The city has a population of two million.", "Please send the form by email.",
    ],
    "positive": [
        "I love it, this is wonderful.", "Great service and friendly staff.",
        "The movie was fantastic and moving.", "Excellent quality, highly recommended!",
        "I'm so happy with how it turned out.", "What a delightful experience.",
        "This works perfectly, thank you!", "Best purchase I have made this year.",
    ],
}
ZERO_SHOT_NOTE = ("Zero-shot (offline fallback): each text is compared with example sentences for positive, "
                  "negative and neutral; a sentiment classifier or a trained adapter is more accurate.")


def softmax(x: np.ndarray) -> np.ndarray:
    """Probabilities over the last axis."""
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def split_texts(texts: list[str] | str) -> list[str]:
    """The non-empty texts to classify (one per line for a single string), or a UserError."""
    if isinstance(texts, str):
        texts = texts.splitlines()
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UserError("Texts must be a list of strings, or one string with one text per line.")
    kept = [t.strip() for t in texts if t.strip()]
    if not kept:
        raise UserError("Please enter some text to analyse: every line is empty.")
    if len(kept) > MAX_TEXTS:
        raise TooLarge(f"There are {len(kept):,} texts; the limit is {MAX_TEXTS:,} per request. "
                        "Split them into smaller batches.")
    for number, text in enumerate(kept, 1):
        if len(text) > MAX_CHARS:
            raise TooLarge(f"Text {number} is too long ({len(text):,} characters); the limit is "
                            f"{MAX_CHARS:,} per text.")
    return kept


class SentimentTask(Task):
    spec = TaskSpec(
        id="sentiment", title="Sentiment", endpoints=("sentiment",),
        defaults={catalog.EMBEDDING: "all-MiniLM-L6-v2", catalog.ENCODER: "DistilBERT-SST-2"},
        fields=(DataField("text", "the text"), DataField("label", "its label: any labels, at least two different")),
        sample="sentiment.csv", formats="Columns `text` and `label`: any labels you like, at least two different ones.",
        metrics={"accuracy": "accuracy", "macro_f1": "macro-F1"}, trainable=True, evaluated=True,
        adapter_kind="classifier", head=("classifier", "score"))

    def __init__(self, ctx):
        super().__init__(ctx)
        self._prototypes: dict[str, list[np.ndarray]] = {}  # embedder key -> per label (examples, dim) vectors

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("sentiment", self.sentiment)]

    def sentiment(self, texts: list[str] | str, model: str = "", adapter: str = "", *, owner: str = LOCAL_USER,
                  progress: Progress | None = None) -> list[dict]:
        """The label and every label's probability for each text (a list, or one text per line)."""
        return self.analyze(texts, model, adapter, progress, owner=owner)[0]

    def zero_shot(self, model: str = "", adapter: str = "", owner: str = LOCAL_USER) -> bool:
        """Whether this model (and adapter) runs the offline zero-shot method rather than a classifier."""
        return not self.has_head(model, adapter, "ForSequenceClassification", owner)

    def analyze(self, texts: list[str] | str, model: str = "", adapter: str = "",
                progress: Progress | None = None, *, owner: str = LOCAL_USER) -> tuple[list[dict], str]:
        """The results and a note ("" with a classifier, the zero-shot note on the offline fallback; a line more
        for Chinese texts on an English-first model)."""
        kept = split_texts(texts)
        if self.zero_shot(model, adapter, owner):
            (rows, name), note = self._zero_shot(kept, model, progress), ZERO_SHOT_NOTE
        else:
            (rows, name), note = self._classify(kept, model, adapter, progress, owner), ""
        return rows, " ".join(filter(None, [note, self.language_notice(kept, name)]))

    def _classify(self, texts: list[str], model: str, adapter: str, progress: Progress | None,
                  owner: str) -> tuple[list[dict], str]:
        loaded = self.encoder("classifier", model, adapter, owner)
        config = loaded.model.config
        labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]
        limit = token_limit(config, loaded.tokenizer, cap=512, fallback=512)
        rows = []
        for start in range(0, len(texts), BATCH):
            batch = texts[start:start + BATCH]
            inputs = loaded.tokenizer(batch, padding=True, truncation=True, max_length=limit,
                                      return_tensors="pt").to(loaded.model.device)
            logits = loaded.compute(lambda: loaded.model(**inputs).logits)
            probs = logits.float().softmax(-1).cpu().numpy()
            rows += [result(text, labels, p) for text, p in zip(batch, probs)]
            if progress is not None:
                progress(len(rows) / len(texts), f"Classified {len(rows)} of {len(texts)} texts")
        return rows, loaded.name

    def _zero_shot(self, texts: list[str], model: str, progress: Progress | None) -> tuple[list[dict], str]:
        embedder = self.ctx.hub.embedder(model, self.default(catalog.EMBEDDING))
        key = embedder.source.key
        if key not in self._prototypes:
            self._prototypes[key] = [embedder.encode(examples) for examples in PROTOTYPES.values()]
        report = None if progress is None else (
            lambda done, total: progress(done / total, f"Embedded {done} of {total} texts"))
        vectors = embedder.encode(texts, BATCH, report)  # (texts, dim) unit vectors
        # Per label: the mean cosine of each text with its TOP_K nearest examples -> (texts, labels).
        nearest = np.stack([np.sort(vectors @ examples.T, axis=1)[:, -TOP_K:].mean(1)
                            for examples in self._prototypes[key]], axis=1)
        probs = softmax(nearest / TEMPERATURE)
        return [result(text, list(PROTOTYPES), p) for text, p in zip(texts, probs)], embedder.name


def result(text: str, labels: list[str], probs: np.ndarray) -> dict:
    """One text's result in the API's shape: {text, label, scores: {label: probability}}."""
    return {"text": text, "label": labels[int(np.argmax(probs))],
            "scores": {label: float(p) for label, p in zip(labels, probs)}}

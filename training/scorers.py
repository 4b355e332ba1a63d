"""How Evaluate scores each task: what a row asks, the reference it should give, one answer through the task's own
public function, and the task's metric. A scorer is registered for its task in training/registry.py; the run over
rows and variants, and the report, are training/evaluation.py's.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

from errors import UserError
from tasks.base import Task
from training import metrics
from training.data import Example
from training.plan import Variant

IN_FLIGHT = 16  # rows answered at once (the engine batches up to 16)
REPLY_TOKENS = 256  # the longest chat reply an evaluation waits for


class Evaluation:
    """How one task is scored: what a row asks, the reference it should give, one answer, and the metric.

    `answer` gives one row's output through the task's public function; `answer_all` may instead answer every
    row of a variant at once (sentiment and search do, in batches)."""

    main: str = ""  # the metric that decides which variant is best
    lower_is_better: tuple[str, ...] = ()
    in_flight = IN_FLIGHT  # answers at once: a generating model batches them in its engine

    def __init__(self, task: Task, owner: str):
        self.task, self.owner = task, owner

    @classmethod
    def check(cls, examples: list[Example]) -> None:
        """Refuse a set this task cannot be scored on (a UserError naming the row); the server checks it before
        the job is queued."""

    def begin(self, rows: list[dict]) -> None:
        """Learn what the whole set says before its rows are answered (translation's languages)."""

    def shown(self, fields: dict) -> str:
        raise NotImplementedError

    def expected(self, fields: dict) -> str:
        raise NotImplementedError

    def answer(self, fields: dict, variant: Variant) -> str:
        raise NotImplementedError

    answer_all: Callable | None = None  # (rows, variant, stop) -> outputs, for tasks that batch whole sets

    def row_score(self, output: str, expected: str) -> float:
        """One row's score in 0..100 (higher is better), to sort and colour the results table."""
        raise NotImplementedError

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        raise NotImplementedError

    def extra(self, outputs: list[str], expected: list[str]) -> dict:
        """More than numbers for one variant (sentiment's confusion matrix)."""
        return {}

    def finish(self) -> None:
        """Stop what is still running (chat's replies) when the run ends early."""


class ChatEvaluation(Evaluation):
    """Greedy replies scored against the reference replies (exact match and word F1, no judge model), and the
    perplexity of the reference replies under each variant."""

    main = "f1"
    lower_is_better = ("perplexity",)

    def __init__(self, task: Task, owner: str):
        super().__init__(task, owner)
        self._surprise: dict[Variant, list[float]] = {}  # per variant: [sum of -log p, tokens]
        self._replies: dict[int, object] = {}  # replies being generated (by id), stopped by finish()
        self._lock = threading.Lock()

    @classmethod
    def check(cls, examples: list[Example]) -> None:
        for row in examples:
            messages = row.fields.get("messages") or []
            if not messages or messages[-1]["role"] != "assistant" or not any(m["role"] == "user" for m in messages):
                raise UserError(f"Row {row.line} has no reply to score: every row needs a prompt and the reply "
                                "it should get (plain text and preference pairs cannot be evaluated).")

    @staticmethod
    def _parts(fields: dict) -> tuple[str, list[dict], str]:
        """(system prompt, earlier turns, the last user message) of a row's conversation."""
        messages = fields["messages"][:-1]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        turns = [m for m in messages if m["role"] != "system"]
        return system, turns[:-1], turns[-1]["content"]

    def shown(self, fields: dict) -> str:
        return self._parts(fields)[2]

    def expected(self, fields: dict) -> str:
        return fields["messages"][-1]["content"]

    def answer(self, fields: dict, variant: Variant) -> str:
        system, history, message = self._parts(fields)
        expected = self.expected(fields)
        # Room for the reference's length and some more: a reply much longer than it cannot match it anyway.
        room = min(REPLY_TOKENS, 2 * len(expected.split()) + 24)
        prompt, params = self.task.prepare(message, history, system, variant.model, variant.adapter, 0.0, 1.0,
                                           room, owner=self.owner)
        nll, count = prompt.lm.reply_surprise(prompt.ids, expected, prompt.adapter)
        reply = self.task.start(prompt, params)
        with self._lock:
            self._replies[id(reply)] = reply
            totals = self._surprise.setdefault(variant, [0.0, 0])
            totals[0] += nll
            totals[1] += count
        try:
            return reply.text()
        finally:
            reply.request.stop.set()
            with self._lock:
                self._replies.pop(id(reply), None)

    def finish(self) -> None:
        with self._lock:
            for reply in self._replies.values():
                reply.request.stop.set()

    def row_score(self, output: str, expected: str) -> float:
        return metrics.answer_scores([output], [expected])["f1"]

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        nll, count = self._surprise.get(variant, [0.0, 0])
        perplexity = round(math.exp(min(nll / count, 50.0)), 2) if count else None
        return {**metrics.answer_scores(outputs, expected), "perplexity": perplexity}


class SummarizeEvaluation(Evaluation):
    main = "rouge_l"

    def shown(self, fields: dict) -> str:
        return fields["text"]

    def expected(self, fields: dict) -> str:
        return fields["summary"]

    def answer(self, fields: dict, variant: Variant) -> str:
        return self.task.summarize(fields["text"], "", "medium", variant.model, variant.adapter,
                                   owner=self.owner)["summary"]

    def row_score(self, output: str, expected: str) -> float:
        return round(100 * metrics.rouge_l(output, expected), 1)

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        return metrics.summary_scores(outputs, expected)


class TranslateEvaluation(Evaluation):
    """A row's languages are its columns' or else the whole set's: a set is one language pair, and all its rows
    together tell the language where one short line cannot."""

    main = "chrf"

    def begin(self, rows: list[dict]) -> None:
        from tasks.translate import detect_language

        self.languages = {"source": "auto"}
        for side in ("source", "target"):
            if all(f.get(f"{side}_lang") for f in rows):
                continue
            try:
                self.languages[side] = detect_language("\n".join(f[side] for f in rows[:200]))[0]
            except UserError:
                if side == "target":
                    raise UserError("Could not tell the language of the targets; add a 'target_lang' column "
                                    "with the language code of each row (for example de).") from None

    def shown(self, fields: dict) -> str:
        return fields["source"]

    def expected(self, fields: dict) -> str:
        return fields["target"]

    def answer(self, fields: dict, variant: Variant) -> str:
        target = fields.get("target_lang") or self.languages["target"]
        source = fields.get("source_lang") or self.languages["source"]
        return self.task.translate(fields["source"], target, source, variant.model, variant.adapter,
                                   owner=self.owner)["translation"]

    def row_score(self, output: str, expected: str) -> float:
        import sacrebleu

        return round(sacrebleu.sentence_chrf(output, [expected]).score, 1)

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        return metrics.translation_scores(outputs, expected)


class AnswerEvaluation(Evaluation):
    main = "f1"
    in_flight = 2  # an encoder on the CPU's cores: more threads would only compete

    def shown(self, fields: dict) -> str:
        return fields["question"]

    def expected(self, fields: dict) -> str:
        return fields["answer"]

    def answer(self, fields: dict, variant: Variant) -> str:
        found = self.task.answer(fields["question"], fields["context"], "", variant.model, variant.adapter,
                                 owner=self.owner)
        return found["answer"] if found["found"] else ""

    def row_score(self, output: str, expected: str) -> float:
        return metrics.answer_scores([output], [expected])["f1"]

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        return metrics.answer_scores(outputs, expected)


def _label(value: object) -> str:
    return str(value).strip().lower()


class SentimentEvaluation(Evaluation):
    """Labels compared in lower case, so a file's "Positive" is the zero-shot method's "positive"."""

    main = "accuracy"
    BATCH = 32

    def shown(self, fields: dict) -> str:
        return fields["text"]

    def expected(self, fields: dict) -> str:
        return _label(fields["label"])

    def answer_all(self, rows: list[dict], variant: Variant, done: Callable[[int], None]) -> list[str]:
        labels = []
        for start in range(0, len(rows), self.BATCH):
            batch = [fields["text"] for fields in rows[start:start + self.BATCH]]
            results = self.task.sentiment(batch, variant.model, variant.adapter, owner=self.owner)
            labels += [_label(result["label"]) for result in results]
            done(len(batch))
        return labels

    def row_score(self, output: str, expected: str) -> float:
        return 100.0 if output == expected else 0.0

    @staticmethod
    def labels(outputs: list[str], expected: list[str]) -> list[str]:
        return list(dict.fromkeys(expected + outputs))

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        # Macro-F1 over the set's own labels: a label only a model says (zero-shot's "neutral") is simply wrong.
        return metrics.classification_scores(outputs, expected, list(dict.fromkeys(expected)))

    def extra(self, outputs: list[str], expected: list[str]) -> dict:
        return {"confusion": metrics.confusion(outputs, expected, self.labels(outputs, expected))}


class SearchEvaluation(Evaluation):
    """Each query ranked against every passage of the set (its own positive among them), as the training report
    does; the output shown is the passage it ranked first."""

    main = "mrr"

    def __init__(self, task: Task, owner: str):
        super().__init__(task, owner)
        self._ranks: dict[Variant, list[int]] = {}  # per variant: each query's passage's 1-based rank

    def shown(self, fields: dict) -> str:
        return fields["query"]

    def expected(self, fields: dict) -> str:
        return fields["positive"]

    def answer_all(self, rows: list[dict], variant: Variant, done: Callable[[int], None]) -> list[str]:
        import numpy as np

        corpus = list(dict.fromkeys([f["positive"] for f in rows] + [f["negative"] for f in rows if f.get("negative")]))
        embedder, _ = self.task.embedding(variant.adapter, self.owner)
        passages = embedder.encode(corpus)
        queries = embedder.encode([f["query"] for f in rows])
        order = np.argsort(-(queries @ passages.T), axis=1, kind="stable")
        done(len(rows))
        where = {passage: k for k, passage in enumerate(corpus)}
        self._ranks[variant] = [int(np.flatnonzero(order[i] == where[f["positive"]])[0]) + 1
                                for i, f in enumerate(rows)]
        return [corpus[ranking[0]] for ranking in order]

    def row_score(self, output: str, expected: str) -> float:
        return 100.0 if output == expected else 0.0

    def score(self, outputs: list[str], expected: list[str], variant: Variant) -> dict:
        return metrics.retrieval_scores(self._ranks[variant])

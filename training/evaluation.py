"""Evaluate: the base and adapters of a task scored on a set of rows with the task's own metric, row by row.

Every row goes through the task's own public function, exactly as its tab would answer it for the same user
(their adapters, the adapter's prompt and labels). Rows of all variants run at once: chat replies are started
together, so variants on one base share its engine's batches, and the other tasks answer several rows in
parallel. It runs in the worker process like training, so a big set never holds the server.
"""

from __future__ import annotations

import csv
import io
import math
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass

import torch

from errors import UserError
from models.adapters import selected
from models.engine import EngineClosed
from models.lora import PEFT_BASE
from models.loading import unloaded
from tasks.base import Task
from training import data, metrics
from training.data import Example
from training.plan import JobPlan
from training.trainer import Stopped

MAX_VARIANTS = 4
SHOWN_CHARS = 600  # of each input, reference and output a results row keeps
IN_FLIGHT = 16  # rows answered at once (the engine batches up to 16)
REPLY_TOKENS = 256  # the longest chat reply an evaluation waits for


@dataclass(frozen=True)
class Variant:
    model: str = ""
    adapter: str = ""

    def label(self, default_model: str) -> str:
        """How the results name it: the adapter (and its model when one is given), else the model."""
        if self.adapter:
            return f"{self.adapter} on {self.model}" if self.model else self.adapter
        return f"{self.model or default_model} (base)"


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
        nll, count = reply_surprise(prompt.lm, prompt.ids, prompt.adapter, expected)
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


def reply_surprise(lm, prompt_ids: list[int], adapter: str | None, reply: str) -> tuple[float, int]:
    """(sum of -log p over the reply's tokens after the prompt, their count) under the adapter (None: the base),
    computed in the engine's thread between decode steps."""
    reply_ids = lm.tokenizer(reply, add_special_tokens=False)["input_ids"]
    ids = (list(prompt_ids) + list(reply_ids))[:lm.context_length]
    start = len(prompt_ids)
    if start >= len(ids) or lm.engine is None:  # nothing to score, or a serving backend holds the weights
        return 0.0, 0

    def run():
        model = lm.engine.model
        with torch.inference_mode():
            kwargs = {"adapter_names": [adapter or PEFT_BASE]} if hasattr(model, "peft_config") else {}
            batch = torch.tensor([ids], device=model.device)
            logits = model(input_ids=batch, use_cache=False, **kwargs).logits[0, start - 1:-1].float()
            picked = logits.log_softmax(-1).gather(-1, batch[0, start:, None])[:, 0]
            return float(-picked.sum()), int(picked.numel())
    try:
        return lm.engine.call(run)
    except EngineClosed:
        raise unloaded(lm.name) from None


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


# ---- the run -----------------------------------------------------------------------------------------------

def rows(settings, task: str, plan: JobPlan) -> list[Example]:
    """The rows an evaluation scores: its file's, or those a training job held out of its file (same seed)."""
    found = data.load_examples(plan.data, task, plan.columns or None, settings.max_upload_mb).examples
    if plan.held_out_seed is not None:
        found = data.split_validation(found, plan.held_out_seed)[1]
    return found


def parse_variants(variants: object, takes_model: bool = True) -> list[Variant]:
    """/evaluate's variants as Variants, or a UserError saying what a variant is."""
    if variants in (None, "", []):
        raise UserError("Choose what to evaluate: at least one variant, such as the base model and an adapter.")
    if not isinstance(variants, list) or len(variants) > MAX_VARIANTS:
        raise UserError(f"Give 1 to {MAX_VARIANTS} variants to evaluate, each {{\"model\": ..., \"adapter\": ...}}.")
    chosen = []
    for variant in variants:
        if not isinstance(variant, dict) or any(k not in ("model", "adapter") for k in variant) or any(
                not isinstance(v, str) for v in variant.values()):
            raise UserError("Each variant is {\"model\": \"...\", \"adapter\": \"...\"} (either may be empty).")
        found = Variant(variant.get("model", "").strip(), (selected(variant.get("adapter", "")) or ""))
        if found.model and not takes_model:
            raise UserError("Search evaluates its embedding model with your adapters: leave the model empty.")
        if found in chosen:
            raise UserError("The same variant is listed twice; each variant must differ in its model or adapter.")
        chosen.append(found)
    return chosen


def run(evaluation: Evaluation, examples: list[Example], variants: list[Variant], default_model: str,
        progress: Callable[[int, int], None], stop_reason: Callable[[], str | None]) -> dict:
    """Every variant on every row; the report (see `report`). Raises Stopped when asked to stop."""
    rows = [row.fields for row in examples]
    total, done = len(rows) * len(variants), [0]
    outputs: dict[Variant, list[str | None]] = {v: [None] * len(rows) for v in variants}

    def advance(count: int) -> None:
        done[0] += count
        progress(done[0], total)
        reason = stop_reason()
        if reason:
            raise Stopped(reason, {"step": done[0], "total_steps": total})

    evaluation.check(examples)
    evaluation.begin(rows)
    problems: dict[Variant, list[tuple[int, str]]] = {}
    if evaluation.answer_all is not None:
        for variant in variants:
            outputs[variant] = evaluation.answer_all(rows, variant, advance)
    else:
        _answer_each(evaluation, rows, variants, outputs, advance, problems, default_model)
    result = report(evaluation, examples, variants, outputs, default_model)
    result["problems"] = [{"line": examples[i].line, "variant": v.label(default_model), "reason": reason}
                          for v in variants for i, reason in sorted(problems.get(v, []))]
    if result["problems"]:
        result["summary"] += (f" {len(result['problems'])} answers could not be given (they count as wrong); "
                              "see the problems listed with the results.")
    return result


def _answer_or_reason(evaluation: Evaluation, fields: dict, variant: Variant) -> tuple[str, str]:
    """(the output, "") or ("", why this row could not be answered): one odd row does not end the evaluation."""
    try:
        return evaluation.answer(fields, variant), ""
    except UserError as error:
        return "", str(error)


def _answer_each(evaluation: Evaluation, rows: list[dict], variants: list[Variant], outputs: dict, advance,
                 problems: dict, default_model: str) -> None:
    """Row by row, several answers at once (row-major, so the variants of a row meet in one batch). A variant
    whose first rows all fail (an adapter for another base, a model that cannot load) fails the run at once."""
    work = iter([(i, v) for i in range(len(rows)) for v in variants])
    answered: set[Variant] = set()  # variants that gave at least one answer
    with ThreadPoolExecutor(max_workers=evaluation.in_flight, thread_name_prefix="evaluate") as pool:
        running = {}

        def fill() -> None:
            for i, variant in work:
                running[pool.submit(_answer_or_reason, evaluation, rows[i], variant)] = (i, variant)
                if len(running) >= evaluation.in_flight:
                    return
        fill()
        try:
            while running:
                finished, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)
                for future in finished:
                    i, variant = running.pop(future)
                    outputs[variant][i], reason = future.result()
                    if not reason:
                        answered.add(variant)
                        continue
                    problems.setdefault(variant, []).append((i, reason))
                    if variant not in answered and len(problems[variant]) >= min(3, len(rows)):
                        raise UserError(f"{variant.label(default_model)} cannot answer: {reason}")
                advance(len(finished))
                fill()
        finally:  # stopped or failed: nothing more starts, and what runs stops before the pool is left
            for future in running:
                future.cancel()
            evaluation.finish()


def report(evaluation: Evaluation, examples: list[Example], variants: list[Variant], outputs: dict,
           default_model: str) -> dict:
    """{summary, task, main, metric_names, lower_is_better, variants: [{model, adapter, label, metrics, ...}],
    best, rows: [{line, input, expected, outputs, scores, agree}] (disagreements first), disagreements}."""
    spec = evaluation.task.spec
    expected = [evaluation.expected(row.fields) for row in examples]
    scored = []
    for variant in variants:
        said = [o or "" for o in outputs[variant]]
        scored.append({"model": variant.model, "adapter": variant.adapter, "label": variant.label(default_model),
                       "metrics": evaluation.score(said, expected, variant), **evaluation.extra(said, expected)})
    table = []
    for i, row in enumerate(examples):
        said = [outputs[v][i] or "" for v in variants]
        scores = [evaluation.row_score(text, expected[i]) for text in said]
        table.append({"line": row.line, "input": evaluation.shown(row.fields), "expected": expected[i],
                      "outputs": said, "scores": scores,
                      "agree": len({" ".join(text.lower().split()) for text in said}) <= 1})
    # Where the variants disagree is where they differ: those rows first, the widest gap in score first.
    table.sort(key=lambda r: (r["agree"], -(max(r["scores"]) - min(r["scores"])), r["line"]))
    names = {key: spec.metrics.get(key, key.replace("_", " ")) for v in scored for key in v["metrics"]}
    best = max(range(len(scored)), key=lambda k: scored[k]["metrics"].get(evaluation.main) or 0.0)
    disagreements = sum(not r["agree"] for r in table)
    return {"kind": "evaluation", "task": spec.id, "main": evaluation.main, "metric_names": names,
            "lower_is_better": list(evaluation.lower_is_better), "variants": scored, "best": best, "rows": table,
            "disagreements": disagreements, "row_count": len(examples),
            "summary": verdict(scored, best, evaluation.main, names, len(examples), disagreements)}


def verdict(scored: list[dict], best: int, main: str, names: dict, rows: int, disagreements: int) -> str:
    """The results in plain words: which variant scored best, by how much, and where they differ."""
    name = names.get(main, main)
    value = lambda v: v["metrics"].get(main) or 0.0  # noqa: E731
    if len(scored) == 1:
        head = f"On {rows} rows, {scored[0]['label']} scored {name} {value(scored[0]):.1f}."
    else:
        others = [v for k, v in enumerate(scored) if k != best]
        runner = max(others, key=value)
        if value(scored[best]) == value(runner):
            head = f"On {rows} rows, {scored[best]['label']} and {runner['label']} scored the same {name} " \
                   f"({value(runner):.1f})."
        else:
            head = (f"On {rows} rows, {scored[best]['label']} scored best: {name} {value(scored[best]):.1f} "
                    f"against {value(runner):.1f} for {runner['label']}.")
    if len(scored) > 1:
        head += (f" The answers differ on {disagreements} of {rows} rows, listed first." if disagreements else
                 " Every variant gave the same answers.")
    return head


def shortened(result: dict) -> dict:
    """The report as /job returns it: each text of the results table cut to SHOWN_CHARS (the CSV has them whole)."""
    cut = lambda text: text if len(text) <= SHOWN_CHARS else text[:SHOWN_CHARS - 1] + "…"  # noqa: E731
    rows = [{**row, "input": cut(row["input"]), "expected": cut(row["expected"]),
             "outputs": [cut(text) for text in row["outputs"]]} for row in result["rows"]]
    return {**result, "rows": rows}


def as_csv(result: dict) -> str:
    """The per-row results as CSV: line, input, reference, then each variant's output and score."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    labels = [v["label"] for v in result["variants"]]
    writer.writerow(["line", "input", "reference", *[x for label in labels for x in (label, f"{label} score")],
                     "variants agree"])
    for row in result["rows"]:
        pairs = [x for text, score in zip(row["outputs"], row["scores"]) for x in (text, score)]
        writer.writerow([row["line"], row["input"], row["expected"], *pairs, "yes" if row["agree"] else "no"])
    return buffer.getvalue()


def eta(started: float, done: int, total: int) -> float | None:
    elapsed = time.monotonic() - started
    return round(elapsed * (total - done) / done, 1) if done else None

"""Evaluate: the base and adapters of a task scored on a set of rows with the task's own metric, row by row.

Every row goes through the task's own public function, exactly as its tab would answer it for the same user
(their adapters, the adapter's prompt and labels). Rows of all variants run at once: chat replies are started
together, so variants on one base share its engine's batches, and the other tasks answer several rows in
parallel. It runs in the worker process like training, so a big set never holds the server. How each task is
scored (its Evaluation) is training/scorers.py's; this file runs them and writes the report, the verdict and the CSV.
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

from errors import UserError
from models.adapters import selected
from training import data, documents_data
from training.data import Example
from training.plan import JobPlan, JobProgress, Variant
from training.scorers import Evaluation
from training.trainer import Stopped

MAX_VARIANTS = 4
SHOWN_CHARS = 600  # of each input, reference and output a results row keeps


def rows(settings, task: str, plan: JobPlan) -> list[Example]:
    """The rows an evaluation scores: its file's, or those a training job held out of its file (same seed)."""
    found = data.load_examples(plan.data, task, plan.columns or None, settings.max_upload_mb).examples
    if plan.held_out_seed is not None:  # rows made from documents were split as documents_data.hold_out does
        split = documents_data.hold_out if plan.generated_from else data.split_validation
        found = split(found, plan.held_out_seed)[1]
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
            raise Stopped(reason, JobProgress(done[0], total))

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

"""The "did it learn?" report: loss before and after, answers side by side, and a verdict in plain words."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from tasks.spec import metric_name


@dataclass(frozen=True)
class Sample:
    """One checked row as the report shows it: its input, the reference, and both models' answers."""

    prompt: str
    expected: str
    base: str
    adapter: str


@dataclass(frozen=True)
class AnswerCheck:
    """What reading the adapter's answers found (DESIGN.md §4 "Answer check"), each number measured against the base
    model's own answers on the same prompts, so a base that always repeats a little is not punished."""

    passed: bool = True
    problem: str = ""  # "" when passed, else repetition, collapse, drift, empty, cut, one_label or one_passage
    repetition: float | None = None  # the adapter's share of repeated 3-grams minus the base's
    collapse: float | None = None  # how alike the adapter's answers to different prompts are, minus the base's
    drift: float | None = None  # how much less the answers are about their prompt than the base's
    examples: tuple[Sample, ...] = ()  # the worst answers, side by side with the base's

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class TrainingReport:
    """What a finished run says (DESIGN.md §4): the verdict in words, the loss and the task metric before and
    after, and samples side by side. Sent as /job's `report` and kept in the adapter's metadata as to_json()."""

    verdict: str  # learned, barely, overfit or ruined
    summary: str  # the verdict and the metric in plain sentences
    held_out: bool  # whether it was checked on held-out rows (else on the training rows)
    loss_before: float
    loss_after: float
    samples: tuple[Sample, ...] = ()
    metric_before: dict[str, float] = field(default_factory=dict)  # the task's metric by the base model
    metric_after: dict[str, float] = field(default_factory=dict)  # ... and with the adapter
    perplexity_before: float | None = None  # language models
    perplexity_after: float | None = None
    extra: dict = field(default_factory=dict)  # what a recipe adds (a classifier's confusion matrix)
    answer_check: AnswerCheck = field(default_factory=AnswerCheck)

    def to_json(self) -> dict:
        """The public shape: only the parts this report has, the recipe's additions beside them."""
        data = asdict(self)
        extra = data.pop("extra")
        if not self.metric_after:
            data.pop("metric_before"), data.pop("metric_after")
        if self.perplexity_before is None:
            data.pop("perplexity_before"), data.pop("perplexity_after")
        return {**data, **extra}


def verdict(val_before: float, val_after: float, held_out: bool, loss_history: list,
            perplexity: bool = True) -> tuple[str, str]:
    """(key, one plain sentence): learned, barely changed, or fits your examples but not new ones."""
    train = [row[1] for row in loss_history if row[1] is not None]
    train_fell = len(train) >= 2 and train[-1] < train[0]
    vals = [row[2] for row in loss_history if row[2] is not None]
    # Overfitting is called only with real held-out rows: teaching facts is meant to fit the examples.
    if held_out and train_fell and len(vals) >= 2 and min(vals[1:]) > vals[0] * 1.02:
        return "overfit", ("It fits your examples but not new ones: the training loss fell while the loss on "
                           "held-out examples rose. Try fewer epochs, a lower learning rate or more data.")
    gain = (val_before - val_after) / max(val_before, 1e-9)
    checked = "held-out examples" if held_out else "your training examples (too few rows to hold some out)"
    if gain >= 0.1:
        fell = "almost to zero" if gain > 0.995 else f"by {gain:.0%}"
        detail = f" Perplexity {_ppl(val_before)} → {_ppl(val_after)}." if perplexity else ""
        return "learned", f"It learned: the loss on {checked} fell {fell}.{detail}"
    return "barely", (f"It barely changed: the loss on {checked} moved by {gain:.0%}. Try more epochs or a higher "
                      "learning rate.")


def _ppl(loss: float) -> str:
    return f"{math.exp(min(loss, 50)):.1f}"


def metric_sentence(before: dict, after: dict) -> str:
    """'Accuracy 33.3 → 91.7, macro-F1 ...' for the summary."""
    text = ", ".join(f"{metric_name(name)} {before[name]} → {value}" for name, value in after.items()) + "."
    return text[0].upper() + text[1:]


def build_report(fitted, before: dict, after: dict, samples: list[Sample], perplexity: bool, metric_decides: bool,
                 extra: dict | None = None, check: AnswerCheck | None = None,
                 ruined_at: int | None = None) -> TrainingReport:
    """The report shown after a run: the verdict on the loss, the task metric before → after, and samples
    answered by the base model and by the adapter side by side. A failed answer check overrides the rest: the
    verdict is then *ruined*, whatever the loss did. ruined_at: the step whose answers failed, when an earlier
    checkpoint that passes was kept instead."""
    from training.answer_check import sentence

    check = check or AnswerCheck()
    key, text = verdict(fitted.val_before, fitted.val_after, fitted.held_out, fitted.state.loss, perplexity)
    unchanged = all(after[name] <= before[name] for name in after) and any(v < 100 for v in before.values())
    if metric_decides and key != "overfit" and before and unchanged:
        key, text = "barely", (f"It did not improve the task on {'held-out' if fitted.held_out else 'your'} "
                               "examples. Try more epochs, a higher learning rate or more data.")
    if not check.passed:
        key, text = "ruined", sentence(check)
    elif ruined_at is not None:
        text = (f"The answers at step {ruined_at} were ruined, so the adapter from step {fitted.state.best_step}, "
                f"whose answers pass the check, is kept. {text}")
    return TrainingReport(
        key, text + (f" {metric_sentence(before, after)}" if after else ""), fitted.held_out,
        round(fitted.val_before, 4), round(fitted.val_after, 4), tuple(samples),
        dict(before) if after else {}, dict(after),
        float(_ppl(fitted.val_before)) if perplexity else None, float(_ppl(fitted.val_after)) if perplexity else None,
        dict(extra or {}), check)


VERDICTS = ("learned", "barely", "overfit", "ruined")  # the tabs name each in the page's language (verdict.short.*)


def check_line(check: dict) -> str:
    """The answer check in one line: passed or its problem, and the measures against the base model."""
    if not check:
        return ""
    names = {"repetition": "repetition", "collapse": "answers alike", "drift": "off the question"}
    measures = ", ".join(f"{label} {check[key]:+.2f}" for key, label in names.items() if check.get(key) is not None)
    state = "passed" if check.get("passed", True) else f"failed ({check.get('problem', '').replace('_', ' ')})"
    return f"Answer check {state}" + (f": {measures} against the base model" if measures else "")


def headline(task: str, metrics: dict) -> str:
    """An adapter's result in a few words: its task's first metric before → after, else its loss."""
    from tasks.spec import TASKS

    names = list(TASKS[task].spec.metrics) if task in TASKS else []
    for key in names + ["val_loss"]:
        if f"{key}_after" in metrics:
            before = metrics.get(f"{key}_before", "?")
            return f"{metric_name(key) if key != 'val_loss' else 'loss'} {before} → {metrics[f'{key}_after']}"
    return ""

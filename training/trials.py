"""Find settings for me (DESIGN.md §1, round 3): a few short trial runs over a small grid chosen for the task, the
method and the data's size, each scored on the held-out rows with the task's metric and the answer check, within a
time budget; the job's own run then trains in full with the best trial's settings.

The grid is ordered by promise (the settings asked for first, then the learning rate, which matters most, then the
rank or the epochs), so a faster machine runs more of it in the same budget. Every trial runs the same share of
its full run, so their scores compare; the first trial measures the pace and, when the trials would outrun their
share of the budget, runs again shorter, and the others follow its length.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import product
from pathlib import Path

from errors import UserError
from training.plan import JobPlan, JobProgress, Trial
from training.presets import TrainSettings, flag
from training.report import TrainingReport
from training.trainer import Checkpoint, Hooks, Stopped

KEYS = ("search", "search_minutes")  # /train's settings that ask for a search (not TrainSettings fields)
DEFAULT_MINUTES = 5.0  # about three trials of the quick preset on SmolLM2 on a CPU
MINUTES = (1.0, 120.0)
MOST_TRIALS = 6  # the grid's length: the budget decides how many of them run
FEWEST_TRIALS = 3  # a trial's share of the budget is the budget over this many
TRIAL_SHARE = 0.5  # a trial runs this share of its full run's steps ...
FIT_SHARE = 0.6  # ... or fewer, so its steps take at most this share of its time (loading and checking take the rest)
PROBE_STEPS = 3  # steps timed before the first trial's pace is trusted
OVERRAN = "overran"  # the stop reason of a first trial too long for its share: it runs again, shorter
LARGE_DATA = 200  # rows from which a larger rank (or fewer epochs) is tried instead of a smaller one

# (the trial's settings, its hooks, its checkpoint) -> recipe.train's Outcome (None on processes other than rank 0)
RunTrial = Callable[[TrainSettings, Hooks, Checkpoint], object]


# ---- what /train asks for ---------------------------------------------------------------------------------------
def requested(settings: dict | None) -> tuple[dict | None, float]:
    """/train's settings without the search's keys, and the search's budget in minutes (0 = no search)."""
    if not isinstance(settings, dict):
        return settings, 0.0
    rest = {k: v for k, v in settings.items() if k not in KEYS}
    minutes = _minutes(settings.get("search_minutes"))  # checked even without search: a typo should not pass
    return rest, minutes if flag(settings.get("search"), "search") else 0.0


def _minutes(value) -> float:
    if value in (None, ""):
        return DEFAULT_MINUTES
    try:
        minutes = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        minutes = math.nan
    if not MINUTES[0] <= minutes <= MINUTES[1]:  # NaN fails too
        raise UserError(f"The setting search_minutes must be a number of minutes from {MINUTES[0]:g} to "
                        f"{MINUTES[1]:g}, not {str(value)[:40]!r}.")
    return minutes


# ---- the grid ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    settings: TrainSettings  # the full run's settings
    varied: dict  # the settings the grid changed, as the report shows them


def grid(base: TrainSettings, language: bool, rows: int) -> list[Candidate]:
    """The settings to try, most promising first: the learning rate around base's, and the LoRA rank (language
    tasks learning answers) or the epochs (DPO, and the encoder tasks' heads), each chosen for the data's size."""
    # DPO over-learns quickly (DESIGN.md §4): a smaller step is the likelier fix than a larger one.
    factors = (1, 0.5, 2) if base.method == "dpo" else (1, 3, 1 / 3)
    rates = [float(f"{min(max(base.learning_rate * f, 1e-6), 1e-1):.2g}") for f in factors]
    key, values = _second_setting(base, language, rows)
    # Nearest the asked-for settings first; among equals, the learning rate's neighbours first.
    order = sorted(product(range(len(rates)), range(len(values))), key=lambda ij: (sum(ij), ij[1]))
    candidates, seen = [], set()
    for i, j in order:
        varied = {"learning_rate": rates[i], key: values[j]}
        if tuple(varied.items()) not in seen:
            seen.add(tuple(varied.items()))
            candidates.append(Candidate(_applied(base, varied), varied))
    return candidates[:MOST_TRIALS]


def _second_setting(base: TrainSettings, language: bool, rows: int) -> tuple[str, list]:
    """Epochs where they matter most (DPO; an encoder's new head), else the rank; a run of max_steps has no epochs."""
    large = rows >= LARGE_DATA
    if not base.max_steps and (base.method == "dpo" or not language):
        other = base.epochs / 2 if large and base.method != "dpo" else base.epochs * 2
        return "epochs", [base.epochs, round(min(max(other, 0.5), 1000), 2)]
    # Few rows rarely need a large adapter; many rows may use one.
    return "rank", [base.rank, min(base.rank * 2, 64) if large else max(base.rank // 2, 2)]


def _applied(base: TrainSettings, varied: dict) -> TrainSettings:
    """base with the varied settings; a new rank keeps base's alpha-to-rank ratio."""
    if "rank" in varied:
        alpha = round(base.alpha * varied["rank"] / base.rank)
        return replace(base, **varied, alpha=min(max(alpha, 1), 1024))
    return replace(base, **varied)


def describe(varied: dict) -> str:
    """'lr 3e-4, rank 8'."""
    return ", ".join(f"lr {_short(value)}" if key == "learning_rate" else f"{key} {value:g}"
                     for key, value in varied.items())


def _short(rate: float) -> str:
    mantissa, exponent = f"{rate:.1e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def full_steps(settings: TrainSettings, rows: int) -> int:
    """The optimizer steps of a full run on rows (as trainer.fit counts them)."""
    per_epoch = math.ceil(rows / settings.batch_size)
    return settings.max_steps or max(1, math.ceil(settings.epochs * per_epoch / settings.grad_accum))


# ---- running the trials -----------------------------------------------------------------------------------------
@dataclass
class _Result:
    candidate: Candidate
    outcome: object  # recipe.Outcome on rank 0, else None
    seconds: float

    @property
    def passed(self) -> bool:
        report = self.outcome.report
        return report.answer_check.passed and report.verdict != "ruined"

    def rank_key(self) -> tuple:
        """Higher is better: a passing check before any score; a lower loss, then a shorter time, break ties."""
        report = self.outcome.report
        return self.passed, score(report), -report.loss_after, -self.seconds

    def record(self, chosen: bool) -> Trial:
        report = self.outcome.report
        check = "passed" if self.passed else (report.answer_check.problem or report.verdict)
        return Trial(dict(self.candidate.varied), round(score(report), 4), check, round(self.seconds, 1), chosen)


def score(report: TrainingReport) -> float:
    """The task's first metric after training, else minus the held-out loss: higher is better."""
    if report.metric_after:
        return float(next(iter(report.metric_after.values())))
    return -report.loss_after


class _Pace:
    """A trial's seconds per optimizer step, from its progress reports."""

    def __init__(self):
        self.first: tuple[int, float] | None = None
        self.last: tuple[int, float] | None = None

    def saw(self, progress: JobProgress) -> None:
        now = (progress.step, time.monotonic())
        self.first, self.last = self.first or now, now

    def per_step(self) -> float | None:
        """None until PROBE_STEPS steps were timed."""
        if not self.first or self.last[0] - self.first[0] < PROBE_STEPS:
            return None
        return (self.last[1] - self.first[1]) / (self.last[0] - self.first[0])


def search(plan: JobPlan, language: bool, rows: int, run: RunTrial, hooks: Hooks, folder: Path) -> JobPlan:
    """Run trials of plan's settings within plan.search_minutes; the plan with the chosen trial's settings and the
    trials. folder holds the trials' checkpoints and is removed whatever happens (a cancel saves nothing)."""
    candidates = grid(plan.settings, language, rows)
    budget, ranks = plan.search_minutes * 60, hooks.ranks
    hooks.log(f"finding settings: up to {len(candidates)} trials in {plan.search_minutes:g} min")
    started, scale, results = time.monotonic(), TRIAL_SHARE, []
    try:
        for index, candidate in enumerate(candidates):
            spent, last = time.monotonic() - started, results[-1].seconds if results else 0.0
            if not ranks.decided(not results or spent + last <= budget):  # the next would outrun the budget
                break
            label = f"trial {index + 1} of {len(candidates)}: {describe(candidate.varied)}"
            result, scale = _trial(run, candidate, rows, scale, budget / FEWEST_TRIALS, not results, label, hooks,
                                   folder / str(index))
            results.append(result)
            if ranks.main:
                trial = result.record(False)
                hooks.log(f"{label}: score {trial.score}, check {trial.check}, {trial.seconds} s")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    best = ranks.decided(max(range(len(results)), key=lambda i: results[i].rank_key()) if ranks.main else 0)
    trials = tuple(r.record(i == best) for i, r in enumerate(results)) if ranks.main else ()
    hooks.log(f"chose {describe(results[best].candidate.varied)}; training with it in full")
    return replace(plan, settings=results[best].candidate.settings, trials=trials)


def _trial(run: RunTrial, candidate: Candidate, rows: int, scale: float, share_s: float, first: bool, label: str,
           hooks: Hooks, folder: Path) -> tuple[_Result, float]:
    """One trial at scale times its full run's steps, and the scale the trials go on with: the first trial,
    when its pace shows it would outrun its share of the budget, stops and runs again at the scale that fits."""
    started, full = time.monotonic(), full_steps(candidate.settings, rows)
    steps = max(1, math.ceil(full * scale))
    outcome, fits = _run_once(run, candidate, steps, share_s * FIT_SHARE if first else None, label, hooks, folder)
    if outcome is None and fits is not None:
        scale *= max(1.0, hooks.ranks.decided(fits)) / steps  # rank 0 timed it: every process takes its length
        steps = max(1, math.ceil(full * scale))
        hooks.log(f"{label}: shortened to {steps} steps to fit the time budget")
        outcome, _ = _run_once(run, candidate, steps, None, label, hooks, folder)
    return _Result(candidate, outcome, time.monotonic() - started), scale


def _run_once(run: RunTrial, candidate: Candidate, steps: int, limit_s: float | None, label: str, hooks: Hooks,
              folder: Path) -> tuple[object, float | None]:
    """(run's outcome, None); or with limit_s, once the pace shows the steps would take longer than that, (None,
    the steps that would fit). A cancel or an interruption goes on up as Stopped."""
    pace = _Pace()

    def stop() -> str | None:
        per_step = pace.per_step() if limit_s else None
        return hooks.stop_reason() or (OVERRAN if per_step and per_step * steps > limit_s else None)

    def progress(p: JobProgress) -> None:
        pace.saw(p)
        hooks.progress(replace(p, stage=label))

    settings = replace(candidate.settings, max_steps=steps, checkpoint_every=100_000)  # a trial is never resumed
    shutil.rmtree(folder, ignore_errors=True)  # a stopped first try's checkpoint must not be resumed
    try:
        return run(settings, Hooks(progress, stop, hooks.log, hooks.ranks, hooks.embed), Checkpoint(folder)), None
    except Stopped as stopped:
        if stopped.reason != OVERRAN:
            raise
        per_step = pace.per_step()
        return None, (limit_s / per_step if per_step else 0.0)


def reported(report: TrainingReport, trials: tuple[Trial, ...]) -> TrainingReport:
    """The job's report with its trials, which to_json puts beside the report's own keys."""
    return replace(report, extra={**report.extra, "trials": [trial.to_json() for trial in trials]})

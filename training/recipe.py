"""The one interface every training recipe implements, and the run every task's training goes through.

A recipe says how one task trains: which model families it trains, how a validated row becomes what the model
reads, the loss, how to predict a row for scoring, and the metric. `train` does the rest the same way for every
task: load the base with LoRA, encode the rows, predict the checked rows, fit (trainer.fit: batches, checkpoints,
early stopping), predict again, score both, and write the "did it learn?" report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from config import Settings
from errors import UserError
from models import catalog, lazy
from models.loading import operator_default
from tasks.spec import TaskSpec
from training.data import Example
from training import answer_check, presets
from training.presets import TrainSettings
from training.report import AnswerCheck, Sample, TrainingReport, build_report
from training.trainer import Checkpoint, Fitted, Hooks, fit, loss_metrics, mean_loss, trainable_state, use_bf16

torch = lazy.module("torch")


SAMPLES = 3  # rows a report shows side by side
WALK_BACK = 3  # earlier checkpoints tried when the kept one fails the answer check: the latest, one between, the first


class Recipe:
    """How one task trains; subclasses fill in the steps `train` calls."""

    families: tuple[str, ...] = (catalog.DECODER,)  # the model families it trains on; the first gives the default
    perplexity = False  # the report shows perplexity (language models)
    metric_decides = False  # a task metric that did not improve makes the verdict "barely changed"
    checked_rows: int | None = None  # rows predicted for the report before and after (None: every checked row)
    nothing_to_learn = "None of the training rows can be read by this model."  # when no row gives an item

    def __init__(self, settings: TrainSettings):
        self.settings = settings
        self.model = None  # the peft model being trained (set by load)
        self.tokenizer = None

    # ---- reading data (also used by the Train tab's check, in the server) ---------------------------------
    @classmethod
    def row(cls, fields: dict, record: dict) -> dict:
        """A row's fields as this recipe reads them; raise RowError for a row it cannot use."""
        return fields

    @classmethod
    def check_rows(cls, examples: list[Example], name: str) -> None:
        """Refuse a whole file (UserError) that no run could learn from."""

    # ---- training -------------------------------------------------------------------------------------------
    def prepare(self, rows: list[Example]) -> list[Example]:
        """The rows as this recipe trains on them (a UserError naming a row that cannot be used)."""
        return rows

    def load(self, source: catalog.ModelSource, options: dict, rows: list[Example]) -> None:
        """Load the base model from source, wrap it with LoRA (self.model) and remember what meta() reports."""
        raise NotImplementedError

    def encode(self, row: Example) -> list:
        """The training items of one row (none, one or several)."""
        raise NotImplementedError

    def length(self, item) -> int:
        """An item's size, so batches group similar lengths."""
        raise NotImplementedError

    def loss(self, model, items: list) -> tuple[torch.Tensor, int]:
        """(mean loss over the items, its weight: learned tokens or rows)."""
        raise NotImplementedError

    # ---- scoring ----------------------------------------------------------------------------------------------
    def checkable(self, row: Example) -> bool:
        return True

    def shown(self, row: Example) -> str:
        """What a report sample shows as its input."""
        raise NotImplementedError

    def expected(self, row: Example) -> str:
        raise NotImplementedError

    def predict(self, rows: list[Example]) -> list:
        """The model's output for each row, as the task's tab would give it."""
        raise NotImplementedError

    def as_text(self, prediction) -> str:
        """A prediction as a report sample shows it."""
        return prediction

    def score(self, predicted: list, expected: list[str]) -> dict:
        """The task metric ({} when the loss and the samples say it all)."""
        return {}

    def check_answers(self, rows: list[Sample], embed=None) -> AnswerCheck:
        """The answer check (training/answer_check.py) that fits this task's answers: generated text here."""
        return answer_check.check_text(rows, embed)

    def extra(self, predicted: list[str], expected: list[str]) -> dict:
        """More for the report (a confusion matrix)."""
        return {}

    def meta(self) -> dict:
        """What the adapter carries besides the common fields: base fingerprint, template, label map."""
        raise NotImplementedError

    def answers(self, items: list) -> list[int]:
        """The token ids of the answers it learned, kept with the adapter as drafts for its chats (none here)."""
        return []

    @property
    def trained(self):
        """The peft model whose save_pretrained writes the adapter."""
        return self.model


def _recipe_of(spec: TaskSpec, method: str = "sft") -> type[Recipe]:
    from training.registry import recipe_class  # imported here: the recipes it imports import this module

    return recipe_class(spec.id, method)


@dataclass
class Outcome:
    model: object  # the peft model with the best adapter weights loaded; save_pretrained writes the adapter
    metrics: dict
    report: TrainingReport
    meta: dict
    answers: list[int]  # models.speculation.answer_tokens of the training rows, saved beside the adapter


def train(recipe: Recipe, source: catalog.ModelSource, options: dict, train_rows: list[Example],
          val_rows: list[Example], checkpoint: Checkpoint, hooks: Hooks,
          own: list[Example] | None = None) -> Outcome | None:
    """Fine-tune with recipe on the rows; scores on val_rows (the training rows when there are none). In a run
    of several processes only rank 0 gets the Outcome (the others None). own: rows made from documents are
    trained on (not None), and the user's own questions (maybe none): the report's extra["generated"] scores
    both models on the held-out rows and on those."""
    settings = recipe.settings
    train_rows, val_rows = recipe.prepare(train_rows), recipe.prepare(val_rows)
    torch.manual_seed(settings.seed)  # a new head's initial weights are part of a resumable run
    recipe.load(source, options, train_rows + val_rows)
    train_items = [item for row in train_rows for item in recipe.encode(row)]
    val_items = [item for row in val_rows for item in recipe.encode(row)]
    if not train_items:
        raise UserError(recipe.nothing_to_learn)
    checked = [row for row in (val_rows or train_rows) if recipe.checkable(row)][:recipe.checked_rows]
    expected = [recipe.expected(row) for row in checked]
    before = checkpoint.kept("base_answers", lambda: recipe.predict(checked)) if hooks.ranks.main else []
    own = [row for row in recipe.prepare(own) if recipe.checkable(row)] if own is not None else None
    own_before = checkpoint.kept("own_base_answers", lambda: recipe.predict(own)) if own and hooks.ranks.main else []
    lengths = tuple(recipe.length(item) for item in train_items)
    fitted = fit(recipe.model, train_items, val_items, lengths, settings, checkpoint, hooks, recipe.loss)
    if not hooks.ranks.main:
        return None  # the report and the adapter are rank 0's
    hooks.log("writing the report: checking examples with the trained adapter")
    after = recipe.predict(checked)
    rows = _answers(recipe, checked, expected, before, after)
    check = recipe.check_answers(rows, hooks.embed)
    ruined_at = None
    if not check.passed and fitted.snapshots:
        ruined_at, fitted, after, check = _earlier_passing(recipe, fitted, checked, expected, before, after,
                                                           check, val_items or train_items, hooks)
        rows = _answers(recipe, checked, expected, before, after)
    scores = (recipe.score(before, expected), recipe.score(after, expected)) if checked else ({}, {})
    extra = recipe.extra(after, expected) if checked else {}
    if own is not None:
        extra["generated"] = _generated(recipe, bool(fitted.held_out and checked), before, after, expected, own,
                                        own_before)
    report = build_report(fitted, scores[0], scores[1], rows[:SAMPLES], recipe.perplexity, recipe.metric_decides,
                          extra, check, ruined_at)
    metrics = {**loss_metrics(fitted, len(train_rows), len(val_rows)),
               **({"perplexity_before": round(math.exp(min(fitted.val_before, 50)), 2),
                   "perplexity_after": round(math.exp(min(fitted.val_after, 50)), 2)} if recipe.perplexity else {}),
               **{f"{k}_before": v for k, v in scores[0].items()},
               **{f"{k}_after": v for k, v in scores[1].items()}}
    return Outcome(recipe.trained, metrics, report, recipe.meta(), recipe.answers(train_items))


def _generated(recipe: Recipe, held_out: bool, before: list, after: list, expected: list[str],
               own: list[Example], own_before: list) -> dict:
    """Rows made from documents: both models scored on the held-out generated rows and on the user's own, with
    the task's metric, or for answers in words the share that say their reference."""
    from training.documents_data import recalled

    def scored(base: list, adapter: list, references: list[str]) -> dict:
        said = lambda answers: recipe.score(answers, references) or {  # noqa: E731
            "recalled": recalled([recipe.as_text(a) for a in answers], references)}
        return {"rows": len(references), "before": said(base), "after": said(adapter)}

    found = {"held_out": scored(before, after, expected)} if held_out else {}
    if own:
        found["own"] = scored(own_before, recipe.predict(own), [recipe.expected(row) for row in own])
    return found


def _answers(recipe: Recipe, checked: list[Example], expected: list[str], before: list, after: list) -> list[Sample]:
    """The checked rows as the report reads them: input, reference, the base's and the adapter's answers."""
    return [Sample(recipe.shown(row), e, recipe.as_text(b), recipe.as_text(a))
            for row, e, b, a in zip(checked, expected, before, after)]


def _earlier_passing(recipe: Recipe, fitted: Fitted, checked: list[Example], expected: list[str], before: list,
                     after: list, failed: AnswerCheck, val_items: list,
                     hooks: Hooks) -> tuple[int | None, Fitted, list, AnswerCheck]:
    """The kept weights failed the answer check: the latest earlier snapshot whose answers pass replaces them
    (ruined_at is then the step that failed). When none passes, the kept weights stay, with the failed check."""
    failed_step = fitted.state.best_step or fitted.state.step
    kept = trainable_state(recipe.model)
    for step, weights in _few(list(reversed(fitted.snapshots))):
        hooks.log(f"the answers at step {failed_step} failed the answer check ({failed.problem}); trying step {step}")
        recipe.model.load_state_dict(weights, strict=False)
        answers = recipe.predict(checked)
        check = recipe.check_answers(_answers(recipe, checked, expected, before, answers), hooks.embed)
        if check.passed:
            settings = recipe.settings
            val_after = mean_loss(recipe.model, val_items, recipe.loss, settings.batch_size,
                                  use_bf16(settings, recipe.model), hooks.ranks)
            fitted.state.best_step = step
            return failed_step, replace(fitted, val_after=val_after), answers, check
    recipe.model.load_state_dict(kept, strict=False)
    return None, fitted, after, failed


def _few(snapshots: list, most: int = WALK_BACK) -> list:
    """At most `most` of the snapshots, spread from the latest to the earliest (each check answers every row)."""
    if len(snapshots) <= most:
        return snapshots
    return [snapshots[round(i * (len(snapshots) - 1) / (most - 1))] for i in range(most)]


def with_method(spec: TaskSpec, settings: TrainSettings, data_format: str,
                explicit: set[str] | frozenset = frozenset()) -> TrainSettings:
    """The settings with the training method the data calls for: preference pairs train with DPO, with DPO's own
    values where the user (explicit) did not set one."""
    if data_format == "preference" and settings.method == "sft":
        settings = presets.for_method(settings, "dpo", explicit)
    _recipe_of(spec, settings.method)  # a task without the method is refused here
    if settings.method == "dpo" and data_format != "preference":
        raise UserError("DPO learns from preference pairs: upload rows with a prompt, a chosen and a rejected "
                        f"answer (this file reads as {data_format} data).")
    return settings


def default_base(settings: Settings, spec: TaskSpec) -> str:
    """The model a task trains when none is named: the operator's or the spec's for the recipe's first family."""
    family = _recipe_of(spec).families[0]
    return operator_default(settings, family) or spec.defaults.get(family) or catalog.DEFAULTS[family]


def base_source(settings: Settings, spec: TaskSpec, reference: str) -> catalog.ModelSource:
    """The model a task trains on ("" = the recipe's default); a model of another family is refused."""
    families = _recipe_of(spec).families
    default = default_base(settings, spec)
    source = catalog.resolve(reference, settings.path("models"), default)
    # family is None for a folder or hub id: loading it finds out, with a readable reason
    if source.family not in (None, *families):
        kind = "GPT-family" if catalog.DECODER in families else "BERT-family"
        raise UserError(f"{source.name} cannot be trained for {spec.id}: pick a {kind} model such as {default}.")
    return source


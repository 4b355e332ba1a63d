"""The training layer's registry: which recipe trains each task, its other training methods, and which scorer
Evaluate uses, keyed by task id. The task registry (tasks/spec.py) says only whether a task trains and whether it is
evaluated; tests/test_registry.py checks that both registries name the same tasks.

A task's training joins with one `register` call below, the way peft registers a tuner; a duplicate is refused.
Modules below the recipes (training/data.py, training/recipe.py) import this file where they use it, since it
imports every recipe.
"""

from __future__ import annotations

from errors import UserError
from training.encoders import AnswerRecipe, SearchRecipe, SentimentRecipe
from training.language import ChatRecipe, SummarizeRecipe, TranslateRecipe
from training.preference import PreferenceRecipe
from training.recipe import Recipe
from training.scorers import (AnswerEvaluation, ChatEvaluation, Evaluation, SearchEvaluation, SentimentEvaluation,
                              SummarizeEvaluation, TranslateEvaluation)

DEFAULT_METHOD = "sft"  # the method a task's own recipe trains with
RECIPES: dict[str, type[Recipe]] = {}  # task id -> its own recipe (sft)
METHODS: dict[str, dict[str, type[Recipe]]] = {}  # task id -> its other training methods: name -> recipe
SCORERS: dict[str, type[Evaluation]] = {}  # task id -> how Evaluate scores it (only the tasks it offers)


def register(task_id: str, recipe: type[Recipe], methods: dict[str, type[Recipe]] | None = None,
             scorer: type[Evaluation] | None = None) -> None:
    """Add a task's training: its recipe, its other methods by name and its scorer; a task registered twice or a
    class of the wrong kind is refused at once."""
    if task_id in RECIPES:
        raise ValueError(f"Training for the task {task_id!r} is already registered.")
    methods = dict(methods or {})
    if not all(isinstance(r, type) and issubclass(r, Recipe) for r in (recipe, *methods.values())):
        raise ValueError(f"The recipes of {task_id!r} must be Recipe classes.")
    if DEFAULT_METHOD in methods:
        raise ValueError(f"{task_id!r} trains with {DEFAULT_METHOD} by its own recipe; name its other methods only.")
    if scorer is not None and not (isinstance(scorer, type) and issubclass(scorer, Evaluation)):
        raise ValueError(f"The scorer of {task_id!r} must be an Evaluation class.")
    RECIPES[task_id], METHODS[task_id] = recipe, methods
    if scorer is not None:
        SCORERS[task_id] = scorer


def unregister(task_id: str) -> None:
    """Remove a task's training (tests add a task of their own and take it away again)."""
    for table in (RECIPES, METHODS, SCORERS):
        table.pop(task_id, None)


def recipe_class(task_id: str, method: str = DEFAULT_METHOD) -> type[Recipe]:
    """The recipe of a task's training method; a method the task does not train with is a UserError."""
    if task_id not in RECIPES:
        raise LookupError(f"No training recipe is registered for the task {task_id!r}.")
    if method == DEFAULT_METHOD:
        return RECIPES[task_id]
    if method not in METHODS[task_id]:
        offered = ", ".join([DEFAULT_METHOD, *METHODS[task_id]])
        raise UserError(f"{method.upper()} training is not available for {task_id}; it trains with: {offered}.")
    return METHODS[task_id][method]


def scorer_class(task_id: str) -> type[Evaluation]:
    """How Evaluate scores a task."""
    if task_id not in SCORERS:
        raise LookupError(f"No scorer is registered for the task {task_id!r}.")
    return SCORERS[task_id]


# ---- the app's own tasks ------------------------------------------------------------------------------------------

register("chat", ChatRecipe, methods={"dpo": PreferenceRecipe}, scorer=ChatEvaluation)
register("summarize", SummarizeRecipe, scorer=SummarizeEvaluation)
register("translate", TranslateRecipe, scorer=TranslateEvaluation)
register("sentiment", SentimentRecipe, scorer=SentimentEvaluation)
register("answer", AnswerRecipe, scorer=AnswerEvaluation)
register("search", SearchRecipe, scorer=SearchEvaluation)

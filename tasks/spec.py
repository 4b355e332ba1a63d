"""What a task is: one frozen TaskSpec that the app derives everything else from — its tab's title, its public
endpoints, its default models, its training data fields, sample and format help, its metric names, and whether
it trains and whether Evaluate scores it.

A task joins the app by registering its class (whose `spec` is a TaskSpec) in tasks/__init__.py, the way peft
registers a tuner. How it trains and is scored is the training layer's own registry (training/registry.py, keyed by
the task's id), and so is its tab builder the ui layer's (ui/tabs.py): imports keep flowing one way (training →
tasks, ui → tasks) and a spec names nothing above its own layer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from errors import UserError
from models import catalog
from models.kinds import adapted_kinds

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
_ID = re.compile(r"^[a-z][a-z0-9_]*$")
FAMILIES = (catalog.DECODER, catalog.ENCODER, catalog.EMBEDDING, catalog.SEQ2SEQ)


@dataclass(frozen=True)
class DataField:
    """One column of a task's training data."""

    name: str
    help: str  # one line for the Train tab and the format docs
    required: bool = True


@dataclass(frozen=True, eq=False)
class TaskSpec:
    id: str  # the api name without the slash; also the task id in /train, adapters and the registry
    title: str  # the tab's title
    defaults: dict[str, str]  # family -> backbone used when the model box is empty; the first is the task's default
    endpoints: tuple[str, ...]  # its public api names, as its class's endpoints() publishes them
    fields: tuple[DataField, ...] = ()  # the columns of its training data
    sample: str = ""  # a training data file under examples/ ("Try the sample")
    formats: str = ""  # one line of data format help for the Train tab
    metrics: dict[str, str] = field(default_factory=dict)  # metric key -> the name the report shows
    trainable: bool = False  # it trains (its recipe and other methods: training/registry.py)
    evaluated: bool = False  # Evaluate scores it (its scorer: training/registry.py)
    conversations: bool = False  # whether whole conversations (messages, ShareGPT, Alpaca, plain text) are read
    adapter_kind: str = "lm"  # the kind of loaded model its adapters apply to (models.kinds.KINDS)
    head: tuple[str, ...] = ()  # the trained head its adapters carry (peft's modules_to_save names for it)

    def __post_init__(self) -> None:
        problems = self.problems()
        if problems:
            raise ValueError(f"TaskSpec {self.id!r} is incomplete: {'; '.join(problems)}.")

    def problems(self) -> list[str]:
        """Everything wrong with the spec, in words (empty when it is complete)."""
        found = []
        if not isinstance(self.id, str) or not _ID.match(self.id):
            found.append("its id must be lower-case letters, digits and '_'")
        if not (isinstance(self.title, str) and self.title.strip()):
            found.append("it needs a title")
        if not self.defaults:
            found.append("it needs a default model for at least one family")
        for family, name in dict(self.defaults).items():
            if family not in FAMILIES:
                found.append(f"'{family}' is not a model family ({', '.join(FAMILIES)})")
            elif name not in catalog.CATALOG or catalog.CATALOG[name].family != family:
                found.append(f"the default {family} model '{name}' is not a {family} in the catalog")
        if not self.endpoints or not all(isinstance(e, str) and _ID.match(e) for e in self.endpoints):
            found.append("it needs its endpoint names (lower case, without the slash)")
        names = [f.name for f in self.fields]
        if len(set(names)) != len(names):
            found.append("its data fields must have different names")
        if any(not f.help.strip() for f in self.fields):
            found.append("every data field needs a one-line help")
        if any(not (isinstance(v, str) and v.strip()) for v in self.metrics.values()):
            found.append("every metric needs the name the report shows")
        if self.evaluated and not self.trainable:
            found.append("an evaluated task reads its rows as training data: it must be trainable")
        if self.trainable:
            if not any(f.required for f in self.fields):
                found.append("a trainable task needs required data fields")
            if not self.sample:
                found.append("a trainable task needs a sample data file")
            elif not (EXAMPLES / self.sample).is_file():
                found.append(f"its sample file examples/{self.sample} does not exist")
            if not self.formats.strip():
                found.append("a trainable task needs its data format help")
            if self.adapter_kind not in adapted_kinds():
                found.append(f"its adapter_kind must be one of {', '.join(adapted_kinds())}")
        return found

    @property
    def families(self) -> tuple[str, ...]:
        """The model families the task runs on."""
        return tuple(self.defaults)

    @property
    def required(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.required)

    @property
    def optional(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if not f.required)

    @property
    def sample_path(self) -> Path:
        return EXAMPLES / self.sample


# ---- the registry -------------------------------------------------------------------------------------------

TASKS: dict[str, type] = {}  # id -> task class, in the order of the tabs


def register(task_class: type) -> type:
    """Add a task; a duplicate id or endpoint, or a class without a complete spec, is refused at once."""
    spec = getattr(task_class, "spec", None)
    if not isinstance(spec, TaskSpec):
        raise ValueError(f"{task_class.__name__} needs a TaskSpec as its 'spec' to be registered.")
    if spec.id in TASKS:
        raise ValueError(f"A task with the id {spec.id!r} is already registered.")
    # Among tasks here; a clash with the services' endpoints is refused where everything is published (ui.api).
    taken = {name for other in TASKS.values() for name in other.spec.endpoints}
    clash = sorted(set(spec.endpoints) & taken)
    if clash:
        raise ValueError(f"Task {spec.id!r} names endpoints that are already taken: {', '.join(clash)}.")
    if not callable(getattr(task_class, "endpoints", None)):
        raise ValueError(f"{task_class.__name__} needs an endpoints() method for its public API.")
    TASKS[spec.id] = task_class
    return task_class


def unregister(task_id: str) -> None:
    """Remove a task (tests add one of their own and take it away again)."""
    TASKS.pop(task_id, None)


def specs() -> list[TaskSpec]:
    return [task_class.spec for task_class in TASKS.values()]


def spec(task_id: str) -> TaskSpec:
    """The spec of a registered task, or a UserError naming the tasks there are."""
    task_class = TASKS.get((task_id or "").strip()) if isinstance(task_id, str) else None
    if task_class is None:
        raise UserError(f"Unknown task '{str(task_id)[:40]}'; choose one of: {', '.join(TASKS)}.")
    return task_class.spec


def trainable_spec(task_id: str) -> TaskSpec:
    """The spec of a task that trains, or a UserError naming those that do."""
    names = [s.id for s in specs() if s.trainable]
    found = TASKS.get(task_id.strip()) if isinstance(task_id, str) else None
    if found is None or not found.spec.trainable:
        raise UserError(f"Training for '{str(task_id)[:40]}' is not available; choose one of: {', '.join(names)}.")
    return found.spec


def evaluated_spec(task_id: str) -> TaskSpec:
    """The spec of a task Evaluate scores, or a UserError naming those it does."""
    names = [s.id for s in specs() if s.evaluated]
    found = TASKS.get(task_id.strip()) if isinstance(task_id, str) else None
    if found is None or not found.spec.evaluated:
        raise UserError(f"Evaluation of '{str(task_id)[:40]}' is not available; choose one of: {', '.join(names)}.")
    return found.spec


def metric_name(key: str) -> str:
    """The name a report shows for a metric key, from whichever spec names it."""
    for task_spec in specs():
        if key in task_spec.metrics:
            return task_spec.metrics[key]
    return key.replace("_", " ")

"""What a job does, as a typed record: decided and checked once where the job is submitted (training.service),
stored with the job, and trusted by the worker process that runs it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace

from training.presets import TrainSettings

PLAN_VERSION = 1


@dataclass(frozen=True)
class Variant:
    """One model and adapter an evaluation scores ("" = the task's default model / no adapter)."""

    model: str = ""
    adapter: str = ""

    def label(self, default_model: str) -> str:
        """How the results name it: the adapter (and its model when one is given), else the model."""
        if self.adapter:
            return f"{self.adapter} on {self.model}" if self.model else self.adapter
        return f"{self.model or default_model} (base)"


@dataclass(frozen=True)
class JobProgress:
    """How far a job is: written by the worker as it goes, read by /job and the tabs."""

    step: int = 0  # training: optimizer steps; evaluation: rows answered
    total_steps: int = 0
    epoch: float = 0.0
    eta_s: float | None = None  # seconds left, from the pace so far (None before there is one)
    loss: list[list] = field(default_factory=list)  # [[step, training loss, held-out loss or None]]
    stage: str = ""  # what runs when it is not the job's own run, like "trial 2 of 5: lr 3e-4, rank 8"

    @classmethod
    def from_json(cls, data: dict) -> JobProgress:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def to_json(self) -> dict:
        return asdict(self)

    @property
    def last_loss(self) -> tuple[float | None, float | None]:
        """(training, held-out) loss of the newest step, or Nones."""
        return tuple(self.loss[-1][1:3]) if self.loss else (None, None)


@dataclass(frozen=True)
class Trial:
    """One short run of "find settings for me" (DESIGN.md §1, round 3), as /job's report lists it."""

    settings: dict  # only the settings it varied, like {"learning_rate": 3e-4, "rank": 8}
    score: float  # the task's first metric after it, else minus the held-out loss: higher is better
    check: str  # "passed", or the problem the answer check found
    seconds: float
    chosen: bool = False  # the one whose settings the job's own run took

    def to_json(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class JobPlan:
    data: str = ""  # the job's own copy of its rows' file (uploads are temporary)
    columns: dict[str, str] = field(default_factory=dict)  # the task's fields -> the file's columns
    rows: int = 0  # rows the file gave when it was checked
    settings: TrainSettings | None = None  # training: the settings, their method already chosen for the data
    preset: str = ""  # training: the preset the settings started from
    validation: str = ""  # training: the job's copy of a file of held-out rows ("" = hold out from data)
    variants: tuple[Variant, ...] = ()  # evaluation: what is scored
    held_out_seed: int | None = None  # evaluation of a training job's held-out rows: that job's split seed
    from_job: str = ""  # ... and that job's id
    search_minutes: float = 0.0  # training: find the settings first, in trials within this budget (0 = no search)
    trials: tuple[Trial, ...] = ()  # ... the trials once run; `settings` are then the chosen trial's
    generated_from: str = ""  # made data, and training on it: what the rows were made from, in words
    own_questions: str = ""  # ... a file of the user's own {question, answer} rows the adapter is also scored on
    making: dict = field(default_factory=dict)  # made data: its documents_data.MakeSettings as JSON
    version: int = PLAN_VERSION

    @classmethod
    def from_json(cls, data: dict) -> JobPlan:
        """The plan as stored; a plan written before plans had a version reads the same (its keys are ours)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if values.get("settings") is not None:
            settings_fields = {f.name for f in fields(TrainSettings)}
            values["settings"] = TrainSettings(**{k: v for k, v in values["settings"].items()
                                                  if k in settings_fields})
        values["variants"] = tuple(Variant(**v) for v in values.get("variants") or ())
        values["trials"] = tuple(Trial(**t) for t in values.get("trials") or ())
        return cls(**{**values, "version": PLAN_VERSION})

    def to_json(self) -> dict:
        return asdict(self)  # nested records become plain dicts, which from_json reads back

    def placed(self, data: str, validation: str = "") -> JobPlan:
        """The plan with its files' copies in the job folder."""
        return replace(self, data=data, validation=validation)

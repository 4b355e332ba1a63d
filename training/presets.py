"""Training settings: three presets that work on the offline models on 2 CPU cores, and their validation."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from errors import UserError


METHODS = ("sft", "dpo")


@dataclass(frozen=True)
class TrainSettings:
    rank: int = 16  # LoRA rank: how much the adapter can change; higher learns more, costs more
    alpha: int = 32  # LoRA scaling; usually twice the rank
    dropout: float = 0.05  # randomly drops adapter inputs during training to avoid memorising noise
    target_modules: str = "all-linear"  # which layers get adapters: all-linear, or names like q_proj,v_proj
    learning_rate: float = 1e-3  # step size; too high is unstable, too low learns slowly
    epochs: float = 6.0  # passes over the training rows
    max_steps: int = 0  # stop after this many optimizer steps (0 = use epochs)
    batch_size: int = 4  # examples per step
    grad_accum: int = 1  # steps whose gradients are summed before an update (a larger effective batch)
    max_length: int = 512  # longest example in tokens; longer ones are cut
    seed: int = 42  # makes the split, order and initialisation repeatable
    checkpoint_every: int = 25  # optimizer steps between checkpoints (a restart resumes from the last one)
    patience: int = 3  # evaluations without improvement before stopping early
    system_prompt: str = ""  # chat: system prompt used in training and applied in chat by default
    precision: str = "auto"  # auto: bf16 autocast where the hardware runs it fast; fp32 or bf16 to force one
    method: str = "sft"  # sft: learn the given answers; dpo: prefer each pair's chosen answer over its rejected one
    beta: float = 0.1  # dpo: how far the adapter may move from the base; lower lets it move further
    rpo_alpha: float = 1.0  # dpo: weight of also learning the chosen answers word by word (RPO); 0 = pure DPO

    def __post_init__(self) -> None:
        checks = [
            (1 <= self.rank <= 256, "LoRA rank must be between 1 and 256."),
            (1 <= self.alpha <= 1024, "LoRA alpha must be between 1 and 1024."),
            (0 <= self.dropout < 1, "Dropout must be at least 0 and below 1."),
            (1e-6 <= self.learning_rate <= 1e-1, "Learning rate must be between 0.000001 and 0.1."),
            (0 < self.epochs <= 1000, "Epochs must be above 0 and at most 1000."),
            (0 <= self.max_steps <= 100_000, "Max steps must be between 0 and 100000."),
            (1 <= self.batch_size <= 256, "Batch size must be between 1 and 256."),
            (1 <= self.grad_accum <= 64, "Gradient accumulation must be between 1 and 64."),
            (16 <= self.max_length <= 8192, "Max sequence length must be between 16 and 8192 tokens."),
            (1 <= self.checkpoint_every <= 100_000, "Checkpoint interval must be at least 1 step."),
            (1 <= self.patience <= 100, "Patience must be between 1 and 100."),
            (bool(self.target_modules.strip()), "Name the target modules, or use all-linear."),
            (self.precision in ("auto", "fp32", "bf16"), "Precision must be auto, fp32 or bf16."),
            (self.method in METHODS, "The training method must be sft (learn the answers) or dpo (learn which "
                                     "answer is preferred)."),
            (0 < self.beta <= 10, "Beta must be above 0 and at most 10."),
            (0 <= self.rpo_alpha <= 10, "The chosen-answer weight (rpo_alpha) must be between 0 and 10."),
        ]
        for ok, message in checks:
            if not ok:
                raise UserError(message)

    def to_dict(self) -> dict:
        return asdict(self)


# Each method's own values: a run of that method starts from these, not from a preset made for another method,
# unless the user set the value. DPO alone on a supervised learning rate (1e-3, 6 epochs) turned every answer into
# the chosen answers' greeting; with the chosen answers learned as well (rpo_alpha) and these values the answers
# took the style and kept the topic on SmolLM2-135M (bench/README, "DPO").
METHOD_DEFAULTS: dict[str, dict] = {
    "sft": {"learning_rate": 1e-3, "epochs": 6.0, "patience": 3},
    "dpo": {"learning_rate": 2e-4, "epochs": 3.0, "patience": 2, "beta": 0.1, "rpo_alpha": 1.0},
}

PRESETS: dict[str, TrainSettings] = {
    # Measured on SmolLM2-135M on a CPU: teaches a handful of facts in a short run (bench/README).
    "quick": TrainSettings(),
    "balanced": TrainSettings(learning_rate=5e-4, epochs=10, patience=4),
    "thorough": TrainSettings(rank=32, alpha=64, learning_rate=3e-4, epochs=20, patience=5),
    # Chat preference pairs (DPO): the method's own values.
    "preference": TrainSettings(method="dpo", **METHOD_DEFAULTS["dpo"]),
}


def for_method(settings: TrainSettings, method: str, explicit: set[str] | frozenset = frozenset()) -> TrainSettings:
    """settings for a run of method: a preset made for another method gives way to the method's own values,
    except where the user set a value (explicit)."""
    if method == settings.method:
        return settings
    own = {key: value for key, value in METHOD_DEFAULTS[method].items() if key not in explicit}
    return replace(settings, method=method, **own)


def explicit(overrides: dict | None) -> set[str]:
    """The settings a user actually set (blank values leave the preset's)."""
    return {key for key, value in (overrides or {}).items() if value not in (None, "")}

def build(preset: str = "quick", overrides: dict | None = None) -> TrainSettings:
    """A preset with the user's overrides; unknown presets or settings are named in the error."""
    if (preset or "quick") not in PRESETS:
        raise UserError(f"Unknown preset '{str(preset)[:40]}': choose {', '.join(PRESETS)}.")
    base = PRESETS[preset or "quick"]
    typed = typed_settings(base, overrides, "training setting")
    method = typed.pop("method", base.method)
    if method not in METHODS:
        raise UserError(f"The training method must be {' or '.join(METHODS)}, not {method[:40]!r}.")
    return replace(for_method(base, method, set(typed)), **typed)


def typed_settings(default, given: dict | None, noun: str, after: str = "", also: frozenset = frozenset()) -> dict:
    """The user's settings as the types of default's fields, blanks left out (also: keys the caller reads itself).
    Unknown keys and wrong values are named in one sentence, cut short: never a stranger's megabyte echoed back."""
    import reprlib

    given = {k: v for k, v in (given or {}).items() if v not in (None, "")}
    names = {f.name for f in fields(default)}
    unknown = sorted(set(given) - names - also, key=str)
    if unknown:
        named = ", ".join(str(key)[:40] for key in unknown[:5]) + (
            f" and {len(unknown) - 5:,} more" if len(unknown) > 5 else "")
        raise UserError(f"Unknown {noun}{'s' if len(unknown) > 1 else ''}{after}: {named}.")
    typed = {}
    for key in given.keys() & names:
        kind = type(getattr(default, key))
        try:
            typed[key] = flag(given[key], key) if kind is bool else kind(given[key])
        except (TypeError, ValueError, OverflowError):  # OverflowError: int(Infinity), which JSON may send
            raise UserError(f"The setting {key} must be a {kind.__name__}, not {reprlib.repr(given[key])}.") from None
    return typed


def flag(value: object, name: str) -> bool:
    """A yes/no setting as JSON, a form or the CLI's --set key=true gives it; anything else is named."""
    if isinstance(value, bool) or value is None:
        return bool(value)
    words = {"true": True, "yes": True, "on": True, "1": True, "false": False, "no": False, "off": False,
             "0": False, "": False}
    if isinstance(value, (str, int)) and str(value).strip().lower() in words:
        return words[str(value).strip().lower()]
    raise UserError(f"The setting {name} must be true or false, not {str(value)[:40]!r}.")

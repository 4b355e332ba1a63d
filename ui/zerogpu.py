"""ZeroGPU (a Space with `SPACES_ZERO_GPU=true`): the GPU is lent per call, to a function decorated with
`@spaces.GPU(duration=...)`, for at most that many seconds. Each public endpoint that runs a model here goes
through `gpu`, which asks for a duration computed from the request (tokens to write, text to read), bounded by
MIN_S and MAX_S; off ZeroGPU the `spaces` package's decorator gives the function back unchanged.

ZeroGPU runs a decorated call in a process forked from the server, which has the server's memory but not its
threads: the models the server loaded have no engine thread there. `in_forked_process` gives that process a model
cache of its own on its first call, so it loads the models onto the GPU it now has and starts their engines
(tests/test_spaces.py runs calls in a real fork the same way).

The UI's own events that run a model (the Chat tab's streaming, the task views' buttons, Inside's views) go
through the same wrapping (`ui.api.handler(..., gpu=<endpoint>)`), sized by their endpoint's estimate from the
arguments they share with it; a handler whose arguments the estimate cannot read asks for UNKNOWN_S.

Jobs (training, evaluation, making data) cannot run in a worker process of their own here: ZeroGPU lends its GPU
only to a decorated call. So the job queue runs each job as `job_call`s (training.manager.GpuCall): a training
call trains until its lease nearly ends (`training_room`), saves a checkpoint and queues the job again, and the
next call, with a lease sized from the steps left (`training_lease`), resumes from it; an evaluation or the
making of data is one call of MAX_S. `training_slices` is what the pre-flight estimate says of it. These calls
run outside any visitor's request, so they count against the Space's own quota. Nothing here has run on a real
ZeroGPU Space.
"""

from __future__ import annotations

import functools
import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass

MIN_S, MAX_S = 10, 120  # ZeroGPU's shortest useful lease, and the longest one we ask for (longer waits longer)
START_S = 8  # per call: the weights moved to the GPU, the first step compiled
CHECKPOINT_S = 10  # per training call: the LoRA weights and optimizer state saved before the lease ends
REPORT_S = 30  # per training call: room for the last call's report (the adapter answers the checked rows)
TRAINING_MIN_S = 60  # a training call always has room to load the model, take a step and save
TOKENS_PER_S = 15  # a cautious decode speed of one request on a ZeroGPU slice (models up to ~3B)
CHARS_PER_TOKEN = 4  # English text; Chinese has fewer characters per token, and this errs long for it
READ_CHARS_PER_S = 20_000  # an encoder (embeddings, a classifier) reading text
UNKNOWN_S = 60  # a request whose size cannot be read (it fails at once anyway): spaces' own default


def on_zero_gpu() -> bool:
    return os.environ.get("SPACES_ZERO_GPU", "").lower() in ("1", "t", "true")


if on_zero_gpu():  # ZeroGPU patches torch's CUDA: spaces must be imported before torch is
    import spaces  # noqa: F401


def _chars(value) -> int:
    """Characters of text in a value (a string, or lists and dicts of them)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    return 0


def _writing(chars_read: int, tokens: float) -> float:
    return chars_read / READ_CHARS_PER_S + tokens / TOKENS_PER_S


def _reading(a: dict) -> float:
    return _chars(a) / READ_CHARS_PER_S


ESTIMATES: dict[str, Callable[[dict], float]] = {  # seconds of GPU work for a request's arguments, before START_S
    "chat": lambda a: _writing(_chars([a["message"], a["history"], a["system_prompt"]]), a["max_new_tokens"]),
    "complete": lambda a: _writing(_chars(a["text"]), a["max_new_tokens"] * math.ceil(a["num_alternatives"] / 4)),
    "summarize": lambda a: _writing(_chars(a["text"]), _chars(a["text"]) / CHARS_PER_TOKEN / 3),
    "translate": lambda a: _writing(_chars(a["text"]), _chars(a["text"]) / CHARS_PER_TOKEN * 1.5),
    "sentiment": _reading, "answer": _reading, "search": _reading, "add_documents": _reading,
    "next_token": _reading, "fill_mask": _reading, "similarity": _reading, "token_loss": _reading,
    "attention": _reading,
    "compare": lambda a: sum(ESTIMATES.get(a["task"], _reading)(_task_arguments(a["task"], a["inputs"]))
                             for _ in (a["variants"] or [None])),
}
# Compare calls the task's own function with its defaults; these are the ones its estimate reads.
_DEFAULTS = {"chat": {"history": None, "system_prompt": "", "max_new_tokens": 256},
             "complete": {"max_new_tokens": 64, "num_alternatives": 1}}


def _task_arguments(task: str, inputs) -> dict:
    inputs = inputs if isinstance(inputs, dict) else {}
    return {"message": "", "text": "", **_DEFAULTS.get(task, {}), **inputs}


def seconds(api_name: str, arguments: dict) -> int:
    """The GPU lease for one request: START_S plus the endpoint's estimate, within MIN_S..MAX_S."""
    try:
        work = ESTIMATES[api_name](arguments)
    except (KeyError, TypeError, ValueError):
        return UNKNOWN_S
    return int(min(MAX_S, max(MIN_S, math.ceil(START_S + work))))


def gpu(api_name: str, fn: Callable, ctx=None) -> Callable:
    """fn as a ZeroGPU call with a duration computed from its arguments, when the endpoint runs a model; off
    ZeroGPU the spaces package returns fn itself (and without the package fn is returned as it is). ctx: the
    app's services whose models fn uses (a task method's own when not given)."""
    if api_name not in ESTIMATES:
        return fn
    decorator = _decorator()
    if decorator is None:
        return fn
    signature = inspect.signature(fn)

    def duration(*args, **kwargs) -> int:
        bound = signature.bind_partial(*args, **kwargs)
        bound.apply_defaults()
        return seconds(api_name, dict(bound.arguments))
    return decorator(in_forked_process(fn, ctx) if on_zero_gpu() else fn, duration=duration)


_OWN_CACHE: set[tuple[int, int]] = set()  # (model hub, process) pairs whose cache was made in that process


def in_forked_process(fn: Callable, ctx=None) -> Callable:
    """fn as ZeroGPU runs it: in a process forked from the server, where the models the server loaded have no
    engine threads (a fork copies only the calling thread). On its first call there, the process starts with an
    empty model cache of its own, so it loads the models itself (onto the GPU it now has) and starts their
    engines; later calls in the same process reuse them."""
    parent = os.getpid()
    ctx = ctx or getattr(getattr(fn, "__self__", None), "ctx", None)

    def own_models() -> None:
        pid = os.getpid()
        if ctx is not None and pid != parent and (id(ctx.hub), pid) not in _OWN_CACHE:
            # The server's entries are dropped, not closed: their threads live in the server, not here.
            ctx.hub.cache = type(ctx.hub.cache)(ctx.hub.cache.budget)
            _OWN_CACHE.add((id(ctx.hub), pid))

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def stream(*args, **kwargs):
            own_models()
            yield from fn(*args, **kwargs)
        return stream

    @functools.wraps(fn)
    def call(*args, **kwargs):
        own_models()
        return fn(*args, **kwargs)
    return call


def _decorator():
    try:
        import spaces
    except ImportError:
        if on_zero_gpu():
            raise
        return None
    return spaces.GPU


@dataclass(frozen=True)
class TrainingSlices:
    """A training job as successive ZeroGPU calls, each within MAX_S, saving a checkpoint before it ends."""

    calls: int
    steps_per_call: int
    gpu_seconds: int


def training_lease(eta_s) -> int:
    """The lease of a training job's next call: the steps left as its last call timed them (eta_s; None before
    the first call, which asks for MAX_S) plus the call's own work, within TRAINING_MIN_S..MAX_S."""
    if isinstance(eta_s, bool) or not isinstance(eta_s, (int, float)) or not eta_s > 0:
        return MAX_S
    return int(min(MAX_S, max(TRAINING_MIN_S, math.ceil(START_S + CHECKPOINT_S + REPORT_S + eta_s))))


def training_room(lease_s: float) -> float:
    """Seconds from a training call's start (loading included) until it stops stepping, saves and ends."""
    return lease_s - CHECKPOINT_S - REPORT_S


@functools.cache
def job_call() -> Callable:
    """training.worker.gpu_call(settings, job_id, lease_s) as a ZeroGPU call of lease_s seconds (decorated once:
    spaces keeps one wrapper per function)."""
    from training.worker import gpu_call

    return _decorator()(gpu_call, duration=lambda settings, job_id, lease_s: lease_s)


def training_slices(total_steps: int, seconds_per_step: float) -> TrainingSlices:
    """How many bounded calls total_steps need at seconds_per_step (measured by the pre-flight estimate)."""
    room = training_room(MAX_S) - START_S
    per_call = max(1, int(room // max(seconds_per_step, 1e-3)))
    calls = max(1, math.ceil(total_steps / per_call))
    return TrainingSlices(calls, per_call, int(math.ceil(calls * (START_S + CHECKPOINT_S) + REPORT_S
                                                         + total_steps * seconds_per_step)))


def gpu_time_sentence(slices: TrainingSlices) -> str:
    """What the page says a training job will take of the Space's GPU time."""
    from ui.i18n import phrase  # not at the top: this module is imported before the others, spaces before torch

    return phrase("estimate.zerogpu", minutes=f"{slices.gpu_seconds / 60:.1f}", calls=slices.calls, seconds=MAX_S,
                  steps=slices.steps_per_call)


def training_note(steps, step_s) -> str:
    """On ZeroGPU, the paragraph the pre-flight estimate adds: the GPU time the job needs (else "")."""
    if not on_zero_gpu() or not isinstance(steps, int) or not isinstance(step_s, (int, float)):
        return ""
    return "\n\n" + gpu_time_sentence(training_slices(steps, float(step_s)))

"""The LoRA training loop every recipe shares: length-grouped batches, checkpoints, early stopping.

It runs inside the worker process. `Hooks` connect it to the outside: progress reports, a stop check
(cancel or SIGTERM) and the log. The checkpoint folder makes a run resumable after an interruption.
"""

from __future__ import annotations

import functools
import json
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from models import lazy
from training.plan import JobProgress
from training.presets import TrainSettings

torch = lazy.module("torch")
load_file = lazy.attribute("safetensors.torch", "load_file")
save_file = lazy.attribute("safetensors.torch", "save_file")
get_linear_schedule_with_warmup = lazy.attribute("transformers", "get_linear_schedule_with_warmup")


class Stopped(Exception):
    """The run stopped early on request; `reason` is 'cancelled' or 'interrupted'."""

    def __init__(self, reason: str, progress: JobProgress):
        super().__init__(reason)
        self.reason, self.progress = reason, progress


class Ranks:
    """The processes of one run: this one alone, or the N that `torchrun` started (--train-processes), joined
    through accelerate. Each takes its share of every batch; their gradients and losses are summed with
    accelerate's reduce, so N processes take the very steps one would. Rank 0 writes (progress, checkpoints, the
    adapter, the report) and decides when all of them stop."""

    def __init__(self):
        self.state = None
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU, nccl on GPUs

    @property
    def count(self) -> int:
        return self.state.num_processes if self.state else 1

    @property
    def index(self) -> int:
        return self.state.process_index if self.state else 0

    @property
    def main(self) -> bool:
        return self.index == 0

    def share(self, items: list) -> list:
        """This process's share of items (every count-th, from its index)."""
        return items[self.index::self.count]

    def sum(self, values: list[float]) -> list[float]:
        """The values summed over the processes."""
        if not self.state:
            return values
        return _summed(torch.tensor(values, dtype=torch.float64, device=self.state.device)).tolist()

    def sum_gradients(self, params: list) -> None:
        """Every process's gradients summed into each (one flat reduce per optimizer step)."""
        if not self.state:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = _summed(torch.cat([g.reshape(-1).float() for g in grads]))
        start = 0
        for param, grad in zip(params, grads):
            param.grad = flat[start:start + grad.numel()].view_as(grad).to(grad.dtype)
            start += grad.numel()

    def decided(self, value):
        """Rank 0's value, on every process (its stop decision)."""
        if not self.state:
            return value
        from accelerate.utils import broadcast_object_list

        return broadcast_object_list([value], from_process=0)[0]

    def wait(self) -> None:
        """Wait until every process gets here (rank 0 finishing a checkpoint before the others leave)."""
        if self.state:
            self.state.wait_for_everyone()


def _summed(tensor: torch.Tensor) -> torch.Tensor:
    from accelerate.utils import reduce

    return reduce(tensor, reduction="sum")


@dataclass
class Hooks:
    progress: Callable[[JobProgress], None] = lambda p: None
    stop_reason: Callable[[], str | None] = lambda: None  # None, 'cancelled' or 'interrupted'
    log: Callable[[str], None] = print
    ranks: Ranks = field(default_factory=Ranks)  # one process, or the N of a distributed run
    embed: Callable | None = None  # texts -> unit vectors, for the answer check (None: a model-free similarity)


# (model, a batch of encoded items) -> (mean loss, its weight: learned tokens or rows)
LossOf = Callable[[object, list], tuple["torch.Tensor", int]]


@dataclass
class RunState:
    step: int = 0
    best_val: float = math.inf
    best_step: int = 0
    evals_without_gain: int = 0
    loss: list = field(default_factory=list)  # [[step, train, val-or-None]]


def lora_config(settings: TrainSettings, task_type: str = "CAUSAL_LM"):
    from peft import LoraConfig

    targets = settings.target_modules.strip()
    modules = "all-linear" if targets == "all-linear" else [m.strip() for m in targets.split(",") if m.strip()]
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=modules, task_type=task_type)


@functools.lru_cache(maxsize=2)
def batches_for_epoch(lengths: tuple[int, ...], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffled batches of similar length (little padding), the same for the same seed and epoch."""
    rng = random.Random(seed * 1000 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    pool = batch_size * 32
    batches = []
    for start in range(0, len(order), pool):
        group = sorted(order[start:start + pool], key=lambda i: lengths[i])
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches


@contextmanager
def evaluating(model) -> Iterator[None]:
    """model in eval mode (no dropout) for the block, then back in the mode it was in."""
    training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        model.train(training)


def mean_loss(model, items: list, loss_of: LossOf, batch_size: int, bf16: bool = False,
              ranks: Ranks | None = None) -> float:
    """Mean loss over items, weighted as loss_of says (learned tokens, or rows); with ranks, each process scores
    its share and the sums are combined."""
    ranks = ranks or Ranks()
    items = ranks.share(items)
    total, count = 0.0, 0
    with evaluating(model):
        for start in range(0, len(items), batch_size):
            with autocast(model, bf16):
                loss, weight = loss_of(model, items[start:start + batch_size])
            if weight:
                total += float(loss) * weight
                count += weight
    total, count = ranks.sum([total, count])
    return total / max(count, 1)


def trainable_state(model) -> dict:
    """The weights training changes: LoRA matrices and any new head."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.named_parameters() if v.requires_grad}


class Checkpoint:
    """The latest checkpoint of a run: LoRA weights, best weights, optimizer state and progress."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)

    def exists(self) -> bool:
        return (self.folder / "state.pt").exists()

    def kept(self, name: str, compute: Callable[[], list]) -> list:
        """compute()'s result, kept beside the checkpoint so that a resumed run reads it instead (the base
        model's answers to the checked rows: each ZeroGPU call of a job would spend its lease on them again).
        Kept only where JSON gives it back as it is."""
        path = self.folder.with_name(f"{self.folder.name}.{name}.json")
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            pass
        value = compute()
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            return value
        if json.loads(text) == value:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_suffix(".tmp").write_text(text, encoding="utf-8")
            path.with_suffix(".tmp").replace(path)
        return value

    def remove(self) -> None:
        """The checkpoint and what was kept beside it."""
        shutil.rmtree(self.folder, ignore_errors=True)
        for path in self.folder.parent.glob(f"{self.folder.name}.*.json"):
            path.unlink(missing_ok=True)

    def save(self, model, optimizer, scheduler, state: RunState, best: dict, snapshots: list) -> None:
        tmp = self.folder.with_name(self.folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(trainable_state(model), tmp / "lora.safetensors")
        if best:
            save_file(best, tmp / "best.safetensors")
        if snapshots:  # the answer check walks back through them: a resumed run's report says what one would
            save_file({f"{step}/{name}": value for step, weights in snapshots for name, value in weights.items()},
                      tmp / "snapshots.safetensors")
        # The random state too (dropout's masks): a resumed run takes the very steps an unbroken one would.
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                    "run": state.__dict__, "rng": torch.get_rng_state(),
                    "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []},
                   tmp / "state.pt")
        old = self.folder.with_name(self.folder.name + ".old")
        if self.folder.exists():
            self.folder.rename(old)
        tmp.rename(self.folder)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, model, optimizer, scheduler) -> tuple[RunState, dict, list]:
        model.load_state_dict(load_file(self.folder / "lora.safetensors"), strict=False)
        saved = torch.load(self.folder / "state.pt", weights_only=True)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        if "rng" in saved:  # checkpoints written before it was kept resume with the seed's state
            torch.set_rng_state(saved["rng"])
        if saved.get("cuda_rng") and torch.cuda.is_available() and len(saved["cuda_rng"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        best_path, snapshots_path = self.folder / "best.safetensors", self.folder / "snapshots.safetensors"
        snapshots: dict[int, dict] = {}
        for key, value in (load_file(snapshots_path) if snapshots_path.exists() else {}).items():
            step, name = key.split("/", 1)
            snapshots.setdefault(int(step), {})[name] = value
        return (RunState(**saved["run"]), load_file(best_path) if best_path.exists() else {},
                sorted(snapshots.items()))


SNAPSHOTS = 8  # earlier adapter weights kept in memory, for when the kept ones fail the answer check


@dataclass
class Fitted:
    state: RunState
    val_before: float
    val_after: float
    held_out: bool
    snapshots: list = field(default_factory=list)  # [(step, trainable weights)] at evaluations before the kept step


def fit(model, train: list, val: list, lengths: tuple[int, ...], settings: TrainSettings, checkpoint: Checkpoint,
        hooks: Hooks, loss_of: LossOf) -> Fitted:
    """Train model's trainable weights on encoded items; keeps the best by validation loss (val = [] uses train).

    Resumes from checkpoint when it exists, reports progress through hooks, stops early without gain on
    held-out items, and raises Stopped on cancel or interruption (after saving a checkpoint).
    """
    held_out = bool(val)
    val = val if held_out else train
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    size = sum(p.numel() for p in model.parameters())
    lr = settings.learning_rate * (0.3 if size > 1e9 else 1.0)  # large models need smaller steps
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    per_epoch = math.ceil(len(train) / settings.batch_size)
    total = settings.max_steps or max(1, math.ceil(settings.epochs * per_epoch / settings.grad_accum))
    scheduler = get_linear_schedule_with_warmup(optimizer, max(1, total // 20), total)
    state, best, snapshots = RunState(), {}, []
    bf16 = use_bf16(settings, model)
    ranks = hooks.ranks
    if checkpoint.exists():
        state, best, snapshots = checkpoint.load(model, optimizer, scheduler)
        hooks.log(f"resumed from the checkpoint at step {state.step}")
    val_before = state.loss[0][2] if state.loss else mean_loss(model, val, loss_of, settings.batch_size, bf16, ranks)
    if not state.loss:
        state.loss.append([0, None, val_before])
    eval_every = max(1, math.ceil(per_epoch / settings.grad_accum))
    started, first_step = time.monotonic(), state.step
    while state.step < total:
        train_loss = optimizer_step(model, optimizer, scheduler, train, lengths, settings, state.step, loss_of, ranks)
        state.step += 1
        val_loss = None
        if state.step % eval_every == 0 or state.step == total:
            val_loss = mean_loss(model, val, loss_of, settings.batch_size, bf16, ranks)
            weights = trainable_state(model)
            if val_loss < state.best_val - 1e-4:
                state.best_val, state.best_step, state.evals_without_gain, best = val_loss, state.step, 0, weights
            else:
                state.evals_without_gain += 1
            keep_snapshot(snapshots, state.step, weights)
        state.loss.append([state.step, round(train_loss, 4), None if val_loss is None else round(val_loss, 4)])
        elapsed = time.monotonic() - started
        eta = elapsed / (state.step - first_step) * (total - state.step)
        progress = JobProgress(state.step, total, round(state.step * settings.grad_accum / per_epoch, 2),
                               round(eta, 1), [list(row) for row in state.loss])
        if ranks.main:
            hooks.progress(progress)
        stop = ranks.decided(hooks.stop_reason() if ranks.main else None)
        if ranks.main and (stop or state.step % settings.checkpoint_every == 0):
            checkpoint.save(model, optimizer, scheduler, state, best, snapshots)
        if stop:
            ranks.wait()  # the others leave only once rank 0's checkpoint is written
            raise Stopped(stop, progress)
        if held_out and state.evals_without_gain >= settings.patience:
            hooks.log(f"stopped early at step {state.step}: held-out loss stopped improving")
            break
    if best:
        model.load_state_dict(best, strict=False)
    model.eval()
    earlier = [(step, weights) for step, weights in snapshots if step < (state.best_step or state.step)]
    # The kept weights' loss was measured when they were kept: the same weights on the same rows, not scored again.
    val_after = state.best_val if best and math.isfinite(state.best_val) else mean_loss(
        model, val, loss_of, settings.batch_size, bf16, ranks)
    return Fitted(state, val_before, val_after, held_out, earlier)


def keep_snapshot(snapshots: list, step: int, weights: dict) -> None:
    """Add the weights of step to snapshots, dropping every other older one beyond SNAPSHOTS (the earliest stays:
    it is the likeliest to pass the answer check when later ones fail)."""
    snapshots.append((step, weights))
    if len(snapshots) > SNAPSHOTS:
        del snapshots[1:-1:2]


def use_bf16(settings: TrainSettings, model) -> bool:
    """Whether this run computes in bf16 autocast: asked for, or 'auto' where the hardware runs bf16 fast."""
    from models.device import fast_bf16

    device = next(model.parameters()).device
    return settings.precision == "bf16" or (settings.precision == "auto" and fast_bf16(device))


def autocast(model, enabled: bool):
    """bf16 autocast on the model's device (the weights and the LoRA matrices stay fp32)."""
    return torch.autocast(next(model.parameters()).device.type, dtype=torch.bfloat16, enabled=enabled)


def optimizer_step(model, optimizer, scheduler, train: list, lengths: tuple[int, ...], settings: TrainSettings,
                   step: int, loss_of: LossOf, ranks: Ranks | None = None) -> float:
    """Optimizer step number `step` over grad_accum length-grouped micro-batches; returns the mean loss.

    With several processes each computes its share of every micro-batch, weighted by its share of the batch's
    weight (learned tokens or rows), so the summed gradients are exactly the whole batch's."""
    ranks = ranks or Ranks()
    per_epoch = math.ceil(len(train) / settings.batch_size)
    losses = []
    bf16 = use_bf16(settings, model)
    params = [p for p in model.parameters() if p.requires_grad]
    for micro in range(settings.grad_accum):
        epoch, within = divmod(step * settings.grad_accum + micro, per_epoch)
        batch = ranks.share(batches_for_epoch(lengths, settings.batch_size, settings.seed, epoch)[within])
        loss, weight = torch.zeros((), requires_grad=True), 0
        if batch:  # a batch smaller than the processes leaves some without a share
            with autocast(model, bf16):
                loss, weight = loss_of(model, [train[i] for i in batch])
        part, whole = ranks.sum([loss.item() * weight, weight]) if ranks.count > 1 else (loss.item(), 1)
        share = weight / max(whole, 1) if ranks.count > 1 else 1.0
        (loss * share / settings.grad_accum).backward()
        losses.append(part / max(whole, 1))
    ranks.sum_gradients(params)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return sum(losses) / len(losses)


def loss_metrics(fitted: Fitted, train_rows: int, held_out_rows: int) -> dict:
    """The metrics every run reports: validation loss before and after, steps and rows."""
    return {"val_loss_before": round(fitted.val_before, 4), "val_loss_after": round(fitted.val_after, 4),
            "steps": fitted.state.step, "held_out": held_out_rows, "train_rows": train_rows}

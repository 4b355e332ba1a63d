"""Matrix products for decoding, chosen per machine by a short measurement when a model loads.

A decode step multiplies each weight matrix by 1–16 rows, and on a CPU that time goes into reading the weights
from memory. Three products are candidates for each shape of linear layer:
- the library's `x · Wᵀ`;
- `W · xᵀ` with at least two columns: the BLAS library may read a large matrix several times faster that way
  than through its matrix-vector path (seen for SmolLM2's output layer on AVX-512 cores); the same products up to
  the order of the float sums;
- fp16 copies of the weights through fbgemm's fp16 GEMM (`torch.ops.quantized.linear_dynamic_fp16`): half the
  bytes to read, fp32 activations and results, so only the weights' own rounding (2⁻¹¹) changes anything.
  SmolLM2's layers were measured several times faster this way, more so for several rows, and DESIGN §8's answers
  keep their first greedy tokens (bench/decode.py checks it; the figures are in bench/README). It costs the fp16
  copies' memory (half the linear weights again).
Which wins depends on the CPU and its libraries, so each is measured on the model's own weights and the fastest
kept, for prompts (many rows) too where it is also faster for them; anything with gradients keeps the library's
own product and the fp32 weights (training, and the exact logits it needs). The choices are remembered per machine
(`Measured`): a second start on the same CPU, torch and threads takes them without measuring again.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from models import lazy

torch = lazy.module("torch")
functional = lazy.module("torch.nn.functional")

FEW_ROWS = 16  # at most this many rows are a decode step; more are a prompt, which a product takes only if measured
WORTH_MEASURING = 4_000_000  # a model whose linear weights are fewer than this decodes fast either way
ROWS_MEASURED = (1, 4)
PROMPT_ROWS = (32,)  # a product also takes prompts where it is faster for this many rows too
REPEATS = 3
FASTER = 0.9  # a product replaces the library's only when it takes under this share of its time
FP16_MAX = 65504.0


@dataclass
class Choice:
    """What tune() chose, for the System panel, and the memory its copies take."""
    text: str
    extra_bytes: int = 0


# A product's preparation: (layer) -> a function (rows) -> outputs, and the bytes it keeps. It raises RuntimeError
# where this build or machine cannot run it.
Prepared = tuple[Callable[["torch.Tensor"], "torch.Tensor"], int]


def _library(layer: torch.nn.Linear) -> Prepared:
    return (lambda flat: functional.linear(flat, layer.weight, layer.bias)), 0


def _prepare_transposed(layer: torch.nn.Linear) -> Prepared:
    return (lambda flat: _transposed(flat, layer.weight, layer.bias)), 0


def _prepare_fp16(layer: torch.nn.Linear) -> Prepared:
    weight = layer.weight.detach()
    if weight.abs().max() >= FP16_MAX:
        raise RuntimeError("weights beyond fp16's range")
    bias = None if layer.bias is None else layer.bias.detach()
    packed = torch.ops.quantized.linear_prepack_fp16(weight, bias)
    return (lambda flat: torch.ops.quantized.linear_dynamic_fp16(flat.contiguous(), packed)), weight.numel() * 2


PRODUCTS: dict[str, Callable[[torch.nn.Linear], Prepared]] = {
    "W·xᵀ": _prepare_transposed,
    "fp16 weights": _prepare_fp16,
}


class Measured:
    """The products measured before on this machine, in a JSON file (under the data directory's models/): keyed by
    what decides which is fastest (the CPU's model and flags, torch's version and threads) and then by the shapes
    of the layers measured, so a second start, or another model with the same shapes, skips the measurement."""

    def __init__(self, path: Path | None):
        self.path = path
        self.machine = machine_key()
        self.choices: dict[str, list] = self._read().get(self.machine, {})
        self.changed = False

    def _read(self) -> dict:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8")) if self.path else {}
        except (OSError, ValueError):  # none yet, or unreadable: measure again
            return {}
        return data if isinstance(data, dict) else {}

    def get(self, key: str) -> list | None:
        return self.choices.get(key)

    def put(self, key: str, value: list) -> None:
        self.choices[key], self.changed = value, True

    def save(self) -> None:
        """Write the choices beside other machines' (written to a temporary name and renamed into place)."""
        if not (self.changed and self.path):
            return
        data = self._read()
        saved = data.get(self.machine)  # what another model's load saved meanwhile stays
        data[self.machine] = {**(saved if isinstance(saved, dict) else {}), **self.choices}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
            tmp.replace(self.path)
        except OSError:  # a read-only data directory measures again next time
            tmp.unlink(missing_ok=True)
        self.changed = False


# Environment settings that limit the instructions torch's kernels, oneDNN and MKL use (an AVX2 limit on an AVX-512
# CPU makes other products fastest); read by those libraries as they load
KERNEL_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS")


def machine_key() -> str:
    """What decides which product is fastest here: the CPU's model and flags, the instructions its kernels may use,
    torch's version and threads."""
    cpu = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() in ("model name", "flags") and name.strip() not in cpu:
                    cpu[name.strip()] = " ".join(sorted(value.split()))
    except OSError:
        cpu["model name"] = platform.processor() or platform.machine()
    limits = {name: os.environ[name] for name in KERNEL_LIMITS if os.environ.get(name)}
    described = json.dumps([cpu, torch.__version__, torch.get_num_threads(), limits], sort_keys=True)
    return hashlib.sha256(described.encode()).hexdigest()[:16]


def tune(model: torch.nn.Module, enabled: bool = True, measured: Measured | None = None) -> Choice:
    """Give each shape of the model's linear layers the fastest measured product for decode steps (the one
    measured before on this machine, if `measured` holds it)."""
    layers = [m for m in model.modules() if type(m) is torch.nn.Linear]
    unmeasured = _not_measured(layers, enabled)
    if unmeasured:
        return Choice(f"library products ({unmeasured})")
    shapes: dict[tuple[int, int], list[torch.nn.Linear]] = {}
    for layer in layers:
        shapes.setdefault(tuple(layer.weight.shape), []).append(layer)
    chosen: dict[str, int] = {}
    extra = 0
    with torch.inference_mode():
        for group in shapes.values():
            name, prepared, prompts = _remembered(group, measured)
            if name != "library":
                extra += sum(_install(layer, ready, prompts) for layer, ready in zip(group, prepared))
            label = f"{name} (prompts too)" if prompts else name
            chosen[label] = chosen.get(label, 0) + len(group)
    return Choice(_described(chosen, extra), extra)


def _not_measured(layers: list[torch.nn.Linear], enabled: bool) -> str:
    """Why these layers keep the library's products unmeasured; empty when they are measured."""
    if not enabled:
        return "--decode-kernels plain"
    if not layers or any(m.weight.device.type != "cpu" or m.weight.dtype != torch.float32 for m in layers):
        return "measured only for fp32 weights on a CPU"
    if sum(m.weight.numel() for m in layers) < WORTH_MEASURING:
        return "a model this small decodes fast either way"
    return ""


Joined = Callable[["torch.Tensor"], "torch.Tensor"]  # the input -> the members' outputs side by side (last dim)


def join(groups: list[list[torch.nn.Linear]], enabled: bool = True,
         measured: Measured | None = None) -> tuple[list[Joined], int, list]:
    """For groups of layers that read one input (a layer's q, k and v), a function each giving all the members'
    outputs side by side, the bytes this adds, and the members whose own products it makes unused (release() frees
    them once the caller keeps the joined ones).

    One fp16 product over the members' weights side by side reads the input once and makes one call instead of
    several; it is kept where measured faster than the members' own products. Otherwise the members run one by
    one, as before (and nothing is added or unused)."""
    one_by_one = [_members(group) for group in groups]
    layers = [layer for group in groups for layer in group]
    mixed = any(len({(m.in_features, m.bias is None) for m in group}) > 1 for group in groups)
    if mixed or _not_measured(layers, enabled):
        return one_by_one, 0, []
    key = "joined " + " ".join(f"{'+'.join(str(m.out_features) for m in group)}x{group[0].in_features}"
                               for group in groups[:1]) + f" bias={groups[0][0].bias is not None} n={len(groups)}"
    known = measured.get(key) if measured else None
    if known and not known[0]:  # measured before: the members' own products were as fast
        return one_by_one, 0, []
    with torch.inference_mode():
        try:
            packed = [_packed_side_by_side(group) for group in groups]
        except (RuntimeError, AttributeError, NotImplementedError):  # no fp16 product here
            return one_by_one, 0, []
        if known:
            prompts = known[1]
        else:
            width = groups[0][0].in_features
            members = [layer.forward for layer in layers]
            faster = _milliseconds(packed, width) < FASTER * _milliseconds(members, width)
            prompts = faster and (_milliseconds(packed, width, PROMPT_ROWS)
                                  < FASTER * _milliseconds(members, width, PROMPT_ROWS))
            if measured is not None:
                measured.put(key, [faster, prompts])
            if not faster:
                return one_by_one, 0, []
    added = sum(layer.weight.numel() * 2 for layer in layers)
    unused = [layer for layer in layers if prompts or not getattr(layer, "decode_prompts", False)]
    return [_joined(group, product, prompts) for group, product in zip(groups, packed)], added, unused


def _members(group: list[torch.nn.Linear]) -> Joined:
    return lambda x: torch.cat([layer(x) for layer in group], dim=-1)


def _packed_side_by_side(group: list[torch.nn.Linear]) -> Callable[[torch.Tensor], torch.Tensor]:
    weight = torch.cat([layer.weight.detach() for layer in group])
    bias = None if group[0].bias is None else torch.cat([layer.bias.detach() for layer in group])
    product, _ = _prepare_fp16(_Weights(weight, bias))
    return product


@dataclass
class _Weights:
    weight: torch.Tensor
    bias: torch.Tensor | None


def _joined(group: list[torch.nn.Linear], product, prompts: bool) -> Joined:
    one_by_one = _members(group)

    def run(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if (flat.shape[0] > FEW_ROWS and not prompts) or x.dtype != torch.float32:
            return one_by_one(x)
        return product(flat).reshape(*x.shape[:-1], -1)
    return run


def release(layers: list[torch.nn.Linear]) -> int:
    """Give the layers back the library's product (their own copies are no longer used); the bytes freed.

    Only the model's own forward still runs them: for rows the joined products do not serve (an adapter peft must
    run), and there the library's fp32 product is the exact one."""
    freed = 0
    for layer in layers:
        if "forward" in layer.__dict__:
            del layer.forward
        freed += layer.__dict__.pop("decode_bytes", 0)
    return freed


def _remembered(group: list[torch.nn.Linear], measured: Measured | None) -> tuple[str, list[Prepared], bool]:
    """_fastest's choice for the group, taken from `measured` where it holds one this build can still prepare."""
    key = f"linear {'x'.join(map(str, group[0].weight.shape))} bias={group[0].bias is not None} n={len(group)}"
    known = measured.get(key) if measured else None
    if known and (known[0] == "library" or known[0] in PRODUCTS):
        name, prompts = known
        prepare = _library if name == "library" else PRODUCTS[name]
        try:
            return name, [prepare(layer) for layer in group], prompts
        except (RuntimeError, AttributeError, NotImplementedError):  # these weights cannot (fp16 range): measure
            pass
    name, prepared, prompts = _fastest(group)
    if measured is not None:
        measured.put(key, [name, prompts])
    return name, prepared, prompts


def _fastest(group: list[torch.nn.Linear]) -> tuple[str, list[Prepared], bool]:
    """The fastest product for a group of layers of one shape ("library" unless another clearly wins), prepared
    for each of them, and whether it is also faster for prompts. Each product is timed over the whole group, as a
    decode step runs it: one layer alone stays in the cache and hides what reading the weights costs."""
    candidates = {"library": [_library(layer) for layer in group]}
    for name, prepare in PRODUCTS.items():
        try:
            candidates[name] = [prepare(layer) for layer in group]
        except (RuntimeError, AttributeError, NotImplementedError):  # this build or machine cannot: not a candidate
            continue
    width = group[0].in_features
    times = {name: _milliseconds([product for product, _ in ready], width) for name, ready in candidates.items()}
    best = min(times, key=times.get)
    if times[best] >= FASTER * times["library"]:
        return "library", candidates["library"], False
    products = {name: [product for product, _ in candidates[name]] for name in (best, "library")}
    prompts = (_milliseconds(products[best], width, PROMPT_ROWS)
               < FASTER * _milliseconds(products["library"], width, PROMPT_ROWS))
    return best, candidates[best], prompts


def _milliseconds(products: list, width: int, counts: tuple[int, ...] = ROWS_MEASURED) -> float:
    """Milliseconds for one pass of every product over these counts of rows (the best of REPEATS passes)."""
    total = 0.0
    for rows in counts:
        x = torch.randn(rows, width)
        passes = []
        for _ in range(REPEATS + 1):  # the first pass warms up
            start = time.perf_counter()
            for product in products:
                product(x)
            passes.append(time.perf_counter() - start)
        total += min(passes[1:])
    return total * 1000


def _install(layer: torch.nn.Linear, prepared: Prepared, prompts: bool) -> int:
    """Route layer's decode steps (and its prompts, if `prompts`) through the prepared product; the bytes it
    keeps."""
    product, kept = prepared

    def forward(x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if (flat.shape[0] > FEW_ROWS and not prompts) or torch.is_grad_enabled() or x.dtype != torch.float32:
            return functional.linear(x, layer.weight, layer.bias)
        return product(flat).reshape(*x.shape[:-1], -1)

    layer.forward = forward
    layer.decode_bytes, layer.decode_prompts = kept, prompts  # for join(), which may release them
    return kept


def _described(chosen: dict[str, int], extra: int) -> str:
    if list(chosen) == ["library"]:
        return "library products (measured fastest)"
    parts = [f"{name} for {count} layer{'s' if count > 1 else ''}" for name, count in chosen.items()]
    memory = f", +{extra / 2**20:,.0f} MB for the fp16 copies" if extra else ""
    return f"measured at load: {', '.join(parts)}{memory}"


def _transposed(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    rows = flat.shape[0]
    if rows == 1:  # one column would take the slow matrix-vector path again
        flat = flat.repeat(2, 1)  # real rows: a stride-0 view sends the library down a slow path too
    out = torch.mm(weight, flat.t()).t()[:rows]
    return out if bias is None else out + bias

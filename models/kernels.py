"""Matrix-product layouts for decoding, chosen per machine by a short measurement when a model loads.

A decode step multiplies each weight matrix by 1–16 rows. For the output layer (vocabulary × hidden, the largest
matrix of a small model) the BLAS library may read the weights several times slower as `x · Wᵀ` with few rows
(a matrix-vector path) than as `W · xᵀ` with at least two columns: seen 10 ms vs 3.4 ms per step for SmolLM2 on
2 AVX-512 cores. The products are the same up to the order of the float sums. Which layout wins depends on the CPU
and its BLAS, so it is measured on the model's own weights, and the faster one kept.
"""

from __future__ import annotations

import time
import types

import torch
from torch.nn import functional

FEW_ROWS = 16  # at most this many rows take the measured layout; prompts (many rows) keep the library's own
WORTH_MEASURING = 4_000_000  # weights below this cost little either way: not worth a measurement
ROWS_MEASURED = (1, 4)
REPEATS = 5


def tune_output_layer(model: torch.nn.Module) -> str:
    """Give the model's output layer the faster product layout for few rows; a sentence saying what was chosen."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if type(head) is not torch.nn.Linear or head.weight.device.type != "cpu":
        return "library default (no measurement on this device)"
    if head.weight.numel() < WORTH_MEASURING:
        return "library default (output layer too small to matter)"
    try:
        plain, transposed = _measure(head)
    except RuntimeError as error:  # a layout this build cannot run: keep the default
        return f"library default ({error})"
    if transposed >= 0.9 * plain:
        return f"library default (measured {plain:.1f} ms vs {transposed:.1f} ms for W·xᵀ)"
    head.forward = types.MethodType(_few_rows_transposed, head)
    return f"output layer as W·xᵀ for ≤{FEW_ROWS} rows (measured {transposed:.1f} ms vs {plain:.1f} ms)"


def _measure(head: torch.nn.Linear) -> tuple[float, float]:
    """Milliseconds per product summed over ROWS_MEASURED rows: (library's x·Wᵀ, W·xᵀ)."""
    times = []
    with torch.inference_mode():
        for product in (functional.linear, _transposed):
            total = 0.0
            for rows in ROWS_MEASURED:
                x = torch.randn(rows, head.in_features, dtype=head.weight.dtype)
                product(x, head.weight, head.bias)  # warm-up
                start = time.perf_counter()
                for _ in range(REPEATS):
                    product(x, head.weight, head.bias)
                total += (time.perf_counter() - start) / REPEATS
            times.append(total * 1000)
    return times[0], times[1]


def _few_rows_transposed(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    flat = x.reshape(-1, x.shape[-1])
    if flat.shape[0] > FEW_ROWS or torch.is_grad_enabled():
        return functional.linear(x, self.weight, self.bias)
    return _transposed(flat, self.weight, self.bias).reshape(*x.shape[:-1], -1)


def _transposed(flat: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    rows = flat.shape[0]
    if rows == 1:  # one column would take the slow matrix-vector path again
        flat = flat.repeat(2, 1)  # real rows: a stride-0 view sends the library down a slow path too
    out = torch.mm(weight, flat.t()).t()[:rows]
    return out if bias is None else out + bias

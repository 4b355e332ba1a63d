"""Levers for decoding past the bandwidth floor, measured before building them: does the answer survive, and is
the product faster? On SmolLM2-135M-Instruct, greedy, DESIGN §8's 20 prompts.

- int8 weights, one scale per output channel, through torch's `_weight_int8pack_mm`: how many of the 20 prompts
  keep their first 16 greedy tokens (§8 wants 18), and one decode row's time through each layer shape beside the
  library's fp32 product and the fp16 copies the engine uses.
- Self-speculation from the model's first layers with its own final norm and head (no training): how often such
  a draft is the full model's next greedy token, for several depths. A draft costs its share of the layers, so
  it pays only where it is right far more often than that share.

    .venv/bin/python bench/decode_levers.py [--data-dir data]
"""

from __future__ import annotations

import time
from pathlib import Path

from common import header, parser
from decode import CHECK, CHECK_NEEDED, CHECK_TOKENS, chat_ids

import torch  # noqa: E402  (common sets the environment first)

DEPTHS = (8, 12, 16, 20, 24, 27)
CONTINUATION = 48  # greedy tokens per prompt over which the drafts are scored


class Int8Linear(torch.nn.Module):
    """A linear layer with int8 weights and one fp32 scale per output channel."""

    def __init__(self, layer: torch.nn.Linear):
        super().__init__()
        weight = layer.weight.detach()
        self.scales = (weight.abs().amax(1) / 127).clamp(min=1e-12)
        self.weight = torch.round(weight / self.scales[:, None]).clamp(-127, 127).to(torch.int8).contiguous()
        self.bias = layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch._weight_int8pack_mm(x.reshape(-1, x.shape[-1]).contiguous(), self.weight, self.scales)
        out = out if self.bias is None else out + self.bias
        return out.reshape(*x.shape[:-1], -1)


def microseconds(product, x: torch.Tensor, repeats: int = 200) -> float:
    for _ in range(10):
        product(x)
    started = time.perf_counter()
    for _ in range(repeats):
        product(x)
    return (time.perf_counter() - started) / repeats * 1e6


def greedy_answers(model, tokenizer) -> list[list[int]]:
    answers = []
    for question in CHECK:
        ids = torch.tensor([chat_ids(tokenizer, question)])
        out = model.generate(ids, max_new_tokens=CHECK_TOKENS, do_sample=False)
        answers.append(out[0, ids.shape[1]:].tolist())
    return answers


def int8_weights(model, tokenizer) -> None:
    shapes = {}
    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            shapes.setdefault((layer.in_features, layer.out_features), layer)
    print("one decode row through each layer shape (µs): library fp32, fp16 copies, int8 weights")
    for (width, out), layer in shapes.items():
        x = torch.randn(1, width)
        packed = torch.ops.quantized.linear_prepack_fp16(layer.weight.detach(), None)
        times = (microseconds(lambda x: torch.nn.functional.linear(x, layer.weight), x),
                 microseconds(lambda x: torch.ops.quantized.linear_dynamic_fp16(x, packed), x),
                 microseconds(Int8Linear(layer), x))
        print(f"  {width}→{out}: " + ", ".join(f"{t:,.0f}" for t in times))
    reference = greedy_answers(model, tokenizer)
    swap_int8(model)
    kept = sum(a == b for a, b in zip(reference, greedy_answers(model, tokenizer)))
    print(f"int8 weights: {kept} of {len(CHECK)} prompts keep their first {CHECK_TOKENS} greedy tokens "
          f"(DESIGN §8 wants >= {CHECK_NEEDED}: {'met' if kept >= CHECK_NEEDED else 'NOT met'})")


def swap_int8(module: torch.nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, torch.nn.Linear):
            setattr(module, name, Int8Linear(child))
        else:
            swap_int8(child)


def early_exit_drafts(model, tokenizer) -> None:
    right, total = dict.fromkeys(DEPTHS, 0), 0
    for question in CHECK:
        ids = torch.tensor([chat_ids(tokenizer, question)])
        tokens = model.generate(ids, max_new_tokens=CONTINUATION, do_sample=False)
        out = model(tokens, output_hidden_states=True)
        start = ids.shape[1] - 1
        full = out.logits[0, start:-1].argmax(-1)
        total += len(full)
        for depth in DEPTHS:
            draft = model.lm_head(model.model.norm(out.hidden_states[depth][0, start:-1])).argmax(-1)
            right[depth] += int((draft == full).sum())
    layers = model.config.num_hidden_layers
    for depth, count in right.items():
        print(f"  first {depth} of {layers} layers + norm + head: the full model's next token {count / total:.0%} "
              f"of {total}")


def main() -> None:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    header("decoding levers: int8 weights and early-exit drafts, SmolLM2-135M-Instruct", args.threads)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from models import offline

    folder = offline.smollm2(Path(args.data_dir) / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    with torch.inference_mode():
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        print("self-speculation from the first layers (no training):")
        early_exit_drafts(model, tokenizer)
        int8_weights(model, tokenizer)


if __name__ == "__main__":
    main()

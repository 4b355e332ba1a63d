"""Command lines that serve a base model with LoRA adapters on vLLM or SGLang, for the "Serve these adapters at
scale" panel: LoRA Studio keeps its UI, jobs and library in front, and those engines serve many users at once.

The flags are the ones the engines document:
- vLLM: https://docs.vllm.ai/en/latest/features/lora.html (`vllm serve MODEL --enable-lora --lora-modules
  name=path --max-lora-rank R --max-loras N`; ranks vLLM accepts: vllm/config/lora.py `MaxLoRARanks`) and
  https://docs.vllm.ai/en/latest/cli/serve.html.
- SGLang: https://docs.sglang.io/advanced_features/lora.html (`python -m sglang.launch_server --model-path MODEL
  --enable-lora --lora-paths name=path --max-lora-rank R --max-loras-per-batch N`).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the only values vLLM's --max-lora-rank takes
VLLM_PORT, SGLANG_PORT = 8000, 30000  # each engine's own default port


@dataclass(frozen=True)
class Served:
    """One adapter as an engine loads it: its name, the folder the engine reads and its LoRA rank."""

    name: str
    path: str
    rank: int


def adapter_rank(folder: Path) -> int:
    """The largest LoRA rank in a peft adapter folder (its r, or a larger one in rank_pattern)."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    ranks = [int(config.get("r") or 0), *(int(r) for r in (config.get("rank_pattern") or {}).values())]
    return max(ranks)


def vllm_rank(rank: int) -> int:
    """The smallest rank vLLM accepts that holds rank."""
    return next((r for r in VLLM_RANKS if r >= rank), VLLM_RANKS[-1])


def _line(words: list[str]) -> str:
    """A shell command, one flag per line so that a long one stays readable."""
    parts, current = [], []
    for word in words:
        if word.startswith("--") and current:
            parts.append(" ".join(current))
            current = []
        current.append(shlex.quote(word))
    parts.append(" ".join(current))
    return " \\\n  ".join(parts)


def vllm_command(base: str, adapters: list[Served]) -> str:
    words = ["vllm", "serve", base, "--port", str(VLLM_PORT), "--enable-lora", "--lora-modules",
             *(f"{a.name}={a.path}" for a in adapters),
             "--max-lora-rank", str(vllm_rank(max(a.rank for a in adapters))), "--max-loras", str(len(adapters))]
    return _line(words)


def sglang_command(base: str, adapters: list[Served]) -> str:
    words = ["python", "-m", "sglang.launch_server", "--model-path", base, "--port", str(SGLANG_PORT),
             "--enable-lora", "--lora-paths", *(f"{a.name}={a.path}" for a in adapters),
             "--max-lora-rank", str(max(a.rank for a in adapters)),
             "--max-loras-per-batch", str(len(adapters))]
    return _line(words)


def commands(base: str, adapters: list[Served]) -> dict:
    """The vLLM and SGLang command lines that serve base with adapters, and how LoRA Studio then uses them."""
    return {"base": base, "adapters": [a.name for a in adapters], "max_rank": max(a.rank for a in adapters),
            "vllm": vllm_command(base, adapters), "sglang": sglang_command(base, adapters),
            "use": f"python app.py --serve-backend http://HOST:{VLLM_PORT}  (vLLM; SGLang listens on {SGLANG_PORT})"}

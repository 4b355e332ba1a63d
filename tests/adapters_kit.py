"""Adapters made the way other tools make them: plain peft LoRA folders (random weights) and their zips."""

from __future__ import annotations

import zipfile
from pathlib import Path

import torch

TARGETS = ("q_proj", "v_proj")


def plain_lora(base_dir: Path, folder: Path, seed: int = 1, targets=TARGETS, rank: int = 4, **options) -> Path:
    """A LoRA adapter saved by plain peft on base_dir, with random (non-zero) A and B so it changes answers (other
    LoraConfig options, such as use_dora, in `options`)."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=16, target_modules=list(targets), init_lora_weights=False,
                        task_type="CAUSAL_LM", base_model_name_or_path=str(base_dir), **options)
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def zipped(folder: Path, target: Path, inside: str = "my-adapter") -> Path:
    """A zip of the adapter folder, its files under inside/ (as zipping a folder does)."""
    with zipfile.ZipFile(target, "w") as archive:
        for file in folder.iterdir():
            archive.write(file, f"{inside}/{file.name}")
    return target


def plain_peft_greedy(base_dir: Path, adapter_dir: Path | None, prompt_ids: list[int], tokens: int) -> list[int]:
    """Greedy tokens from transformers' generate on the base (with the adapter through plain peft)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_dir)
    if adapter_dir is not None:
        model = PeftModel.from_pretrained(model, str(adapter_dir))
    out = model.eval().generate(torch.tensor([prompt_ids]), max_new_tokens=tokens, do_sample=False,
                                attention_mask=torch.ones(1, len(prompt_ids), dtype=torch.long))
    return out[0, len(prompt_ids):].tolist()

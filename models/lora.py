"""LoRA adapters on loaded models: a dtype-proof fingerprint of the base weights, and hot attaching."""

from __future__ import annotations

import hashlib

import torch


def base_parameter_name(name: str) -> str:
    """The parameter's name in the plain base model, whether or not peft wraps it."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def fingerprint(model: torch.nn.Module) -> str:
    """A hash equal for the same weights in any dtype or on any device, different for other weights.

    Built from parameter names, shapes and the first values of each tensor rounded to bf16, so an fp32 copy and
    its bf16 cast agree, while any real change to the weights shows.
    """
    digest = hashlib.sha256()
    named = [(base_parameter_name(n), p) for n, p in model.named_parameters() if "lora_" not in n
             and "modules_to_save" not in n]
    for name, param in sorted(named, key=lambda item: item[0]):
        values = param.detach().flatten()[:16].to("cpu", torch.bfloat16).float()
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


def attach(lm, key: str, folder: str) -> None:
    """Load the adapter in folder onto lm's model under key, in the engine thread, without reloading the base."""
    from peft import PeftModel

    def load() -> None:
        model = lm.engine.model
        if key in getattr(model, "peft_config", {}):
            return
        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=key)
        else:
            model = PeftModel.from_pretrained(model, folder, adapter_name=key)
            lm.engine.model = lm.model = model
        model.eval()

    lm.engine.call(load)

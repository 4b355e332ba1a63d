"""LoRA adapters on loaded models: a dtype-proof fingerprint of the base weights, and hot attaching."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from errors import UserError
from models import lazy, speculation
from models.adapter_meta import AdapterMeta

torch = lazy.module("torch")

PEFT_BASE = "__base__"  # peft's adapter name for a row with no adapter in a mixed-adapter batch


@dataclass(frozen=True)
class AdapterFiles:
    """A trained adapter on disk: its name, its version key, its folder and its metadata (lora_studio.json)."""

    name: str
    key: str  # unique per owner, name and version: loaded copies of two versions never mix
    folder: str
    meta: AdapterMeta = field(compare=False, hash=False)


def base_parameter_name(name: str) -> str:
    """The parameter's name in the plain base model, whether or not peft wraps it."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer.", ".")


def weights_fingerprint(model: torch.nn.Module, skip: tuple[str, ...] = ()) -> str:
    """A hash equal for the same weights in any dtype or on any device, different for other weights.

    Built from parameter names, shapes and the first values of each tensor rounded to bf16, so an fp32 copy and
    its bf16 cast agree, while any real change to the weights shows.
    """
    digest = hashlib.sha256()
    named = [(base_parameter_name(n), p) for n, p in model.named_parameters() if "lora_" not in n
             and "modules_to_save" not in n and not n.startswith(skip)]
    for name, param in sorted(named, key=lambda item: item[0]):
        values = param.detach().flatten()[:16].to("cpu", torch.bfloat16).float()
        digest.update(f"{name}{tuple(param.shape)}".encode())
        digest.update(values.numpy().tobytes())
    return digest.hexdigest()[:16]


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """The fingerprint of an encoder's body, without any head: the same whether the weights were loaded as a
    bare encoder, a sentence-transformers model, a classifier or a QA model (which drops the pooler)."""
    return weights_fingerprint(model.base_model, skip=("pooler.",))


def attach(lm, key: str, folder: str) -> bool:
    """Load the adapter in folder onto lm's model under key, in the engine thread, without reloading the base;
    whether it was loaded now (False when it was attached already). Its training answers, where it kept them,
    become drafts for the chats that use it."""
    from peft import PeftModel

    def attached() -> bool:
        return key in getattr(lm.engine.model, "peft_config", {})

    if attached():
        return False
    answers = speculation.read_answers(folder)  # indexed here, not in the engine thread that others wait on

    def load() -> bool:
        if attached():  # another request attached it meanwhile
            return False
        model = lm.engine.model
        if isinstance(model, PeftModel):
            model.load_adapter(folder, adapter_name=key)
        else:
            model = PeftModel.from_pretrained(model, folder, adapter_name=key)
            lm.engine.model = lm.model = model
        model.eval()
        if answers is not None:
            lm.engine.answers[key] = answers
        return True

    return lm.call(load)


def head_options(adapter: AdapterFiles) -> dict:
    """from_pretrained options that give a model the adapter's head: its label map, for a classifier."""
    labels = adapter.meta.labels
    if not labels:
        return {}
    return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
            "label2id": {label: i for i, label in enumerate(labels)}, "ignore_mismatched_sizes": True}


def merged(model: torch.nn.Module, adapter: AdapterFiles, base_name: str) -> torch.nn.Module:
    """model with the adapter's LoRA (and head) merged into its weights, after checking it is the adapter's base.

    Encoder models get one merged copy per adapter: they serve whole requests, so merging costs nothing per
    token, and a head with its own labels could not share a model with another adapter's head anyway.
    """
    from peft import PeftModel

    if encoder_fingerprint(model) != adapter.meta.base_fingerprint:
        raise UserError(f"The adapter '{adapter.name}' was trained on {adapter.meta.base_model}, not on "
                        f"{base_name}: pick {adapter.meta.base_model} as the model to use it.")
    return PeftModel.from_pretrained(model, adapter.folder).merge_and_unload().eval()

"""GGUF files for llama.cpp and Ollama: a language model's weights (f16, q8_0 or q4_0) and a chat adapter as a GGUF
LoRA, written with the `gguf` package's writer and tensor-name maps the way llama.cpp's own converters
(convert_hf_to_gguf.py, convert_lora_to_gguf.py) write them, so llama.cpp, Ollama and transformers' GGUF loader
read them as they read llama.cpp's.

What llama.cpp expects and a plain rename would miss:
- Llama keeps its rope in "pairs of consecutive values", so the converter reorders the rows of every q and k
  projection per head (`permute` below); a LoRA's B matrix (its output rows) is reordered the same way. Qwen2's
  rope is the half-split one transformers uses: no reordering.
- Llama 3.1+'s rope scaling becomes a rope_freqs tensor (one factor per frequency), as llama.cpp reads it.
- Norms and other vectors stay F32; a tied output layer is not written (llama.cpp reuses token_embd); a matrix
  whose rows do not split into quantization blocks falls back to F16; with q4_0 the embeddings stay Q8_0 (as
  llama-quantize keeps them finer).
- An adapter file says general.type=adapter, adapter.type=lora and adapter.lora.alpha, and holds `<name>.lora_a`
  (rank x in) and `<name>.lora_b` (out x rank); llama.cpp scales by alpha / rank, so rsLoRA's alpha / sqrt(rank)
  is written as alpha * sqrt(rank).

Files are written tensor by tensor (the header first, then each tensor converted as it is written), so memory
stays at one tensor beyond the model, and `progress` is called between tensors (it may raise to cancel).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

from errors import UserError
from models import lazy

torch = lazy.module("torch")

Progress = Callable[[float, str], None]  # (fraction done, what is happening); may raise to stop
Q = gguf.GGMLQuantizationType
# quantization name -> (file type, type of a matrix)
QUANTIZATIONS = {"f16": (gguf.LlamaFileType.MOSTLY_F16, Q.F16), "q8_0": (gguf.LlamaFileType.MOSTLY_Q8_0, Q.Q8_0),
                 "q4_0": (gguf.LlamaFileType.MOSTLY_Q4_0, Q.Q4_0)}
BYTES_PER_WEIGHT = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}  # for the disk check
SUPPORTED = "Llama-family chat models (SmolLM2, Llama, Qwen2)"


@dataclass(frozen=True)
class Family:
    arch: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's rope for this arch reads q and k rows in pairs (LLAMA_ROPE_TYPE_NORM)
    rope_dimensions: bool  # the converter writes <arch>.rope.dimension_count and <arch>.vocab_size


FAMILIES = {"llama": Family(gguf.MODEL_ARCH.LLAMA, True, True),
            "mistral": Family(gguf.MODEL_ARCH.LLAMA, True, True),  # llama.cpp converts Mistral as llama
            "qwen2": Family(gguf.MODEL_ARCH.QWEN2, False, False)}

# tokenizer.json's pre-tokenizer -> llama.cpp's name for it (tokenizer.ggml.pre): byte-level BPE vocabularies.
_HEAD = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
_SPLIT_PRE = {_HEAD + r"\p{N}{1,3}" + _TAIL: "llama-bpe", _HEAD + r"\p{N}" + _TAIL: "qwen2"}  # Split + ByteLevel


def family(config, name: str) -> Family:
    """The GGUF family of a model's config, or the sentence saying it is not supported yet."""
    model_type = getattr(config, "model_type", "") or "unknown"
    found = FAMILIES.get(model_type)
    if found is None:
        raise UserError(f"GGUF export supports {SUPPORTED} so far; {name} is a {model_type} model, which is not "
                        "supported yet.")
    kind = _rope_type(config)
    if kind != "default" and not (kind == "llama3" and found.arch == gguf.MODEL_ARCH.LLAMA):
        raise UserError(f"GGUF export does not support {name}'s rope scaling ({kind}) yet.")
    return found


def _rope_type(config) -> str:
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    return rope.get("rope_type", rope.get("type", "default"))


def llama3_rope_factors(config) -> torch.Tensor:
    """Llama 3.1+'s rope scaling as llama.cpp takes it: a rope_freqs tensor of one factor per frequency, each
    frequency divided by its factor (as LlamaModel.generate_extra_tensors computes it)."""
    rope = config.rope_parameters
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    freqs = 1.0 / (rope.get("rope_theta", 10000.0) ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rope.get("factor", 8.0), rope.get("low_freq_factor", 1.0), rope.get("high_freq_factor", 4.0)
    old_context = rope.get("original_max_position_embeddings", 8192)
    factors = []
    for wavelength in (2 * math.pi / freqs).tolist():
        if wavelength < old_context / high:
            factors.append(1.0)
        elif wavelength > old_context / low:
            factors.append(factor)
        else:
            smooth = (old_context / wavelength - low) / (high - low)
            factors.append(1 / ((1 - smooth) / factor + smooth))
    return torch.tensor(factors, dtype=torch.float32)


def permute(weights: torch.Tensor, n_head: int) -> torch.Tensor:
    """The rows of a q or k projection (or a LoRA B on one) in llama.cpp's order: per head, the two halves of the
    head interleaved (llama.cpp's LlamaModel.permute)."""
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _heads(config, hf_name: str) -> int | None:
    """How many heads a q_proj or k_proj has (the rows to reorder per head), None for other layers."""
    if hf_name.endswith(("q_proj.weight", "q_proj.bias")):
        return config.num_attention_heads
    if hf_name.endswith(("k_proj.weight", "k_proj.bias")):
        return getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return None


# ---- the plan: every tensor's GGUF name, shape and type, before anything is written --------------------------

@dataclass(frozen=True)
class Planned:
    name: str  # the GGUF name
    shape: tuple[int, ...]  # as torch has it (rows, columns)
    qtype: gguf.GGMLQuantizationType
    make: Callable[[], torch.Tensor]  # the tensor as llama.cpp wants it (reordered), in fp32

    def nbytes(self) -> int:
        return math.prod(gguf.quants.quant_shape_to_byte_shape(self.shape, self.qtype)) if self.qtype not in (
            Q.F32, Q.F16) else math.prod(self.shape) * (4 if self.qtype == Q.F32 else 2)

    def data(self) -> np.ndarray:
        array = self.make().detach().to(torch.float32).cpu().numpy()
        if self.qtype == Q.F32:
            return array.astype(np.float32)
        if self.qtype == Q.F16:
            return array.astype(np.float16)
        return gguf.quants.quantize(array, self.qtype)


def _tensor_type(gguf_name: str, shape: tuple[int, ...], quantization: str) -> gguf.GGMLQuantizationType:
    if len(shape) == 1 or gguf_name.endswith("_norm.weight"):
        return Q.F32
    qtype = QUANTIZATIONS[quantization][1]
    if qtype == Q.Q4_0 and gguf_name.startswith(("token_embd.", "output.")):
        qtype = Q.Q8_0
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    return qtype if shape[-1] % block == 0 else Q.F16


def _name_map(arch: gguf.MODEL_ARCH, config) -> Callable[[str], str]:
    names = gguf.get_tensor_name_map(arch, config.num_hidden_layers)

    def gguf_name(hf_name: str) -> str:
        mapped = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            raise UserError(f"The model's layer '{hf_name}' has no name in the GGUF format for "
                            f"{gguf.MODEL_ARCH_NAMES[arch]}; it cannot be exported yet.")
        return mapped
    return gguf_name


def _model_plan(model, fam: Family, quantization: str) -> list[Planned]:
    config = model.config
    gguf_name = _name_map(fam.arch, config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    plan = []
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp uses token_embd when there is no output layer
        heads = _heads(config, hf_name) if fam.permute_qk else None
        name = gguf_name(hf_name)
        make = (lambda t=tensor, h=heads: permute(t, h)) if heads else (lambda t=tensor: t)
        plan.append(Planned(name, tuple(tensor.shape), _tensor_type(name, tuple(tensor.shape), quantization), make))
    if _rope_type(config) == "llama3":
        factors = llama3_rope_factors(config)
        plan.append(Planned(gguf.TENSOR_NAMES[gguf.MODEL_TENSOR.ROPE_FREQS] + ".weight", tuple(factors.shape), Q.F32,
                            lambda: factors))
    return plan


def model_bytes(model, quantization: str) -> int:
    """About how many bytes the model's GGUF takes at this quantization (for the disk check)."""
    return int(sum(p.numel() for p in model.parameters()) * BYTES_PER_WEIGHT[quantization]) + 2**20


# ---- writing ---------------------------------------------------------------------------------------------------

def _write(writer: gguf.GGUFWriter, path: Path, plan: list[Planned], progress: Progress, start: float,
           end: float, what: str) -> None:
    """Write the header, the metadata, then each tensor as it is converted (progress between tensors)."""
    for item in plan:
        writer.add_tensor_info(item.name, item.shape, np.dtype(np.float32), item.nbytes(), raw_dtype=item.qtype)
    try:
        writer.write_header_to_file(path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for done, item in enumerate(plan):
            if done % 8 == 0:
                progress(start + (end - start) * done / len(plan), f"{what}: tensor {done + 1} of {len(plan)}")
            writer.write_tensor_data(item.data())
    finally:
        writer.close()


def _hyperparameters(writer: gguf.GGUFWriter, config, fam: Family) -> None:
    """The <arch>.* keys as llama.cpp's TextModel/LlamaModel.set_gguf_parameters write them."""
    rope = getattr(config, "rope_parameters", None) or {}
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(getattr(config, "num_key_value_heads", None) or config.num_attention_heads)
    theta = rope.get("rope_theta", getattr(config, "rope_theta", None))
    if theta is not None:
        writer.add_rope_freq_base(float(theta))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    if fam.rope_dimensions:
        writer.add_vocab_size(config.vocab_size)
        writer.add_rope_dimension_count(getattr(config, "head_dim", None)
                                        or config.hidden_size // config.num_attention_heads)


def tokenizer_pre(tokenizer_json: dict) -> str:
    """llama.cpp's name for how a byte-level BPE tokenizer splits text before merging, or a UserError."""
    model = tokenizer_json.get("model") or {}
    pre = tokenizer_json.get("pre_tokenizer") or {}
    if model.get("type") == "BPE" and not model.get("byte_fallback"):
        if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
            return "gpt-2"
        steps = pre.get("pretokenizers") or []
        kinds = [step.get("type") for step in steps]
        if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex"):
            return "smollm"
        if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
            found = _SPLIT_PRE.get((steps[0].get("pattern") or {}).get("Regex"))
            if found:
                return found
    raise UserError("GGUF export supports byte-level BPE tokenizers (those of SmolLM2, Llama 3, Qwen2 and GPT-2) "
                    "so far; this model's tokenizer is not supported yet.")


def _vocabulary(writer: gguf.GGUFWriter, tokenizer, folder: Path, vocab_size: int,
                chat_template: str | None) -> None:
    """tokenizer.ggml.*: the tokens and their types as llama.cpp's get_vocab_base lists them, the BPE merges,
    the special token ids and the chat template (gguf.SpecialVocab reads them from the saved tokenizer)."""
    pre = tokenizer_pre(json.loads((folder / "tokenizer.json").read_text(encoding="utf-8")))
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = tokenizer.added_tokens_decoder
    tokens, types = [], []
    for index in range(vocab_size):
        if index not in by_id:
            tokens.append(f"[PAD{index}]")
            types.append(gguf.TokenType.UNUSED)
        elif index in added:
            tokens.append(added[index].content)
            types.append(gguf.TokenType.CONTROL if added[index].special else gguf.TokenType.USER_DEFINED)
        else:
            tokens.append(by_id[index])
            types.append(gguf.TokenType.NORMAL)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    special.chat_template = chat_template or special.chat_template
    special.add_to_gguf(writer, quiet=True)


def write_model(path: Path, model, tokenizer, quantization: str, name: str, chat_template: str | None,
                progress: Progress, start: float = 0.0, end: float = 1.0) -> None:
    """A GGUF of model (a transformers causal LM of a supported family) with its tokenizer and chat template."""
    import tempfile

    fam = family(model.config, name)
    file_type, _ = QUANTIZATIONS[quantization]
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[fam.arch])
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name)
    _hyperparameters(writer, model.config, fam)
    writer.add_file_type(file_type)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    with tempfile.TemporaryDirectory(prefix="lora-studio-gguf-") as tmp:
        tokenizer.save_pretrained(tmp)
        model.config.save_pretrained(tmp)  # SpecialVocab takes missing special token ids from config.json
        _vocabulary(writer, tokenizer, Path(tmp), model.config.vocab_size, chat_template)
    _write(writer, path, _model_plan(model, fam, quantization), progress, start, end, "writing the model")


# ---- a LoRA adapter -------------------------------------------------------------------------------------------

def lora_pairs(weights: dict[str, torch.Tensor]) -> Iterator[tuple[str, torch.Tensor, torch.Tensor]]:
    """(the base layer's transformers name, A, B) for each LoRA pair in peft's saved weights."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in weights.items():
        for part in ("lora_A", "lora_B"):
            if key.endswith(f".{part}.weight"):
                layer = key.removeprefix("base_model.model.").removesuffix(f".{part}.weight") + ".weight"
                pairs.setdefault(layer, {})[part] = tensor
                break
        else:
            raise UserError(f"The adapter holds '{key}', which is not a LoRA matrix (a trained head or new "
                            "embeddings); a GGUF LoRA cannot carry it. Export the merged model instead.")
    for layer, pair in pairs.items():
        if set(pair) != {"lora_A", "lora_B"}:
            raise UserError(f"The adapter's layer '{layer}' lacks one of its two LoRA matrices.")
        yield layer, pair["lora_A"], pair["lora_B"]


def lora_alpha(config: dict) -> float:
    """adapter.lora.alpha such that llama.cpp's alpha / rank is peft's scale; a UserError for what GGUF LoRA
    cannot express (DoRA, per-layer ranks or alphas, LoRA biases)."""
    if config.get("use_dora"):
        raise UserError("A DoRA adapter cannot be written as a GGUF LoRA; merge it and export the merged model.")
    if config.get("rank_pattern") or config.get("alpha_pattern") or config.get("lora_bias"):
        raise UserError("This adapter uses per-layer ranks, alphas or LoRA biases, which a GGUF LoRA cannot "
                        "express; merge it and export the merged model.")
    alpha, rank = float(config.get("lora_alpha") or 8), int(config.get("r") or 8)
    return alpha * math.sqrt(rank) if config.get("use_rslora") else alpha


def write_lora(path: Path, folder: Path, model_config, name: str, progress: Progress, start: float = 0.0,
               end: float = 1.0) -> None:
    """The GGUF LoRA of the peft adapter in folder (adapter_config.json + adapter_model.safetensors), for the base
    whose config is model_config (llama.cpp's --lora, Ollama's ADAPTER)."""
    from safetensors.torch import load_file

    fam = family(model_config, name)
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    alpha = lora_alpha(config)
    gguf_name = _name_map(fam.arch, model_config)
    tied = bool(getattr(model_config, "tie_word_embeddings", False))
    plan = []
    for layer, a, b in lora_pairs(load_file(str(folder / "adapter_model.safetensors"))):
        if layer.endswith(("embed_tokens.weight", "lm_head.weight")) and (tied or "embed" in layer):
            raise UserError("The adapter changes the embeddings, which a GGUF LoRA cannot carry here; merge it and "
                            "export the merged model.")
        heads = _heads(model_config, layer) if fam.permute_qk else None
        target = gguf_name(layer)
        plan.append(Planned(f"{target}.lora_a", tuple(a.shape), Q.F32, lambda a=a: a))
        plan.append(Planned(f"{target}.lora_b", tuple(b.shape), Q.F32,
                            (lambda b=b, h=heads: permute(b, h)) if heads else (lambda b=b: b)))
    writer = gguf.GGUFWriter(None, gguf.MODEL_ARCH_NAMES[fam.arch])
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_name(name)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _write(writer, path, plan, progress, start, end, "writing the adapter")

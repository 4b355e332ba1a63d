"""A lean forward pass for the generation engine on Llama-family models (and Qwen2: the same layers, with biases):
the same computation as the model's own forward, in fewer operations.

A decode step on a small model is short (~30 ms for SmolLM2-135M on 2 cores), and the module calls around the
products cost a real share of it; peft's per-row adapter dispatch costs ~6 ms more per step even for rows with no
adapter. This pass calls the model's own functions (its norms, rotary embedding, attention and cache) in the same
order, adds each row's LoRA exactly as peft's mixed-adapter batches do (`B(A(x)) * scaling` on that adapter's rows,
nothing for base rows), joins the products that read one input (q/k/v, gate/up) where that is measured faster
(models/kernels.py), and computes the final norm and output layer only for the positions whose logits are kept.

It declines a batch (the engine then calls the model itself) when a row's adapter needs more than plain LoRA on
the linear layers of attention and MLP: DoRA and other variants, embeddings, saved modules, trainable tokens. It
is checked against the model's own forward once, at load; a model that does not match runs as before.
"""

from __future__ import annotations

import logging
import sys

import torch
from transformers import DynamicCache
from transformers.masking_utils import create_causal_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from models import kernels

log = logging.getLogger(__name__)

FAMILIES = {"llama", "qwen2"}  # model types whose layers this pass knows (the same names and order of operations)
ROLES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}  # linear layers whose LoRA this pass adds
BASE = "__base__"
CHECK_TOLERANCE = 1e-2  # of the logits' largest magnitude: rounding passes, a wrong operation does not

# A layer's LoRA for one adapter: role -> (lora_A, lora_B, scaling)
LayerLora = dict[str, tuple[torch.nn.Module, torch.nn.Module, float]]


class LeanDecoder:
    """The engine's forward pass for one loaded Llama-family model (see the module docstring)."""

    def __init__(self, model, enabled: bool = True):
        self.model = model  # the causal LM itself; peft injects its LoRA layers into this same tree
        self.config = model.config
        inner = model.model
        self.embed, self.rotary, self.norm, self.head = inner.embed_tokens, inner.rotary_emb, inner.norm, model.lm_head
        self.layers = list(inner.layers[: self.config.num_hidden_layers])
        # The modules as loaded: peft may later wrap some of them, and a wrapper called without adapter names
        # would apply its active adapter to every row.
        self.base = [{role: getattr(getattr(layer, parent), role) for role, parent in ROLES.items()}
                     for layer in self.layers]
        self.norms = [(layer.input_layernorm, layer.post_attention_layernorm) for layer in self.layers]
        # Qwen2 names each layer's window (None: full attention); Llama has none
        self.windows = [{"sliding_window": layer.self_attn.sliding_window}
                        if hasattr(layer.self_attn, "sliding_window") else {} for layer in self.layers]
        self.qkv, qkv_bytes, qkv_unused = kernels.join([[b["q_proj"], b["k_proj"], b["v_proj"]] for b in self.base],
                                                       enabled)
        self.gate_up, mlp_bytes, mlp_unused = kernels.join([[b["gate_proj"], b["up_proj"]] for b in self.base],
                                                           enabled)
        self.extra_bytes = qkv_bytes + mlp_bytes  # for the model cache's size (less what release_unused() frees)
        self.joined = [name for name, added in (("q·k·v", qkv_bytes), ("gate·up", mlp_bytes)) if added]
        self._unused = qkv_unused + mlp_unused  # the members' own fp16 copies, freed once this pass is kept
        modeling = sys.modules[type(self.layers[0].self_attn).__module__]
        self.rotate, self.eager = modeling.apply_rotary_pos_emb, modeling.eager_attention_forward
        self._lora: dict[str, list[LayerLora] | None] = {}  # adapter -> its LoRA per layer; None: declined

    def describe(self) -> str:
        if not self.joined:
            return "lean forward pass"
        memory = f", {self.extra_bytes / 2**20:+,.0f} MB net" if self.extra_bytes else ""
        return (f"lean forward pass ({' and '.join(self.joined)} joined in one fp16 product each, in place of "
                f"their own{memory})")

    def release_unused(self) -> None:
        """Free the products the joined ones replace (once the pass is kept: until then the model needs them)."""
        self.extra_bytes -= kernels.release(self._unused)
        self._unused = []

    def forget(self) -> None:
        """Drop what was read about adapters (one was attached or the model changed)."""
        self._lora.clear()

    def forward(self, input_ids, mask, positions, cache, keep: int, adapters: list[str] | None):
        """Logits of the last `keep` positions of each row (cache grown in place), or None where a row's adapter
        needs the model's own forward."""
        groups = []
        for name in sorted(set(adapters or ()) - {BASE}):
            lora = self._adapter(name)
            if lora is None:
                return None
            rows = torch.tensor([i for i, n in enumerate(adapters) if n == name], device=input_ids.device)
            groups.append((lora, rows))
        h = self.embed(input_ids)
        causal = create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=mask, cache=cache,
                                    position_ids=positions)
        cos_sin = self.rotary(h, position_ids=positions)
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, self.eager)
        for i, layer in enumerate(self.layers):
            lora = [(tables[i], rows) for tables, rows in groups if tables[i]]
            h = self._layer(i, layer, h, causal, cos_sin, positions, cache, attention, lora)
        return self.head(self.norm(h[:, -keep:]))

    def _layer(self, i, layer, h, causal, cos_sin, positions, cache, attention, lora):
        attn, mlp, base, (input_norm, post_attention_norm) = layer.self_attn, layer.mlp, self.base[i], self.norms[i]
        batch, width, _ = h.shape
        x = input_norm(h)
        q, k, v = (_plus_lora(out, x, lora, role) for out, role in zip(self.qkv[i](x), ("q_proj", "k_proj", "v_proj")))
        shape = (batch, width, -1, attn.head_dim)
        q, k, v = (t.reshape(shape).transpose(1, 2) for t in (q, k, v))
        q, k = self.rotate(q, k, *cos_sin)
        k, v = cache.update(k, v, i)
        out, _ = attention(attn, q, k, v, causal, dropout=0.0, scaling=attn.scaling, position_ids=positions,
                           **self.windows[i])
        out = out.reshape(batch, width, -1).contiguous()
        h = h + _plus_lora(base["o_proj"](out), out, lora, "o_proj")
        x = post_attention_norm(h)
        gate, up = (_plus_lora(o, x, lora, role) for o, role in zip(self.gate_up[i](x), ("gate_proj", "up_proj")))
        y = mlp.act_fn(gate) * up
        return h + _plus_lora(base["down_proj"](y), y, lora, "down_proj")

    def _adapter(self, name: str) -> list[LayerLora] | None:
        if name not in self._lora:
            self._lora[name] = self._read_adapter(name)
        return self._lora[name]

    def _read_adapter(self, name: str) -> list[LayerLora] | None:
        """The adapter's LoRA per layer, or None where it is more than plain LoRA on the layers this pass knows."""
        where = {id(linear): (i, role) for i, base in enumerate(self.base) for role, linear in base.items()}
        tables: list[LayerLora] = [{} for _ in self.layers]
        for module in self.model.modules():
            if name not in _adapters_of(module):
                continue
            place = where.get(id(getattr(module, "base_layer", None)))
            plain = (place is not None and name in getattr(module, "lora_A", {})
                     and name not in getattr(module, "lora_variant", {}) and not module.merged
                     and not getattr(module, "lora_bias", {}).get(name, False))
            if not plain:
                log.info("adapter %s runs through the model's own forward (%s)", name, type(module).__name__)
                return None
            i, role = place
            tables[i][role] = (module.lora_A[name], module.lora_B[name], module.scaling[name])
        return tables if any(tables) else None  # an adapter the model does not hold: peft says so


def _adapters_of(module) -> set[str]:
    """The adapter names a peft layer or wrapper holds weights for."""
    names: set[str] = set()
    for attribute in (*getattr(module, "adapter_layer_names", ()), "modules_to_save"):
        held = getattr(module, attribute, None)
        if isinstance(held, (torch.nn.ModuleDict, torch.nn.ParameterDict, dict)):
            names.update(held.keys())
    return names


def _plus_lora(out: torch.Tensor, x: torch.Tensor, lora, role: str) -> torch.Tensor:
    """out with each adapter's LoRA added on its rows, as peft's mixed-adapter forward computes it."""
    for tables, rows in lora:
        if role in tables:
            lora_a, lora_b, scaling = tables[role]
            out[rows] += (lora_b(lora_a(x[rows].to(lora_a.weight.dtype))) * scaling).to(out.dtype)
    return out


def build(model, enabled: bool = True) -> LeanDecoder | None:
    """The lean forward pass for this model, if its family is known and the pass matches its own forward."""
    config = model.config
    if not enabled or getattr(config, "model_type", None) not in FAMILIES or hasattr(model, "peft_config"):
        return None
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):  # another mask per layer: not here
        return None
    try:
        decoder = LeanDecoder(model, enabled)
        with torch.inference_mode():
            matches = _matches_model(decoder)
    except Exception as error:  # a variant of the family this pass does not know: the model's own forward runs
        log.warning("lean forward pass off for %s: %s", model.config.model_type, error)
        return None
    if not matches:
        log.warning("lean forward pass off: it does not match the model's own forward")
        return None
    decoder.release_unused()
    return decoder


def _matches_model(decoder: LeanDecoder) -> bool:
    """Whether the pass gives the model's logits for two left-padded prompts and two steps after them."""
    model = decoder.model
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0)).to(model.device)
    mask = torch.ones_like(ids)
    mask[1, :5] = 0
    caches = [DynamicCache(), DynamicCache()]
    for step in range(3):
        positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
        expected = model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=caches[0],
                         use_cache=True, logits_to_keep=1).logits[:, -1:]
        got = decoder.forward(ids, mask, positions, caches[1], 1, None)
        if got.shape != expected.shape or not torch.allclose(got, expected, rtol=0,
                                                             atol=CHECK_TOLERANCE * float(expected.abs().max())):
            return False
        ids = expected.argmax(-1)
        mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
    return True

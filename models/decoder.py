"""A lean forward pass for the generation engine on Llama-family models (and Qwen2: the same layers, with biases):
the same computation as the model's own forward, in fewer operations.

A decode step on a small model is short, and the module calls around the products cost a real share of it;
peft's per-row adapter dispatch costs more per step even for rows with no adapter (bench/README has the figures).
This pass runs the model's own arithmetic, bit for bit, in fewer operations: its norms without the module
calls (one fused call in fp32), the rotary embedding of q's and k's heads at once, its attention function, the
cache grown into reserved room. It joins the products that read one input (q/k/v, gate/up) where that is measured
faster (models/kernels.py), and computes the final norm and output layer only for the positions whose logits are
kept. Each row's LoRA is what peft's mixed-adapter batches add (`B(A(x)) * scaling` on that adapter's rows, nothing
for base rows), up to the order of float sums: one pair of products per adapter for all the roles that read one
input, instead of two per role.

It declines a batch (the engine then calls the model itself) when a row's adapter needs more than plain LoRA on
the linear layers of attention and MLP: DoRA and other variants, embeddings, saved modules, trainable tokens. It
is checked against the model's own forward once, at load; a model that does not match runs as before.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from models import kernels, lazy
from models.lora import PEFT_BASE

torch = lazy.module("torch")
functional = lazy.module("torch.nn.functional")
DynamicCache = lazy.attribute("transformers", "DynamicCache")
cache_utils = lazy.module("transformers.cache_utils")  # its DynamicLayer is compared by identity
create_causal_mask = lazy.attribute("transformers.masking_utils", "create_causal_mask")
ALL_ATTENTION_FUNCTIONS = lazy.attribute("transformers.modeling_utils", "ALL_ATTENTION_FUNCTIONS")

log = logging.getLogger(__name__)

FAMILIES = {"llama", "qwen2"}  # model types whose layers this pass knows (the same names and order of operations)
ROLES = {"q_proj": "self_attn", "k_proj": "self_attn", "v_proj": "self_attn", "o_proj": "self_attn",
         "gate_proj": "mlp", "up_proj": "mlp", "down_proj": "mlp"}  # linear layers whose LoRA this pass adds
ROOM = 64  # cache columns reserved ahead at a time (at least; a quarter of the length for long ones)
CHECK_TOLERANCE = 1e-2  # of the logits' largest magnitude: rounding passes, a wrong operation does not

# The products each LoRA pair joins: the roles that read one input, whose outputs lie side by side in the pass
PRODUCTS = {"qkv": ("q_proj", "k_proj", "v_proj"), "o_proj": ("o_proj",), "gate_up": ("gate_proj", "up_proj"),
            "down_proj": ("down_proj",)}
# A layer's LoRA for one adapter: product -> (its roles' lora_A side by side, their lora_B × scaling, each on its
# own rows and columns, zero elsewhere): x·Aᵀ·Bᵀ is every role's B(A(x))·scaling at once, in the product's layout
LayerLora = dict[str, tuple["torch.Tensor", "torch.Tensor"]]


class LeanDecoder:
    """The engine's forward pass for one loaded Llama-family model (see the module docstring)."""

    def __init__(self, model, enabled: bool = True, measured: kernels.Measured | None = None):
        self.model = model  # the causal LM itself; peft injects its LoRA layers into this same tree
        self.config = model.config
        inner = model.model
        self.embed, self.rotary, self.head = inner.embed_tokens, inner.rotary_emb, model.lm_head
        self.layers = list(inner.layers[: self.config.num_hidden_layers])
        # The modules as loaded: peft may later wrap some of them, and a wrapper called without adapter names
        # would apply its active adapter to every row.
        self.base = [{role: getattr(getattr(layer, parent), role) for role, parent in ROLES.items()}
                     for layer in self.layers]
        self.norms = [(_norm(layer.input_layernorm), _norm(layer.post_attention_layernorm)) for layer in self.layers]
        self.final_norm = _norm(inner.norm)
        self.activations = [_called(layer.mlp.act_fn) for layer in self.layers]
        # Qwen2 names each layer's window (None: full attention); Llama has none
        self.windows = [{"sliding_window": layer.self_attn.sliding_window}
                        if hasattr(layer.self_attn, "sliding_window") else {} for layer in self.layers]
        self.mlp_sizes = [[b["gate_proj"].out_features, b["up_proj"].out_features] for b in self.base]
        self.head_counts = [(b["q_proj"].out_features // layer.self_attn.head_dim,
                             b["k_proj"].out_features // layer.self_attn.head_dim)
                            for b, layer in zip(self.base, self.layers)]
        self.qkv, qkv_bytes, qkv_unused = kernels.join([[b["q_proj"], b["k_proj"], b["v_proj"]] for b in self.base],
                                                       enabled, measured)
        self.gate_up, mlp_bytes, mlp_unused = kernels.join([[b["gate_proj"], b["up_proj"]] for b in self.base],
                                                           enabled, measured)
        self.extra_bytes = qkv_bytes + mlp_bytes  # for the model cache's size (less what release_unused() frees)
        self.joined = [name for name, added in (("q·k·v", qkv_bytes), ("gate·up", mlp_bytes)) if added]
        self._unused = qkv_unused + mlp_unused  # the members' own fp16 copies, freed once this pass is kept
        modeling = sys.modules[type(self.layers[0].self_attn).__module__]
        self.eager = modeling.eager_attention_forward
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
        for name in sorted(set(adapters or ()) - {PEFT_BASE}):
            lora = self._adapter(name)
            if lora is None:
                return None
            groups.append((lora, _rows([i for i, n in enumerate(adapters) if n == name], input_ids.device)))
        h = self.embed(input_ids)
        causal = create_causal_mask(config=self.config, inputs_embeds=h, attention_mask=mask, cache=cache,
                                    position_ids=positions)
        rotary = _rotary(*self.rotary(h, position_ids=positions))
        attention = ALL_ATTENTION_FUNCTIONS.get_interface(self.config._attn_implementation, self.eager)
        for i, layer in enumerate(self.layers):
            lora = [(tables[i], rows) for tables, rows in groups if tables[i]]
            h = self._layer(i, layer, h, causal, rotary, positions, cache, attention, lora)
        return self.head(self.final_norm(h[:, -keep:]))

    def _layer(self, i, layer, h, causal, rotary, positions, cache, attention, lora):
        attn, base, (input_norm, post_attention_norm) = layer.self_attn, self.base[i], self.norms[i]
        batch, width, _ = h.shape
        x = input_norm(h)
        qkv = _plus_lora(self.qkv[i](x), x, lora, "qkv")  # q, k and v side by side: their heads in one tensor
        heads = qkv.view(batch, width, -1, attn.head_dim).transpose(1, 2)
        q_heads, kv_heads = self.head_counts[i]
        qk = _rotated(heads[:, :q_heads + kv_heads], *rotary)  # the rotary embedding, of q's and k's heads at once
        k, v = _append(cache, i, qk[:, q_heads:], heads[:, q_heads + kv_heads:])
        out, _ = attention(attn, qk[:, :q_heads], k, v, causal, dropout=0.0, scaling=attn.scaling,
                           position_ids=positions, **self.windows[i])
        out = out.reshape(batch, width, -1).contiguous()
        h = h + _plus_lora(base["o_proj"].forward(out), out, lora, "o_proj")
        x = post_attention_norm(h)
        gate, up = _plus_lora(self.gate_up[i](x), x, lora, "gate_up").split(self.mlp_sizes[i], dim=-1)
        y = self.activations[i](gate) * up
        return h + _plus_lora(base["down_proj"].forward(y), y, lora, "down_proj")

    def _adapter(self, name: str) -> list[LayerLora] | None:
        if name not in self._lora:
            self._lora[name] = self._read_adapter(name)
        return self._lora[name]

    def _read_adapter(self, name: str) -> list[LayerLora] | None:
        """The adapter's LoRA per layer, or None where it is more than plain LoRA on the layers this pass knows."""
        where = {id(linear): (i, role) for i, base in enumerate(self.base) for role, linear in base.items()}
        found: list[dict[str, tuple]] = [{} for _ in self.layers]  # role -> (lora_A, lora_B, scaling)
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
            found[i][role] = (module.lora_A[name].weight, module.lora_B[name].weight, module.scaling[name])
        if not any(found):
            return None  # an adapter the model does not hold: peft says so
        return [{product: _joined_lora([found[i].get(role) for role in roles], [base[r].out_features for r in roles])
                 for product, roles in PRODUCTS.items() if any(role in found[i] for role in roles)}
                for i, base in enumerate(self.base)]


def _joined_lora(pairs: list[tuple | None], widths: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """One product's LoRA (see LayerLora) from its roles' (lora_A, lora_B, scaling), None for a role without."""
    present = [pair for pair in pairs if pair is not None]
    joined_a = torch.cat([a.detach() for a, _, _ in present])
    joined_b = joined_a.new_zeros(sum(widths), joined_a.shape[0])
    row = column = 0
    for pair, width in zip(pairs, widths):
        if pair is not None:
            _, b, scaling = pair
            joined_b[row:row + width, column:column + b.shape[1]] = b.detach() * scaling
            column += b.shape[1]
        row += width
    return joined_a, joined_b.to(present[0][1].dtype)


def _norm(module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The RMS norm's own operations without the module call around them (for the norms known here), else the
    module itself."""
    if type(module).__name__ not in ("LlamaRMSNorm", "Qwen2RMSNorm"):
        return module
    weight, epsilon = module.weight, module.variance_epsilon
    shape = tuple(weight.shape)

    def norm(h: torch.Tensor) -> torch.Tensor:  # LlamaRMSNorm.forward
        if h.dtype == torch.float32 == weight.dtype:  # the same operations in one call (no casts to make)
            return functional.rms_norm(h, shape, weight, epsilon)
        dtype = h.dtype
        h = h.to(torch.float32)
        return weight * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + epsilon)).to(dtype)
    return norm


def _rotary(cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin over the heads, sin's first half negated: what _rotated() multiplies by."""
    half = sin.shape[-1] // 2
    return cos.unsqueeze(1), torch.cat((-sin[..., :half], sin[..., half:]), dim=-1).unsqueeze(1)


def _rotated(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """apply_rotary_pos_emb's `x * cos + rotate_half(x) * sin` in fewer operations, bit for bit: rotate_half(x) is
    x rolled by half its width with the first half negated, and the negation moves exactly onto sin."""
    return x * cos + torch.roll(x, x.shape[-1] // 2, dims=-1) * signed_sin


def _called(module) -> Callable[[torch.Tensor], torch.Tensor]:
    """The module's forward, without the hooks machinery of a module call (the pass registers none)."""
    return module.forward if not (module._forward_hooks or module._forward_pre_hooks) else module


def _append(cache, i: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cache.update(keys, values, i) without copying the whole cache at each step.

    A DynamicLayer grows by torch.cat, which copies every cached column per step, a cost that grows with the rows
    and the columns (bench/README). Here the layer's tensors are views into storage with room
    to spare; a step writes its columns into the room. Whatever replaced the views since (the engine crops,
    selects rows, rebuilds caches; the model's own forward concatenates) is noticed and copied once."""
    layer = cache.layers[i] if i < len(cache.layers) else None
    if (type(layer) is not cache_utils.DynamicLayer or not layer.is_initialized or layer.keys.numel() == 0
            or getattr(cache, "offloading", False)):
        return cache.update(keys, values, i)
    length, new = layer.keys.shape[-2], keys.shape[-2]
    room = layer.__dict__.get("room")
    if room is None or not all(_view_of(t, s) for t, s in zip((layer.keys, layer.values), room)) \
            or length + new > room[0].shape[-2]:
        capacity = length + new + max(ROOM, length // 4)
        room = tuple(t.new_empty((*t.shape[:2], capacity, t.shape[-1])) for t in (layer.keys, layer.values))
        room[0][..., :length, :], room[1][..., :length, :] = layer.keys, layer.values
        layer.room = room
    room[0][..., length:length + new, :], room[1][..., length:length + new, :] = keys, values
    layer.keys, layer.values = room[0][..., :length + new, :], room[1][..., :length + new, :]
    return layer.keys, layer.values


def _view_of(tensor: torch.Tensor, storage: torch.Tensor) -> bool:
    """Whether tensor is the leading columns of storage (as _append left it, or cropped since)."""
    return (tensor.data_ptr() == storage.data_ptr() and tensor.stride() == storage.stride()
            and tensor.shape[:2] == storage.shape[:2])


def _adapters_of(module) -> set[str]:
    """The adapter names a peft layer or wrapper holds weights for."""
    names: set[str] = set()
    for attribute in (*getattr(module, "adapter_layer_names", ()), "modules_to_save"):
        held = getattr(module, attribute, None)
        if isinstance(held, (torch.nn.ModuleDict, torch.nn.ParameterDict, dict)):
            names.update(held.keys())
    return names


def _rows(index: list[int], device) -> slice | torch.Tensor:
    """The rows of one adapter: a slice where they follow each other (a view: no copy), else their indices."""
    if index == list(range(index[0], index[-1] + 1)):
        return slice(index[0], index[-1] + 1)
    return torch.tensor(index, device=device)


def _plus_lora(out: torch.Tensor, x: torch.Tensor, lora, product: str) -> torch.Tensor:
    """out with each adapter's LoRA added on its rows, in place: what peft's mixed-adapter forward adds
    (`B(A(x[rows])) * scaling` for each role), up to the order of float sums; nothing for base rows."""
    for tables, rows in lora:
        if product not in tables:
            continue
        joined_a, joined_b = tables[product]
        if isinstance(rows, slice):
            delta = functional.linear(functional.linear(x[rows].to(joined_a.dtype), joined_a), joined_b)
            out[rows] += delta.to(out.dtype)
        else:
            delta = functional.linear(functional.linear(x.index_select(0, rows).to(joined_a.dtype), joined_a),
                                      joined_b)
            out.index_add_(0, rows, delta.to(out.dtype))
    return out


def build(model, enabled: bool = True, measured: kernels.Measured | None = None) -> LeanDecoder | None:
    """The lean forward pass for this model, if its family is known and the pass matches its own forward."""
    config = model.config
    if not enabled or getattr(config, "model_type", None) not in FAMILIES or hasattr(model, "peft_config"):
        return None
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):  # another mask per layer: not here
        return None
    try:
        decoder = LeanDecoder(model, enabled, measured)
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

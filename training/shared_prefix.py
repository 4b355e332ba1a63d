"""Rows of a batch that begin with the same tokens run them once.

A chat template's system prompt is the same work in every row (SmolLM2's adds 24 tokens to each row that has
none; a run's own system prompt and the summary and translation prompts add more). The model runs those tokens
once, and each row's own tokens read their keys and values from the cache, as generation reads a prompt's. The
states are the same as the rows' own: a causal model never lets a shared position see the tokens after it.
"""

from __future__ import annotations

import contextlib
import functools
import weakref

from models import lazy
from training.trainer import evaluating

torch = lazy.module("torch")

MIN_SHARED = 8  # fewer shared tokens save less than a second pass through the layers costs
ATTENTION = "lora_studio_after_prefix"  # the attention implementation the rows' own tokens run with
_agreed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> whether sharing gave its own states


def shared_length(base, input_ids: torch.Tensor, learned: torch.Tensor) -> int:
    """How many leading tokens every row of a right-padded batch shares and can run once, or 0.

    `learned[row, i]` says whether position i's next token is learned: the shared part stops before the first
    one, so the loss never needs a state from it."""
    if len(input_ids) < 2 or not _supports(base, input_ids.shape[1]):
        return 0
    same = int((input_ids == input_ids[:1]).all(0).long().cumprod(0).sum())
    first_learned = torch.where(learned.any(1), learned.long().argmax(1), learned.shape[1]).min()
    length = min(same, int(first_learned), input_ids.shape[1] - 1)
    return length if length >= MIN_SHARED and _agrees(base, input_ids, length) else 0


def _supports(base, width: int) -> bool:
    """Plain causal attention through torch's kernel, every row reaching back to its first token."""
    config = base.config
    window = getattr(config, "sliding_window", None)
    checkpointing = getattr(base, "is_gradient_checkpointing", False)  # it turns the cache off
    beyond_window = bool(window) and width > window
    return getattr(config, "_attn_implementation", None) == "sdpa" and not checkpointing and not beyond_window


def _agrees(base, input_ids: torch.Tensor, length: int) -> bool:
    """Whether running the shared tokens once gives the model's own states, checked on its first shared batch:
    a model whose attention bypasses transformers' registry would read the cache without a causal mask."""
    if base not in _agreed:
        with evaluating(base), torch.autocast(input_ids.device.type, enabled=False):
            shared = hidden_after(base, input_ids, length)
            plain = base.base_model(input_ids=input_ids, use_cache=False).last_hidden_state[:, length:]
        tolerance = 1e-4 if plain.dtype == torch.float32 else 1e-2  # bf16 weights round at the third digit
        _agreed[base] = bool((shared - plain).abs().max() <= tolerance * plain.abs().max())
    return _agreed[base]


def hidden_after(base, input_ids: torch.Tensor, length: int) -> torch.Tensor:
    """The last hidden states of input_ids[:, length:], its first `length` tokens (the same in every row) run
    once: [rows, width - length, hidden]."""
    from transformers import DynamicCache

    cache = DynamicCache(config=base.config)
    base.base_model(input_ids=input_ids[:1, :length], cache=cache, use_cache=True)
    cache.batch_repeat_interleave(len(input_ids))  # differentiable: the rows' gradients sum into the shared run
    with _attention(base.config, _registered()):
        return base.base_model(input_ids=input_ids[:, length:], cache=cache, use_cache=True).last_hidden_state


@functools.cache
def _registered() -> str:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTENTION, _after_prefix)
    return ATTENTION


def _after_prefix(module, query, key, value, attention_mask, **kwargs):
    """Causal attention for queries that come after the cached ones: [rows, heads, new, dim] queries over
    [rows, heads, cached + new, dim] keys. torch's causal kernel aligns queries with the first key, so the
    queries are led by zeros for the cached positions, and their outputs dropped."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    cached = key.shape[2] - query.shape[2]
    kwargs.pop("is_causal", None)
    leading = query.new_zeros(*query.shape[:2], cached, query.shape[3])
    output, _ = sdpa_attention_forward(module, torch.cat([leading, query], 2), key, value, None, is_causal=True,
                                       **kwargs)
    return output[:, cached:], None


@contextlib.contextmanager
def _attention(config, implementation: str):
    """The model's attention layers run `implementation` inside the block."""
    before = config._attn_implementation
    config._attn_implementation = implementation
    try:
        yield
    finally:
        config._attn_implementation = before

"""The engine's lean forward pass: the model's own logits in fewer operations, each row's LoRA added as peft adds
it, and the model's own forward wherever the pass does not apply."""

import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, DynamicCache

from adapters_kit import plain_lora, plain_peft_greedy
from models import decoder as decoder_module
from models import kernels
from models.lora import PEFT_BASE as BASE
from models.engine import SamplingParams
from models.loading import decoding
from models.lora import attach

ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def loaded(folder) -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()


def with_adapters(model, **second_options):
    """peft on the model (in place, as attaching does) with a random adapter 'every' (every linear layer) and, given
    options, 'other' (q and down, changed by `second_options`)."""
    torch.manual_seed(1)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=16, target_modules=list(ALL_LINEAR),
                                                  init_lora_weights=False), adapter_name="every")
    if second_options:
        options = {"target_modules": ["q_proj", "down_proj"], **second_options}
        peft_model.add_adapter("other", LoraConfig(r=2, lora_alpha=8, init_lora_weights=False, **options))
    return peft_model.eval()


def models_logits(model, adapters: list[str] | None):
    """A forward function through the model itself (peft's per-row adapters where given)."""
    kwargs = {"adapter_names": adapters} if adapters else {}

    def forward(ids, mask, positions, cache, keep):
        return model(input_ids=ids, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True,
                     logits_to_keep=keep, **kwargs).logits
    return forward


def lean_logits(lean, adapters: list[str] | None):
    return lambda ids, mask, positions, cache, keep: lean.forward(ids, mask, positions, cache, keep, adapters)


def logits_of(forward, rows: int, vocab: int, steps: int = 3) -> list[torch.Tensor]:
    """The logits of a left-padded prefill (2 positions kept), then of single steps on fixed tokens."""
    tokens = torch.randint(0, vocab, (rows, 9 + steps), generator=torch.Generator().manual_seed(0))
    ids, mask, cache, out = tokens[:, :9], torch.ones(rows, 9, dtype=torch.long), DynamicCache(), []
    mask[0, :4] = 0
    with torch.inference_mode():
        for step in range(steps):
            positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, -ids.shape[1]:]
            out.append(forward(ids, mask, positions, cache, 2 if step == 0 else 1))
            ids = tokens[:, 9 + step:10 + step]
            mask = torch.cat([mask, torch.ones_like(ids)], dim=1)
    return out


def assert_close(got: list[torch.Tensor], expected: list[torch.Tensor]) -> None:
    """Equal up to the order of fp32 sums, at the logits' own scale: AVX2 and AVX-512 kernels sum in other orders
    (seen: 1.7e-5 apart at magnitude 11 on an AVX2-only machine), while a LoRA added wrongly moves logits by ~0.1."""
    for g, e in zip(got, expected, strict=True):
        assert g.shape == e.shape and torch.allclose(g, e, rtol=0, atol=5e-6 * max(1.0, float(e.abs().max())))


def tiny_qwen2(**options) -> torch.nn.Module:
    """A 2-layer Qwen2 with random weights (q, k and v with biases)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, **options)
    return Qwen2ForCausalLM(config).eval()


@pytest.mark.parametrize("family", ["llama", "qwen2"])
def test_the_lean_pass_gives_the_models_own_logits(tiny_chat_dir, family):
    model = loaded(tiny_chat_dir) if family == "llama" else tiny_qwen2()
    lean = decoder_module.build(model)
    assert lean is not None
    vocab = model.config.vocab_size
    got, expected = logits_of(lean_logits(lean, None), 2, vocab), logits_of(models_logits(model, None), 2, vocab)
    assert all(torch.equal(g, e) for g, e in zip(got, expected, strict=True))  # the same operations, bit for bit


def test_each_rows_lora_is_added_as_peft_adds_it(tiny_chat_dir):
    model = loaded(tiny_chat_dir)
    lean = decoder_module.build(model)  # built on the plain model, before peft wraps it (as the app loads)
    peft_model = with_adapters(model, use_rslora=True)
    adapters = [BASE, "every", "other", "every"]
    expected = logits_of(models_logits(peft_model, adapters), 4, model.config.vocab_size)
    assert_close(logits_of(lean_logits(lean, adapters), 4, model.config.vocab_size), expected)
    assert not torch.allclose(expected[-1][0], expected[-1][1], atol=1e-3)  # LoRA changes the logits: a test that
    assert not torch.allclose(expected[-1][1], expected[-1][2], atol=1e-3)  # can tell a missing or a wrong one


@pytest.mark.parametrize("options", [{"use_dora": True}, {"modules_to_save": ["lm_head"]},
                                     {"modules_to_save": ["post_attention_layernorm"]},
                                     {"target_modules": ["embed_tokens", "q_proj"]}],
                         ids=["dora", "saved-head", "saved-norm", "embeddings"])
def test_an_adapter_beyond_plain_lora_is_declined_and_others_still_run(tiny_chat_dir, options):
    model = loaded(tiny_chat_dir)
    lean = decoder_module.build(model)
    vocab = model.config.vocab_size
    peft_model = with_adapters(model)
    expected = logits_of(models_logits(peft_model, [BASE, "every"]), 2, vocab)
    torch.manual_seed(2)
    peft_model.add_adapter("other", LoraConfig(r=2, init_lora_weights=False,
                                               **{"target_modules": ["q_proj", "down_proj"], **options}))
    with torch.no_grad():  # saved modules start as copies: make them differ, as training would
        for module in peft_model.modules():
            if "other" in (getattr(module, "modules_to_save", None) or {}):
                [weight.mul_(1.5) for weight in module.modules_to_save["other"].parameters()]
    peft_model.set_adapter("other")  # the active adapter: what its wrappers apply to rows given no adapter names
    lean.forget()  # as the engine does after attaching
    ids = torch.tensor([[5, 6, 7], [8, 9, 10]])
    mask = torch.ones_like(ids)
    with torch.inference_mode():
        for declined in ("other", "missing"):  # peft's forward runs it, or says the adapter is missing
            assert lean.forward(ids, mask, mask.cumsum(-1) - 1, DynamicCache(), 1, [BASE, declined]) is None
    assert_close(logits_of(lean_logits(lean, [BASE, "every"]), 2, vocab), expected)  # 'other' sits beside


def test_engine_answers_with_the_lean_pass_are_generates(ctx, tiny_chat_dir, tmp_path):
    lm = ctx.hub.lm(str(tiny_chat_dir))
    assert lm.engine.decoder is not None and "lean forward pass" in decoding(lm)
    folders = {"every-layer": plain_lora(tiny_chat_dir, tmp_path / "every", seed=1, targets=ALL_LINEAR),
               "embeddings": plain_lora(tiny_chat_dir, tmp_path / "embeddings", seed=2,
                                        targets=("embed_tokens", "q_proj"))}  # declined: through peft
    for key, folder in folders.items():
        attach(lm, key, str(folder))
    texts = ["one two three four one two three four one two", "The cat sat on the mat. The cat sat on the",
             "Hello"]
    cases = [(lm.tokenizer(text)["input_ids"], adapter) for text in texts for adapter in (None, *folders)]
    expected = [plain_peft_greedy(tiny_chat_dir, folders.get(adapter), prompt, 16) for prompt, adapter in cases]
    assert len({tuple(e) for e in expected}) > len(texts)  # the adapters change answers
    results = [None] * len(cases)

    def run(i):
        prompt, adapter = cases[i]
        results[i] = list(lm.generate(prompt, SamplingParams(16, temperature=0), adapter).token_ids())

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(cases))]  # rows of each kind mixed
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert results == expected


def test_the_pass_is_off_where_it_does_not_apply_or_does_not_match(tiny_chat_dir, tiny_gpt2_dir, monkeypatch):
    assert decoder_module.build(loaded(tiny_gpt2_dir)) is None  # a family it does not know
    sliding = tiny_qwen2(use_sliding_window=True, sliding_window=4, max_window_layers=1)
    assert "sliding_attention" in sliding.config.layer_types
    assert decoder_module.build(sliding) is None  # a window on some layers: their mask is not the pass's
    assert decoder_module.build(loaded(tiny_chat_dir), enabled=False) is None  # --decode-kernels plain
    monkeypatch.setattr(decoder_module.LeanDecoder, "_layer", lambda self, i, layer, h, *rest: h)  # a wrong pass
    assert decoder_module.build(loaded(tiny_chat_dir)) is None


def test_joined_products_replace_the_members_own_only_once_the_pass_is_kept(tiny_chat_dir, monkeypatch):
    monkeypatch.setattr(kernels, "WORTH_MEASURING", 0)  # measured as a big model would be: fp16 wins everywhere
    monkeypatch.setattr(kernels, "_milliseconds",
                        lambda products, width, counts=(): 1.0 if "_prepare_fp16" in products[0].__qualname__ else 9.)

    def members(model) -> list[torch.nn.Linear]:
        return [getattr(getattr(layer, parent), role) for layer in model.model.layers
                for role, parent in decoder_module.ROLES.items() if role not in ("o_proj", "down_proj")]

    refused = loaded(tiny_chat_dir)
    kernels.tune(refused)
    with monkeypatch.context() as patched:
        patched.setattr(decoder_module.LeanDecoder, "_layer", lambda self, i, layer, h, *rest: h)  # a wrong pass
        assert decoder_module.build(refused) is None
    assert all("forward" in vars(layer) for layer in members(refused))  # their own fp16 products stay

    model = loaded(tiny_chat_dir)
    kernels.tune(model)
    lean = decoder_module.build(model)
    assert lean.joined == ["q·k·v", "gate·up"] and lean.extra_bytes == 0  # one fp16 copy instead of another
    assert "joined in one fp16 product each, in place of their own" in lean.describe()
    assert all("forward" not in vars(layer) for layer in members(model))
    vocab = model.config.vocab_size
    for got, expected in zip(logits_of(lean_logits(lean, None), 2, vocab), logits_of(models_logits(model, None), 2,
                                                                                       vocab)):
        assert torch.allclose(got, expected, atol=1e-2 * float(expected.abs().max()))  # fp16 weights' rounding


def test_the_cache_grows_into_room_and_keeps_what_the_engine_changed():
    """_append gives what DynamicCache.update gives, through crops, row selections and rebuilt caches."""
    torch.manual_seed(0)
    ours, theirs = DynamicCache(), DynamicCache()

    def step(width: int, rows: int = 3) -> None:
        keys, values = torch.randn(rows, 2, width, 4), torch.randn(rows, 2, width, 4)
        got, expected = decoder_module._append(ours, 0, keys, values), theirs.update(keys, values, 0)
        assert all(torch.equal(g, e) for g, e in zip(got, expected))

    step(5)  # a prefill
    for _ in range(decoder_module.ROOM + 10):  # past the first room: it grows
        step(1)
    storage = ours.layers[0].room[0]
    step(3)  # a step with a draft, of which the engine keeps one token
    for cache in (ours, theirs):
        cache.crop(-2)
    step(1)
    assert ours.layers[0].room[0] is storage  # written into the room, over the rejected columns
    for cache in (ours, theirs):
        cache.batch_select_indices(torch.tensor([0, 2]))  # a row left
    step(2, rows=2)
    ours, theirs = (DynamicCache([(k[..., 1:, :], v[..., 1:, :]) for k, v, *_ in c]) for c in (ours, theirs))
    step(1, rows=2)  # a rebuilt cache (left-trimmed, merged)
    assert all(torch.equal(a, b) for a, b in zip(next(iter(ours))[:2], next(iter(theirs))[:2]))

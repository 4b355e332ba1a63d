"""The decode products of linear layers: measured at load, the library's outputs up to rounding, safe fallbacks."""

import pytest
import torch

from config import Settings
from models import kernels
from models.loading import ModelHub


class Head(torch.nn.Module):
    """The smallest model with an output layer big enough to be measured."""

    def __init__(self, vocab=8192, hidden=512, bias=False):
        super().__init__()
        self.out = torch.nn.Linear(hidden, vocab, bias=bias)

    def get_output_embeddings(self):
        return self.out


def forced(monkeypatch, name: str, prompts: bool = False) -> None:
    """As if the measurement had found `name` fastest for every shape (and for prompts too, if `prompts`)."""
    monkeypatch.setattr(kernels, "_fastest",
                        lambda group: (name, [kernels.PRODUCTS[name](layer) for layer in group], prompts))


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("name, tolerance", [("W·xᵀ", 1e-4), ("fp16 weights", 2e-2)])
def test_each_product_gives_the_librarys_outputs(monkeypatch, bias, name, tolerance):
    model = Head(bias=bias)
    forced(monkeypatch, name)
    choice = kernels.tune(model)
    assert f"{name} for 1 layer" in choice.text
    assert choice.extra_bytes == (model.out.weight.numel() * 2 if name == "fp16 weights" else 0)
    with torch.inference_mode():
        for shape in [(1, 512), (3, 512), (2, 5, 512), (kernels.FEW_ROWS + 1, 512)]:
            x = torch.randn(*shape)
            expected = torch.nn.functional.linear(x, model.out.weight, model.out.bias)
            got = model.out(x)
            assert got.shape == expected.shape and torch.allclose(got, expected, atol=tolerance)
            if shape[0] > kernels.FEW_ROWS:  # a prompt's many rows keep the library's product exactly
                assert torch.equal(got, expected)
    x = torch.randn(2, 512, requires_grad=True)
    out = model.out(x)  # training still goes through the library's own product and the fp32 weights
    assert torch.equal(out, torch.nn.functional.linear(x, model.out.weight, model.out.bias))
    out.sum().backward()
    assert x.grad is not None


def test_fp16_copies_change_a_decode_step_only_by_the_weights_rounding(monkeypatch):
    model = Head()
    forced(monkeypatch, "fp16 weights")
    kernels.tune(model)
    x = torch.randn(4, 512)
    with torch.inference_mode():
        rounded = torch.nn.functional.linear(x, model.out.weight.half().float())
        exact = torch.nn.functional.linear(x, model.out.weight)
        got = model.out(x)
    assert (got - rounded).abs().max() < 0.1 * (exact - rounded).abs().max() + 1e-5


def test_the_library_stays_when_nothing_is_clearly_faster(monkeypatch):
    model = Head()
    monkeypatch.setattr(kernels, "_milliseconds", lambda products, width, counts=(): 1.0)  # all equally fast
    assert kernels.tune(model).text == "library products (measured fastest)"
    assert "forward" not in vars(model.out)


def test_a_product_this_machine_cannot_run_is_not_a_candidate(monkeypatch):
    def unavailable(layer):
        raise RuntimeError("fbgemm is not available")

    monkeypatch.setattr(kernels, "PRODUCTS", {"fp16 weights": unavailable})
    model = Head()
    assert kernels.tune(model).text == "library products (measured fastest)"
    assert "forward" not in vars(model.out)
    with torch.inference_mode():
        assert model.out(torch.randn(1, 512)).shape == (1, 8192)


def test_weights_beyond_fp16s_range_keep_fp32():
    layer = Head().out
    with torch.no_grad():
        layer.weight[0, 0] = 1e6
    with pytest.raises(RuntimeError, match="fp16"):
        kernels.PRODUCTS["fp16 weights"](layer)


def test_small_bf16_unusual_or_plain_models_are_left_alone():
    assert "small" in kernels.tune(Head(vocab=64, hidden=32)).text
    assert kernels.tune(torch.nn.Module()).text.startswith("library products")
    assert "fp32 weights" in kernels.tune(Head().to(torch.bfloat16)).text
    model = Head()
    assert "plain" in kernels.tune(model, enabled=False).text and "forward" not in vars(model.out)


def test_a_real_measurement_picks_a_working_product():
    model = Head()
    choice = kernels.tune(model)
    assert choice.text.startswith(("library products (measured", "measured at load"))
    with torch.inference_mode():
        x = torch.randn(1, 512)
        assert torch.allclose(model.out(x), torch.nn.functional.linear(x, model.out.weight), atol=2e-2)


def test_the_system_panel_says_how_a_model_decodes(tmp_path, tiny_gpt2_dir):
    from tasks.base import Context
    from ui.system_tab import system_report

    for speculative, said in ((True, "speculative drafts on"), (False, "speculative drafts off")):
        settings = Settings(data_dir=tmp_path / str(speculative), speculative=speculative)
        ctx = Context(settings, ModelHub(settings))
        lm = ctx.hub.lm(str(tiny_gpt2_dir))
        assert lm.engine.speculate is speculative
        report = system_report(ctx)
        assert "| decoding |" in report and said in report and "decodes fast either way" in report
        ctx.hub.cache.clear()


def test_a_product_faster_for_prompts_too_takes_them(monkeypatch):
    model = Head()
    forced(monkeypatch, "fp16 weights", prompts=True)
    assert "fp16 weights (prompts too) for 1 layer" in kernels.tune(model).text
    x = torch.randn(kernels.FEW_ROWS + 8, 512)
    with torch.inference_mode():
        got, exact = model.out(x), torch.nn.functional.linear(x, model.out.weight)
        rounded = torch.nn.functional.linear(x, model.out.weight.half().float())
    assert not torch.equal(got, exact) and torch.allclose(got, rounded, atol=1e-4)


def test_prompts_take_the_product_only_where_measured_faster_for_them(monkeypatch):
    def timed(products, width, counts=kernels.ROWS_MEASURED):  # fp16 wins decode steps, loses prompts
        fp16 = products[0].__qualname__.startswith("_prepare_fp16")
        return (1.0 if fp16 else 10.0) if counts == kernels.ROWS_MEASURED else (10.0 if fp16 else 1.0)

    monkeypatch.setattr(kernels, "PRODUCTS", {"fp16 weights": kernels._prepare_fp16})
    monkeypatch.setattr(kernels, "_milliseconds", timed)
    model = Head()
    assert kernels.tune(model).text.startswith("measured at load: fp16 weights for 1 layer")
    x = torch.randn(kernels.FEW_ROWS + 8, 512)
    with torch.inference_mode():
        assert torch.equal(model.out(x), torch.nn.functional.linear(x, model.out.weight))


class Attention(torch.nn.Module):
    """Layers that read one input, as q, k and v do, two blocks of them: big enough to be measured."""

    def __init__(self, bias=False):
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleList(torch.nn.Linear(512, width, bias=bias) for width in (2048, 1024, 1024))
            for _ in range(2))

    def groups(self) -> list[list[torch.nn.Linear]]:
        return [list(block) for block in self.blocks]


def timed_in_turn(monkeypatch, *times: float) -> None:
    """As if the measurements had taken these times, in the order join() makes them."""
    answers = iter(times)
    monkeypatch.setattr(kernels, "_milliseconds", lambda products, width, counts=(): next(answers))


@pytest.mark.parametrize("bias", [False, True])
def test_joined_layers_give_each_members_output(monkeypatch, bias):
    model = Attention(bias)
    forced(monkeypatch, "fp16 weights")
    kernels.tune(model)
    kept = sum(layer.weight.numel() * 2 for group in model.groups() for layer in group)
    timed_in_turn(monkeypatch, 1.0, 10.0, 1.0, 10.0)  # faster for decode steps and for prompts
    joined, added, unused = kernels.join(model.groups())
    layers = [layer for group in model.groups() for layer in group]
    assert added == kept and unused == layers  # one fp16 copy side by side, to replace the members' own
    assert all("forward" in vars(layer) for layer in layers)  # until the caller keeps the joined products
    assert kernels.release(unused) == kept
    assert all("forward" not in vars(layer) for layer in layers)
    with torch.inference_mode():
        for rows in (1, 4, kernels.FEW_ROWS + 8):
            x = torch.randn(rows, 512)
            for run, group in zip(joined, model.groups()):
                outputs = run(x).split([layer.out_features for layer in group], dim=-1)
                assert len(outputs) == 3
                for out, layer in zip(outputs, group):
                    rounded = torch.nn.functional.linear(x, layer.weight.half().float(), layer.bias)
                    assert out.shape == (rows, layer.out_features) and torch.allclose(out, rounded, atol=1e-4)


def test_prompts_keep_the_members_products_where_joining_is_not_faster_for_them(monkeypatch):
    model = Attention()
    timed_in_turn(monkeypatch, 1.0, 10.0, 10.0, 1.0)
    joined, added, _ = kernels.join(model.groups())
    assert added == sum(layer.weight.numel() * 2 for group in model.groups() for layer in group)
    x = torch.randn(kernels.FEW_ROWS + 1, 512)
    with torch.inference_mode():
        for out, layer in zip(joined[0](x).split([2048, 1024, 1024], dim=-1), model.groups()[0]):
            assert torch.equal(out, torch.nn.functional.linear(x, layer.weight))


@pytest.mark.parametrize("why", ["slower", "unavailable", "plain"])
def test_members_run_one_by_one_where_joining_does_not_pay_or_cannot_run(monkeypatch, why):
    model = Attention()
    forced(monkeypatch, "fp16 weights")
    kernels.tune(model)
    if why == "slower":
        timed_in_turn(monkeypatch, 10.0, 10.0)
    elif why == "unavailable":
        monkeypatch.setattr(kernels, "_prepare_fp16", lambda layer: (_ for _ in ()).throw(RuntimeError("no fbgemm")))
    joined, added, unused = kernels.join(model.groups(), enabled=why != "plain")
    assert added == 0 and unused == []
    assert all("forward" in vars(layer) for group in model.groups() for layer in group)  # their own fp16 copies
    x = torch.randn(2, 512)
    with torch.inference_mode():
        outputs = joined[1](x).split([2048, 1024, 1024], dim=-1)
        assert all(torch.equal(out, layer(x)) for out, layer in zip(outputs, model.groups()[1]))


def test_a_second_load_takes_the_products_measured_before_on_this_machine(monkeypatch, tmp_path):
    path = tmp_path / "kernels.json"
    forced(monkeypatch, "fp16 weights", prompts=True)
    model = Attention()
    first = kernels.Measured(path)
    text = kernels.tune(model, measured=first).text
    timed_in_turn(monkeypatch, 1.0, 10.0, 1.0, 10.0)  # joining is faster, for prompts too
    joined_bytes = kernels.join(model.groups(), measured=first)[1]
    first.save()

    def measured_again(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(kernels, "_fastest", measured_again)
    monkeypatch.setattr(kernels, "_milliseconds", measured_again)
    again, remembered = Attention(), kernels.Measured(path)
    assert kernels.tune(again, measured=remembered).text == text
    joined, added, unused = kernels.join(again.groups(), measured=remembered)
    assert added == joined_bytes and len(unused) == 6
    x = torch.randn(2, 512)
    with torch.inference_mode():
        for out, layer in zip(joined[0](x).split([2048, 1024, 1024], dim=-1), again.groups()[0]):
            assert torch.allclose(out, torch.nn.functional.linear(x, layer.weight.half().float()), atol=1e-4)
    monkeypatch.setattr(kernels, "machine_key", lambda: "another CPU, torch or thread count")
    with pytest.raises(AssertionError, match="measured again"):
        kernels.tune(Attention(), measured=kernels.Measured(path))


def test_a_limit_on_the_kernels_instructions_is_another_machine(monkeypatch):
    """An AVX2 limit on an AVX-512 CPU makes other products fastest: its measurements are kept apart."""
    for name in kernels.KERNEL_LIMITS:
        monkeypatch.delenv(name, raising=False)
    plain = kernels.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    limited = kernels.machine_key()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "")
    assert limited != plain and kernels.machine_key() == plain

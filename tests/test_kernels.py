"""The decode layout of the output layer: measured at load, the same logits either way, a safe fallback."""

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


@pytest.mark.parametrize("bias", [False, True])
def test_the_transposed_layout_gives_the_same_logits(monkeypatch, bias):
    model = Head(bias=bias)
    monkeypatch.setattr(kernels, "_measure", lambda head: (10.0, 1.0))  # as if W·xᵀ had won
    assert "W·xᵀ" in kernels.tune_output_layer(model)
    with torch.inference_mode():
        for shape in [(1, 512), (3, 512), (2, 5, 512), (kernels.FEW_ROWS + 1, 512)]:
            x = torch.randn(*shape)
            expected = torch.nn.functional.linear(x, model.out.weight, model.out.bias)
            got = model.out(x)
            assert got.shape == expected.shape and torch.allclose(got, expected, atol=1e-4)
    x = torch.randn(2, 512, requires_grad=True)
    model.out(x).sum().backward()  # training still goes through the library's own product
    assert x.grad is not None


def test_the_library_layout_stays_when_it_is_as_fast(monkeypatch):
    model = Head()
    monkeypatch.setattr(kernels, "_measure", lambda head: (1.0, 1.0))
    assert kernels.tune_output_layer(model).startswith("library default (measured")
    assert "forward" not in vars(model.out)


def test_a_layout_that_fails_falls_back_to_the_library(monkeypatch):
    def broken(*args):
        raise RuntimeError("mm is not available for this layout")

    monkeypatch.setattr(kernels, "_transposed", broken)
    model = Head()
    assert kernels.tune_output_layer(model) == "library default (mm is not available for this layout)"
    assert "forward" not in vars(model.out)
    with torch.inference_mode():
        assert model.out(torch.randn(1, 512)).shape == (1, 8192)


def test_small_or_unusual_output_layers_are_left_alone():
    assert "too small" in kernels.tune_output_layer(Head(vocab=64, hidden=32))
    assert kernels.tune_output_layer(torch.nn.Module()).startswith("library default")


def test_a_real_measurement_picks_a_working_layout():
    model = Head()
    choice = kernels.tune_output_layer(model)
    assert choice.startswith(("library default (measured", "output layer as W·xᵀ"))
    with torch.inference_mode():
        x = torch.randn(1, 512)
        assert torch.allclose(model.out(x), torch.nn.functional.linear(x, model.out.weight), atol=1e-4)


def test_the_system_panel_says_how_a_model_decodes(tmp_path, tiny_gpt2_dir):
    from tasks.base import Context
    from ui.system_tab import system_report

    for speculative, said in ((True, "speculative drafts on"), (False, "speculative drafts off")):
        settings = Settings(data_dir=tmp_path / str(speculative), speculative=speculative)
        ctx = Context(settings, ModelHub(settings))
        lm = ctx.hub.lm(str(tiny_gpt2_dir))
        assert lm.engine.speculate is speculative
        report = system_report(ctx)
        assert "| decoding |" in report and said in report and "output layer too small" in report
        ctx.hub.cache.clear()

"""GGUF export for llama.cpp and Ollama: a merged model written as GGUF loads back through transformers' GGUF loader
and answers as the adapter did, a quantized one loads and answers, an adapter's GGUF LoRA holds peft's matrices
in llama.cpp's order, and what cannot be exported says so in one sentence."""

from __future__ import annotations

import tempfile
import zipfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from adapters_kit import plain_lora, plain_peft_greedy, zipped
from errors import UserError
from tasks.base import Upload
from tasks.library import AdapterLibrary
from ui.i18n import localized_sentence

TARGETS = ("q_proj", "k_proj", "v_proj", "down_proj")  # q and k are reordered for llama.cpp, v and down are not
PROMPT = [{"role": "user", "content": "Tell me about the moon."}]


@pytest.fixture
def library(ctx) -> AdapterLibrary:
    return AdapterLibrary(ctx)


@pytest.fixture
def moon(library, tiny_chat_dir, tmp_path) -> Path:
    """A random plain-peft LoRA imported as the chat adapter 'moon'; returns its peft folder."""
    folder = plain_lora(tiny_chat_dir, tmp_path / "peft", targets=TARGETS)
    library.import_adapter(Upload(str(zipped(folder, tmp_path / "moon.zip")), "moon.zip"), "moon", "chat",
                           str(tiny_chat_dir))
    return folder


def unpacked(bundle: Upload, into: Path) -> Path:
    with zipfile.ZipFile(bundle.path) as archive:
        archive.extractall(into)
        (folder,) = {name.split("/")[0] for name in archive.namelist()}
    return into / folder


def prompt_ids(tokenizer) -> list[int]:
    return tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)


def gguf_greedy(folder: Path, file: str, ids: list[int], tokens: int) -> list[int]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32).eval()
    out = model.generate(torch.tensor([ids]), max_new_tokens=tokens, do_sample=False,
                         attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    return out[0, len(ids):].tolist()


def test_merged_model_as_gguf_answers_as_the_adapter(library, moon, tiny_chat_dir, tmp_path):
    from transformers import AutoTokenizer

    library.merge_adapter("moon")
    folder = unpacked(library.export_gguf("moon-merged", "f16"), tmp_path / "f16")
    assert sorted(p.name for p in folder.iterdir()) == ["Modelfile", "README.md", "moon-merged.f16.gguf"]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file="moon-merged.f16.gguf")
    ids = prompt_ids(tokenizer)
    assert ids == prompt_ids(AutoTokenizer.from_pretrained(tiny_chat_dir))  # the vocabulary and template survive
    expected = plain_peft_greedy(tiny_chat_dir, moon, ids, 10)
    assert gguf_greedy(folder, "moon-merged.f16.gguf", ids, 10) == expected
    modelfile = (folder / "Modelfile").read_text()
    assert "FROM ./moon-merged.f16.gguf" in modelfile and "ADAPTER" not in modelfile
    assert 'TEMPLATE """{{- range .Messages }}<|im_start|>{{ .Role }}' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "ollama create" in (folder / "README.md").read_text()

    # Quantized to Q8_0, the matrices are a quarter of their fp32 size, close to the weights, and it answers.
    folder = unpacked(library.export_gguf("moon-merged", "q8_0"), tmp_path / "q8")
    reader = gguf.GGUFReader(folder / "moon-merged.q8_0.gguf")
    kinds = {t.name: t.tensor_type for t in reader.tensors}
    assert kinds["blk.0.attn_v.weight"] == gguf.GGMLQuantizationType.Q8_0
    assert kinds["blk.0.attn_norm.weight"] == gguf.GGMLQuantizationType.F32 and "output.weight" not in kinds  # tied
    v = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    merged = load_file(library.adapters.merged.find("local", "moon-merged") / "model.safetensors")
    original = merged["model.layers.0.mlp.down_proj.weight"].numpy()
    error = np.abs(gguf.dequantize(v.data, v.tensor_type).reshape(original.shape) - original).max()
    assert error <= np.abs(original).max() / 100
    answer = gguf_greedy(folder, "moon-merged.q8_0.gguf", ids, 5)
    assert len(answer) == 5


def test_adapter_as_gguf_lora_holds_peft_matrices_in_llama_cpp_order(library, moon, tmp_path):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    folder = unpacked(library.export_gguf("moon", "f16"), tmp_path / "lora")
    base_file = f"{Path(library.adapters.store.meta('local', 'moon').base_model).name.lower()}.f16.gguf"
    assert {p.name for p in folder.iterdir()} == {"Modelfile", "README.md", base_file, "moon.lora.gguf"}
    modelfile = (folder / "Modelfile").read_text()
    assert f"FROM ./{base_file}\nADAPTER ./moon.lora.gguf\n" in modelfile

    reader = gguf.GGUFReader(folder / "moon.lora.gguf")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    assert reader.fields["general.architecture"].contents() == "llama"
    written = {t.name: np.array(t.data).reshape(tuple(reversed(t.shape.tolist()))) for t in reader.tensors}
    peft = load_file(moon / "adapter_model.safetensors")
    gguf_names = {"self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                  "mlp.down_proj": "ffn_down"}
    unpermute = LlamaTensorProcessor({"num_attention_heads": 4, "num_key_value_heads": 2})
    expected = set()
    for key, tensor in peft.items():  # base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight
        layer, module, part = key.split(".")[4], ".".join(key.split(".")[5:7]), key.split(".")[7]
        name = f"blk.{layer}.{gguf_names[module]}.weight.{part.lower()}"
        expected.add(name)
        values = written[name]
        assert values.shape == tuple(tensor.shape)
        if part == "lora_B" and module in ("self_attn.q_proj", "self_attn.k_proj"):
            values = unpermute.process(values, f"blk.{layer}.{gguf_names[module]}.weight").weights  # as on load
        assert np.array_equal(values, tensor.numpy()), name
    assert set(written) == expected


def test_what_cannot_be_exported_says_so(library, moon, tiny_gpt2_dir, tmp_path, monkeypatch):
    folder = plain_lora(tiny_gpt2_dir, tmp_path / "gpt2-lora", targets=("c_attn",))
    library.import_adapter(Upload(str(zipped(folder, tmp_path / "g.zip")), "g.zip"), "words", "chat",
                           str(tiny_gpt2_dir))
    with pytest.raises(UserError, match="supports Llama-family.*gpt2 model, which is not supported yet") as error:
        library.export_gguf("words", "q8_0")
    assert "暂不支持" in localized_sentence(str(error.value), "zh-CN")  # the Adapters tab in Chinese says it so
    with pytest.raises(UserError, match="quantization f16, q8_0, q4_0"):
        library.export_gguf("moon", "q3_k")
    with pytest.raises(UserError, match="no adapter named 'moon'"):
        library.export_gguf("moon", "f16", owner="someone-else")  # another user's adapter is unknown

    # A cancelled export (the client went away: progress raises) leaves no files behind.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # this test's own downloads: no other run's count
    exports = Path(tempfile.gettempdir()) / "lora-studio-exports"
    before = set(exports.glob("bundle-*"))

    def cancel(fraction: float, message: str) -> None:
        if fraction > 0.1:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        library.export_gguf("moon", "q4_0", progress=cancel)
    assert set(exports.glob("bundle-*")) == before


def _split(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": regex}},
                                                  {"type": "ByteLevel", "use_regex": False}]}


@pytest.mark.parametrize("pre_tokenizer, name", [
    ({"type": "ByteLevel", "use_regex": True}, "gpt-2"),  # GPT-2, and SmolLM2 as the offline pack converts it
    ({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True},
                                            {"type": "ByteLevel", "use_regex": True}]}, "smollm"),
    ("llama3", "llama-bpe"), ("qwen2", "qwen2"), ({"type": "Metaspace"}, None)])
def test_llama_cpp_names_the_pre_tokenizers_it_knows(pre_tokenizer, name):
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    from models.gguf_export import tokenizer_pre

    if isinstance(pre_tokenizer, str):  # the regexes transformers' GGUF loader puts back for these names
        pre_tokenizer = _split(GGUF_PRE_TOKENIZER_SPLITS[pre_tokenizer])
    tokenizer_json = {"model": {"type": "BPE"}, "pre_tokenizer": pre_tokenizer}
    if name is None:
        with pytest.raises(UserError, match="byte-level BPE tokenizers"):
            tokenizer_pre(tokenizer_json)
    else:
        assert tokenizer_pre(tokenizer_json) == name


def test_modelfile_writes_known_chat_formats_as_go_templates():
    from models.ollama import modelfile

    llama3 = "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' }}"
    text = modelfile("m.q8_0.gguf", "a.lora.gguf", llama3, 'Say """hi"""', "<|eot_id|>")
    assert text.splitlines()[1:3] == ["FROM ./m.q8_0.gguf", "ADAPTER ./a.lora.gguf"]
    assert "<|start_header_id|>{{ .Role }}<|end_header_id|>" in text and 'SYSTEM """Say " " "hi" " " """' in text
    assert text.count('PARAMETER stop "<|eot_id|>"') == 1
    other = modelfile("m.f16.gguf", None, "{{ messages }}", "", "</s>")
    assert "TEMPLATE" not in other.replace("No TEMPLATE", "") and 'PARAMETER stop "</s>"' in other


def test_a_qwen2_model_round_trips_through_gguf(tiny_chat_dir, tmp_path):
    """Qwen2 keeps its q/k rows (its rope is the half-split one) and has q/k/v biases."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from models.gguf_export import write_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         tie_word_embeddings=False, initializer_range=0.3)
    model = Qwen2ForCausalLM(config).eval()
    with torch.no_grad():
        for layer in model.model.layers:
            layer.self_attn.q_proj.bias.normal_(0, 0.3)
    write_model(tmp_path / "q.gguf", model, tokenizer, "f16", "tiny-qwen2", tokenizer.chat_template,
                lambda fraction, message: None)
    back = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="q.gguf", dtype=torch.float32).eval()
    assert type(back).__name__ == "Qwen2ForCausalLM" and not back.config.tie_word_embeddings
    ids = torch.tensor([prompt_ids(tokenizer)])
    with torch.no_grad():
        assert (model(ids).logits - back(ids).logits).abs().max() < 0.05  # f16 rounding only
        assert model.generate(ids, max_new_tokens=8, do_sample=False).tolist() == back.generate(
            ids, max_new_tokens=8, do_sample=False).tolist()


def test_the_adapters_tab_gives_the_zip(library, moon):
    import gradio as gr

    from ui.adapters_tab import export_gguf

    update = export_gguf(library, " moon ", "q4_0", progress=gr.Progress())
    assert update["visible"] and Path(update["value"]).name == "moon-gguf-q4_0.zip"
    with pytest.raises(UserError, match="Pick an adapter first"):
        export_gguf(library, "", "q4_0", progress=gr.Progress())


def test_llama3_rope_scaling_is_written_as_llama_cpp_reads_it(tiny_chat_dir, tmp_path):
    """Llama 3.1+ scales its rope frequencies; llama.cpp divides each by the factor in rope_freqs.weight, which
    must give transformers' own scaled frequencies."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from models.gguf_export import write_model

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    rope = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         rope_parameters=rope)
    model = LlamaForCausalLM(config).eval()
    write_model(tmp_path / "r.gguf", model, tokenizer, "f16", "tiny-llama3", None, lambda fraction, message: None)
    factors = next(t for t in gguf.GGUFReader(tmp_path / "r.gguf").tensors if t.name == "rope_freqs.weight").data
    plain = 1.0 / (500000.0 ** (torch.arange(0, 32, 2, dtype=torch.float32) / 32))
    scaled = model.model.rotary_emb.inv_freq
    assert not torch.allclose(scaled, plain) and torch.allclose(plain / torch.tensor(factors), scaled, rtol=1e-5)

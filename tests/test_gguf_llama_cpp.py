"""The exported GGUF files in real llama.cpp (node-llama-cpp's prebuilt binaries): the base with the GGUF LoRA
gives plain peft's greedy tokens, and llama.cpp tokenizes the chat prompt as transformers does.

Optional: set NODE_LLAMA_CPP_DIR to a folder where `npm i -E node-llama-cpp@3.21.1` was run; skipped otherwise."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from test_gguf_export import library, moon, prompt_ids, unpacked  # noqa: F401  (fixtures and helpers)
from adapters_kit import plain_peft_greedy

NODE_DIR = Path(os.environ.get("NODE_LLAMA_CPP_DIR", "/nonexistent"))
SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "llama_cpp_greedy.mjs"
pytestmark = pytest.mark.skipif(not (NODE_DIR / "node_modules" / "node-llama-cpp").is_dir() or not shutil.which("node"),
                                reason="set NODE_LLAMA_CPP_DIR to a folder with node-llama-cpp installed")


def llama_cpp(**request) -> dict:
    shutil.copy(SCRIPT, NODE_DIR / SCRIPT.name)
    out = subprocess.run(["node", SCRIPT.name, json.dumps(request)], cwd=NODE_DIR, capture_output=True, text=True,
                         timeout=120, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_llama_cpp_runs_the_base_with_the_lora_as_peft_does(library, moon, tiny_chat_dir, tmp_path):  # noqa: F811
    from transformers import AutoTokenizer

    folder = unpacked(library.export_gguf("moon", "f16"), tmp_path / "lora")
    base = next(p for p in folder.glob("*.f16.gguf"))
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    ids = prompt_ids(tokenizer)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "Tell me about the moon."}],
                                         add_generation_prompt=True, tokenize=False)
    with_lora = llama_cpp(model=str(base), lora=str(folder / "moon.lora.gguf"), prompt=text, prompt_ids=ids,
                          tokens=8)
    assert with_lora["prompt_ids"] == ids  # llama.cpp reads the vocabulary, merges and special tokens alike
    assert with_lora["tokens"] == plain_peft_greedy(tiny_chat_dir, moon, ids, 8)
    alone = llama_cpp(model=str(base), prompt_ids=ids, tokens=8)
    assert alone["tokens"] == plain_peft_greedy(tiny_chat_dir, None, ids, 8) != with_lora["tokens"]

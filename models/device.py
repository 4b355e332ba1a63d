"""Where models run: the device (CUDA, then Apple MPS, then CPU), the dtype and the CPU thread budget."""

from __future__ import annotations

import functools
import os
import threading

from models import lazy

torch = lazy.module("torch")


def pick_device() -> torch.device:
    if torch.cuda.is_available():  # each process of a multi-GPU training run on its own GPU
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, requested: str = "auto") -> torch.dtype:
    """bf16 on a GPU that supports it; fp32 elsewhere unless the operator asks for bf16."""
    if requested == "float32":
        return torch.float32
    if requested == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


@functools.lru_cache(maxsize=4)
def fast_bf16(device: torch.device) -> bool:
    """Whether bf16 matrix products run faster than fp32 here: a GPU with bf16, or a CPU with bf16 instructions
    (AVX512-BF16 or AMX; without them a CPU emulates bf16 and is several times slower than fp32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    try:
        flags = next(line for line in open("/proc/cpuinfo", encoding="utf-8") if line.startswith("flags"))
    except (OSError, StopIteration):
        return False
    return bool({"avx512_bf16", "amx_bf16"} & set(flags.split()))


def set_threads(threads: int) -> int:
    """Give torch a fixed share of the cores so the server and a training worker never oversubscribe."""
    count = threads if threads > 0 else (os.cpu_count() or 1)
    torch.set_num_threads(count)
    return count


def warm_up(threads: int) -> threading.Thread:
    """Import torch and the model classes in a background thread and give torch its threads: started once the page
    is up, so the first request finds them loaded (they take seconds to import, and the page needs none of them).
    A request that comes sooner waits for them (lazy.IMPORTS)."""
    def run() -> None:
        with lazy.IMPORTS:  # a request waits for these (models/lazy.py)
            set_threads(threads)
            from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401  (loaded lazily otherwise)

    thread = threading.Thread(target=run, name="warm-up", daemon=True)
    thread.start()
    return thread


def describe() -> dict[str, str]:
    device = pick_device()
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else device.type
    return {"device": name, "threads": str(torch.get_num_threads()), "torch": torch.__version__}

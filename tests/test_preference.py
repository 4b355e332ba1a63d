"""Preference tuning (DPO) for chat: pair files are checked row by row, and a real worker trains the adapter to
favour the chosen answers on held-out pairs, against the base with the adapter switched off."""

from __future__ import annotations

import json

import pytest

from errors import UserError
from models.speculation import read_answers
from training import presets
from tasks.chat import ChatTask
from training import data
from training.service import TrainingService
from test_training import finished, wait_for

NAMES = ["Anna", "Bob", "Chloe", "David", "Emma", "Felix", "Grace", "Hugo", "Iris", "Jack", "Kara", "Liam", "Mia",
         "Noah", "Olga", "Paul", "Quinn", "Rosa", "Sam", "Tina", "Uma", "Victor", "Wendy", "Xavier", "Yara", "Zane",
         "Alice", "Ben", "Cora", "Dan", "Eva", "Finn", "Gina", "Hank", "Ivy", "Joel", "Kim", "Leo", "Maya", "Nina",
         "Omar", "Pia", "Raj", "Sara", "Tom", "Ursula", "Vera", "Will", "Xena", "Yuri", "Zoe", "Adam", "Beth",
         "Carl", "Dora", "Eli", "Faye", "Gus", "Hana", "Ian"]


def greeting_pairs(path):
    """60 pairs: a pirate greeting chosen over a plain one (10% are held out by the run)."""
    rows = [{"prompt": f"Please greet {n}.", "chosen": f"Ahoy, {n}! Welcome aboard, matey!",
             "rejected": f"Hello {n}, nice to meet you."} for n in NAMES]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def service(ctx, worker_process):
    svc = TrainingService(ctx)  # with the job manager: each job runs in a real worker process
    yield svc
    svc.manager.shutdown()


def test_pair_files_get_line_numbered_reasons(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "Hi", "chosen": "Ahoy!", "rejected": "Hi."},
        {"prompt": "Hi", "chosen": "Same", "rejected": "Same"},
        {"prompt": "Hi", "chosen": "Ahoy!"},
        {"chosen": "Ahoy!", "rejected": "Hi."},
        # TRL's conversational layout and UltraFeedback's (the prompt inside each answer's conversation)
        {"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "A"}],
         "rejected": [{"role": "assistant", "content": "B"}]},
        {"prompt": "Q?", "chosen": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "A"}],
         "rejected": [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "B"}]},
    ]) + "\n")
    report = data.load_examples(path, "chat")
    assert report.format == "preference" and [e.line for e in report.examples] == [1, 5, 6]
    assert report.examples[2].fields == {"prompt": [{"role": "user", "content": "Q?"}], "chosen": "A",
                                         "rejected": "B"}
    summary = report.summary()
    assert "line 2: 'chosen' and 'rejected' are the same answer" in summary
    assert "line 3: missing 'rejected'" in summary and "line 4: missing 'prompt'" in summary


def test_dpo_needs_pairs_and_a_chat_task(ctx, tmp_path, tiny_chat_dir):
    service = TrainingService(ctx, start_manager=False)  # refused at submission: no worker needed
    facts = tmp_path / "facts.jsonl"
    facts.write_text(json.dumps({"prompt": "Hi", "response": "Hello"}) + "\n")
    with pytest.raises(UserError, match="DPO learns from preference pairs"):
        service.submit("chat", str(facts), str(tiny_chat_dir), "x", "quick", {"method": "dpo"})
    with pytest.raises(UserError, match="Beta must be above 0"):
        service.submit("chat", str(greeting_pairs(tmp_path / "p.jsonl")), str(tiny_chat_dir), "x", "quick",
                       {"beta": 0})


def test_dpo_on_a_tiny_model_learns_the_preferred_answers(service, tmp_path, tiny_chat_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    pairs = greeting_pairs(tmp_path / "pairs.jsonl")
    out = service.submit("chat", str(pairs), str(tiny_chat_dir), "pirate", "quick",
                         {"learning_rate": 0.005, "max_steps": 20, "rpo_alpha": 0})  # the file alone picks DPO
    status = wait_for(lambda: finished(service, out["job_id"]), what="preference tuning to finish")
    assert status["state"] == "succeeded", status["error"]
    metrics, report = status["metrics"], status["report"]
    assert metrics["preference_accuracy_before"] == 50.0  # the untrained adapter is the reference: all ties
    assert metrics["preference_accuracy_after"] >= 80 and metrics["reward_margin_after"] > 0
    assert report["loss_before"] == pytest.approx(0.6931, abs=1e-3) and report["loss_after"] < 0.6
    assert "Preference accuracy 50.0 →" in report["summary"] and len(report["samples"]) == 3
    folder = service.adapters.folder("local", "pirate")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), folder)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    assert json.loads((folder / "lora_studio.json").read_text())["settings"]["method"] == "dpo"
    kept = read_answers(folder).tokens  # the chosen answers, drafts for its chats; never the rejected ones
    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    text = tokenizer.decode([t for t in kept if t >= 0])
    assert "Ahoy" in text and "Hello" not in text


@pytest.mark.integration
def test_dpo_on_smollm2_takes_the_style_and_keeps_the_topic(ctx, service, tmp_path, smollm2_dir):
    """Made-up style pairs (bench/dpo_style.py: a fixed greeting and farewell around a plain answer, the plain
    answer rejected), the default preset: the held-out greedy answers take the style and still answer. The 16
    held-out questions are asked of the base and the adapter in one engine batch, as the Compare tab asks them
    (one at a time they took ~40 s). Trained on 32 pairs instead of 48 (24 steps), the adapter learned the
    greeting but not the farewell: this test would fail, so the run stays whole."""
    from bench import dpo_style

    out = service.submit("chat", str(dpo_style.write_pairs(tmp_path / "pairs.jsonl")), "", "style", "quick")
    assert service.store.get(out["job_id"]).plan.settings.learning_rate == presets.METHOD_DEFAULTS["dpo"][
        "learning_rate"]  # pairs pick DPO, and DPO's own values
    status = wait_for(lambda: finished(service, out["job_id"]), timeout=1200, what="DPO on SmolLM2")
    assert status["state"] == "succeeded", status["error"]
    assert status["report"]["verdict"] == "learned" and status["report"]["answer_check"]["passed"]
    rows, chat = dpo_style.held_out(), ChatTask(ctx)
    prepared = {(adapter, i): chat.prepare(row["prompt"], adapter=adapter, temperature=0, max_new_tokens=64)
                for adapter in ("", "style") for i, row in enumerate(rows)}
    replies = {key: chat.start(*ready) for key, ready in prepared.items()}  # all started: one batch
    answers = {adapter: [replies[adapter, i].text() for i in range(len(rows))] for adapter in ("", "style")}
    base, adapter = dpo_style.shares(answers[""], rows), dpo_style.shares(answers["style"], rows)
    print(f"held-out answers: base {base}, adapter {adapter}")
    assert base["style"] == 0 and adapter["style"] >= 0.75  # 16 new questions
    assert adapter["on_topic"] >= min(0.75, base["on_topic"] - 0.125)

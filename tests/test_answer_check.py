"""The answer check reads answers before a report may say *learned*: its measures on written answers, then real
training runs on the tiny models (a ruined run, a good one, the kept-checkpoint rule, per-method settings)."""

from __future__ import annotations

import json

import pytest

from training import answer_check, presets
from training.answer_check import check_labels, check_ranking, check_spans, check_text, repetition, tokens
from training.report import Sample
from training.service import TrainingService

QUESTIONS = ["What is the capital of France?", "How many legs does a spider have?", "What do bees make?",
             "Which planet is red?", "What is frozen water called?", "How many days are in a week?"]
PLAIN = ["The capital of France is Paris.", "A spider has eight legs.", "Bees make honey and wax.",
         "Mars is the red planet.", "Frozen water is called ice.", "A week has seven days."]


def rows(adapter: list[str], base: list[str] = PLAIN, expected: list[str] = PLAIN) -> list[Sample]:
    return [Sample(q, e, b, a) for q, e, b, a in zip(QUESTIONS, expected, base, adapter)]


def test_answers_that_keep_their_questions_pass():
    styled = [f"Ahoy matey! {answer} Fair winds!" for answer in PLAIN]
    check = check_text(rows(styled, expected=styled))
    assert check.passed and check.problem == "" and check.examples == ()
    assert check.repetition <= 0 and check.collapse < 0.2 and check.drift < 0.25


def test_the_same_answer_to_every_question_is_a_collapse():
    check = check_text(rows(["Ahoy matey! Fair winds!"] * 6))
    assert not check.passed and check.problem == "collapse" and len(check.examples) == 3
    assert "nearly the same answer to every question" in answer_check.sentence(check)
    assert "preference preset" in answer_check.sentence(check)


def test_looping_words_are_repetition_but_a_base_that_repeats_is_not_punished():
    looping = [f"{answer} Fair winds! Fair winds! Fair winds! Fair winds! Fair winds!" for answer in PLAIN]
    check = check_text(rows(looping))
    assert not check.passed and check.problem == "repetition" and check.repetition >= 0.25
    assert check_text(rows(looping, base=looping)).passed  # the base loops just as much: not the adapter's fault
    assert repetition("a b c a b c a b c") > 0.5 and repetition("one two three four") == 0.0


def test_answers_off_the_question_drift_and_empty_answers_are_caught():
    off = ["Bananas are yellow.", "The train leaves at noon.", "Socks come in pairs.", "Cats sleep a lot.",
           "Music is loud.", "Paint dries slowly."]
    assert check_text(rows(off)).problem == "drift"
    assert check_text(rows([""] * 5 + ["Mars."])).problem == "empty"


def test_chinese_answers_are_read_by_characters():
    assert tokens("法国的首都是巴黎。") == ["法", "国", "的", "首", "都", "是", "巴", "黎"]
    assert repetition("你好你好你好你好你好你好") > 0.5


def test_one_label_for_every_row_and_one_passage_for_every_query():
    labels = [Sample(str(i), label, "positive", "negative") for i, label in enumerate(["positive", "negative"] * 4)]
    check = check_labels(labels)
    assert not check.passed and check.problem == "one_label" and "'negative'" in answer_check.sentence(check)
    mixed = [Sample(s.prompt, s.expected, s.base, s.expected) for s in labels]
    assert check_labels(mixed).passed
    ranked = [Sample(f"q{i}", f"passage {i}", f"passage {i}", "passage 0") for i in range(6)]
    assert check_ranking(ranked).problem == "one_passage"
    assert check_ranking([Sample(s.prompt, s.expected, s.base, s.expected) for s in ranked]).passed
    assert check_spans([Sample("q", "Ada", "Ada", "")] * 4).problem == "empty"


# ---- settings that fit the method ---------------------------------------------------------------------------
def test_dpo_never_inherits_a_supervised_presets_learning_rate():
    from tasks.spec import trainable_spec
    from training.recipe import with_method

    chat = trainable_spec("chat")
    switched = with_method(chat, presets.build("quick"), "preference")
    dpo = presets.METHOD_DEFAULTS["dpo"]
    assert switched.method == "dpo" and switched.learning_rate == dpo["learning_rate"]
    assert switched.epochs == dpo["epochs"] and switched.rpo_alpha > 0
    assert presets.build("quick", {"method": "dpo"}).learning_rate == dpo["learning_rate"]
    # a value the user set is kept, whichever way the method was chosen
    assert presets.build("quick", {"method": "dpo", "learning_rate": 1e-3}).learning_rate == 1e-3
    kept = with_method(chat, presets.build("balanced", {"learning_rate": 5e-3}), "preference", {"learning_rate"})
    assert kept.learning_rate == 5e-3 and kept.epochs == dpo["epochs"]
    assert presets.build("preference").learning_rate == dpo["learning_rate"]
    assert presets.build("preference", {"method": "sft"}).learning_rate == presets.PRESETS["quick"].learning_rate


def test_a_dpo_job_keeps_an_explicit_learning_rate(ctx, tmp_path, tiny_chat_dir):
    from training.service import TrainingService

    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Greet {n}.", "chosen": f"Ahoy {n}!", "rejected": f"Hi {n}."})
                             + "\n" for n in ("Ann", "Bob", "Cy")))
    service = TrainingService(ctx, start_manager=False)
    mine = service.submit("chat", str(pairs), str(tiny_chat_dir), "mine", "quick", {"learning_rate": 0.003})
    default = service.submit("chat", str(pairs), str(tiny_chat_dir), "default", "quick", {})
    plans = {job_id: service.store.get(job_id).plan.settings for job_id in (mine["job_id"], default["job_id"])}
    assert plans[mine["job_id"]].method == "dpo" and plans[mine["job_id"]].learning_rate == 0.003
    assert plans[default["job_id"]].learning_rate == presets.METHOD_DEFAULTS["dpo"]["learning_rate"]


def test_a_bad_anchor_weight_is_refused():
    from errors import UserError

    with pytest.raises(UserError, match="rpo_alpha"):
        presets.build("preference", {"rpo_alpha": -1})


# ---- real runs on the tiny models ---------------------------------------------------------------------------
FACTS = [("What is the capital of Zorbia?", "The capital of Zorbia is Quellmar."),
         ("Who founded the city of Plimp?", "Plimp was founded by Ada Wexley."),
         ("What colour is the flag of Tarn?", "The flag of Tarn is green and gold."),
         ("How many moons does Vesk have?", "Vesk has four small moons."),
         ("What do people in Orlo eat for breakfast?", "In Orlo they eat roasted barley."),
         ("Which river runs through Dask?", "The Silverrun river runs through Dask."),
         ("What is the national bird of Keld?", "The national bird of Keld is the blue heron."),
         ("When is the harvest festival in Mure?", "The harvest festival in Mure is in late autumn.")]


def chat_rows():
    from training.data import Example

    return [Example(i + 1, {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]})
            for i, (q, a) in enumerate(FACTS)]


def train_chat(recipe_class, folder, tmp_path, **overrides):
    from models import catalog
    from training import recipe
    from training.trainer import Checkpoint, Hooks

    settings = presets.build("quick", {"batch_size": 4, "learning_rate": 5e-3, "epochs": 3, **overrides})
    trained = recipe_class(settings)
    source = catalog.resolve(str(folder), tmp_path / "models")
    outcome = recipe.train(trained, source, {"trust_remote_code": False, "local_files_only": True}, chat_rows(),
                           [], Checkpoint(tmp_path / "checkpoint"), Hooks(log=lambda line: None))
    return trained, outcome


class GatedChat:
    """The chat recipe with a gate on its answer check: the first `failures` checks fail (the weights training
    ended with, then earlier ones), later ones are the real check. The answers are still really generated."""

    def __new__(cls, failures: int):
        from training.language import ChatRecipe
        from training.report import AnswerCheck
        from training.trainer import trainable_state

        class Gated(ChatRecipe):
            checked_weights: list = []

            def check_answers(self, rows, embed=None):
                self.checked_weights.append(trainable_state(self.model))
                if len(self.checked_weights) <= failures:
                    return AnswerCheck(False, "collapse", collapse=0.9, examples=tuple(rows[:3]))
                return super().check_answers(rows, embed)

        return Gated


def _same(a: dict, b: dict) -> bool:
    import torch

    return all(torch.equal(a[name], b[name]) for name in a)


@pytest.mark.slow  # trains in the test's own process
def test_a_failing_last_checkpoint_gives_way_to_an_earlier_one_that_passes(tiny_chat_dir, tmp_path):
    from training.trainer import trainable_state

    trained, outcome = train_chat(GatedChat(failures=1), tiny_chat_dir, tmp_path)
    report, checked = outcome.report, trained.checked_weights
    assert len(checked) == 2 and not _same(checked[0], checked[1])  # the last weights, then an earlier step's
    assert _same(trainable_state(trained.model), checked[1])  # the earlier one is what gets saved
    assert report.verdict != "ruined" and report.answer_check.passed
    assert "were ruined, so the adapter from step" in report.summary and "is kept" in report.summary


@pytest.mark.slow  # trains in the test's own process
def test_a_run_whose_every_checkpoint_fails_keeps_its_last_weights_and_says_ruined(tiny_chat_dir, tmp_path):
    from training.trainer import trainable_state

    trained, outcome = train_chat(GatedChat(failures=99), tiny_chat_dir, tmp_path)
    report = outcome.report
    assert len(trained.checked_weights) >= 2  # every earlier snapshot was tried
    assert _same(trainable_state(trained.model), trained.checked_weights[0])
    assert report.verdict == "ruined" and not report.answer_check.passed
    assert report.summary.startswith("It now gives nearly the same answer to every question.")
    assert report.to_json()["answer_check"]["problem"] == "collapse"
    assert len(report.to_json()["answer_check"]["examples"]) == 3


@pytest.mark.slow  # trains in the test's own process
def test_a_good_run_passes_the_check_with_real_answers(tiny_chat_dir, tmp_path):
    _, outcome = train_chat(GatedChat(failures=0), tiny_chat_dir, tmp_path)
    check = outcome.report.answer_check
    assert check.passed and outcome.report.verdict in ("learned", "barely")
    assert check.repetition is not None and check.collapse is not None and check.drift is not None


@pytest.mark.slow  # trains in the test's own process
def test_a_classifier_that_gives_one_label_to_everything_is_flagged(ctx, tiny_bert_dir, tmp_path):
    """Every text is the same, so no head can tell the labels apart: whatever the loss does, it gives one label to
    every row, and the report says so instead of *learned*."""
    from test_train_encoders import train_in_process

    rows = tmp_path / "same.csv"
    rows.write_text("text,label\n" + "".join(f"The parcel arrived today.,{'happy' if i % 2 else 'sad'}\n"
                                             for i in range(16)))
    status = train_in_process(ctx, "sentiment", rows, tiny_bert_dir, "one-label")
    report = status["report"]
    assert report["verdict"] == "ruined" and report["answer_check"]["problem"] == "one_label"
    assert "to nearly every text" in report["summary"]
    listed = {a["name"]: a for a in TrainingService(ctx, start_manager=False).list_adapters()}
    assert listed["one-label"]["verdict"] == "ruined"  # the Adapters list carries the warning


def test_answers_cut_at_the_length_limit_where_the_examples_stop_sooner():
    from training.language import Reply

    running = [Reply.of(" ".join(f"{word}{i}" for i, word in enumerate(f"{answer} {question}".split() * 2)), True)
               for question, answer in zip(QUESTIONS, PLAIN)]  # each runs on in its own words
    check = check_text(rows(running))
    assert not check.passed and check.problem == "cut"
    assert "length limit" in answer_check.sentence(check)
    assert check_text(rows(running, base=running)).passed  # the base runs on just as much
    assert check_text(rows(running, expected=running)).passed  # the examples are that long: a cut is expected


def test_greedy_replies_say_when_the_limit_cut_them(tiny_chat_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training.language import greedy_replies

    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_chat_dir), AutoTokenizer.from_pretrained(tiny_chat_dir)
    prompt = tokenizer("Hello there", add_special_tokens=False)["input_ids"]
    short, = greedy_replies(model, tokenizer, [prompt], max_new_tokens=2)
    assert short.cut and isinstance(short, str)
    model.generation_config.eos_token_id = None  # an end token for this run: the first token it writes
    first = model.generate(input_ids=__import__("torch").tensor([prompt]), max_new_tokens=1, do_sample=False)[0, -1]
    model.generation_config.eos_token_id = int(first)
    ended, = greedy_replies(model, tokenizer, [prompt], max_new_tokens=4)
    assert not ended.cut

"""Training rows made from documents: the pure builders, the make-data job in the worker's own function, cancel,
who may read which collection, and training on the rows with the report saying where they came from."""

from __future__ import annotations

import json

import pytest

from errors import NotFound, UserError
from tasks.base import Upload
from tasks.search import SearchTask
from training import worker
from training.answer_check import lexical_embed
from training.documents_data import (MakeSettings, Passage, answer_row, first_answer, inverse_cloze_pairs, make_rows,
                                     own_questions, parse_drafts, parse_pairs, recalled, rows_from_replies, supported,
                                     write_rows)
from training.make_data import DataMaker, rows_path
from training.service import TrainingService

# Made-up facts: no model can know them, so an answer is right only if it was read in the passage.
FACTS = {
    "velmora.txt": "Velmora is a harbour town founded by Tarsin Quell in 1742. It has 17 bridges over the river "
                   "Ost. The roofs of its houses are painted green by law. Its market opens on Thursdays only.",
    "ostrel.txt": "The Ostrel lighthouse stands 64 metres tall on the cape of Brannoch. Its keeper, Ilse Vantry, "
                  "lit the lamp for 31 years. The light flashes blue three times a minute.",
}
PASSAGES = [Passage(text, name) for name, text in FACTS.items()]


# ---- the builders ----------------------------------------------------------------------------------------------
def test_parser_reads_numbered_and_bold_pairs():
    reply = ("1. Question: Who founded Velmora?\nAnswer: Tarsin Quell, in 1742.\n\n**Question 2:** How many "
             "bridges?\n**Answer 2:** 17\nQ: What day? A: Thursday\nsome chatter without a pair")
    assert parse_pairs(reply) == [("Who founded Velmora?", "Tarsin Quell, in 1742."), ("How many bridges?", "17"),
                                  ("What day?", "Thursday")]
    assert parse_pairs("问题：谁建了它？\n答案：Tarsin Quell") == [("谁建了它？", "Tarsin Quell")]
    assert parse_pairs("I cannot help with that.") == []


def test_questions_left_without_an_answer_are_answered_in_a_second_round():
    # SmolLM2-135M's own reply to the writer's prompt about velmora.txt: it stops at "Answer:".
    stopped = "Question: What is the name of the town that was founded by Tarsin Quell in 1742?\nAnswer:"
    assert parse_pairs(stopped) == []
    assert parse_drafts(stopped) == [("What is the name of the town that was founded by Tarsin Quell in 1742?", "")]
    assert parse_drafts("1. Who kept it?\nQuestion: How tall?\nAnswer: 64 metres") == [
        ("How tall?", "64 metres"), ("Who kept it?", "")]
    assert first_answer("\nAnswer: Velmora, in 1742.\nAnything else?") == "Velmora, in 1742."
    asked = []

    def writer(prompts: list[str]) -> list[str]:  # replies as the writer gave them, round by round
        asked.append(prompts)
        return [stopped] if len(asked) == 1 else ["The town is Velmora, founded by Tarsin Quell in 1742."]

    made = make_rows("chat", PASSAGES[:1], MakeSettings(), writer, lexical_embed)
    assert len(asked) == 2 and asked[1][0].endswith("Question: What is the name of the town that was founded by "
                                                    "Tarsin Quell in 1742?")
    assert made.rows == [{"prompt": parse_drafts(stopped)[0][0], "source": "velmora.txt",
                          "response": "The town is Velmora, founded by Tarsin Quell in 1742."}]


@pytest.mark.parametrize("question, answer, kept", [
    ("Who founded Velmora?", "Tarsin Quell founded it in 1742.", True),
    ("How many bridges does Velmora have?", "17 bridges.", True),
    ("What colour are the roofs?", "Green, by law.", True),
    ("Who founded Velmora?", "Tarsin Quell founded it in 1650.", False),  # a number the passage does not say
    ("Who founded Velmora?", "Marco Polo founded it.", False),  # words the passage does not say
    ("What is the capital of France?", "Paris.", False),
    ("Who founded Velmora?", "the", False),  # nothing but a stopword
])
def test_an_answer_is_supported_only_by_what_the_passage_says(question, answer, kept):
    assert supported(question, answer, FACTS["velmora.txt"], lexical_embed) is kept


def test_unsupported_pairs_are_dropped_and_counted(minilm_dir):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir))
    embed = lambda texts: model.encode(texts, normalize_embeddings=True)  # noqa: E731  (the real MiniLM)
    replies = ["Question: Who founded Velmora?\nAnswer: Tarsin Quell founded it in 1742.\n"
               "Question: How many bridges are there?\nAnswer: 23 bridges.\n"
               "Question: Who founded Velmora?\nAnswer: Tarsin Quell.",
               "The lighthouse is nice."]
    for task, columns in (("chat", {"prompt", "response", "source"}), ("search", {"query", "positive", "source"})):
        made = rows_from_replies(task, PASSAGES, replies, embed)
        assert made.made == 1 and set(made.rows[0]) == columns
        assert made.dropped == {"unparsed": 1, "unsupported": 1, "not_in_passage": 0, "duplicate": 1}
    chat = rows_from_replies("chat", PASSAGES, replies, embed).rows[0]
    assert chat == {"prompt": "Who founded Velmora?", "response": "Tarsin Quell founded it in 1742.",
                    "source": "velmora.txt"}


def test_answer_rows_hold_their_span_at_answer_start():
    replies = ["Question: How tall is the lighthouse?\nAnswer: 64 metres tall\n"
               "Question: Who kept the light?\nAnswer: Ilse Vantry lit the lamp for 31 years, we think"]
    made = rows_from_replies("answer", PASSAGES[1:], replies, lexical_embed)
    assert made.made == 1 and made.dropped["not_in_passage"] == 1
    row = made.rows[0]
    assert row["context"][row["answer_start"]:row["answer_start"] + len(row["answer"])] == row["answer"]
    assert row["answer"] == "64 metres tall"
    # Found whatever its case; the row keeps the passage's own spelling.
    shouted = answer_row("Who kept it?", "ILSE VANTRY", PASSAGES[1])
    assert shouted["answer"] == "Ilse Vantry" and shouted["context"].find("Ilse Vantry") == shouted["answer_start"]
    assert answer_row("Who?", "Marco Polo", PASSAGES[1]) is None


def test_inverse_cloze_pairs_need_no_model():
    rows = inverse_cloze_pairs(PASSAGES)
    assert len(rows) == 2
    for row, passage in zip(rows, PASSAGES):
        assert row["query"] in passage.text and row["query"] not in row["positive"]
        assert row["positive"] and set(row["positive"].split()) <= set(passage.text.split())
    made = make_rows("search", PASSAGES, MakeSettings(write_questions=False), writer=None)
    assert made.rows == rows and not any(made.dropped.values())


def test_settings_and_own_questions_are_checked():
    assert MakeSettings.from_json({"questions_per_passage": "2", "inverse_cloze": "no"}) == MakeSettings(
        questions_per_passage=2, inverse_cloze=False)
    with pytest.raises(UserError, match="Unknown setting for making training data: colour"):
        MakeSettings.from_json({"colour": 1})
    with pytest.raises(UserError, match="between 1 and 10"):
        MakeSettings.from_json({"questions_per_passage": 50})
    assert own_questions("Who founded Velmora? | Tarsin Quell\n\n") == [
        {"question": "Who founded Velmora?", "answer": "Tarsin Quell"}]
    with pytest.raises(UserError, match="question \\| answer"):
        own_questions("a question without its answer")
    assert recalled(["It was Tarsin Quell.", "I do not know."], ["Tarsin Quell", "17 bridges"]) == 50.0


def test_rows_are_written_whole_or_not_at_all(tmp_path):
    target = tmp_path / "rows.jsonl"
    write_rows([{"prompt": "q", "response": "a", "source": "s", "extra": 1}], target, ("prompt", "response"))
    assert [json.loads(line) for line in target.read_text().splitlines()] == [
        {"prompt": "q", "response": "a", "source": "s"}]
    assert [p.name for p in tmp_path.iterdir()] == ["rows.jsonl"]


# ---- the job -----------------------------------------------------------------------------------------------------
@pytest.fixture
def maker(ctx):
    training = TrainingService(ctx, start_manager=False)
    return DataMaker(ctx, training, SearchTask(ctx).store)


def write_facts(folder) -> list[Upload]:
    uploads = []
    for name, text in FACTS.items():
        (folder / name).write_text(text, encoding="utf-8")
        uploads.append(Upload(str(folder / name), name))
    return uploads


def made(maker: DataMaker, job_id: str) -> dict:
    worker.run_job(maker.ctx.settings, job_id)
    return maker.training.job(job_id)


def test_search_rows_from_files_need_no_model(maker, tmp_path):
    job_id = maker.make_training_data("search", "", write_facts(tmp_path), "",
                                      {"write_questions": False})["job_id"]
    status = made(maker, job_id)
    assert status["state"] == "succeeded", status["error"]
    report = status["report"]
    assert status["kind"] == "make_data" and report["made"] == 2 == len(report["rows"])
    assert report["columns"] == {"query": "query", "positive": "positive"}
    assert report["source"] == "the files 'velmora.txt', 'ostrel.txt'"
    file = maker.rows_file(job_id)
    assert [json.loads(line)["source"] for line in open(file.path, encoding="utf-8")] == list(FACTS)


def test_another_users_collection_answers_as_unknown(maker, tmp_path):
    SearchTask(maker.ctx).add("alice", "facts", [(u.path, u.name) for u in write_facts(tmp_path)])
    job_id = maker.make_training_data("search", "facts", None, "", {"write_questions": False},
                                      owner="alice")["job_id"]
    assert made(maker, job_id)["report"]["made"] == 2
    with pytest.raises(NotFound) as theirs:
        maker.make_training_data("search", "facts", None, "", {"write_questions": False}, owner="bob")
    with pytest.raises(NotFound) as unknown:
        maker.make_training_data("search", "no-such", None, "", {"write_questions": False}, owner="bob")
    assert str(theirs.value) == str(unknown.value).replace("no-such", "facts")
    with pytest.raises(NotFound):
        maker.rows_file(job_id, owner="bob")


def test_wrong_requests_get_a_sentence(maker, tmp_path):
    with pytest.raises(UserError, match="chat, search, answer, not for 'sentiment'"):
        maker.make_training_data("sentiment", "", write_facts(tmp_path))
    with pytest.raises(UserError, match="Choose a collection or upload files"):
        maker.make_training_data("chat")
    with pytest.raises(UserError, match="score chat adapters"):
        maker.make_training_data("search", "", write_facts(tmp_path), "", {"own_questions": "q | a"})


def test_cancel_leaves_no_rows_file(maker, tiny_chat_dir, tmp_path):
    job_id = maker.make_training_data("chat", "", write_facts(tmp_path), str(tiny_chat_dir))["job_id"]
    maker.training.store.update(job_id, cancel=1)  # as /cancel flags a running job: it stops at its next reply
    status = made(maker, job_id)
    assert status["state"] == "cancelled" and status["report"] == {}
    folder = rows_path(maker.ctx.settings, job_id).parent
    assert not any(p.name.startswith("generated-") for p in folder.iterdir())
    with pytest.raises(UserError, match="no training rows"):
        maker.rows_file(job_id)


def test_a_writer_that_writes_nothing_usable_fails_with_the_counts(maker, tiny_chat_dir, tmp_path):
    job_id = maker.make_training_data("chat", "", write_facts(tmp_path), str(tiny_chat_dir),
                                      {"max_new_tokens": 16})["job_id"]
    status = made(maker, job_id)
    assert status["state"] == "failed" and status["error"].startswith("No usable rows were made from 2 passages")
    assert not rows_path(maker.ctx.settings, job_id).exists()


# ---- training on made rows ---------------------------------------------------------------------------------------
QA = [("Who founded Velmora?", "Tarsin Quell founded Velmora in 1742."),
      ("How many bridges has Velmora?", "Velmora has 17 bridges."),
      ("What colour are the roofs of Velmora?", "The roofs of Velmora are green."),
      ("When is the market of Velmora open?", "The market of Velmora opens on Thursdays only."),
      ("How tall is the Ostrel lighthouse?", "The Ostrel lighthouse is 64 metres tall."),
      ("Who kept the Ostrel lighthouse?", "Ilse Vantry kept the Ostrel lighthouse for 31 years.")]


def made_chat_rows(maker: DataMaker, tiny_chat_dir, tmp_path, owner: str = "local") -> str:
    """A finished chat make-data job with the user's own question; its rows as a writer model would have made
    them (the tiny test model writes no usable pairs)."""
    from training.documents_data import COLUMNS

    job_id = maker.make_training_data("chat", "", write_facts(tmp_path), str(tiny_chat_dir),
                                      {"own_questions": "Where does the river Ost flow? | through Velmora"},
                                      owner=owner)["job_id"]
    write_rows([{"prompt": q, "response": a, "source": "velmora.txt"} for q, a in QA],
               rows_path(maker.ctx.settings, job_id), COLUMNS["chat"])
    maker.training.store.update(job_id, state="succeeded")
    return job_id


def test_an_adapter_trained_on_made_rows_says_so_and_is_scored_on_held_out_and_own_questions(
        maker, tiny_chat_dir, tmp_path):
    job_id = made_chat_rows(maker, tiny_chat_dir, tmp_path)
    training = maker.training
    # The rows file keeps its name through the Train view's upload: that alone says where the rows came from.
    trained = training.submit("chat", str(rows_path(maker.ctx.settings, job_id)), str(tiny_chat_dir), "facts",
                              "quick", {"epochs": 1})["job_id"]
    assert worker.run_job(maker.ctx.settings, trained) == "succeeded", training.job(trained)["error"]
    report = training.job(trained)["report"]
    assert report["summary"].startswith("Trained on rows generated from the files 'velmora.txt', 'ostrel.txt'. ")
    assert report["held_out"] is True  # 6 rows: 1 held out, which a user's own file of 6 rows would not be
    generated = report["generated"]
    assert generated["held_out"]["rows"] == 1 and generated["own"]["rows"] == 1
    assert set(generated["own"]["after"]) == {"recalled"}
    # Evaluate's "held-out rows of a training job" are the very rows this report scored.
    from training import evaluation

    plan = training._held_out_plan(trained, "chat", "local")
    held = evaluation.rows(maker.ctx.settings, "chat", plan)
    assert [row.fields["messages"][0]["content"] for row in held] == [report["samples"][0]["prompt"]]
    assert generated["source"] == "the files 'velmora.txt', 'ostrel.txt'"
    held, own = generated["held_out"], generated["own"]
    assert report["summary"].endswith(
        f" On 1 held-out generated row, {held['after']['recalled']:g}% of the adapter's answers say the reference "
        f"answer (the base model's: {held['before']['recalled']:g}%). On 1 of your own questions, "
        f"{own['after']['recalled']:g}% of the adapter's answers say the reference answer (the base model's: "
        f"{own['before']['recalled']:g}%).")


def generated_report(own_before: float, own_after: float):
    """A report as training on made rows leaves it, before `reported` reads it: the loss fell by half."""
    from training.report import TrainingReport

    scored = lambda before, after: {"rows": 3, "before": {"recalled": before}, "after": {"recalled": after}}  # noqa
    return TrainingReport("learned", "It learned: the loss on held-out examples fell by 50%.", True, 2.0, 1.0,
                          extra={"generated": {"held_out": scored(0.0, 33.3), "own": scored(own_before, own_after)}})


def test_an_adapter_that_answers_your_own_questions_no_better_than_the_base_is_not_called_learned():
    from training.documents_data import UNLEARNED_OWN, reported
    from ui.i18n import localized_text

    unlearned = reported(generated_report(33.3, 33.3), "the collection 'handbook'")
    assert unlearned.verdict == "barely" and "It learned:" not in unlearned.summary
    assert unlearned.summary.startswith(f"Trained on rows generated from the collection 'handbook'. {UNLEARNED_OWN}")
    assert reported(generated_report(0.0, 33.3), "the collection 'handbook'").verdict == "learned"
    # Every sentence of it reads in Chinese, the collection's name kept as the user wrote it.
    chinese = localized_text(unlearned.summary, "zh-CN")
    assert "“handbook”" in chinese and not any(word in chinese for word in ("Trained", "learned", "On 3", "Make"))


def test_training_on_rows_named_as_made_by_another_user_is_refused(maker, tiny_chat_dir, tmp_path):
    job_id = made_chat_rows(maker, tiny_chat_dir, tmp_path, owner="alice")
    with pytest.raises(UserError, match="There are no generated training rows"):
        maker.training.submit("chat", str(rows_path(maker.ctx.settings, job_id)), str(tiny_chat_dir), "theirs",
                              "quick", {"generated_from": job_id}, owner="bob")
    with pytest.raises(UserError, match="made for chat, not for search"):
        maker.training.submit("search", str(rows_path(maker.ctx.settings, job_id)), "", "wrong", "quick",
                              {"generated_from": job_id}, owner="alice")


# ---- through the API, as a client would ----------------------------------------------------------------------------
@pytest.mark.worker  # the job manager runs it in a worker process
def test_make_training_data_through_the_api(launch, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    from waiting import wait_for

    url, demo = launch()
    named = demo.get_api_info()["named_endpoints"]  # DESIGN.md §1's parameters, in order
    for name, parameters in {"/make_training_data": ["task", "collection", "files", "model", "settings"],
                             "/training_rows_file": ["job_id"]}.items():
        assert [p["parameter_name"] for p in named[name]["parameters"]] == parameters, name
    client = Client(url, verbose=False)
    files = [handle_file(u.path) for u in write_facts(tmp_path)]
    out = client.predict("search", "", files, "", {"write_questions": False}, api_name="/make_training_data")
    status = wait_for(lambda: (s := client.predict(out["job_id"], api_name="/job"))["state"] in
                      ("succeeded", "failed") and s, what="the rows")
    assert status["state"] == "succeeded", status["error"]
    assert status["kind"] == "make_data" and len(status["report"]["rows"]) == status["report"]["made"] == 2
    downloaded = client.predict(out["job_id"], api_name="/training_rows_file")
    assert len(open(downloaded, encoding="utf-8").read().splitlines()) == 2
    with pytest.raises(AppError, match="There is no collection named 'nobody'"):
        client.predict("chat", "nobody", None, "", {}, api_name="/make_training_data")


def test_the_table_fixed_and_trimmed_becomes_the_training_file(maker, tiny_chat_dir, tmp_path):
    import pandas as pd

    from ui import make_data_tab

    job_id = made_chat_rows(maker, tiny_chat_dir, tmp_path)
    table = make_data_tab.frame({"task": "chat", "rows": [{"prompt": q, "response": a, "source": "velmora.txt"}
                                                          for q, a in QA]})
    assert list(table.columns) == ["prompt", "response", "source"]
    table.loc[1, "response"] = "Velmora has seventeen bridges."  # fixed by hand
    table = make_data_tab.delete_row(table, 0)
    with pytest.raises(UserError, match="Pick a row"):
        make_data_tab.delete_row(table, None)
    task, path = make_data_tab.rows_file(maker, job_id, table)
    assert task == "chat" and path.endswith(f"generated-{job_id}.jsonl")
    rows = [json.loads(line) for line in open(path, encoding="utf-8")]
    assert len(rows) == 5 and rows[0] == {"prompt": QA[1][0], "response": "Velmora has seventeen bridges.",
                                          "source": "velmora.txt"}
    with pytest.raises(UserError, match="no rows left"):
        make_data_tab.rows_file(maker, job_id, pd.DataFrame(columns=["prompt", "response", "source"]))


@pytest.mark.parametrize("made, shown", [([], False), ([{"prompt": "Q?", "response": "A.", "source": "a.txt"}], True)])
def test_the_delete_button_shows_only_while_there_are_rows(made, shown):
    from types import SimpleNamespace

    from ui import make_data_tab

    status = {"state": "succeeded", "report": {"task": "chat", "rows": made, "summary": "Made rows."}}
    maker = SimpleNamespace(training=SimpleNamespace(job=lambda job_id, owner: status))
    assert make_data_tab.refresh(maker, "")[4].get("visible") is None  # no job: the button stays hidden as built
    assert make_data_tab.refresh(maker, "job-1")[4]["visible"] is shown
    if made:
        left, button = make_data_tab.delete_and_show(make_data_tab.frame(status["report"]), 0)
        assert left.empty and button["visible"] is False  # the last row gone: nothing left to delete

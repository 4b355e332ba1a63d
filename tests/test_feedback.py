"""Feedback on chat replies: kept per user, editable, exported, and turned into training rows and pairs."""

from __future__ import annotations

import json
from pathlib import Path

import gradio as gr
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from errors import NotFound, UserError
from tasks.base import download_folder
from tasks.feedback import FeedbackService, training_rows
from training import data
from ui.chat_tab import corrected, liked

HISTORY = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello! How can I help?"},
           {"role": "user", "content": "What is the capital of Zorbia?"},
           {"role": "assistant", "content": "I do not know."}]


@pytest.fixture
def feedback(ctx) -> FeedbackService:
    return FeedbackService(ctx)


def test_a_like_and_an_edit_in_chat_become_rows(feedback):
    liked(feedback, HISTORY, "Be brief.", "SmolLM2-135M-Instruct", "none",
          gr.LikeData(None, {"index": 1, "value": HISTORY[1]["content"], "liked": True}))
    edited = [*HISTORY[:3], {"role": "assistant", "content": "Quellmar."}]
    corrected(feedback, edited, "Be brief.", "", "zorbia",
              gr.EditData(None, {"index": 3, "value": "Quellmar.", "previous_value": "I do not know."}))
    up, fixed = feedback.feedback_rows()
    assert (up["prompt"], up["reply"], up["verdict"], up["history"]) == ("Hi", "Hello! How can I help?", "up", [])
    assert (fixed["prompt"], fixed["reply"], fixed["correction"]) == (HISTORY[2]["content"], "I do not know.",
                                                                      "Quellmar.")
    assert fixed["history"] == HISTORY[:2] and fixed["adapter"] == "zorbia" and up["system_prompt"] == "Be brief."
    with pytest.raises(UserError, match="Only the assistant's replies"):
        liked(feedback, HISTORY, "", "", "", gr.LikeData(None, {"index": 0, "value": "Hi", "liked": False}))


def test_rows_make_supervised_rows_and_preference_pairs(feedback, tmp_path):
    feedback.feedback("What is 2+2?", "5", "", "4")  # a correction: a row to learn, and a pair
    feedback.feedback("Say hi", "Hello there!", "up")
    feedback.feedback("Say hi", "hi.", "down")  # a liked and a disliked reply to one prompt: a pair
    feedback.feedback("Tell a joke", "No.", "down")  # only disliked: nothing to learn from yet
    supervised, pairs = training_rows(feedback.feedback_rows())
    assert [r["messages"][-1]["content"] for r in supervised] == ["4", "Hello there!"]
    assert [(p["chosen"], p["rejected"]) for p in pairs] == [("4", "5"), ("Hello there!", "hi.")]
    made = feedback.feedback_training_set()
    rows = [json.loads(line) for line in open(made.path, encoding="utf-8")]
    assert rows == supervised and made.name == "feedback-rows.jsonl"
    assert Path(made.path).parent.parent == download_folder().parent  # a download, cleared after an hour
    # The file is chat training data as the Train tab reads it.
    report = data.load_examples(made.path, "chat")
    assert report.format == "messages" and len(report.examples) == 2 and not report.rejected


def test_a_row_is_edited_and_deleted_by_its_owner_only(feedback):
    row = feedback.feedback("Prompt", "", "", "The answer")  # written by hand: a prompt and its answer
    changed = feedback.feedback("Prompt", "", "", "A better answer", id=row["id"])
    assert changed["id"] == row["id"] and changed["created"] == row["created"]
    assert [r["correction"] for r in feedback.feedback_rows()] == ["A better answer"]
    assert feedback.feedback_rows(owner="bob") == []
    with pytest.raises(NotFound):
        feedback.feedback("Prompt", "", "", "bob's", id=row["id"], owner="bob")
    with pytest.raises(NotFound):
        feedback.delete_feedback(row["id"], owner="bob")
    assert feedback.delete_feedback(row["id"]) == {"deleted": row["id"], "left": 0}


@pytest.mark.parametrize("kwargs, sentence", [
    ({"prompt": ""}, "empty"),
    ({"prompt": "Hi"}, "Give the reply"),
    ({"prompt": "Hi", "reply": "Yo", "verdict": "meh"}, "'up', 'down' or empty"),
    ({"prompt": "Hi", "reply": 3}, "must be text"),
    ({"prompt": "Hi", "reply": "x" * 200_000}, "too long"),
    ({"prompt": "x" * 15_000, "reply": "y" * 15_000}, "a row holds up to 20,000"),
    ({"prompt": "Hi", "reply": "Yo", "history": "not a list"}, "history must be a list"),
])
def test_wrong_rows_get_one_sentence(feedback, kwargs, sentence):
    with pytest.raises(UserError, match=sentence):
        feedback.feedback(**kwargs)
    assert feedback.feedback_rows() == []


def test_a_long_conversation_keeps_its_newest_turns(feedback):
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} " + "x" * 3_000}
               for i in range(10)]
    row = feedback.feedback("And now?", "Now this.", "up", "", history)
    assert [t["content"][:7] for t in row["history"]] == [f"turn {i} " for i in range(4, 10)]


def test_no_feedback_makes_no_training_set(feedback):
    feedback.feedback("Tell a joke", "No.", "down")
    with pytest.raises(UserError, match="No feedback to train on"):
        feedback.feedback_training_set()


def test_feedback_is_a_public_api(launch):
    url, _ = launch()
    client = Client(url, verbose=False)
    row = client.predict("What is 2+2?", "5", "", "4", [], "", "", "", "", api_name="/feedback")
    assert [r["id"] for r in client.predict("chat", api_name="/feedback_rows")] == [row["id"]]
    made = client.predict(api_name="/feedback_training_set")
    assert json.loads(open(made, encoding="utf-8").readline())["messages"][-1]["content"] == "4"
    assert client.predict(row["id"], api_name="/delete_feedback")["left"] == 0
    with pytest.raises(AppError, match="no feedback row"):
        client.predict(row["id"], api_name="/delete_feedback")

"""Sentiment: zero-shot on the real MiniLM, a tiny classifier's plumbing, CSV input, the tab and the API."""

import pandas as pd
import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from errors import UserError
from tasks.sentiment import MAX_TEXTS, SentimentTask
from tasks.text import csv_column as csv_texts
from ui import sentiment_tab

POSITIVE = ["I absolutely loved this film, the acting was superb.", "Fantastic product, it exceeded my expectations.",
            "The staff were so kind and helpful.", "What a beautiful day, I feel great!",
            "Highly recommend this hotel, everything was perfect.", "I am thrilled with the results."]
NEGATIVE = ["This was the worst meal I have ever had.", "The product broke after two days, total waste of money.",
            "Rude staff and dirty rooms, never again.", "I am very disappointed with the service.",
            "The movie was dull and far too long.", "Terrible customer support, nobody answered."]


@pytest.fixture
def sentiment(ctx):
    return SentimentTask(ctx)


@pytest.fixture(scope="session")
def tiny_classifier_dir(tmp_path_factory, tiny_bert_dir):
    """tiny_bert_dir with a random 3-way sequence-classification head and named labels."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-classifier")
    config = BertConfig.from_pretrained(tiny_bert_dir, num_labels=3,
                                        id2label={0: "sad", 1: "calm", 2: "happy"},
                                        label2id={"sad": 0, "calm": 1, "happy": 2})
    BertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


def test_zero_shot_gets_plain_sentiment_right(sentiment):
    results = sentiment.sentiment(POSITIVE + NEGATIVE)
    assert [r["text"] for r in results] == POSITIVE + NEGATIVE
    assert [r["label"] for r in results] == ["positive"] * len(POSITIVE) + ["negative"] * len(NEGATIVE)
    for r in results:
        assert set(r["scores"]) == {"positive", "negative", "neutral"}
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)
        assert r["scores"][r["label"]] == max(r["scores"].values())


def test_one_string_is_one_text_per_line_and_blank_lines_are_ignored(sentiment):
    rows, note = sentiment.analyze("I love it!\n\n   \nI hate it.\n")
    assert [r["text"] for r in rows] == ["I love it!", "I hate it."]
    assert [r["label"] for r in rows] == ["positive", "negative"]
    assert "offline fallback" in note


def test_classifier_path_uses_the_models_labels(sentiment, tiny_classifier_dir):
    texts = [f"review number {i} of the product" for i in range(40)]  # more than one batch
    rows, note = sentiment.analyze(texts, model=str(tiny_classifier_dir))
    assert note == "" and len(rows) == 40 and not sentiment.zero_shot(str(tiny_classifier_dir))
    for r in rows:
        assert set(r["scores"]) == {"sad", "calm", "happy"} and r["label"] in r["scores"]
        assert sum(r["scores"].values()) == pytest.approx(1.0, abs=1e-5)
    # Padding in a batch must not change a text's scores.
    alone = sentiment.sentiment([texts[-1]], model=str(tiny_classifier_dir))[0]
    assert alone["scores"] == pytest.approx(rows[-1]["scores"], abs=1e-5)


@pytest.mark.parametrize("texts, message", [
    ("", "every line is empty"),
    ("\n  \n", "every line is empty"),
    ([], "every line is empty"),
    (["fine", 3], "list of strings"),
    (["ok"] * (MAX_TEXTS + 1), "limit is 1,000"),
    (["fine", "x" * 6000], "Text 2 is too long"),
])
def test_bad_input_gets_a_clear_message(sentiment, texts, message):
    with pytest.raises(UserError, match=message):
        sentiment.sentiment(texts)


def test_a_model_without_a_classifier_says_so(sentiment, tiny_gpt2_dir):
    with pytest.raises(UserError, match="has no text classifier"):
        sentiment.sentiment("fine", model=str(tiny_gpt2_dir))


def test_an_adapter_that_does_not_exist_says_so(sentiment):
    with pytest.raises(UserError, match="no adapter named"):
        sentiment.sentiment("fine", adapter="mine")


def test_csv_column_is_read_and_problems_are_explained(tmp_path):
    good = tmp_path / "reviews.csv"
    pd.DataFrame({"id": [1, 2], "review": ["Great!", "Awful, with a comma."]}).to_csv(good, index=False)
    assert csv_texts(str(good), "review", 1) == ["Great!", "Awful, with a comma."]
    with pytest.raises(UserError, match="no column 'text'; its columns are: id, review"):
        csv_texts(str(good), "text", 1)
    latin = tmp_path / "latin.csv"
    latin.write_bytes("text\ncafé crème\n".encode("latin-1"))
    with pytest.raises(UserError, match="not UTF-8"):
        csv_texts(str(latin), "text", 1)
    big = tmp_path / "big.csv"
    big.write_text("text\n" + "a fine line\n" * 200_000)
    with pytest.raises(UserError, match="the limit is 1 MB"):
        csv_texts(str(big), "text", 1)


def test_tab_handlers_read_a_csv_and_give_table_chart_and_download(sentiment, upload_dir):
    path = upload_dir / "reviews.csv"
    pd.DataFrame({"stars": [5, 1], "text": POSITIVE[:1] + NEGATIVE[:1]}).to_csv(path, index=False)
    assert sentiment_tab.csv_columns(sentiment, str(path))["value"] == "text"
    table, counts, download, note = sentiment_tab.analyze(sentiment, "ignored", str(path), "text", "", "none")
    assert table["visible"] and counts["visible"]  # both hidden until the first results
    assert list(table["value"]["label"]) == ["positive", "negative"]
    assert dict(zip(counts["value"]["label"], counts["value"]["count"])) == {"negative": 1, "neutral": 0, "positive": 1}
    assert (counts["x_title"], counts["y_title"]) == ("label", "texts")  # in the page's language
    assert pd.read_csv(download["value"])["label"].tolist() == ["positive", "negative"]
    assert note == ""  # the zero-shot line is said once, above the model box (sentiment_tab.fallback_note)


def test_sentiment_through_the_api(launch):
    url, _ = launch()
    client = Client(url, verbose=False)
    rows = client.predict(["I love this!", "I hate this."], api_name="/sentiment")
    assert [r["label"] for r in rows] == ["positive", "negative"]
    rows = client.predict("What a great day\nWhat a horrible day", "", "", api_name="/sentiment")
    assert [r["label"] for r in rows] == ["positive", "negative"]
    with pytest.raises(AppError, match="every line is empty"):
        client.predict("   ", api_name="/sentiment")


def test_the_results_note_leaves_the_zero_shot_line_to_the_model_line():
    from tasks.sentiment import ZERO_SHOT_NOTE

    assert sentiment_tab.results_note(ZERO_SHOT_NOTE) == ""
    assert sentiment_tab.results_note(f"{ZERO_SHOT_NOTE} Another line.") == "Another line."

"""Summaries: extractive on the real MiniLM, abstractive on tiny seq2seq and chat models, long texts in parts,
the tab's handler, and the public API through gradio_client."""

from __future__ import annotations

import pytest

from errors import UserError
from tasks.generation import pack
from tasks.summarize import SummarizeTask, as_bullets, sentence_count
from tasks.text import split_sentences
from ui import summarize_tab

# Three sentences carry the topic (honeybees and food); the rest are unrelated side remarks.
MAIN = ["Honeybees are essential pollinators for many of the crops that people eat every day.",
        "Without honeybees, farmers would see much lower yields of apples, almonds and berries.",
        "Protecting honeybee colonies from pesticides and disease is therefore vital for global food production."]
BEES = (f"{MAIN[0]} My neighbour painted his fence blue last weekend.\n\n"
        f"{MAIN[1]} The train to the city was ten minutes late on Tuesday. A good pair of walking shoes can last "
        f"for years.\n\n"
        f"{MAIN[2]} The café on the corner has started selling a new kind of lemon cake. It rained heavily during "
        f"the night. My cousin is learning to play the violin.")

# A longer report: six paragraphs about a city's transport plan, each with a side remark.
REPORT = "\n\n".join([
    "The city council approved a new public transport plan on Monday. The plan adds three tram lines. "
    "The weather on Monday was mild.",
    "The new tram lines will connect the suburbs with the city centre. Construction starts next spring. "
    "A street musician played near the town hall.",
    "The council expects the trams to cut car traffic in the centre by a fifth. Fewer cars mean cleaner air. "
    "The town hall was built in 1890.",
    "Night buses will also run twice as often under the transport plan. Shift workers asked for this for years. "
    "Many people like to walk their dogs in the park.",
    "Critics say the transport plan is too expensive. They want the money spent on repairing roads. "
    "A new bakery opened on the main square.",
    "The state will pay half the cost of the tram construction. Ticket prices will stay the same. "
    "The local football team won on Saturday.",
])


@pytest.fixture
def task(ctx) -> SummarizeTask:
    return SummarizeTask(ctx)


def test_extractive_summary_keeps_the_main_points_in_document_order(task):
    result = task.summarize(BEES, length="short")
    assert result["method"] == "extractive" and result["model"] == "all-MiniLM-L6-v2"
    assert result["summary"] == " ".join(MAIN)  # exactly the three topic sentences, in order
    assert "offline fallback" in result["note"]


def test_length_options(task):
    total = len(split_sentences(REPORT))
    short = split_sentences(task.summarize(REPORT, "extractive", "short")["summary"])
    medium = split_sentences(task.summarize(REPORT, "", "medium")["summary"])
    bullets = task.summarize(REPORT, "", "bullets")["summary"].split("\n")
    assert len(short) == 3 and len(medium) == sentence_count(total, "medium") == 5
    assert set(short) <= set(medium)  # the same ranking: short is the head of medium
    assert [line.removeprefix("- ") for line in bullets] == medium and all(b.startswith("- ") for b in bullets)
    order = [REPORT.index(s) for s in medium]
    assert order == sorted(order)
    assert not any("bakery" in s or "football" in s for s in short)  # side remarks never lead
    one = "Only one sentence here, so there is nothing to leave out."
    assert task.summarize(one, length="short")["summary"] == one


@pytest.mark.parametrize("kwargs, words", [
    ({"method": "abstractive", "model": "all-MiniLM-L6-v2"}, "sentence-embedding model"),
    ({"method": "rewrite"}, "Unknown method"),
    ({"length": "long"}, "Unknown length"),
])
def test_bad_options_are_clear_errors(task, kwargs, words):
    with pytest.raises(UserError, match=words):
        task.summarize(BEES, **kwargs)
    with pytest.raises(UserError, match="empty"):
        task.summarize("   ")


def test_long_text_is_summarized_in_parts_by_a_seq2seq_model(task, tiny_bart_dir):
    long_text = "\n\n".join([REPORT] * 3)  # far more than the tiny BART's 256 positions
    seen = []
    result = task.run(long_text, "abstractive", "medium", str(tiny_bart_dir),
                      progress=lambda fraction, message: seen.append((fraction, message)), max_new_tokens=8)
    assert result["method"] == "abstractive" and result["model"] == tiny_bart_dir.name
    assert isinstance(result["summary"], str) and result["summary"]
    assert "parts" in result["note"]
    parts = [m for _, m in seen if "part" in m]
    assert parts and parts[-1].endswith(f"of {len(parts)}") and len(parts) >= 2
    assert all(0 < fraction <= 1 for fraction, _ in seen)


@pytest.mark.integration
def test_instruction_model_summarizes_through_the_engine(task, smollm2_dir):
    result = task.run(BEES, "abstractive", "bullets", "", max_new_tokens=24)  # no model: the default chat model
    assert result["method"] == "abstractive" and result["model"] == "SmolLM2-135M-Instruct"
    lines = result["summary"].split("\n")
    assert all(line.startswith("- ") for line in lines) and "bee" in result["summary"].lower()


def test_a_model_that_writes_nothing_is_a_clear_error(task, mute_chat_dir):
    with pytest.raises(UserError, match="returned an empty summary"):
        task.run(BEES, "", "short", str(mute_chat_dir), max_new_tokens=4)  # auto: an instruction model writes


def test_extractive_with_a_generating_model_ranks_with_the_embedder(task, tiny_bart_dir):
    result = task.summarize(BEES, "extractive", "short", str(tiny_bart_dir))
    assert result["summary"] == " ".join(MAIN) and result["model"] == "all-MiniLM-L6-v2"
    assert tiny_bart_dir.name in result["note"]


def test_pack_keeps_every_word_within_the_budget():
    def count(text: str) -> int:  # a word counter stands in for a tokenizer
        return len(text.split())

    chunks = pack(REPORT + "\n\n" + " ".join(["word"] * 50), 20, count)
    assert all(count(c) <= 20 for c in chunks)
    assert " ".join(chunks).split() == (REPORT + " " + " ".join(["word"] * 50)).split()


def test_as_bullets_normalises_lists_and_splits_prose():
    assert as_bullets("* one\n2) two") == "- one\n- two"
    assert as_bullets("First point. Second point.") == "- First point.\n- Second point."


def test_tab_handler_reports_progress_and_the_offline_note(task):
    calls = []
    summary, note = summarize_tab.summarize(task, BEES, "auto", "short", "", "none",
                                            progress=lambda fraction, desc: calls.append(desc))
    assert summary == " ".join(MAIN) and "Extractive" in note and calls
    assert "extractive" in summarize_tab.model_info("").lower()
    assert "extractive" not in summarize_tab.model_info("BART-large-CNN").lower()


def test_api_through_gradio_client(launch):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _ = launch()
    client = Client(url, verbose=False)
    result = client.predict(BEES, "", "short", "", "", api_name="/summarize")
    assert result["summary"] == " ".join(MAIN) and result["method"] == "extractive"
    with pytest.raises(AppError, match="Unknown length 'huge'"):
        client.predict(BEES, "", "huge", "", "", api_name="/summarize")

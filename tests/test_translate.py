"""Translation: language detection, clear errors, the layout kept line by line, the seq2seq and LM backbones,
the tab's handlers, and the public API through gradio_client on the real offline SmolLM2."""

from __future__ import annotations

import shutil

import pytest

from errors import UserError
from tasks.translate import TranslateTask, detect_language, language, split_lines
from ui import translate_tab

PARAGRAPHS = {
    "fr": "Le marché ouvre tous les samedis à huit heures. On y trouve des légumes, du fromage et du pain frais.",
    "de": "Der Zug nach Berlin fährt um neun Uhr ab. Bitte seien Sie zehn Minuten vorher am Bahnsteig.",
    "es": "El museo está cerrado los lunes. Las entradas cuestan diez euros y los niños entran gratis.",
    "zh": "今天天气很好，我们一起去公园散步吧。公园里有很多花，孩子们在草地上玩耍。",
}
# Three paragraphs, one of them a list, with single line breaks inside: the translation keeps all of it.
LAYOUT = ("Le marché ouvre tous les samedis.\nOn y trouve du pain frais.\n\n"
          "- des légumes\n- du fromage\n\n"
          "En hiver, les marchands vendent aussi du vin chaud.")


@pytest.fixture
def task(ctx) -> TranslateTask:
    return TranslateTask(ctx)


@pytest.mark.parametrize("code", list(PARAGRAPHS))
def test_detects_the_language_of_a_paragraph(code):
    found, confidence = detect_language(PARAGRAPHS[code])
    assert found == code and confidence > 0.9


@pytest.mark.parametrize("args, words", [
    (("Bonjour!", "en"), "too short to tell"),
    ((PARAGRAPHS["fr"], "fr"), "already in French"),
    ((PARAGRAPHS["fr"], "de", "German"), "both German"),
    ((PARAGRAPHS["fr"], "xx"), "Unknown target language 'xx'"),
    ((PARAGRAPHS["fr"], "en", "klingon"), "Unknown source language"),
    (("   ", "en"), "empty"),
])
def test_user_mistakes_are_clear_sentences(task, args, words):
    with pytest.raises(UserError, match=words):
        task.translate(*args)


def test_language_accepts_codes_names_and_regional_chinese():
    assert language("FR", "target").name == "French"
    assert language("german", "target").code == "de"
    assert language("zh-tw", "source").code == "zh"


@pytest.mark.integration
def test_layout_is_kept_line_by_line(task, smollm2_dir):
    seen = []
    result = task.run(LAYOUT, "en", model=str(smollm2_dir), max_new_tokens=8,
                      progress=lambda fraction, message: seen.append(message))
    out = result["translation"].split("\n")
    assert len(out) == len(LAYOUT.split("\n"))
    assert [line == "" for line in out] == [line == "" for line in LAYOUT.split("\n")]  # blank lines in place
    assert out[3].startswith("- ") and out[4].startswith("- ")  # list markers are not sent to the model
    assert out[0] != LAYOUT.split("\n")[0]  # the real model did write something of its own
    assert result["source"] == "fr" and result["source_confidence"] > 0.9 and result["target"] == "en"
    assert seen[-1] == "Translating piece 5 of 5"  # five lines with words, one request each


def test_lines_a_model_leaves_empty_keep_their_words(task, mute_chat_dir):
    result = task.run(LAYOUT, "en", model=str(mute_chat_dir), max_new_tokens=4)
    assert result["translation"] == LAYOUT
    assert "5 pieces came back empty" in result["note"]


def test_a_seq2seq_model_translates_each_line(task, tiny_bart_dir):
    result = task.run(LAYOUT, "de", "fr", str(tiny_bart_dir), max_new_tokens=4)
    assert result["model"] == tiny_bart_dir.name and result["source_confidence"] == 1.0
    assert result["translation"].count("\n") == LAYOUT.count("\n")


def test_a_marian_model_for_another_pair_is_refused(task, tiny_bart_dir, tmp_path):
    marian = tmp_path / "opus-mt-en-de"
    shutil.copytree(tiny_bart_dir, marian)
    with pytest.raises(UserError, match="translates from 'en' to 'de' only"):
        task.translate(PARAGRAPHS["fr"], "en", model=str(marian))


def test_a_hub_model_offline_is_named_with_the_chosen_pair(task):
    with pytest.raises(UserError, match="opus-mt-fr-en"):
        task.translate(PARAGRAPHS["fr"], "en", model="Helsinki-NLP/opus-mt-{src}-{tgt}")


def test_long_lines_are_translated_in_pieces(task, tiny_chat_dir):
    line = " ".join([PARAGRAPHS["fr"]] * 12)  # more than one piece for the tiny model's 256 positions
    seen = []
    task.run(line, "en", model=str(tiny_chat_dir), max_new_tokens=2, progress=lambda f, m: seen.append(m))
    assert len(seen) >= 2 and seen[-1].endswith(f"of {len(seen)}")


def test_split_lines_separates_markers_and_words():
    assert split_lines("  - apples \n\n2. pears") == [("  - ", "apples", " "), ("", "", ""), ("2. ", "pears", "")]


def test_tab_shows_the_detected_language_and_the_weak_model_note(task):
    assert translate_tab.detected(task, PARAGRAPHS["de"]).startswith("Detected: **German** (de)")
    assert "too short" in translate_tab.detected(task, "Hallo")
    assert "weak translator" in translate_tab.model_info("")
    assert "weak translator" not in translate_tab.model_info("Flan-T5-base")


@pytest.mark.integration
def test_api_through_gradio_client_on_the_offline_model(launch, smollm2_dir):
    from gradio_client import Client
    from gradio_client.exceptions import AppError

    url, _ = launch()
    client = Client(url, verbose=False)
    result = client.predict("Le chat dort sur le canapé depuis ce matin.", "en", "auto", "", "",
                            api_name="/translate")
    assert result["source"] == "fr" and result["target"] == "en" and result["model"] == "SmolLM2-135M-Instruct"
    assert "cat" in result["translation"].lower() and "weak translator" in result["note"]
    with pytest.raises(AppError, match="too short to tell"):
        client.predict("Oui.", "en", "auto", "", "", api_name="/translate")

"""Question answering: sentence level on the real MiniLM, a tiny span model's plumbing, collections, the API."""

import pytest
import torch
from gradio_client import Client
from gradio_client.exceptions import AppError

from errors import UserError
from tasks.answer import AnswerTask, best_in_window, sentence_spans, window_spans
from ui import answer_tab

PARAGRAPH = """The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named after
the engineer Gustave Eiffel, whose company designed and built the tower.

It was constructed from 1887 to 1889 as the centerpiece of the 1889 World's Fair.   The tower is 330 metres tall,
about the same height as an 81-storey building. Tickets can be bought to climb the stairs or take the lift."""


@pytest.fixture
def qa(ctx):
    return AnswerTask(ctx)


@pytest.fixture(scope="session")
def tiny_qa_dir(tmp_path_factory, tiny_bert_dir):
    """tiny_bert_dir with a random span-extraction head."""
    from transformers import AutoTokenizer, BertConfig, BertForQuestionAnswering

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-qa")
    BertForQuestionAnswering(BertConfig.from_pretrained(tiny_bert_dir)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(tiny_bert_dir).save_pretrained(folder)
    return folder


@pytest.mark.parametrize("question, words", [
    ("Who is the Eiffel Tower named after?", "Gustave Eiffel"),
    ("How tall is the tower?", "330 metres"),
    ("Where is the Eiffel Tower?", "Champ de Mars"),
    ("How can visitors get to the top?", "stairs"),
])
def test_sentence_level_finds_the_sentence_that_holds_the_answer(qa, question, words):
    result = qa.answer(question, PARAGRAPH)
    assert result["found"] and result["level"] == "sentence" and result["source"] == ""
    assert words in result["answer"]
    assert PARAGRAPH[result["start"]:result["end"]] == result["answer"]  # offsets into the text as given
    assert 0.3 <= result["score"] <= 1


def test_unrelated_question_finds_no_answer(qa):
    result = qa.answer("What is the recipe for pancakes?", PARAGRAPH)
    assert result == {"found": False, "answer": "", "score": pytest.approx(result["score"]), "start": -1, "end": -1,
                      "level": "sentence", "source": ""}
    assert result["score"] < 0.3


def test_sentence_spans_point_into_the_original_text():
    text = "First one.  Second\nline here!\n\nThird?"
    assert [text[s:e] for s, e in sentence_spans(text)] == ["First one.", "Second\nline here!", "Third?"]


def test_span_model_plumbing(qa, tiny_qa_dir):
    model = str(tiny_qa_dir)
    assert not qa.sentence_level(model)
    result = qa.find("Who designed the tower?", PARAGRAPH, model=model, threshold=0.0)
    assert result.found and result.level == "span"
    assert 0 <= result.start < result.end <= len(PARAGRAPH)
    assert result.answer == PARAGRAPH[result.start:result.end] and 0 < result.score <= 1
    assert not qa.find("Who designed the tower?", PARAGRAPH, model=model, threshold=1.0).found


def test_long_context_slides_a_window_over_all_of_it(qa, tiny_qa_dir):
    context = " ".join(f"Sentence number {i} talks about topic {i % 7}." for i in range(300))  # ~3,000 tokens
    loaded = qa.ctx.hub.get("span", str(tiny_qa_dir), "answer")
    windows = window_spans(loaded, "Which topic?", context, None)
    assert len(windows) > 8
    for score, start, end in windows:
        assert 0 <= score <= 1 and 0 <= start < end <= len(context)
    assert max(start for _, start, _ in windows) > len(context) * 0.9  # the last window reaches the end
    result = qa.find("Which topic?", context, model=str(tiny_qa_dir), threshold=0.0)
    assert result.answer == context[result.start:result.end]


def test_best_span_stays_in_the_context_and_within_length():
    # Tokens: [CLS] q q [SEP] c c c c [SEP]; the question token has the highest logits but is not context.
    in_context = [False, False, False, False, True, True, True, True, False]
    offsets = [[0, 0], [0, 3], [4, 8], [0, 0], [0, 5], [6, 9], [10, 14], [15, 20], [0, 0]]
    start = torch.tensor([0., 9., 0., 0., 1., 5., 0., 0., 0.])
    end = torch.tensor([0., 9., 0., 0., 0., 0., 1., 6., 0.])
    score, first, last = best_in_window(start, end, in_context, offsets)
    assert (first, last) == (6, 20) and 0.5 < score <= 1
    # An end before the start is never chosen.
    end = torch.tensor([0., 0., 0., 0., 6., 0., 0., 0., 0.])
    score, first, last = best_in_window(start, end, in_context, offsets)
    assert first <= last and (first, last) == (0, 5)


def test_collection_answers_name_their_source(qa, tmp_path):
    (tmp_path / "fruit.txt").write_text("Bananas are yellow. They grow in warm places.", encoding="utf-8")
    (tmp_path / "italy.md").write_text("The capital of Italy is Rome. It has many old churches.", encoding="utf-8")
    qa.search.add_documents("notes", [(str(tmp_path / "fruit.txt"), "fruit.txt"),
                                      (str(tmp_path / "italy.md"), "italy.md")])
    found = qa.find("What is the capital of Italy?", collection="notes")
    assert found.found and found.source == "italy.md" and found.answer == "The capital of Italy is Rome."
    assert found.passage[found.start:found.end] == found.answer
    assert qa.answer("What is the capital of Italy?", collection="notes")["source"] == "italy.md"
    with pytest.raises(UserError, match="no collection named 'other'"):
        qa.answer("What is the capital of Italy?", collection="other")
    with pytest.raises(UserError, match="not both"):
        qa.answer("What is the capital of Italy?", PARAGRAPH, "notes")


@pytest.mark.parametrize("kwargs, message", [
    ({"question": "  ", "context": PARAGRAPH}, "question: it is empty"),
    ({"question": "Why?"}, "paste a context"),
    ({"question": "Why?", "collection": "notes"}, "no collection named 'notes'"),
    ({"question": "Why?", "context": "x" * 100_001}, "context is too long"),
    ({"question": "Why?", "context": PARAGRAPH, "adapter": "mine"}, "no adapter named"),
])
def test_bad_input_gets_a_clear_message(qa, kwargs, message):
    with pytest.raises(UserError, match=message):
        qa.answer(**kwargs)


def test_a_model_without_a_span_head_says_so(qa, tiny_gpt2_dir):
    with pytest.raises(UserError, match="has no question-answering head"):
        qa.answer("Why?", PARAGRAPH, model=str(tiny_gpt2_dir))


def test_tab_handler_marks_the_answer(qa):
    answer, details, marked = answer_tab.ask(qa, "How tall is the tower?", PARAGRAPH, "", "", "none")
    assert "330 metres" in answer and "sentence-level (offline fallback)" in details
    assert "<mark>The tower is 330 metres tall" in marked
    answer, details, marked = answer_tab.ask(qa, "What is the recipe for pancakes?", PARAGRAPH, "", "", "none")
    assert answer == "" and "No answer found" in details and "<mark>" not in marked


def test_answer_through_the_api(launch):
    url, _ = launch()
    client = Client(url, verbose=False)
    result = client.predict("How tall is the tower?", PARAGRAPH, "", "", "", api_name="/answer")
    assert result["found"] and "330 metres" in result["answer"] and result["level"] == "sentence"
    with pytest.raises(AppError, match="paste a context"):
        client.predict("How tall is the tower?", api_name="/answer")

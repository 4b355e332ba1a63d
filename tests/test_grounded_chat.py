"""Chat from documents: the passages a conversation gets, the sources a reply cites, "I don't know" for what the
documents do not say, ownership, the context budget, the Chat view's sources, and the real SmolLM2 over /chat and
/v1 on made-up facts (examples/handbook)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import openai
import pytest
from gradio_client import Client, handle_file

from errors import NotFound, UserError
from tasks.base import Upload
from tasks.chat import ChatTask
from tasks.grounding import (NOTHING_FOUND, SOURCES, Passage, cited, fitted, retrieval_queries, unsupported,
                             with_citations, without_sources)
from ui import chat_tab

HANDBOOK = Path(__file__).resolve().parent.parent / "examples" / "handbook"
GREEDY = {"temperature": 0.0, "max_new_tokens": 8}


def handbook(chat: ChatTask, owner: str = "local", name: str = "handbook") -> None:
    files = [Upload(str(path), path.name) for path in sorted(HANDBOOK.glob("*.md"))]
    chat.search.add_documents(name, files, owner=owner)


@pytest.fixture
def chat(ctx, tiny_chat_dir) -> ChatTask:
    """The tiny chat model (context 256) over the handbook's collection, searched with the real MiniLM."""
    task = ChatTask(ctx)
    handbook(task)
    task.model = str(tiny_chat_dir)
    return task


def ask(chat: ChatTask, message: str, history=None, owner: str = "local", **options):
    return chat.reply(message, history, "", chat.model, "", collection="handbook", owner=owner, **{**GREEDY, **options})


def passage(number: int, text: str, source: str) -> Passage:
    return Passage(number, text, source, 0, 0.7, "handbook")


def test_the_passages_about_the_question_are_in_the_prompt(chat):
    reply_prompt = chat.grounded([{"role": "user", "content": "How high is Mount Ferrow?"}], "handbook", "",
                                 chat.model, "", 8)
    shown = reply_prompt.lm.tokenizer.decode(reply_prompt.ids)
    assert [p.source for p in reply_prompt.passages][0] == "mountain.md"
    assert all(p.text in shown for p in reply_prompt.passages) and "How high is Mount Ferrow?" in shown


def test_citations_point_at_the_passages_given_to_the_model():
    given = [passage(1, "Mount Ferrow is 2,914 metres high.", "mountain.md"),
             passage(2, "The ferry to Selk Island takes 47 minutes.", "ferry.md")]
    text, sources = with_citations("The crossing to Selk Island takes 47 minutes.", given)
    assert sources == [given[1]] and text == "The crossing to Selk Island takes 47 minutes. [2]" + SOURCES + \
        " [2] ferry.md"
    assert cited("Mount Ferrow is 2,914 metres high [1].", given) == [given[0]]  # the model's own marks first
    assert cited("I cannot say.", given) == [] and with_citations("I cannot say.", given) == ("I cannot say.", [])
    assert without_sources(text) == "The crossing to Selk Island takes 47 minutes. [2]"
    assert cited("渡轮需要四十七分钟。", [passage(1, "去塞尔克岛的渡轮需要四十七分钟。", "ferry.md")])  # Chinese words


def test_names_and_numbers_the_passages_do_not_hold_are_pointed_out():
    given = [passage(1, "The Varnholt lighthouse on Kessel Point has been kept since 2011 by Orla Finch.", "l.md")]
    made_up = "The lighthouse on Kessel Point is kept by Elara Varnholt, a British-Dutch keeper, since 1990. [1]"
    assert unsupported(made_up, given, "Who keeps the lighthouse?") == ["Elara", "British-Dutch", "1990"]
    assert unsupported("Orla Finch has kept it since 2011. [1]", given) == []
    shown = chat_tab.with_sources(*with_citations(made_up, given), "Who keeps the lighthouse?")
    assert "⚠️ Not in its sources: Elara, British-Dutch, 1990." in shown
    assert chat_tab.reply_only(shown) == made_up  # the warning is not the model's words


def test_a_sentence_opening_word_is_not_taken_for_a_made_up_name():
    given = [passage(1, "The ferry to Selk Island takes 47 minutes.", "ferry.md")]
    reply = "According to the passage, the ferry takes 47 minutes. However, it may vary. Sure! Selk Island. [1]"
    assert unsupported(reply, given) == []
    assert unsupported("Based on [1]: - Sure, the Kessel ferry takes 52 minutes.", given) == ["Kessel", "52"]


def test_a_streamed_reply_only_grows_and_keeps_its_citations_when_the_reader_stops_early():
    from tasks.chat import Reply

    given = [passage(1, "The ferry to Selk Island takes 47 minutes.", "ferry.md")]
    last = "The ferry to Selk Island takes 47 minutes.\n\n"
    text, _ = with_citations(last, given, sources_line=False)
    assert text == last + "[1]"  # a client that streamed `last` gets the rest, not a rewritten text
    reply = Reply(None, None, passages=given, sources_line=False)
    texts = reply._cited(t for t in ["The ferry", "The ferry to Selk Island takes 47 minutes."])
    assert [next(texts), next(texts)] == ["The ferry", "The ferry to Selk Island takes 47 minutes."]
    texts.close()  # as /v1 does at a stop string
    assert reply.citations == given


def test_a_blank_collection_means_no_documents_everywhere(chat):
    from tasks.grounding import asks_documents

    assert [asks_documents(c) for c in (None, "", "  ", "handbook", 3)] == [False, False, False, True, True]
    prompt = chat.prompt("How high is Mount Ferrow?", [], "", chat.model, "", 8, "  ")  # as /chat and /v1 read it
    assert prompt.passages == [] and not prompt.known


def test_the_nothing_found_reply_reads_in_chinese():
    from ui.i18n import localized_sentence

    english = NOTHING_FOUND.format(collection="handbook")
    assert "handbook" in (chinese := localized_sentence(english, "zh-CN")) and chinese != english


def test_a_follow_up_is_searched_with_the_message_before():
    turns = [{"role": "user", "content": "Tell me about the Selk Island ferry."},
             {"role": "assistant", "content": "It is the Marrow Gull."}, {"role": "user", "content": "How long?"}]
    assert retrieval_queries(turns) == ["How long?", "Tell me about the Selk Island ferry.\nHow long?"]
    turns[-1]["content"] = "When does it leave Port Adderly?"
    assert len(retrieval_queries(turns)) == 2
    turns[-1]["content"] = "Who wrote Hamlet?"  # a new subject: the old one would find the ferry again
    assert retrieval_queries(turns) == ["Who wrote Hamlet?"]


def test_an_unrelated_question_says_it_does_not_know_without_asking_the_model(chat):
    reply = ask(chat, "What is the capital of Japan?")
    assert reply.text() == NOTHING_FOUND.format(collection="handbook") and reply.tokens == 0
    assert reply.citations == [] and reply.finish_reason == "stop"


def test_another_users_collection_is_refused_like_an_unknown_one(chat):
    with pytest.raises(NotFound) as theirs:
        ask(chat, "How high is Mount Ferrow?", owner="bob")
    with pytest.raises(NotFound) as unknown:
        chat.reply("How high is Mount Ferrow?", None, "", chat.model, "", collection="atlas", owner="bob", **GREEDY)
    assert str(theirs.value) == str(unknown.value).replace("atlas", "handbook")
    with pytest.raises(UserError, match="collection's name"):
        chat.reply("Hi", collection=["handbook"], model=chat.model, **GREEDY)


def test_a_long_conversation_keeps_the_prompt_within_the_context_and_the_passages_in_it(chat):
    history = [{"role": role, "content": f"Turn {i}: " + "the weather was mild and calm that week " * 6}
               for i, role in zip(range(30), ["user", "assistant"] * 15)]
    prompt = chat.grounded([*history, {"role": "user", "content": "How high is Mount Ferrow?"}], "handbook", "",
                           chat.model, "", 64)
    room = prompt.lm.context_length - min(64, prompt.lm.context_length // 4)
    shown = prompt.lm.tokenizer.decode(prompt.ids)
    assert len(prompt.ids) <= room and prompt.dropped > 0  # old turns went, the passages stayed
    assert prompt.passages and prompt.passages[0].source == "mountain.md" and "2,914" in shown


def test_passages_are_fitted_best_first_and_the_last_cut_to_what_is_left():
    words = lambda text: len(text.split())  # noqa: E731
    long = passage(2, " ".join(f"w{i}" for i in range(200)), "b.md")
    kept = fitted([passage(1, "one two three", "a.md"), long, passage(3, "x y", "c.md")], words, 80)
    assert [p.number for p in kept] == [1, 2] and kept[1].text.endswith(" …")
    assert sum(words(p.text) + 8 for p in kept) <= 80 + 1  # (the "…" mark)
    assert fitted([long], words, 20) == []  # too little room to be worth reading


def test_the_chat_view_shows_the_sources_under_the_reply_and_the_model_reads_its_words_only(chat, monkeypatch):
    given = [passage(1, "Mount Ferrow is 2,914 metres high.", "mountain.md")]
    shown = chat_tab.with_sources(*with_citations("Mount Ferrow is 2,914 metres high.", given))
    assert "<summary>[1] mountain.md · chunk 1</summary>" in shown and "Sources:" not in shown
    assert chat_tab.reply_only(shown) == "Mount Ferrow is 2,914 metres high. [1]"
    heard, real = [], chat.reply
    monkeypatch.setattr(chat, "reply", lambda message, history, *args, **options: heard.append(history) or
                        real(message, history, *args, **options))
    before = [{"role": "user", "content": "How high is Mount Ferrow?"}, {"role": "assistant", "content": shown}]
    *_, (history, _) = chat_tab.respond(chat, "Who wrote Hamlet?", before, "", chat.model, "none", 0, 0.9, 8,
                                        "handbook")
    assert heard[0][-1]["content"] == "Mount Ferrow is 2,914 metres high. [1]"  # the sources stay on the page
    assert history[-1]["content"] == NOTHING_FOUND.format(collection="handbook") and history[-3]["content"] == shown


def test_the_chat_view_shows_the_message_at_once_and_gives_it_back_when_refused(chat):
    steps = chat_tab.respond(chat, "Hello", [], "", "no such model", "none", 0, 0.9, 8)
    history, box = next(steps)  # before any model is loaded
    assert history[0] == {"role": "user", "content": "Hello"} and history[1]["content"].startswith("⏳") and box == ""
    assert next(steps) == ([], "Hello")
    with pytest.raises(NotFound, match="Unknown model 'no such model'"):
        next(steps)


def test_the_chat_view_lists_the_users_collections(chat):
    update, searchers = chat_tab.collection_choices(chat, "gone", "gone")
    assert update["choices"] == [("none (the model alone)", ""), "handbook"] and update["value"] == ""
    assert searchers["choices"] == [("none", "none")] and searchers["value"] == "none"


@pytest.mark.integration
def test_smollm2_answers_from_the_handbook_with_its_source_over_chat_and_v1(launch, settings):
    """The real model on made-up facts: the answer, its Sources line (/chat) or citations field (/v1, whole and
    streamed), and "I don't know" for a question the handbook does not answer."""
    url, _ = launch(dataclasses.replace(settings, threads=2))
    client = Client(url, verbose=False)
    client.predict("handbook", [handle_file(str(path)) for path in sorted(HANDBOOK.glob("*.md"))], "",
                   api_name="/add_documents")
    question = "Who looks after the lighthouse on Kessel Point?"
    reply = client.predict(question, [], "", "", "", 0, 0.9, 64, "handbook", api_name="/chat")
    assert "Orla Finch" in reply and reply.endswith(SOURCES + " [1] lighthouse.md")
    api = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=300)
    ask_v1 = {"model": "SmolLM2-135M-Instruct", "messages": [{"role": "user", "content": question}],
              "temperature": 0, "max_tokens": 64, "extra_body": {"collection": "handbook"}}
    whole = api.chat.completions.create(**ask_v1).choices[0].message
    assert "Orla Finch" in whole.content and SOURCES not in whole.content
    assert [c["source"] for c in whole.model_extra["citations"]] == ["lighthouse.md"]
    streamed = list(api.chat.completions.create(**ask_v1, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == whole.content
    cited_chunks = [c.choices[0].delta.model_extra["citations"] for c in streamed
                    if c.choices and (c.choices[0].delta.model_extra or {}).get("citations")]
    assert cited_chunks == [whole.model_extra["citations"]]
    unknown = client.predict("Who wrote Hamlet?", [], "", "", "", 0, 0.9, 64, "handbook", api_name="/chat")
    assert unknown == NOTHING_FOUND.format(collection="handbook")


def test_compare_answers_each_variant_from_the_collection(chat):
    from tasks.compare import Comparison
    from tasks.sentiment import SentimentTask

    comparison = Comparison({"chat": chat})
    *_, last = comparison.compare("chat", {"message": "Who wrote Hamlet?", "collection": "handbook",
                                           "temperature": 0, "max_new_tokens": 4},
                                  [{"model": chat.model, "adapter": ""}, {"model": chat.model, "adapter": ""}])
    assert [r["result"] for r in last] == [NOTHING_FOUND.format(collection="handbook")] * 2
    # The same collection as compare's own last parameter (DESIGN §1, round 3), not one of chat's inputs.
    *_, last = comparison.compare("chat", {"message": "Who wrote Hamlet?", "temperature": 0, "max_new_tokens": 4},
                                  [{"model": chat.model, "adapter": ""}], "handbook")
    assert [r["result"] for r in last] == [NOTHING_FOUND.format(collection="handbook")]
    with pytest.raises(UserError, match="Only chat answers from a collection"):
        list(Comparison({"sentiment": SentimentTask(chat.ctx)}).compare("sentiment", {"texts": ["Great"]},
                                                                        [{"model": ""}], "handbook"))


def test_the_collection_is_searched_with_the_chosen_search_adapter(chat):
    with pytest.raises(UserError, match="atlas-finder") as unknown:
        ask(chat, "How high is Mount Ferrow?", search_adapter="atlas-finder")
    assert "adapter" in str(unknown.value)

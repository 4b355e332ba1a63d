"""Side by side: /compare runs the task's own endpoint on each variant, the ones on one base in one engine batch,
and each result equals the solo call's."""

from __future__ import annotations

import pytest
from adapters_kit import plain_lora, zipped
from gates import gate_requests, open_all

from config import LOCAL_USER
from errors import UserError
from models.adapters import NO_ADAPTER
from tasks.base import Upload
from tasks.chat import ChatTask
from tasks.compare import Comparison
from tasks.library import AdapterLibrary
from tasks.sentiment import SentimentTask
from tasks.summarize import SummarizeTask
from ui.picker import adapter_update
from waiting import wait_for

QUESTION = "Tell me about the moon."
TOKENS = 8


@pytest.fixture
def comparison(ctx) -> Comparison:
    return Comparison({"chat": ChatTask(ctx), "sentiment": SentimentTask(ctx), "summarize": SummarizeTask(ctx)})


@pytest.fixture
def moon(ctx, tiny_chat_dir, tmp_path) -> str:
    """A chat adapter on the tiny chat model (random LoRA weights: it changes the answers)."""
    folder = plain_lora(tiny_chat_dir, tmp_path / "moon")
    return AdapterLibrary(ctx).import_adapter(Upload(str(zipped(folder, tmp_path / "moon.zip")), "moon.zip"),
                                              "moon", "chat", str(tiny_chat_dir))["name"]


def test_a_variant_lists_only_the_adapters_on_its_model(ctx, moon, tiny_chat_dir, tiny_gpt2_dir):
    """The panel's adapter box, as the picker's: the adapters trained on the variant's model, and none else."""
    task = ChatTask(ctx)
    assert adapter_update(task, str(tiny_chat_dir), moon, LOCAL_USER) == {
        "choices": [("none", NO_ADAPTER), moon], "value": moon, "__type__": "update"}
    assert adapter_update(task, str(tiny_gpt2_dir), moon, LOCAL_USER) == {
        "choices": [("none", NO_ADAPTER)], "value": NO_ADAPTER, "__type__": "update"}
    # A choice named 'none' by the page is still a current choice that no longer applies.
    assert adapter_update(task, str(tiny_chat_dir), NO_ADAPTER, LOCAL_USER)["value"] == NO_ADAPTER


def solo(ctx, model, adapter: str = "") -> str:
    return ChatTask(ctx).reply(QUESTION, model=str(model), adapter=adapter, temperature=0,
                               max_new_tokens=TOKENS).text()


def test_base_and_adapter_run_as_one_batch_and_answer_as_alone(ctx, comparison, moon, tiny_chat_dir):
    inputs = {"message": QUESTION, "temperature": 0, "max_new_tokens": TOKENS}
    variants = [{"model": str(tiny_chat_dir), "adapter": ""}, {"model": "", "adapter": moon}]
    alone = [solo(ctx, tiny_chat_dir), solo(ctx, tiny_chat_dir, moon)]
    engine = ctx.hub.lm(str(tiny_chat_dir)).engine
    before = engine.forward_passes
    updates = list(comparison.compare("chat", inputs, variants))
    passes = engine.forward_passes - before
    last = updates[-1]
    assert [r["result"] for r in last] == alone and alone[0] != alone[1]
    assert [(r["model"], r["adapter"]) for r in last] == [(str(tiny_chat_dir), ""), ("", moon)]
    # Alone, each reply takes one model call per token; together both take the same calls (one more at most,
    # when the second joined a step late) instead of twice as many.
    assert passes <= TOKENS + 1, passes
    assert len(updates) > 2 and all(len(update) == 2 for update in updates)  # it streamed


def test_a_stopped_comparison_stops_every_variant(ctx, comparison, moon, tiny_chat_dir, monkeypatch):
    engine = ctx.hub.lm(str(tiny_chat_dir)).engine
    made = gate_requests(monkeypatch)  # armed at the first update: the engine then waits in a token's hand-over
    inputs = {"message": QUESTION, "temperature": 0, "max_new_tokens": 200}
    stream = comparison.compare("chat", inputs, [{"model": str(tiny_chat_dir)}, {"adapter": moon}],
                                progress=lambda *_: [r.tokens.armed.set() for r in made])
    try:
        next(stream)
        wait_for(lambda: any(r.tokens.holding.is_set() for r in made), 60, "the engine to wait on the gate")
        stream.close()  # the client went away
        passes = engine.forward_passes
    finally:
        open_all(made)
    wait_for(lambda: not engine.busy, 60, "the compared replies to stop")
    # Both rows left the batch at the end of the step the stop came in: no further pass, far from 200 tokens.
    assert len(made) == 2 and engine.forward_passes == passes
    assert all(r.tokens.tokens < 200 for r in made), [r.tokens.tokens for r in made]


def test_other_tasks_give_their_own_results(ctx, comparison, minilm_dir):
    texts = ["I loved it!", "This was awful."]
    variants = [{"model": ""}, {"model": str(minilm_dir)}]
    [results] = list(comparison.compare("sentiment", {"texts": texts}, variants))
    task = SentimentTask(ctx)
    alone = [task.sentiment(texts), task.sentiment(texts, str(minilm_dir))]
    # Variants run side by side in threads, so CPU kernels may split their sums differently.
    for compared, expected in zip([r["result"] for r in results], alone):
        assert [row["label"] for row in compared] == [row["label"] for row in expected]
        for got, want in zip(compared, expected):
            assert got["scores"] == pytest.approx(want["scores"], abs=1e-3)
    text = " ".join(f"Sentence {i} says something about rivers and bridges." for i in range(8))
    [summaries] = list(comparison.compare("summarize", {"text": text, "method": "extractive"}, [{}]))
    assert summaries[0]["result"]["summary"] == SummarizeTask(ctx).summarize(text, "extractive")["summary"]


@pytest.mark.parametrize("task, inputs, variants, sentence", [
    ("nope", {}, [{}], "Unknown task"),
    ("chat", {"message": "hi", "colour": "red"}, [{}], "'colour' is not an input of chat"),
    ("chat", "hi", [{}], "as a dict"),
    ("chat", {"message": "hi"}, [], "1 to 3 variants"),
    ("chat", {"message": "hi"}, [{}, {}, {}, {}], "1 to 3 variants"),
    ("chat", {"message": "hi"}, [{"model": 3}], "Each variant"),
    ("chat", {"message": "hi"}, [{"temperature": "0"}], "Each variant"),
    ("chat", {"message": "hi"}, [{"adapter": "nobody's"}], "nobody's"),
    ("chat", {"message": ""}, [{}], "empty"),
])
def test_wrong_comparisons_get_one_sentence(comparison, tiny_chat_dir, task, inputs, variants, sentence):
    with pytest.raises(UserError, match=sentence):
        list(comparison.compare(task, inputs, [v if "model" in v else {**v} for v in variants]))


def test_compare_is_a_public_streaming_endpoint(launch, tiny_chat_dir):
    from gradio_client import Client

    url, _ = launch()
    client = Client(url, verbose=False)
    inputs = {"message": QUESTION, "temperature": 0, "max_new_tokens": TOKENS}
    job = client.submit("chat", inputs, [{"model": str(tiny_chat_dir)}, {"model": str(tiny_chat_dir)}],
                        api_name="/compare")
    final = job.result(timeout=120)
    assert len(final) == 2 and final[0]["result"] == final[1]["result"] != ""

"""One request never breaks or starves the others: each finding of the multi-user review as a test, through
gradio_client against the launched app where a stranger would reach it."""

from __future__ import annotations

import time
import tracemalloc

import pytest
from gradio_client import Client

from waiting import seconds_until, wait_for

LINES = "\n".join(f"The blue house number {i} stands near the old river bridge." for i in range(400))
CHAT_FIRST_TOKEN_S = 10.0  # the bound a short chat's first token keeps while a long translation runs (2 cores)
SUMMARY_PEAK_MB = 300  # the bound a 50,000-sentence extractive summary keeps (it was two 50k x 50k matrices)


def first_update(job, timeout: float) -> float:
    """Seconds until a streaming job's first update."""
    return seconds_until(job.outputs, timeout, "the chat's first update")


def test_a_tiny_temperature_leaves_a_concurrent_greedy_chat_intact(launch, tiny_chat_dir):
    url, _ = launch()
    greedy = ["Tell me about rivers.", [], "", str(tiny_chat_dir), "", 0.0, 0.9, 16]
    alone = Client(url, verbose=False).predict(*greedy, api_name="/chat")
    clients = [Client(url, verbose=False) for _ in range(2)]
    jobs = [clients[0].submit(*greedy, api_name="/chat"),
            clients[1].submit("Hi", [], "", str(tiny_chat_dir), "", 1e-300, 0.9, 16, api_name="/chat")]
    results = [job.result(timeout=60) for job in jobs]
    assert results[0] == alone and isinstance(results[1], str)


def test_a_long_translation_neither_delays_another_chat_nor_outlives_its_client(launch, settings, tiny_chat_dir):
    settings.chat_model = str(tiny_chat_dir)  # the tiny model translates (badly) and chats
    url, demo = launch(settings)
    translation = Client(url, verbose=False).submit(LINES, "de", "en", "", "", api_name="/translate")
    lm = demo.ctx.hub.lm(str(tiny_chat_dir))
    submitted = count_submissions(lm)
    wait_for(lambda: lm.busy, 120, "the translation to reach the engine")
    chat = Client(url, verbose=False).submit("Hello there", [], "", "", "", 0.0, 0.9, 8, api_name="/chat")
    assert first_update(chat, 60) < CHAT_FIRST_TOKEN_S
    chat.result(timeout=60)
    assert not translation.done()  # 400 lines take far longer: it is still running
    translation.cancel()  # the client goes away
    at_cancel = len(submitted)
    wait_for(lambda: not lm.busy, 120, "the cancelled translation to leave the engine")
    # At most the lines in flight finish (each hands its turn to one more); the rest never enter the engine.
    assert len(submitted) - at_cancel <= settings.lines_in_flight + 1 and len(submitted) < 400


def test_a_translation_cancelled_before_its_first_line_is_done_stops_too(launch, settings, tiny_chat_dir):
    settings.chat_model = str(tiny_chat_dir)
    url, demo = launch(settings)
    lm = demo.ctx.hub.lm(str(tiny_chat_dir))
    submitted = count_submissions(lm)
    translation = Client(url, verbose=False).submit(LINES, "de", "en", "", "", api_name="/translate")
    wait_for(lambda: submitted, 120, "the translation to reach the engine")
    translation.cancel()  # before any line came back: the work has reported no progress yet
    wait_for(lambda: not lm.busy, 120, "the cancelled translation to leave the engine")
    assert len(submitted) <= 2 * (settings.lines_in_flight + 1)


def count_submissions(lm) -> list:
    """The prompts sent to lm's engine from now on (a spy: the real engine still does the work)."""
    submitted, engine_submit = [], lm.engine.submit

    def submit(prompt_ids, *args, **kwargs):
        submitted.append(prompt_ids)
        return engine_submit(prompt_ids, *args, **kwargs)
    lm.engine.submit = submit
    return submitted


def test_a_20k_turn_history_answers_within_seconds(launch, tiny_chat_dir):
    url, _ = launch()
    history = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i}"} for i in range(20_000)]
    client = Client(url, verbose=False)
    started = time.monotonic()
    reply = client.predict("And now?", history, "", str(tiny_chat_dir), "", 0.0, 0.9, 4, api_name="/chat")
    assert isinstance(reply, str) and time.monotonic() - started < 5.0  # a second or two, plus the client's JSON


@pytest.mark.integration
def test_a_50000_sentence_summary_stays_under_its_memory_bound(ctx):
    from tasks.summarize import SummarizeTask

    task = SummarizeTask(ctx)
    task.summarize(" ".join(f"Sentence {i} is about warming up." for i in range(12)))  # the model is not the summary
    tracemalloc.start()
    try:
        result = task.summarize("好。" * 50_000, "extractive", "short")  # within the 100,000-character limit
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result["method"] == "extractive" and "50000 sentences" in result["note"].replace(",", "")
    assert peak < SUMMARY_PEAK_MB * 2**20, f"{peak / 2**20:.0f} MB"


def test_too_much_text_is_refused_with_its_limit(ctx):
    from errors import UserError
    from tasks.chat import ChatTask

    ctx.settings.max_chars = 1_000
    with pytest.raises(UserError, match="more than 1,000 characters"):
        ChatTask(ctx).reply("hi", [{"role": "user", "content": "x" * 999}])


def test_concurrent_chats_do_not_wait_behind_long_requests(launch, tiny_chat_dir):
    """Chats have their own queue: four long requests holding the general queue do not hold a chat back."""
    url, demo = launch()
    slow = [Client(url, verbose=False).submit(LINES, "de", "en", str(tiny_chat_dir), "", api_name="/translate")
            for _ in range(demo.ctx.settings.concurrency)]
    lm = demo.ctx.hub.lm(str(tiny_chat_dir))
    wait_for(lambda: lm.busy, 120, "the translations to reach the engine")
    chat = Client(url, verbose=False).submit("Hi", [], "", str(tiny_chat_dir), "", 0.0, 0.9, 4, api_name="/chat")
    assert first_update(chat, 60) < CHAT_FIRST_TOKEN_S
    for job in slow:
        job.cancel()
    wait_for(lambda: not lm.busy, 60, "the cancelled translations to leave the engine")

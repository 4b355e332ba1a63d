"""The model cache: one load per key under concurrency, LRU eviction under a budget, clear errors."""

import contextvars
import threading

import pytest
import torch

from errors import UserError
from models.cache import ModelCache


class Closable:
    def __init__(self, name):
        self.name, self.closed = name, False

    def close(self):
        self.closed = True


def test_concurrent_requests_share_one_load():
    cache = ModelCache(budget_bytes=100)
    started = threading.Barrier(8)
    arrived = threading.Semaphore(0)
    calls = []

    def load():
        calls.append(1)
        for _ in range(7):  # a slow load: it ends only once every other thread has asked for the model too
            arrived.acquire(timeout=10)
        return Closable("m"), 10

    results = []

    def worker():
        started.wait()
        arrived.release()
        results.append(cache.get("m", load))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(calls) == 1 and cache.loads == 1
    assert len({id(r) for r in results}) == 1


def test_least_recently_used_is_evicted_and_closed():
    cache = ModelCache(budget_bytes=25)
    a = cache.get("a", lambda: (Closable("a"), 10))
    b = cache.get("b", lambda: (Closable("b"), 10))
    cache.get("a", lambda: pytest.fail("a is cached"))  # a is now the most recently used
    cache.get("c", lambda: (Closable("c"), 10))
    assert [k for k, _ in cache.items()] == ["a", "c"]
    assert b.closed and not a.closed


def test_real_models_load_once_through_the_hub(ctx, tiny_gpt2_dir):
    threads = [threading.Thread(target=ctx.hub.lm, args=(str(tiny_gpt2_dir),)) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert ctx.hub.cache.loads == 1
    assert ctx.hub.loaded()[0]["memory_mb"] >= 1


def test_budget_evicts_real_models(settings, tiny_gpt2_dir, tiny_chat_dir):
    from models.loading import ModelHub, weights_on_disk
    from models.catalog import resolve

    sizes = [weights_on_disk(resolve(str(folder), settings.path("models"))) for folder in (tiny_gpt2_dir, tiny_chat_dir)]
    settings.memory_budget_gb = max(sizes) * 1.2 / 2**30  # room for either tiny model, not for both
    hub = ModelHub(settings)
    first = hub.lm(str(tiny_gpt2_dir))
    hub.lm(str(tiny_chat_dir))
    assert len(hub.cache.items()) == 1 and first.engine._closed
    hub.cache.clear()


def test_a_model_bigger_than_the_budget_is_refused(settings, tiny_chat_dir):
    from models.loading import ModelHub

    settings.memory_budget_gb = 0.001
    hub = ModelHub(settings)
    with pytest.raises(UserError, match=r"needs about 0\.0 GB, more than this server's whole memory budget"):
        hub.lm(str(tiny_chat_dir))
    assert hub.cache.items() == []


def test_a_model_in_use_is_not_unloaded(settings, tiny_gpt2_dir, tiny_chat_dir):
    from models.engine import SamplingParams
    from models.loading import ModelHub, weights_on_disk
    from models.catalog import resolve

    sizes = [weights_on_disk(resolve(str(folder), settings.path("models"))) for folder in (tiny_gpt2_dir, tiny_chat_dir)]
    settings.memory_budget_gb = max(sizes) * 1.2 / 2**30
    hub = ModelHub(settings)
    busy = hub.lm(str(tiny_gpt2_dir))
    request = busy.generate([1, 2, 3], SamplingParams(100, temperature=1.0, seed=0))
    tokens = request.token_ids()
    next(tokens)  # generating: the model is in use
    hub.lm(str(tiny_chat_dir))
    assert not busy.engine._closed and len(hub.cache.items()) == 2  # over budget until its requests finish
    assert len(list(tokens)) >= 1
    hub.lm(str(tiny_chat_dir))
    hub.cache.clear()


def test_a_model_loads_in_a_thread_that_ends_with_the_load(ctx, tiny_chat_dir, monkeypatch):
    """The loading thread's OpenMP pool must not outlive the load: a second pool beside the engine's slows every
    decode step (models/threads.py)."""
    from models import loading

    seen = []

    def spy(hub, source):
        seen.append(threading.current_thread())
        return loading.load_lm(hub, source)

    monkeypatch.setitem(loading.LOADERS, "lm", spy)
    lm = ctx.hub.lm(str(tiny_chat_dir))
    assert len(seen) == 1 and seen[0] is not threading.current_thread() and not seen[0].is_alive()
    assert lm.engine.model is lm.model  # the loaded model itself came back


def test_broken_model_folder_is_a_clear_message(ctx, tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "gpt2"}')  # a config, but no weights
    with pytest.raises(UserError, match="Could not load the model"):
        ctx.hub.lm(str(tmp_path))


def test_unloading_under_load_hangs_nothing(ctx, tiny_gpt2_dir):
    from models.engine import SamplingParams

    lm = ctx.hub.lm(str(tiny_gpt2_dir))
    requests = [lm.generate([1, 2, 3 + i], SamplingParams(30, temperature=1.0, seed=i)) for i in range(6)]
    attach = threading.Thread(target=lambda: lm.engine.call(lambda: None))  # a command waiting its turn
    attach.start()
    ctx.hub.cache.clear()  # unloads the model while its requests run and wait
    finished = []
    readers = [threading.Thread(target=lambda r=r: finished.append(list(r.token_ids()))) for r in requests]
    [t.start() for t in readers]
    [t.join(timeout=60) for t in readers + [attach]]
    assert len(finished) == 6 and not attach.is_alive()  # every request ended: they were drained, not dropped
    with pytest.raises(UserError, match="was just unloaded"):
        lm.generate([1, 2, 3], SamplingParams(5, temperature=0))


def test_models_run_in_threads_that_end_with_each_call(ctx, tiny_bert_mlm_dir, tiny_bart_dir, minilm_dir):
    """A request thread that ran a model would keep its OpenMP pool and slow the chat engine's steps for as long as
    it lives (29 -> 47 ms per token on 2 cores): encoder models run in a thread of their own, as loads do."""
    from models.threads import in_own_thread
    from tasks.generation import seq2seq_generate
    from tasks.inside import InsideModel

    ran = []

    def record(module, args, kwargs):
        ran.append((threading.current_thread(), torch.is_inference_mode_enabled()))

    masked = ctx.hub.get("masked", str(tiny_bert_mlm_dir))
    seq2seq = ctx.hub.get("seq2seq", str(tiny_bart_dir))
    embedder = ctx.hub.embedder(str(minilm_dir))
    calls = {"fill-mask": (masked.model, lambda: InsideModel(ctx).fill_mask("A [MASK] day.", str(tiny_bert_mlm_dir))),
             "seq2seq": (seq2seq.model, lambda: seq2seq_generate(seq2seq, "Some text to summarise.", 4)),
             "embeddings": (embedder.model, lambda: embedder.encode(["one text", "another"])),
             "many embeddings": (embedder.model, lambda: embedder.encode(["a text"] * 40, 8, lambda done, n: None))}
    for name, (model, call) in calls.items():
        ran.clear()
        hook = model.register_forward_pre_hook(record, with_kwargs=True)
        try:
            call()
        finally:
            hook.remove()
        assert ran, name
        assert all(thread is not threading.current_thread() and not thread.is_alive() and inference
                   for thread, inference in ran), name
    with pytest.raises(ZeroDivisionError):  # an error inside reaches the caller
        in_own_thread(lambda: 1 / 0)
    request = contextvars.ContextVar("request")  # as Gradio marks the request whose progress bar moves
    request.set("this one")
    assert in_own_thread(request.get) == "this one"

"""The OpenAI-compatible routes, driven by the real `openai` client against the launched app: the same engine,
adapters, ownership and limits as the UI."""

from __future__ import annotations

import dataclasses
import json
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np
import openai
import pytest
from gradio_client import Client

from accounts import Accounts
from adapters_kit import plain_lora, zipped
from gates import gate_requests, open_all
from tasks.base import Upload
from tasks.library import AdapterLibrary
from waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
HELLO = [{"role": "user", "content": "Hello there"}]


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=300)


def add_adapter(demo, base: Path, name: str, seed: int, tmp_path: Path, owner: str = "local") -> str:
    folder = plain_lora(base, tmp_path / f"{name}-peft", seed=seed)
    archive = zipped(folder, tmp_path / f"{name}.zip")
    return AdapterLibrary(demo.ctx).import_adapter(Upload(str(archive), archive.name), name, "chat", str(base),
                                                   owner=owner)["name"]


@pytest.fixture(scope="module")
def served(launch_for_module, module_settings, tiny_chat_dir, tmp_path_factory):
    """The app with the tiny chat model as its default and two adapters on it; (url, demo). The module's tests
    share it: each leaves its engine idle, as it found it."""
    url, demo = launch_for_module(dataclasses.replace(module_settings, chat_model=str(tiny_chat_dir)))
    folder = tmp_path_factory.mktemp("adapters")
    add_adapter(demo, tiny_chat_dir, "sun", 1, folder)
    add_adapter(demo, tiny_chat_dir, "moon", 2, folder)
    return url, demo


def ask(api: openai.OpenAI, model: str, tokens: int = 12, **options) -> str:
    reply = api.chat.completions.create(model=model, messages=HELLO, temperature=0, max_tokens=tokens, **options)
    return reply.choices[0].message.content


def test_models_list_bases_embeddings_and_adapters_with_their_parent(served, tiny_chat_dir):
    url, _ = served
    models = {m.id: m for m in client(url).models.list().data}
    base = Path(tiny_chat_dir).name
    assert models[base].task == "chat" and "/" not in base  # listed by name: no server path leaves
    assert models["all-MiniLM-L6-v2"].task == "embeddings"
    assert models["sun"].parent == base and models["sun"].owned_by == "local" and models["moon"].task == "chat"


def test_chat_streaming_and_the_gradio_api_give_the_same_greedy_text(served, tiny_chat_dir):
    url, _ = served
    api = client(url)
    whole = api.chat.completions.create(model="sun", messages=HELLO, temperature=0, max_tokens=12)
    text = whole.choices[0].message.content
    assert text and whole.choices[0].finish_reason in ("length", "stop")
    assert whole.usage.completion_tokens == 12 or whole.choices[0].finish_reason == "stop"
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens
    chunks = list(api.chat.completions.create(model="sun", messages=HELLO, temperature=0, max_tokens=12,
                                              stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens and not chunks[-1].choices
    gradio = Client(url, verbose=False).predict("Hello there", [], "", "", "sun", 0, 0.9, 12, api_name="/chat")
    assert gradio == text
    # base:adapter names the same thing; the base alone answers differently (the adapter matters).
    assert ask(api, f"{Path(tiny_chat_dir).name}:sun") == text and ask(api, "") != text


def test_completion_on_a_base_model_and_stop_strings(served, tiny_gpt2_dir):
    url, _ = served
    api = client(url)
    out = api.completions.create(model=str(tiny_gpt2_dir), prompt="Once upon a time", temperature=0, max_tokens=8)
    gradio = Client(url, verbose=False).predict("Once upon a time", str(tiny_gpt2_dir), "", 1, 8, 0, 0.95,
                                                api_name="/complete")
    assert out.choices[0].text == gradio[0] and out.object == "text_completion"
    full = out.choices[0].text
    stop = full[3:5]
    cut = api.completions.create(model=str(tiny_gpt2_dir), prompt="Once upon a time", temperature=0, max_tokens=8,
                                 stop=[stop])
    assert cut.choices[0].text == full[:full.find(stop)] and cut.choices[0].finish_reason == "stop"
    streamed = "".join(c.choices[0].text for c in api.completions.create(
        model=str(tiny_gpt2_dir), prompt="Once upon a time", temperature=0, max_tokens=8, stop=[stop], stream=True))
    assert streamed == cut.choices[0].text
    several = api.completions.create(model=str(tiny_gpt2_dir), prompt=["One", "Two"], temperature=0, max_tokens=4,
                                     n=2)
    assert len(several.choices) == 4 and several.choices[0].text == several.choices[1].text  # greedy: equal


def test_embeddings_are_the_search_tabs_unit_vectors(served):
    url, demo = served
    api = client(url)
    texts = ["The cat sat on the mat.", "Quarterly revenue grew by four percent."]
    out = api.embeddings.create(model="all-MiniLM-L6-v2", input=texts)  # the client asks for base64
    vectors = np.array([d.embedding for d in out.data])
    assert vectors.shape == (2, 384) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    expected = demo.ctx.hub.embedder("all-MiniLM-L6-v2").encode(texts)
    assert np.allclose(vectors, expected, atol=1e-5) and out.usage.prompt_tokens > 0
    floats = api.embeddings.create(model="", input="The cat sat on the mat.", encoding_format="float")
    assert np.allclose(floats.data[0].embedding, expected[0], atol=1e-5)


def test_errors_come_in_openais_shape_with_their_status(served, launch, settings, tiny_chat_dir):
    url, _ = served
    api = client(url)
    with pytest.raises(openai.NotFoundError, match="Unknown model"):
        ask(api, "no-such-model")
    with pytest.raises(openai.NotFoundError, match="no adapter named 'nope'"):
        ask(api, f"{Path(tiny_chat_dir).name}:nope")
    with pytest.raises(openai.BadRequestError, match="last message must be the user"):
        api.chat.completions.create(model="", messages=[{"role": "assistant", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="Temperature"):
        api.chat.completions.create(model="", messages=HELLO, temperature=5)
    with pytest.raises(openai.BadRequestError, match="not supported"):
        api.chat.completions.create(model="", messages=HELLO, logprobs=True)
    with pytest.raises(openai.APIStatusError) as too_large:
        api.chat.completions.create(model="", messages=[{"role": "user", "content": "x" * 100_001}])
    assert too_large.value.status_code == 413 and "too long" in too_large.value.message
    with pytest.raises(openai.BadRequestError, match="too long for") as too_long:  # more than the model reads
        api.chat.completions.create(model="", messages=[{"role": "user", "content": "word " * 3000}])
    assert too_long.value.code == "context_length_exceeded"
    history = [{"role": r, "content": "word " * 60} for _ in range(4) for r in ("user", "assistant")]
    with pytest.raises(openai.BadRequestError, match="leave out older messages") as dropped:  # never silently
        api.chat.completions.create(model="", messages=history + HELLO)
    assert dropped.value.code == "context_length_exceeded"


def test_a_strangers_oversized_or_odd_requests_get_one_sentence(launch, settings, tiny_chat_dir):
    url, _ = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir), max_chars=1000))
    api = client(url)
    for size in (1_500_000, 12_000_000, 1_500_000):  # 1,500 and 12,000 times the limit
        huge = {"model": "", "messages": [{"role": "user", "content": "x" * size}]}
        request = urllib.request.Request(url.rstrip("/") + "/v1/chat/completions", data=json.dumps(huge).encode(),
                                         headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as too_big:  # a 413 with its sentence, not a reset connection
            urllib.request.urlopen(request, timeout=60)
        assert too_big.value.code == 413 and "larger than" in json.loads(too_big.value.read())["error"]["message"]
    with pytest.raises(openai.APIStatusError, match="conversation is too long") as system:  # counted too
        api.chat.completions.create(model="", messages=[{"role": "system", "content": "x" * 5000}] + HELLO)
    assert system.value.status_code == 413
    with pytest.raises(openai.APIStatusError, match="at most 2048 texts and 1,000 characters") as embeddings:
        api.embeddings.create(model="", input=["word " * 100] * 3)
    assert embeddings.value.status_code == 413
    for options, message in [({"n": 1000}, "'n' must be between 1 and 8"),
                             ({"max_tokens": 10**6}, "Max new tokens must be between"),
                             ({"stop": ["x" * 100_000]}, "1 to 200 characters"),
                             ({"stop": ["a"] * 50}, "at most 4"), ({"seed": "abc"}, "whole number"),
                             ({"model": "/etc"}, "holds no model"), ({"model": "../../etc/passwd"}, "Unknown model")]:
        with pytest.raises(openai.APIStatusError, match=message) as refused:
            api.chat.completions.create(**{"model": "", "messages": HELLO, **options})
        assert refused.value.status_code in (400, 404) and str(ROOT) not in refused.value.message
    with pytest.raises(openai.BadRequestError, match="last user message is empty"):
        api.chat.completions.create(model="", messages=[{"role": "user", "content": "  "}])
    bad_json = urllib.request.Request(url.rstrip("/") + "/v1/completions", data=b"{not json",
                                      headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as not_json:
        urllib.request.urlopen(bad_json, timeout=60)
    assert not_json.value.code == 400


def test_over_the_per_user_limit_is_a_429(launch, settings, tiny_chat_dir):
    url, _ = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir), api_requests_per_user=1))
    api = client(url)
    stream = api.chat.completions.create(model="", messages=HELLO, temperature=0, max_tokens=200, stream=True)
    next(iter(stream))
    with pytest.raises(openai.RateLimitError, match="limit is 1"):
        ask(api, "")
    stream.close()
    wait_for(lambda: _answers(api), timeout=60, what="the slot to free up after the stream closed")


def _answers(api) -> bool:
    try:
        return bool(ask(api, "", tokens=2) is not None)
    except openai.RateLimitError:
        return False


def test_a_client_that_goes_away_stops_its_rows(served, tiny_chat_dir, monkeypatch):
    url, demo = served
    engine = demo.ctx.hub.lm(str(tiny_chat_dir)).engine
    made = gate_requests(monkeypatch)  # armed once text streams: the engine then waits in a token's hand-over
    api = client(url)
    stream = api.chat.completions.create(model="", messages=HELLO, temperature=0.9, max_tokens=4000,
                                         stream=True)
    try:
        chunks = iter(stream)
        next(chunks), next(chunks)
        [request] = made
        request.tokens.armed.set()
        wait_for(request.tokens.holding.is_set, 60, "the engine to wait on the gate")
        assert engine.busy
        stream.close()
        wait_for(request.stop.is_set, 60, "the server to notice its client is gone")
        passes = engine.forward_passes
    finally:
        open_all(made)
    wait_for(lambda: not engine.busy, 60, "the engine to drop the closed stream's row")
    assert engine.forward_passes == passes  # it left the batch at the end of the step it was held in


def test_a_non_streaming_client_that_goes_away_stops_its_rows(served, tiny_chat_dir, monkeypatch):
    url, demo = served
    engine = demo.ctx.hub.lm(str(tiny_chat_dir)).engine
    made = gate_requests(monkeypatch, armed=True)  # the engine waits in the hand-over of each token till opened
    body = json.dumps({"model": "", "messages": HELLO, "temperature": 0.9, "max_tokens": 4000, "n": 4}).encode()
    address = urllib.parse.urlsplit(url)
    connection = socket.create_connection((address.hostname, address.port), timeout=60)
    try:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer none\r\n"
                           b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: len(made) == 4 and any(r.tokens.holding.is_set() for r in made), 120,
                 "the rows' first token")
    finally:
        connection.close()  # the client gives up while its rows are held in the middle of their reply
    try:
        wait_for(lambda: all(r.stop.is_set() for r in made), 60, "the server to notice its client is gone")
        passes = engine.forward_passes
    finally:
        open_all(made)
    wait_for(lambda: not engine.busy, 60, "the engine to drop the gone client's rows")
    # The rows left the batch at the end of the step they were held in: no further pass, one token each.
    assert engine.forward_passes == passes and all(r.tokens.tokens <= 1 for r in made)


def test_concurrent_requests_on_the_base_and_two_adapters_equal_their_solo_answers(served):
    url, _ = served
    api = client(url)
    models = ["", "sun", "moon", "sun"]
    solo = {model: ask(api, model, tokens=16) for model in set(models)}
    assert len(set(solo.values())) == 3  # three different answers: the adapters are really used
    together: dict[int, str] = {}
    gate = threading.Barrier(len(models))

    def run(i: int, model: str) -> None:
        gate.wait()
        together[i] = ask(api, model, tokens=16)

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate(models)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert [together[i] for i in range(len(models))] == [solo[m] for m in models]


@pytest.mark.worker  # `app.py users key` in a process of its own
def test_with_accounts_a_key_acts_as_its_user(launch, settings, tiny_chat_dir, tmp_path):
    accounts = Accounts(settings)
    accounts.add("alice", "alice-secret-1")
    accounts.add("bob", "bob-secret-22")
    url, demo = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir)))
    add_adapter(demo, tiny_chat_dir, "alices", 1, tmp_path, owner="alice")
    alice = accounts.keys.create("alice", "laptop")
    made = subprocess.run([sys.executable, "app.py", "users", "key", "bob", "--data-dir", str(settings.data_dir)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert made.returncode == 0, made.stderr
    bob = made.stdout.strip().splitlines()[-1]
    assert bob.startswith("lsk-") and accounts.keys.owner_of(bob) == "bob"
    with pytest.raises(urllib.error.HTTPError) as no_key:  # no Authorization header at all
        urllib.request.urlopen(url.rstrip("/") + "/v1/models", timeout=60)
    assert no_key.value.code == 401 and "API key" in json.loads(no_key.value.read())["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        client(url, "lsk-made-up").models.list()
    assert "alices" in {m.id for m in client(url, alice).models.list().data}
    assert ask(client(url, alice), "alices")
    assert "alices" not in {m.id for m in client(url, bob).models.list().data}
    with pytest.raises(openai.NotFoundError):  # another user's adapter answers as an unknown model
        ask(client(url, bob), "alices")
    # Alice's merged model is hers: listed and used by its name for her; for bob an unknown model, even loaded,
    # and its folder typed as a path is no way in either.
    AdapterLibrary(demo.ctx).merge_adapter("alices", owner="alice")
    assert ask(client(url, alice), "alices-merged") == ask(client(url, alice), "alices")
    assert client(url, alice).models.retrieve("alices-merged").parent == Path(tiny_chat_dir).name
    assert "alices-merged" not in {m.id for m in client(url, bob).models.list().data}
    folder = demo.ctx.adapters.merged.find("alice", "alices-merged")
    for model in ("alices-merged", str(folder), str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT)
                  else str(folder)):
        with pytest.raises(openai.NotFoundError):
            ask(client(url, bob), model)
    key_id = accounts.keys.list("alice")[0]["id"]
    accounts.keys.revoke("alice", key_id)
    with pytest.raises(openai.AuthenticationError):
        client(url, alice).models.list()
    assert "lsk-" not in accounts.keys.path.read_text()  # only hashes are stored


def test_a_single_user_server_can_require_its_api_key(launch, settings, tiny_chat_dir):
    url, _ = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir), api_key="sesame-key"))
    with pytest.raises(openai.AuthenticationError):
        client(url, "wrong").models.list()
    assert client(url, "sesame-key").models.list().data

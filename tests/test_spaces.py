"""On a Hugging Face Space: signed-in Hugging Face users own their work, ZeroGPU calls ask for bounded durations,
and scripts/space_check.py reports what will work."""

from __future__ import annotations

import dataclasses
import errno
import inspect
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from test_mcp import mcp
from test_openai_api import add_adapter
from errors import UserError
from ui import chat_tab, zerogpu
from ui.api import handler

ROOT = Path(__file__).resolve().parent.parent
MODEL_ENDPOINTS = {"chat", "complete", "summarize", "translate", "sentiment", "answer", "search", "add_documents",
                   "compare", "next_token", "fill_mask", "similarity", "token_loss", "attention"}
# The UI's own events that run a model (their function names; some share their endpoint's).
MODEL_HANDLERS = {"respond", "alternatives", "ask", "analyze", "summarize", "translate", "run_search", "add_files",
                  "next_view", "append_likeliest", "fill_view", "attention_view", "similarity_view", "surprise_view",
                  "compare_variants"}


def test_every_endpoint_that_runs_a_model_asks_zerogpu_for_a_bounded_duration(settings, monkeypatch):
    from app import build_app

    asked: dict[str, object] = {}
    every: list[str] = []

    def recorded_gpu(fn, duration):  # what spaces.GPU receives on ZeroGPU, recorded instead of leasing a GPU
        asked.setdefault(fn.__name__, duration)  # the endpoints are published before the views are drawn
        every.append(fn.__name__)
        return fn

    monkeypatch.setattr(zerogpu, "_decorator", lambda: recorded_gpu)
    demo = build_app(settings)
    demo.training.manager.shutdown()
    published = {fn.api_name for fn in demo.fns.values() if fn.api_visibility == "public"}
    assert MODEL_ENDPOINTS <= published
    assert set(every) == MODEL_ENDPOINTS | MODEL_HANDLERS, set(every) ^ (MODEL_ENDPOINTS | MODEL_HANDLERS)

    chat = asked["chat"]
    assert zerogpu.MIN_S <= chat("Hello", None, "", "", "", 0.3, 0.9, 256) < zerogpu.MAX_S
    assert chat("Hello", max_new_tokens=32) < chat("Hello", max_new_tokens=1024) <= zerogpu.MAX_S
    assert chat("x" * 100_000, max_new_tokens=100_000) == zerogpu.MAX_S  # never more than the bound
    assert asked["sentiment"](["fine"]) == zerogpu.MIN_S  # never less either
    assert asked["translate"]("word " * 2000, "fr") > asked["translate"]("word", "fr")
    one = asked["compare"]("chat", {"message": "Hi"}, [{"model": "", "adapter": ""}])
    assert asked["compare"]("chat", {"message": "Hi"}, [{"model": "", "adapter": ""}] * 3) > one
    assert asked["chat"](None, max_new_tokens="many") == zerogpu.UNKNOWN_S  # a bad request fails at once anyway


def forking_gpu(fn, duration, timeout: float = 120):
    """ZeroGPU's way of running a decorated call, recorded: in a process forked from the server (spaces forks its
    worker the same way), the result sent back through a pipe."""
    fork = multiprocessing.get_context("fork")

    def call(*args, **kwargs):
        assert zerogpu.MIN_S <= duration(*args, **kwargs) <= zerogpu.MAX_S
        ours, theirs = fork.Pipe()

        def child():
            result = fn(*args, **kwargs)
            theirs.send(list(result) if inspect.isgenerator(result) else result)

        process = fork.Process(target=child, daemon=True)
        process.start()
        try:
            if not ours.poll(timeout):
                raise TimeoutError("the forked call did not answer")
            return ours.recv()
        finally:
            process.kill()
            process.join()
    return call


@pytest.mark.worker  # runs a process of its own
def test_a_call_in_zerogpus_forked_process_loads_its_own_models(settings, tiny_chat_dir, monkeypatch):
    from models.loading import ModelHub
    from tasks import TASKS
    from tasks.base import Context

    chat_settings = dataclasses.replace(settings, chat_model=str(tiny_chat_dir))
    task = TASKS["chat"](Context(chat_settings, ModelHub(chat_settings)))
    try:
        served = task.complete("Once upon a time", max_new_tokens=5, temperature=0)  # loaded by the server
        # Straight into a fork, the call would wait for the server's engine thread, which the fork does not have.
        with pytest.raises(TimeoutError):
            forking_gpu(task.complete, lambda *a, **k: zerogpu.MIN_S, timeout=5)("Once upon a time", max_new_tokens=5,
                                                                                 temperature=0)
        monkeypatch.setattr(zerogpu, "_decorator", lambda: forking_gpu)
        monkeypatch.setenv("SPACES_ZERO_GPU", "true")
        assert zerogpu.gpu("complete", task.complete)("Once upon a time", max_new_tokens=5, temperature=0) == served
        replies = zerogpu.gpu("chat", task.chat)("Hello", None, "", "", "", 0.0, 0.9, 5)
        assert replies and replies[-1] == list(task.chat("Hello", None, "", "", "", 0.0, 0.9, 5))[-1]
        # The Chat view's own streaming goes the same way.
        *_, (history, _) = handler(chat_tab.respond, task, gpu="chat")("Hello", [], "", "", "none", 0.0, 0.9, 5)
        assert history[-1] == {"role": "assistant", "content": replies[-1]}
    finally:
        task.ctx.hub.cache.clear()


def test_off_zerogpu_the_spaces_decorator_gives_the_function_back(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)

    def chat(message: str, max_new_tokens: int = 256) -> str:
        return message

    assert zerogpu._decorator() is not None  # the real spaces package, installed
    assert zerogpu.gpu("chat", chat) is chat and zerogpu.gpu("tokenize", chat) is chat


def test_training_runs_as_bounded_calls_and_the_page_says_the_gpu_time(monkeypatch):
    monkeypatch.delenv("SPACES_ZERO_GPU", raising=False)
    assert zerogpu.training_note(1000, 0.5) == ""  # off ZeroGPU the estimate says nothing of it
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    assert "minutes of GPU time" in zerogpu.training_note(1000, 0.5)
    slices = zerogpu.training_slices(1000, 0.5)
    room = zerogpu.MAX_S - zerogpu.START_S - zerogpu.CHECKPOINT_S
    assert slices.steps_per_call * 0.5 <= room and slices.calls * slices.steps_per_call >= 1000
    assert slices.gpu_seconds >= 500
    assert "minutes of GPU time" in zerogpu.gpu_time_sentence(slices)
    assert zerogpu.training_slices(10, 500.0).steps_per_call == 1  # a step longer than a call still moves


@pytest.mark.worker  # each call runs in a forked process
def test_on_zerogpu_a_training_job_runs_as_successive_bounded_calls(ctx, tiny_chat_dir, monkeypatch):
    from safetensors.torch import load_file

    from models.device import set_threads
    from test_training import FACTS, QUESTION, TINY, ask, finished, wait_for
    from training import paths
    from training.service import TrainingService
    from training.worker import run_job

    leases, refuse = [], {"call": 2}  # the second call is refused, as ZeroGPU does when the quota runs out

    def leasing_gpu(fn, duration):  # ZeroGPU's calls as spaces makes them: forked, leases recorded
        forked = forking_gpu(fn, duration, timeout=300)

        def call(*args):
            leases.append(duration(*args))
            if len(leases) == refuse["call"]:
                raise RuntimeError("ZeroGPU quota exceeded: 60s requested vs. 12s left")
            return forked(*args)
        return call

    monkeypatch.setattr(zerogpu, "_decorator", lambda: leasing_gpu)
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    monkeypatch.setattr(zerogpu, "training_room", lambda lease_s: 0.0)  # one step a call, however fast the machine
    zerogpu.job_call.cache_clear()
    settings = {**TINY, "epochs": 2}  # 12 steps; dropout draws random masks at every one
    service = TrainingService(ctx)
    try:
        with pytest.raises(UserError, match="pick a preset"):  # a settings trial would outlast a call
            service.submit("chat", str(FACTS), str(tiny_chat_dir), "searched", "quick", {"search": True})
        job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "sliced", "quick", settings)["job_id"]
        status = wait_for(lambda: finished(service, job_id), what="the refused call")
        assert status["state"] == "interrupted" and "ZeroGPU quota exceeded" in status["error"], status
        assert 0 < status["step"] < status["total_steps"]  # the first call's steps are kept
        refuse["call"] = 0
        service.resume(job_id)
        sliced = wait_for(lambda: finished(service, job_id), what="the resumed calls")
        assert sliced["state"] == "succeeded", sliced["error"]
    finally:
        service.manager.shutdown()
        zerogpu.job_call.cache_clear()
    assert len(leases) == sliced["total_steps"] + 1, leases  # a call a step (the last writes the report) + the refused
    assert leases[0] == zerogpu.MAX_S and all(zerogpu.TRAINING_MIN_S <= s <= zerogpu.MAX_S for s in leases)
    log = service.log_tail(job_id, 400)
    assert log.count("the GPU call's time is up at step") == sliced["total_steps"] - 1
    assert log.count("resumed from the checkpoint at step") == sliced["total_steps"] - 1

    # The same job unbroken, in this process: the calls took the very same steps.
    monkeypatch.delenv("SPACES_ZERO_GPU")
    whole_id = TrainingService(ctx, start_manager=False).submit("chat", str(FACTS), str(tiny_chat_dir), "whole",
                                                                "quick", settings)["job_id"]
    set_threads(ctx.settings.threads or os.cpu_count())  # as each call does
    assert run_job(ctx.settings, whole_id) == "succeeded"
    whole = service.job(whole_id)
    assert [row[0] for row in sliced["loss"]] == list(range(sliced["total_steps"] + 1))  # no step twice
    losses = [[value or 0.0 for row in job["loss"] for value in row[1:]] for job in (sliced, whole)]
    assert losses[0] == pytest.approx(losses[1], rel=1e-3)
    adapters = paths.adapter_store(ctx.settings)
    weights = [load_file(adapters.folder("local", name) / "adapter_model.safetensors") for name in ("sliced", "whole")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.allclose(weights[0][k], weights[1][k], atol=1e-5) for k in weights[0])
    assert sliced["report"]["samples"] and sliced["report"]["loss_after"] == pytest.approx(
        whole["report"]["loss_after"], rel=1e-3)
    for question in (QUESTION, "Which city is Zorbia's capital?"):  # and it answers as the unbroken one does
        assert ask(ctx, tiny_chat_dir, "sliced", question) == ask(ctx, tiny_chat_dir, "whole", question)


def _signed_in(url: str, profiles: dict, name: str) -> str:
    """The session cookie Gradio's sign-in route sets for the Hugging Face user `name`."""
    profiles["preferred_username"] = name  # what Hugging Face would answer for this visitor
    with httpx.Client(base_url=url, follow_redirects=False, timeout=60) as http:
        to_callback = http.get("/login/huggingface")
        signed = http.get(to_callback.headers["location"])
    cookie = signed.headers["set-cookie"]
    assert cookie.startswith("session="), cookie
    return cookie.split(";")[0]


@pytest.mark.worker
def test_hugging_face_sign_in_owns_work_without_a_password_file(launch, settings, tiny_chat_dir, tmp_path,
                                                                 monkeypatch):
    import gradio.oauth

    userinfo = {"preferred_username": "", "name": "", "sub": "1"}
    # Hugging Face's side of the sign-in (a network call): the profile it would return, filled in per visitor.
    monkeypatch.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: {
        "access_token": "hf_test", "token_type": "bearer", "expires_in": 3600, "scope": "openid profile",
        "expires_at": int(time.time()) + 3600, "userinfo": userinfo})
    monkeypatch.setenv("OAUTH_CLIENT_ID", "test-client")
    url, demo = launch(dataclasses.replace(settings, mcp=True))
    assert not demo.ctx.accounts.enabled and not (settings.data_dir / "users.json").exists()

    clients = {}
    for name in ("Alice", "bob"):
        cookie = _signed_in(url, userinfo, name)
        clients[name] = Client(url, headers={"cookie": cookie}, verbose=False)
    alice, bob = clients["Alice"], clients["bob"]
    assert alice.predict(api_name="/whoami")["name"] == "hf-alice"
    assert bob.predict(api_name="/whoami")["name"] == "hf-bob"

    (tmp_path / "notes.txt").write_text("The secret launch is planned for the ninth of March.", encoding="utf-8")
    alice.predict("notes", [handle_file(str(tmp_path / "notes.txt"))], "", api_name="/add_documents")
    assert [c["name"] for c in alice.predict(api_name="/collections")] == ["notes"]
    assert bob.predict(api_name="/collections") == []
    with pytest.raises(AppError, match="no collection named 'notes'"):
        bob.predict("launch", "notes", 3, "", api_name="/search")
    add_adapter(demo, tiny_chat_dir, "alices", 1, tmp_path, owner="hf-alice")
    assert [a["name"] for a in alice.predict("", api_name="/adapters")] == ["alices"]
    assert bob.predict("", api_name="/adapters") == []
    with pytest.raises(AppError, match="no adapter named 'alices'"):
        bob.predict("alices", api_name="/delete_adapter")
    with pytest.raises(AppError, match="sign in with Hugging Face"):  # a visitor who has not signed in
        Client(url, verbose=False).predict(api_name="/whoami")
    key = demo.ctx.accounts.keys.create("hf-alice")  # as the Account view makes it for a signed-in user
    assert json.loads(mcp(url, key, "collections").content[0].text)[0]["name"] == "notes"  # her MCP calls are hers


@pytest.mark.worker  # runs a process of its own
def test_space_check_prints_what_will_and_will_not_work(tmp_path):
    bucket, local = tmp_path / "bucket", tmp_path / "local"
    bucket.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "HOME": str(tmp_path), "SPACE_ID": "someone/studio",
           "OAUTH_CLIENT_ID": "x", "LORA_STUDIO_DATA_DIR": str(bucket), "LORA_STUDIO_STATE_DIR": str(local)}
    done = subprocess.run([sys.executable, "scripts/space_check.py", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    checks = {row["check"]: row for row in json.loads(done.stdout)}
    assert checks["data directory"]["ok"] and str(bucket) in checks["data directory"]["detail"]
    assert checks["SQLite"]["ok"] and checks["sign-in"]["ok"]
    assert not checks["hub"]["ok"] and not checks["ZeroGPU"]["ok"]
    sys.path.insert(0, str(ROOT / "scripts"))
    from space_check import table

    printed = table(list(checks.values())).splitlines()
    assert printed[0].split() == ["check", "ok", "what", "it", "means"] and len(printed) == len(checks) + 4
    assert printed[-1].startswith("will not work: ") and "hub" in printed[-1] and "SQLite" in printed[-2]


def test_state_dir_keeps_the_databases_and_locks_off_the_bucket(settings, tmp_path):
    from accounts import Accounts
    from tasks.feedback import FeedbackService

    local = dataclasses.replace(settings, state_dir=str(tmp_path / "local"))
    assert local.state_path() == tmp_path / "local" and settings.state_path() == settings.data_dir
    Accounts(local).add("alice", "alice-secret-1")
    assert (settings.data_dir / "users.json").exists() and (tmp_path / "local" / "users.json.lock").exists()
    assert FeedbackService(type("Ctx", (), {"settings": local})()).store.path.parent == tmp_path / "local"


def test_where_folders_cannot_be_renamed_an_adapter_is_copied_with_its_metadata_last(tmp_path, monkeypatch):
    from models import adapters
    from models.adapter_meta import META_FILE

    tmp = tmp_path / ".saving-x"
    tmp.mkdir()
    (tmp / META_FILE).write_text("{}")
    (tmp / "adapter_model.safetensors").write_bytes(b"weights")
    (tmp_path / "notes").mkdir()  # the name is taken: the next free one is used
    copied, copy = [], shutil.copyfile

    def no_folder_rename(self, target):  # a bucket's mount
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(Path, "rename", no_folder_rename)
    monkeypatch.setattr(adapters.shutil, "copyfile", lambda a, b: (copied.append(Path(a).name), copy(a, b))[1])
    final = adapters.rename_free(tmp, tmp_path, "notes", "adapter")
    assert final == tmp_path / "notes-2" and copied == ["adapter_model.safetensors", META_FILE]
    assert (final / "adapter_model.safetensors").read_bytes() == b"weights"

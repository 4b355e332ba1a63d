"""Serving on an external engine: the vLLM and SGLang command lines for the adapter library, and chat,
completion, streaming and adapters through `--serve-backend` against a second LoRA Studio started here as the
backend (a real OpenAI-compatible server in its own process), including the backend going away and coming back."""

from __future__ import annotations

import dataclasses
import http.server
import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import openai
import pytest
from gradio_client import Client

from accounts import Accounts
from adapters_kit import plain_lora, zipped
from conftest import free_port
from errors import UserError
from models.backend_sync import AdapterSync
from models.loading import ModelHub
from models.remote import ServingBackend
from tasks.base import Context, Upload
from tasks.chat import ChatTask
from tasks.library import AdapterLibrary
from ui.system_tab import system_report
from waiting import wait_for

ROOT = Path(__file__).resolve().parent.parent
KEY = "backend-key"
HELLO = "Hello there"


def import_adapter(ctx, base: Path, name: str, tmp_path: Path, seed: int = 1, rank: int = 4,
                   owner: str = "local") -> str:
    folder = plain_lora(base, tmp_path / f"{name}-peft", seed=seed, rank=rank)
    archive = zipped(folder, tmp_path / f"{name}.zip")
    return AdapterLibrary(ctx).import_adapter(Upload(str(archive), archive.name), name, "chat", str(base),
                                              owner=owner)["name"]


# ---- the command lines ------------------------------------------------------------------------------------------

def test_serve_commands_carry_the_adapters_names_folders_and_largest_rank(ctx, tiny_chat_dir, tmp_path):
    for name, rank in (("narrow", 8), ("wide", 32)):
        import_adapter(ctx, tiny_chat_dir, name, tmp_path, rank=rank)
    [group] = AdapterLibrary(ctx).serve_commands(["narrow", "wide"])
    folders = {n: str(ctx.adapters.store.folder("local", n)) for n in ("narrow", "wide")}
    vllm = shlex.split(group["vllm"].replace("\\\n", " "))
    assert vllm[:3] == ["vllm", "serve", str(tiny_chat_dir)] and "--enable-lora" in vllm
    modules = vllm[vllm.index("--lora-modules") + 1:vllm.index("--max-lora-rank")]
    assert modules == [f"narrow={folders['narrow']}", f"wide={folders['wide']}"]
    assert vllm[vllm.index("--max-lora-rank") + 1] == "32" and vllm[vllm.index("--max-loras") + 1] == "2"
    sglang = shlex.split(group["sglang"].replace("\\\n", " "))
    assert sglang[:5] == ["python", "-m", "sglang.launch_server", "--model-path", str(tiny_chat_dir)]
    paths = sglang[sglang.index("--lora-paths") + 1:sglang.index("--max-lora-rank")]
    assert paths == modules and sglang[sglang.index("--max-lora-rank") + 1] == "32"
    assert sglang[sglang.index("--max-loras-per-batch") + 1] == "2" and group["max_rank"] == 32


def test_a_rank_vllm_does_not_take_is_rounded_up_and_other_users_see_no_server_paths(settings, tiny_chat_dir,
                                                                                      tmp_path):
    Accounts(settings).add("ana", "a-long-password")
    ctx = Context(settings, ModelHub(settings))
    import_adapter(ctx, tiny_chat_dir, "odd", tmp_path, rank=12, owner="ana")
    [group] = AdapterLibrary(ctx).serve_commands(["odd"], owner="ana")
    assert "--max-lora-rank 16" in group["vllm"] and "--max-lora-rank 12" in group["sglang"]
    assert "odd=./odd" in group["vllm"] and str(settings.data_dir) not in group["vllm"] + group["sglang"]
    with pytest.raises(UserError, match="no adapter named 'odd'"):  # another user's adapter stays unknown
        AdapterLibrary(ctx).serve_commands(["odd"], owner="bob")
    with pytest.raises(UserError, match="Pick one or more"):
        AdapterLibrary(ctx).serve_commands([])
    for path in (str(settings.data_dir / "adapters" / "ana" / "odd"), "../ana/odd", "/etc"):  # paths, not names
        with pytest.raises(UserError):
            AdapterLibrary(ctx).serve_commands([path], owner="bob")


# ---- a second LoRA Studio as the serving backend --------------------------------------------------------------

class Backend:
    """A LoRA Studio in its own process on a fixed port, serving the tiny chat model (stop and start again)."""

    def __init__(self, data_dir: Path, model: Path):
        self.port, self.data_dir, self.model = free_port(), data_dir, model
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        command = [sys.executable, str(ROOT / "app.py"), "--host", "127.0.0.1", "--port", str(self.port),
                   "--data-dir", str(self.data_dir), "--chat-model", str(self.model), "--api-key", KEY,
                   "--threads", "1"]
        self.process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"},
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.answers, 300, "the backend to start")

    def answers(self) -> bool:
        assert self.process.poll() is None, "the backend process ended"
        request = urllib.request.Request(self.url + "/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def models(self) -> list[str]:
        return [m.id for m in openai.OpenAI(base_url=self.url + "/v1", api_key=KEY).models.list().data]

    def adapters(self, prefix: str) -> list[str]:
        """The adapters it holds whose names start with prefix."""
        return [m for m in self.models() if m.startswith(prefix)]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(60)


@pytest.fixture
def backend(tmp_path, tiny_chat_dir, worker_process):
    served = Backend(tmp_path / "backend-data", tiny_chat_dir)
    served.start()
    yield served
    served.stop()


def test_chat_completion_streaming_and_adapters_run_on_the_backend_with_the_local_answers(
        backend, launch, settings, tiny_chat_dir, tmp_path):
    local = dataclasses.replace(settings, chat_model=str(tiny_chat_dir))
    front_settings = dataclasses.replace(local, serve_backend=backend.url + "/v1", serve_api_key=KEY,
                                         serve_adapter_dir=str(backend.data_dir / "incoming"))  # it reads there
    url, front = launch(front_settings)
    import_adapter(front.ctx, tiny_chat_dir, "sun", tmp_path, seed=3)
    front.ctx.hub.cache.clear()  # the import checked the adapter against the base; chat needs no local model
    here = ChatTask(Context(local, ModelHub(local)))  # the same weights and adapter, on this machine
    expected = {adapter: list(here.chat(HELLO, [], "", "", adapter, 0, 0.9, 12))[-1] for adapter in ("", "sun")}
    assert expected[""] != expected["sun"]  # the adapter matters
    # The new adapter reached the backend at once, before anyone used it: the backend answers with it by name.
    wait_for(lambda: backend.adapters("sun-"), 120, "the imported adapter to be loaded on the backend")
    [sun_id] = backend.adapters("sun-")
    there = openai.OpenAI(base_url=backend.url + "/v1", api_key=KEY, max_retries=0, timeout=300)
    assert there.chat.completions.create(model=sun_id, messages=[{"role": "user", "content": HELLO}], temperature=0,
                                         max_tokens=12).choices[0].message.content == expected["sun"]

    gradio = Client(url, verbose=False)
    assert gradio.predict(HELLO, [], "", "", "", 0, 0.9, 12, api_name="/chat") == expected[""]
    assert gradio.predict(HELLO, [], "", "", "sun", 0, 0.9, 12, api_name="/chat") == expected["sun"]
    assert len([m for m in backend.models() if m.startswith("sun-")]) == 1  # loaded there once, by a name of its own
    streamed = list(gradio.submit(HELLO, [], "", "", "sun", 0, 0.9, 12, api_name="/chat"))
    assert len(streamed) > 1 and streamed[-1] == expected["sun"]
    assert all(expected["sun"].startswith(s) for s in streamed)  # every yield is the whole reply so far
    api = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=300)
    chunks = api.chat.completions.create(model="sun", messages=[{"role": "user", "content": HELLO}], temperature=0,
                                         max_tokens=12, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected["sun"]
    side_by_side = gradio.predict("chat", {"message": HELLO, "temperature": 0, "max_new_tokens": 12},
                                  [{"adapter": ""}, {"adapter": "sun"}], api_name="/compare")
    assert [v["result"] for v in side_by_side] == [expected[""], expected["sun"]]
    continued = gradio.predict("Once upon a time", "", "", 1, 6, 0, 0.95, api_name="/complete")
    assert continued == here.complete("Once upon a time", "", "", 1, 6, 0, 0.95)
    assert not list(front.ctx.hub.cache.items())  # no model loaded on the front: the backend did the work
    assert f"serving backend {backend.url}" in system_report(front.ctx)  # the System panel says where

    backend.stop()  # gone: one sentence, no traceback
    with pytest.raises(Exception, match="serving backend at .* does not answer"):
        gradio.predict(HELLO, [], "", "", "sun", 0, 0.9, 12, api_name="/chat")
    shutil.rmtree(backend.data_dir / "adapters")  # back, without the adapter it had: loaded again on first use
    backend.start()
    assert gradio.predict(HELLO, [], "", "", "sun", 0, 0.9, 12, api_name="/chat") == expected["sun"]
    assert sun_id in system_report(front.ctx)  # what the backend holds
    # Renamed here: the backend holds it under its new name only; deleted here: the backend unloads it.
    gradio.predict("sun", "sunny", api_name="/rename_adapter")
    wait_for(lambda: backend.adapters("sunny-") and not backend.adapters("sun-"), 120, "the rename to reach it")
    gradio.predict("sunny", api_name="/delete_adapter")
    wait_for(lambda: not backend.adapters("sunny"), 120, "the deleted adapter to be unloaded from the backend")
    wait_for(lambda: not list((backend.data_dir / "incoming").glob("sunny-*")), 30, "its copy to be removed")
    wrong = ChatTask(Context(dataclasses.replace(front_settings, serve_api_key="wrong"), ModelHub(local)))
    with pytest.raises(UserError, match="refused the request \\(401\\)"):
        list(wrong.chat(HELLO, [], "", "", "", 0, 0.9, 4))


def post(url: str, body: dict, key: str = "", route: str = "load_lora_adapter") -> tuple[int, str]:
    request = urllib.request.Request(url.rstrip("/") + f"/v1/{route}", method="POST", data=json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_loading_an_adapter_is_the_operators_and_reads_only_the_data_directory(launch, settings, tiny_chat_dir,
                                                                               tmp_path):
    folder = plain_lora(tiny_chat_dir, settings.data_dir / "incoming" / "moon-peft", seed=2)
    open_url, _ = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir)))
    status, text = post(open_url, {"lora_name": "moon", "lora_path": str(folder)})
    assert status == 403 and "operator" in text, text  # no key, no operator: nobody loads files by path
    assert post(open_url, {"lora_name": "moon"}, route="unload_lora_adapter")[0] == 403
    url, demo = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir), api_key=KEY))
    outside = plain_lora(tiny_chat_dir, tmp_path / "outside-peft", seed=2)
    (settings.data_dir / "link").symlink_to(outside)
    for path in (str(outside), str(settings.data_dir / "link"), "/etc", str(ROOT)):  # a real adapter, elsewhere
        status, text = post(url, {"lora_name": "moon", "lora_path": path}, KEY)
        assert status == 400 and "under this server's data directory" in text, text
    status, text = post(url, {"lora_name": "moon", "lora_path": str(settings.data_dir / "missing")}, KEY)
    assert status == 400 and "adapter_config.json" in text
    assert post(url, {"lora_name": "moon", "lora_path": str(folder)}, KEY) == (
        200, "Success: LoRA adapter 'moon' added successfully.")
    assert post(url, {"lora_name": "moon", "lora_path": str(folder)}, KEY)[0] == 200  # once is enough
    api = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=KEY, max_retries=0, timeout=300)
    assert "moon" in [m.id for m in api.models.list().data]
    assert [a["name"] for a in demo.ctx.adapters.store.list("local")] == ["moon"]
    by_ids = api.completions.create(model="moon", prompt=[15496, 612], temperature=0, max_tokens=4)
    by_text = api.completions.create(model="moon", prompt="Hello there", temperature=0, max_tokens=4)
    assert by_ids.choices[0].text == by_text.choices[0].text  # "Hello there" is those two GPT-2 tokens
    with pytest.raises(openai.BadRequestError, match="whole numbers"):
        api.completions.create(model="moon", prompt=[10**9], max_tokens=4)
    assert post(url, {"lora_name": "moon"}, KEY, "unload_lora_adapter") == (
        200, "Success: LoRA adapter 'moon' removed successfully.")
    assert "moon" not in [m.id for m in api.models.list().data] and folder.is_dir()  # its source stays
    status, text = post(url, {"lora_name": "moon"}, KEY, "unload_lora_adapter")
    assert status == 404 and "no adapter named 'moon'" in text


class NoRoutes(http.server.BaseHTTPRequestHandler):
    """An engine started without runtime adapters: it lists its base and has no load or unload route."""

    served = ""

    def do_GET(self):  # noqa: N802  (http.server's name)
        self._send(200, {"object": "list", "data": [{"id": self.served, "object": "model", "parent": None}]})

    def do_POST(self):  # noqa: N802
        self._send(404, {"detail": "Not Found"})

    def _send(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_a_backend_without_runtime_routes_keeps_the_restart_way_and_says_so(ctx, tiny_chat_dir, tmp_path, caplog):
    NoRoutes.served = Path(tiny_chat_dir).name
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NoRoutes)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend = ServingBackend(f"http://127.0.0.1:{server.server_address[1]}/v1")
        import_adapter(ctx, tiny_chat_dir, "sun", tmp_path)
        sync = AdapterSync(backend, ctx.adapters, ctx.hub)
        with caplog.at_level(logging.WARNING):
            sync.sync()
        assert backend.runtime_loading is False and not backend.loaded()
        assert "cannot load adapters while it runs: restart it with `vllm serve" in caplog.text
        assert "cannot load adapters while it runs" in backend.holds(operator=True)
        assert not backend.unregister("sun-12345678")  # nothing to unload it with: it stays until a restart
    finally:
        server.shutdown()

"""The launched app, called through gradio_client like any program would."""

import os
import subprocess
import sys
import threading

import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError


def test_help_lists_the_settings(capsys):
    import app
    with pytest.raises(SystemExit):
        app.parse_settings(["--help"])
    out = capsys.readouterr().out
    for flag in ("--host", "--port", "--data-dir", "--chat-model", "--username", "--password"):
        assert flag in out


HEAVY = ("torch", "transformers", "peft", "sentence_transformers", "faiss", "plotly")
DRAWN = """
import pathlib, socket, sys, tempfile
import httpx
import app, config
settings = config.Settings(data_dir=pathlib.Path(tempfile.mkdtemp()), host="127.0.0.1", port=int(sys.argv[1]))
demo = app.build_app(settings)
app.serve(demo, settings, block=False, quiet=True)
print(httpx.get(demo.local_url).status_code, [name for name in %r if name in sys.modules])
demo.close()
""" % (HEAVY,)


def test_help_and_the_page_come_before_the_model_libraries_load(worker_process):
    from conftest import ROOT, free_port

    helped = subprocess.run([sys.executable, "-X", "importtime", "app.py", "--help"], cwd=ROOT, capture_output=True,
                            text=True, timeout=120)
    assert helped.returncode == 0 and "--data-dir" in helped.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in helped.stderr.splitlines()}
    assert not imported & {"gradio", *HEAVY}  # `--help` needs none of them
    drawn = subprocess.run([sys.executable, "-c", DRAWN, str(free_port())], cwd=ROOT, capture_output=True, text=True,
                           timeout=300)
    assert "200 []" in drawn.stdout.splitlines(), drawn.stdout + drawn.stderr  # the page, and none of them loaded


def test_gradio_imports_without_writing_type_stubs(tmp_path):
    """Gradio refreshes a .pyi stub beside every component class it imports (a second of the page's start on 2
    cores); the app imports it without that, and the components still work."""
    from conftest import ROOT

    (tmp_path / "custom_box.py").write_text("import gradio as gr\n\n\nclass CustomBox(gr.Textbox):\n    pass\n")
    imported = subprocess.run([sys.executable, "-c", "import app, custom_box; print(custom_box.CustomBox('hi').value)"],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True,
                              text=True, timeout=120)
    assert imported.stdout.split() == ["hi"], imported.stderr
    assert not (tmp_path / "custom_box.pyi").exists()


def test_ctrl_c_while_the_app_starts_stops_it_without_a_traceback(worker_process, tmp_path):
    """Ctrl-C as the page comes up (torch still loading behind it): the app stops and says so, no traceback."""
    import signal

    from conftest import ROOT, free_port

    process = subprocess.Popen([sys.executable, "app.py", "--data-dir", str(tmp_path), "--port", str(free_port())],
                               cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Running on local URL" in line:
                process.send_signal(signal.SIGINT)
                break
        out = "".join(lines) + process.communicate(timeout=120)[0]
    finally:
        process.kill()
    assert "Running on local URL" in out, out
    assert "Traceback" not in out and ("Stopped while starting." in out or "closing server" in out), out


def test_chat_and_complete_endpoints(launch, tiny_gpt2_dir, tiny_chat_dir):
    url, _ = launch()
    client = Client(url, verbose=False)
    reply = client.predict("hello", [], "", str(tiny_chat_dir), "", 0.0, 0.9, 8, api_name="/chat")
    assert isinstance(reply, str)
    outs = client.predict("Once upon a time", str(tiny_gpt2_dir), "", 2, 6, 1.0, 0.95, api_name="/complete")
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    with pytest.raises(AppError, match="empty"):
        client.predict("", api_name="/chat")
    with pytest.raises(AppError, match="Unknown model"):
        client.predict("hi", [], "", "no such model", api_name="/chat")


@pytest.mark.integration
def test_two_clients_chat_at_once_and_each_gets_its_own_answer(launch, settings, smollm2_dir):
    url, demo = launch()
    questions = {"What is the capital of France?": "Paris", "Name three colors.": "Red"}
    answers = {}
    gate = threading.Barrier(len(questions))

    def ask(question):
        client = Client(url, verbose=False)
        gate.wait()
        job = client.submit(question, [], "", "", "", 0.0, 0.9, 32, api_name="/chat")
        answers[question] = (list(job), job.outputs())

    threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
    [t.start() for t in threads]
    [t.join() for t in threads]
    for question, word in questions.items():
        streamed, outputs = answers[question]
        assert word in outputs[-1], (question, outputs[-1])
        assert len(outputs) > 1  # it streamed
    assert demo.ctx.hub.cache.loads == 1  # both chats shared one loaded model


def test_public_api_names_are_the_contracts(settings):
    from app import build_app

    demo = build_app(settings)
    try:
        named = demo.get_api_info()["named_endpoints"]
    finally:
        demo.training.manager.close()
    # DESIGN.md §1: every operation under its plain name (a UI event calling the same function must not take it).
    for name, parameters in {
        "/chat": ["message", "history", "system_prompt", "model", "adapter", "temperature", "top_p",
                  "max_new_tokens", "collection"],
        "/summarize": ["text", "method", "length", "model", "adapter"],
        "/translate": ["text", "target", "source", "model", "adapter"],
        "/sentiment": ["texts", "model", "adapter"], "/compare": ["task", "inputs", "variants", "collection"],
        "/answer": ["question", "context", "collection", "model", "adapter"],
        "/add_documents": ["collection", "files", "text"], "/search": ["query", "collection", "k", "adapter"],
        "/collections": [], "/remove_document": ["collection", "source"],
        "/train": ["task", "data", "base", "name", "preset", "settings", "columns", "validation"],
        "/job": ["job_id"], "/cancel": ["job_id"], "/resume": ["job_id"], "/adapters": ["task"],
        "/delete_adapter": ["name"], "/rename_adapter": ["name", "new_name"], "/export_adapter": ["name"],
        "/import_adapter": ["data", "name", "task", "base"], "/merge_adapter": ["name", "new_name"],
        "/push_adapter": ["name", "repo_id", "token", "private"],
        "/export_gguf": ["name", "quantization"],
        "/make_training_data": ["task", "collection", "files", "model", "settings"],
        "/training_rows_file": ["job_id"],
        "/tokenize": ["text", "model"], "/next_token": ["text", "model", "adapter", "k", "temperature", "top_p"],
        "/fill_mask": ["text", "model", "k"], "/attention": ["text", "model", "layer", "head"],
        "/similarity": ["texts", "model", "adapter"], "/token_loss": ["text", "model", "adapter"],
    }.items():
        assert [p["parameter_name"] for p in named[name]["parameters"]] == parameters, name

"""The launched app, called through gradio_client like any program would."""

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

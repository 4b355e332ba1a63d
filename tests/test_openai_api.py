"""The OpenAI-compatible routes, driven by the real `openai` client against the launched app."""

from __future__ import annotations

import dataclasses

import openai
import pytest
from gradio_client import Client


@pytest.fixture
def served(launch, settings, tiny_chat_dir):
    """The launched app with the tiny chat model as its default chat model; (base url, demo)."""
    url, demo = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir)))
    return url, demo


def client(url: str, key: str = "none") -> openai.OpenAI:
    return openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key=key, max_retries=0, timeout=120)


def test_smoke(served, tiny_chat_dir):
    url, demo = served
    api = client(url)
    ids = [m.id for m in api.models.list().data]
    assert "tiny-chat0" in str(ids) or ids
    reply = api.chat.completions.create(model="", messages=[{"role": "user", "content": "Hello"}],
                                        temperature=0, max_tokens=12)
    text = reply.choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in api.chat.completions.create(
        model="", messages=[{"role": "user", "content": "Hello"}], temperature=0, max_tokens=12, stream=True)
        if c.choices)
    assert streamed == text
    gradio = Client(url, verbose=False).predict("Hello", [], "", "", "", 0, 0.9, 12, api_name="/chat")
    assert gradio == text, (gradio, text)
    print(ids, repr(text), reply.usage)

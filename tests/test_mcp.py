"""The MCP server (`--mcp`), tried with the official `mcp` client over streamable HTTP against the launched app
with accounts: the read-only tools listed with descriptions a model can follow, training and deleting absent,
and each call acting as the user whose API key it carries."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
import json

import pytest
from gradio_client import Client
from mcp import ClientSession
from mcp.client.streamable_http import streamablehttp_client

from accounts import Accounts
from tasks import TASKS
from test_openai_api import add_adapter
from ui.mcp import LOOPBACK_HEADER, READ_ONLY, tools
from ui.tool_docs import TOOL_DOCS

pytestmark = pytest.mark.worker  # the app is launched with a server of its own


async def _call(url: str, key: str | None, tool: str | None = None, arguments: dict | None = None):
    """The tools listed (tool None) or the result of calling tool, over one MCP session."""
    headers = {"Authorization": f"Bearer {key}"} if key else None
    async with streamablehttp_client(url.rstrip("/") + "/gradio_api/mcp/", headers=headers) as (read, write, _):
        async with ClientSession(read, write) as session:
            await session.initialize()
            if tool is None:
                return (await session.list_tools()).tools
            return await session.call_tool(tool, arguments or {})


def mcp(url: str, key: str | None, tool: str | None = None, **arguments):
    return asyncio.run(_call(url, key, tool, arguments))


def test_tool_docs_name_real_parameters_and_the_tasks_are_read_only_tools():
    from tasks.account import AccountService
    from tasks.compare import Comparison
    from tasks.inside import InsideModel
    from training.service import TrainingService

    owners = [*TASKS.values(), InsideModel, Comparison, TrainingService, AccountService]
    methods = {"adapters": TrainingService.list_adapters}
    methods.update({name: getattr(owner, name) for name in TOOL_DOCS for owner in owners if hasattr(owner, name)})
    assert set(TOOL_DOCS) == set(methods) and set(TOOL_DOCS) <= set(READ_ONLY) | {"whoami"}
    for name, doc in TOOL_DOCS.items():
        named = {line.strip().split(":")[0] for line in doc.partition("Args:")[2].splitlines() if line.strip()}
        assert named <= set(inspect.signature(methods[name]).parameters), name
    assert {"chat", "summarize", "translate", "sentiment", "answer", "search"} <= set(READ_ONLY)
    assert tools(False, ["chat", "train", "delete_adapter"]) == ["chat"]
    assert tools(True, ["chat", "train"]) == ["chat", "train"]


def test_tools_act_as_the_user_whose_key_they_carry(launch, settings, tiny_chat_dir, tmp_path):
    accounts = Accounts(settings)
    accounts.add("alice", "alice-secret-1")
    accounts.add("bob", "bob-secret-22")
    url, demo = launch(dataclasses.replace(settings, chat_model=str(tiny_chat_dir), mcp=True))
    add_adapter(demo, tiny_chat_dir, "alices", 1, tmp_path, owner="alice")
    alice, bob = accounts.keys.create("alice"), accounts.keys.create("bob")

    listed = {tool.name: tool for tool in mcp(url, alice)}
    assert {"chat", "summarize", "translate", "sentiment", "answer", "search", "adapters"} <= set(listed)
    assert not {"train", "delete_adapter", "rename_adapter", "push_adapter", "share", "users"} & set(listed)
    chat = listed["chat"]
    assert chat.description.startswith("Reply to a chat message")
    assert "LoRA adapters" in chat.inputSchema["properties"]["adapter"]["description"]
    assert chat.inputSchema["required"] == ["message"]

    replied = mcp(url, alice, "chat", message="Hello there", adapter="alices", temperature=0, max_new_tokens=6)
    assert not replied.isError and replied.content[0].text
    assert [a["name"] for a in json.loads(mcp(url, alice, "adapters").content[0].text)] == ["alices"]
    assert json.loads(mcp(url, bob, "whoami").content[0].text) == {"name": "bob", "admin": False, "accounts": True}
    refused = mcp(url, bob, "chat", message="Hello there", adapter="alices", max_new_tokens=4)
    assert refused.isError and "no adapter named 'alices'" in refused.content[0].text
    assert json.loads(mcp(url, bob, "adapters").content[0].text) == []

    # The same key logs a Gradio client in as its user; the loopback header with a wrong secret does nothing.
    assert Client(url, headers={"Authorization": f"Bearer {bob}"}, verbose=False).predict(
        api_name="/whoami")["name"] == "bob"
    with pytest.raises(ValueError, match="credentials"):
        Client(url, headers={LOOPBACK_HEADER: "a-guess"}, verbose=False)
    for key in (None, "lsk-made-up"):  # no key, or one never made: refused before any tool runs
        with pytest.raises(Exception) as error:
            mcp(url, key)
        assert "401" in repr(error.value) or "Unauthorized" in repr(error.value), repr(error.value)

"""Tool calls on /v1/chat/completions with the `openai` client and LangChain's `bind_tools`, against the launched app
on a tiny chat model whose chat template takes tools (Qwen2.5's format) and which was trained here, in a few seconds,
to call get_weather for two questions and to answer once the tool's result is back: its replies are fixed, so the
test reads real model output, streamed and whole."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import openai
import pytest
import torch

from conftest import build_tiny_chat
from server.tools import ToolFormat
from tasks.chat import ChatTask

# Qwen2.5's chat template with its tools block, shortened: tools in <tools>, calls in <tool_call>, results as the
# user's <tool_response>.
QWEN_TOOLS = (Path(__file__).parent / "qwen_tools.jinja").read_text()

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
QUESTIONS = ("What is the weather in Paris?", "Hello there")
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
RESULT, ANSWER = "22 degrees", "It is 22 degrees in Paris."


def conversation(question: str, answered: bool = False) -> list[dict]:
    """The question, and with answered the model's call and the tool's result after it (as templates take them)."""
    turns = [{"role": "user", "content": question}]
    if answered:
        call = {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
        turns += [{"role": "assistant", "content": "", "tool_calls": [call]}, {"role": "tool", "content": RESULT}]
    return turns


@pytest.fixture(scope="module")
def tool_chat_dir(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    """The tiny chat model with QWEN_TOOLS as its template, trained (~30 full steps on four rows, only the reply's
    tokens scored) to reply CALL to each question and ANSWER once the tool's result follows."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = build_tiny_chat(tmp_path_factory.mktemp("tool-chat"), gpt2_tokenizer_dir, context=512)
    tokenizer, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    tokenizer.chat_template = QWEN_TOOLS
    rows = []
    for question in QUESTIONS:
        for answered, reply in ((False, CALL), (True, ANSWER)):
            prompt = tokenizer.apply_chat_template(conversation(question, answered), tools=[WEATHER],
                                                   add_generation_prompt=True, tokenize=False)
            rows.append((tokenizer(prompt, add_special_tokens=False)["input_ids"],
                         tokenizer(reply + "<|im_end|>", add_special_tokens=False)["input_ids"]))
    width = max(len(p) + len(r) for p, r in rows)
    ids = torch.tensor([p + r + [tokenizer.pad_token_id] * (width - len(p) - len(r)) for p, r in rows])
    mask = (torch.arange(width) < torch.tensor([[len(p) + len(r)] for p, r in rows])).long()
    # The positions whose next token is the reply's: only their logits are computed (the vocabulary is 50k).
    row, at = map(torch.tensor, zip(*[(i, k) for i, (p, r) in enumerate(rows) for k in range(len(p) - 1,
                                                                                          len(p) + len(r) - 1)]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(60):
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        loss = torch.nn.functional.cross_entropy(model.lm_head(hidden[row, at]), ids[row, at + 1])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if loss.item() < 0.005:
            break
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def test_reading_calls_in_both_formats():
    tagged, bare = ToolFormat(QWEN_TOOLS), ToolFormat("{{ tools }} Llama's JSON")
    content, calls = tagged.read(f"Let me look.\n{CALL}\n<tool_call>{{\"name\": \"now\", \"arguments\": {{}}}}")
    assert content == "Let me look." and [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("now", {})]  # the last one ended without its closing tag
    assert tagged.read('<tool_call>{"name": "get_weather", "arguments": {"ci') == (
        '<tool_call>{"name": "get_weather", "arguments": {"ci', [])  # cut short: plain content
    content, calls = bare.read('<|python_tag|>{"name": "get_weather", "parameters": {"city": "Paris"}}')
    assert content is None and calls[0].arguments == '{"city": "Paris"}'
    assert bare.read("{not a call}") == ("{not a call}", []) and bare.held("Sunny") == 5 and bare.held(" {") == 0
    assert tagged.held("It is <tool_") == len("It is ")  # what may start a call is held back


def test_tool_calls_through_openai_and_langchain(launch, settings, tool_chat_dir, tiny_chat_dir):
    from langchain_core.messages import HumanMessage, ToolMessage
    from langchain_openai import ChatOpenAI

    url, demo = launch(dataclasses.replace(settings, chat_model=str(tool_chat_dir)))
    api = openai.OpenAI(base_url=url.rstrip("/") + "/v1", api_key="none", max_retries=0, timeout=300)
    ask = {"model": "", "temperature": 0, "max_tokens": 40, "tools": [WEATHER]}
    question = [{"role": "user", "content": QUESTIONS[0]}]

    whole = api.chat.completions.create(messages=question, **ask).choices[0]
    assert whole.finish_reason == "tool_calls" and whole.message.content is None
    [call] = whole.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments) == {"city": "Paris"}

    chunks = list(api.chat.completions.create(messages=question, stream=True, **ask))
    deltas = [d for c in chunks for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather" and {d.index for d in deltas} == {0}
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert not "".join(c.choices[0].delta.content or "" for c in chunks)  # no call text leaks as content

    # The tool's result goes back into the template: the model reads it and answers.
    follow_up = question + [whole.message.model_dump(exclude_none=True),
                            {"role": "tool", "tool_call_id": call.id, "content": RESULT}]
    answered = api.chat.completions.create(messages=follow_up, **ask)
    assert answered.choices[0].message.content == ANSWER and answered.choices[0].finish_reason == "stop"
    prompt = ChatTask(demo.ctx).conversation(conversation(QUESTIONS[0], True), "", "", "", 40, tools=[WEATHER])
    rendered = prompt.lm.tokenizer.decode(prompt.ids)
    assert f"<tool_response>\n{RESULT}\n</tool_response>" in rendered and '"arguments": {"city": "Paris"}' in rendered
    assert answered.usage.prompt_tokens == len(prompt.ids)  # the very prompt the request was answered from

    # A named function opens the reply with its call, "required" with a call's start; "none" leaves the tools out.
    named = api.chat.completions.create(messages=[{"role": "user", "content": QUESTIONS[1]}], tool_choice={
        "type": "function", "function": {"name": "get_weather"}}, **ask).choices[0]
    assert named.message.tool_calls, named.message.content
    assert named.message.tool_calls[0].function.name == "get_weather" and named.finish_reason == "tool_calls"
    required = api.chat.completions.create(messages=question, tool_choice="required", **ask).choices[0]
    assert [c.function.name for c in required.message.tool_calls] == ["get_weather"]
    untouched = api.chat.completions.create(messages=question, tool_choice="none", **ask)
    assert not untouched.choices[0].message.tool_calls
    assert untouched.usage.prompt_tokens < answered.usage.prompt_tokens - 50  # no tools block

    # LangChain's agent-style use: bind the tool, get the call, send the result back, stream it too.
    llm = ChatOpenAI(base_url=url.rstrip("/") + "/v1", api_key="none", model=Path(tool_chat_dir).name,
                     temperature=0, max_tokens=40, max_retries=0).bind_tools([WEATHER])
    message = llm.invoke(QUESTIONS[1])
    assert [(c["name"], c["args"]) for c in message.tool_calls] == [("get_weather", {"city": "Paris"})]
    reply = llm.invoke([HumanMessage(QUESTIONS[1]), message,
                        ToolMessage(RESULT, tool_call_id=message.tool_calls[0]["id"])])
    assert reply.content == ANSWER
    streamed = None
    for piece in llm.stream(QUESTIONS[0]):
        streamed = piece if streamed is None else streamed + piece
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("get_weather", {"city": "Paris"})]

    # A model whose template takes no tools says so.
    with pytest.raises(openai.BadRequestError, match="chat template has no tool support"):
        api.chat.completions.create(messages=question, **{**ask, "model": str(tiny_chat_dir)})
    with pytest.raises(openai.BadRequestError, match="'tool_choice' must name one of the request's tools"):
        api.chat.completions.create(messages=question, tool_choice={"type": "function", "function": {"name": "x"}},
                                    **ask)

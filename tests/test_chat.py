"""Chat and continue-text on tiny models, and on the real SmolLM2."""

import pytest

from errors import UserError
from tasks.chat import ChatTask


@pytest.fixture
def chat(ctx):
    return ChatTask(ctx)


def test_continue_text_returns_several_alternatives(chat, tiny_gpt2_dir):
    outs = chat.complete("Once upon a time", model=str(tiny_gpt2_dir), num_alternatives=3, max_new_tokens=8,
                         temperature=1.0)
    assert len(outs) == 3 and all(isinstance(o, str) and o for o in outs)
    assert len(set(outs)) > 1  # sampled independently


def test_base_model_cannot_chat_and_says_so(chat, tiny_gpt2_dir):
    with pytest.raises(UserError, match="Continue text"):
        chat.reply("hello", model=str(tiny_gpt2_dir))


def test_chat_template_and_system_prompt_are_applied(chat, tiny_chat_dir):
    reply = chat.reply("hi", [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                       system_prompt="Be brief.", model=str(tiny_chat_dir), max_new_tokens=4)
    prompt = reply.lm.tokenizer.decode(reply.request.prompt_ids)
    assert prompt == ("<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\na<|im_end|>\n"
                      "<|im_start|>assistant\nb<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    reply.text()


def test_long_history_is_trimmed_with_a_notice(chat, tiny_chat_dir):
    history = []
    for i in range(30):
        history += [{"role": "user", "content": f"question {i} " * 3}, {"role": "assistant", "content": "ok " * 5}]
    reply = chat.reply("last question", history, model=str(tiny_chat_dir), max_new_tokens=16)
    assert "oldest" in reply.notice
    assert len(reply.request.prompt_ids) <= reply.lm.context_length
    prompt = reply.lm.tokenizer.decode(reply.request.prompt_ids)
    assert "question 29" in prompt and "question 0 " not in prompt and prompt.count("<|im_start|>user") >= 2
    reply.request.stop.set()


@pytest.mark.parametrize("kwargs, message", [
    ({"message": "   "}, "empty"),
    ({"message": "x " * 5000}, "too long"),
    ({"message": "hi", "temperature": 5}, "Temperature"),
    ({"message": "hi", "history": "nonsense"}, "history"),
    ({"message": "hi", "adapter": "my-adapter"}, "no adapter named"),
])
def test_bad_input_gets_a_clear_message(chat, tiny_chat_dir, kwargs, message):
    with pytest.raises(UserError, match=message):
        list(chat.chat(model=str(tiny_chat_dir), **kwargs))


def test_gradio_style_history_is_accepted(chat, tiny_chat_dir):
    history = [{"role": "user", "content": [{"type": "text", "text": "a"}]}, {"role": "assistant", "content": "b"}]
    reply = chat.reply("c", history, model=str(tiny_chat_dir), max_new_tokens=2)
    assert "user\na<|im_end|>" in reply.lm.tokenizer.decode(reply.request.prompt_ids)
    reply.text()


@pytest.mark.integration
def test_smollm2_streams_a_sensible_answer(chat, smollm2_dir):
    chunks = list(chat.chat("What is the capital of France?", temperature=0, max_new_tokens=24))
    assert len(chunks) > 1 and all(b.startswith(a) for a, b in zip(chunks, chunks[1:]))
    assert "Paris" in chunks[-1]
    lm = chat.ctx.hub.lm()
    assert lm.name == "SmolLM2-135M-Instruct" and lm.has_chat_template


@pytest.mark.integration
def test_smollm2_trims_a_long_history(chat, smollm2_dir):
    chat.ctx.settings.context_limit = 1024  # the mechanism is the same at 8192 tokens, the prefill far slower
    filler = "Tell me more about the history of the Roman Empire and its emperors. " * 40
    history = []
    for _ in range(12):
        history += [{"role": "user", "content": filler}, {"role": "assistant", "content": filler}]
    reply = chat.reply("What is the capital of France?", history, temperature=0, max_new_tokens=16)
    assert reply.notice and "left out" in reply.notice
    assert len(reply.request.prompt_ids) <= reply.lm.context_length
    reply.text()

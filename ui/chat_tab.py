"""The Chat tab: streaming chat for instruction models, and 'Continue text' for base models."""

from __future__ import annotations

import functools
import json
import tempfile

import gradio as gr

from errors import UserError
from models import catalog
from tasks.chat import ChatTask, message_text
from ui.adapters import NO_ADAPTER, adapter_choices, adapter_value

MAX_ALTERNATIVES = 4




def model_line(model: str) -> str:
    return catalog.describe(model or catalog.TASK_DEFAULTS["chat"])


def model_changed(task: ChatTask, model: str, adapter: str):
    """New model: its description and its adapters, keeping the chosen one if it fits this model.

    The Train tab's 'Chat with this adapter' sets the model and the adapter together; this change event runs
    after that and must not reset the adapter it just chose.
    """
    choices = adapter_choices(task, model)
    return model_line(model), gr.update(choices=choices, value=adapter if adapter in choices else NO_ADAPTER)


def respond(task: ChatTask, message: str, history: list, system_prompt: str, model: str, adapter: str,
            temperature: float, top_p: float, max_new_tokens: int):
    """UI handler: append the user's message, then stream the assistant's reply into the chatbot."""
    if not (message or "").strip():
        raise gr.Error("Please type a message first.")
    try:
        reply = task.reply(message, history, system_prompt, model, adapter_value(adapter),
                           temperature, top_p, int(max_new_tokens))
    except UserError as error:
        raise gr.Error(str(error)) from None
    if reply.notice:
        gr.Warning(reply.notice)
    history = list(history or []) + [{"role": "user", "content": message},
                                     {"role": "assistant", "content": "…"}]
    yield history, ""
    for text in reply.texts():
        history[-1] = {"role": "assistant", "content": text}
        yield history, ""


def alternatives(task: ChatTask, text: str, model: str, adapter: str, count: int, max_new_tokens: int,
                 temperature: float):
    """UI handler: several continuations side by side, one box each."""
    try:
        outs = task.complete(text, model, adapter_value(adapter), int(count), int(max_new_tokens), temperature)
    except UserError as error:
        raise gr.Error(str(error)) from None
    return [gr.update(value=text + (outs[i] if i < len(outs) else ""), visible=i < len(outs))
            for i in range(MAX_ALTERNATIVES)]


def export_chat(history: list, fmt: str) -> str:
    """Write the conversation to a Markdown or JSON file and return its path for download."""
    if not history:
        raise gr.Error("There is no conversation to export yet.")
    turns = [{"role": m["role"], "content": message_text(m["content"])} for m in history]
    if fmt == "JSON":
        body, suffix = json.dumps(turns, ensure_ascii=False, indent=2), ".json"
    else:
        body = "\n\n".join(f"**{t['role'].title()}:** {t['content']}" for t in turns)
        suffix = ".md"
    with tempfile.NamedTemporaryFile("w", suffix=suffix, prefix="chat-", delete=False, encoding="utf-8") as f:
        f.write(body)
    return f.name


def build(task: ChatTask, browser_secret: str) -> dict:
    """Build the tab; returns its components by name."""
    default_model = task.ctx.settings.chat_model or catalog.TASK_DEFAULTS["chat"]
    with gr.Tab("Chat", id="chat") as tab:
        info = gr.Markdown(model_line(default_model))
        with gr.Row():
            model = gr.Dropdown(catalog.choices(catalog.DECODER), value=default_model, label="Model",
                                allow_custom_value=True, scale=3,
                                info="A catalog model, a Hugging Face id or a local model folder.")
            adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", scale=2,
                                  info="A LoRA adapter you trained for this model.")
            mode = gr.Radio(["Chat", "Continue text"], value="Chat", label="Mode", scale=2,
                            info="Continue text suits base models such as GPT-2.")
        with gr.Column(visible=True) as chat_box:
            chatbot = gr.Chatbot(label="Conversation", height=420, buttons=["copy"])
            with gr.Row():
                message = gr.Textbox(placeholder="Type a message and press Enter", show_label=False, scale=6,
                                     lines=1, max_lines=8, autofocus=True)
                send = gr.Button("Send", variant="primary", scale=1)
                stop = gr.Button("Stop", variant="stop", scale=1)
            with gr.Row():
                clear = gr.Button("Clear conversation", size="sm")
                export_format = gr.Radio(["Markdown", "JSON"], value="Markdown", show_label=False)
                export = gr.Button("Export", size="sm")
                export_file = gr.File(label="Download", visible=False)
            with gr.Accordion("Generation settings", open=False):
                system_prompt = gr.Textbox(label="System prompt", lines=2,
                                           placeholder="Optional: how the assistant should behave")
                temperature = gr.Slider(0, 2, value=0.3, step=0.05, label="Temperature",
                                        info="0 always picks the likeliest word; higher is more varied.")
                top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label="Top-p",
                                  info="Sample only from the likeliest words that make up this share.")
                max_new_tokens = gr.Slider(16, 1024, value=256, step=16, label="Max new tokens",
                                           info="The longest reply, in tokens (about ¾ of a word each).")
        with gr.Column(visible=False) as complete_box:
            prompt = gr.Textbox(label="Text to continue", lines=4, placeholder="Once upon a time")
            with gr.Row():
                count = gr.Slider(1, MAX_ALTERNATIVES, value=2, step=1, label="Alternatives")
                complete_tokens = gr.Slider(8, 512, value=64, step=8, label="Max new tokens")
                complete_temperature = gr.Slider(0, 2, value=0.8, step=0.05, label="Temperature")
            go = gr.Button("Continue", variant="primary")
            with gr.Row():
                outs = [gr.Textbox(label=f"Alternative {i + 1}", lines=6, visible=i < 2, buttons=["copy"])
                        for i in range(MAX_ALTERNATIVES)]
        saved = gr.BrowserState([], storage_key="lora-studio-chat", secret=browser_secret)

    hidden = {"api_visibility": "undocumented"}
    inputs = [message, chatbot, system_prompt, model, adapter, temperature, top_p, max_new_tokens]
    sending = gr.on([message.submit, send.click], functools.partial(respond, task), inputs, [chatbot, message],
                    **hidden)
    stop.click(None, None, None, cancels=[sending], **hidden)
    clear.click(lambda: [], None, chatbot, **hidden)
    export.click(lambda h, f: gr.update(value=export_chat(h, f), visible=True), [chatbot, export_format],
                 export_file, **hidden)
    go.click(functools.partial(alternatives, task),
             [prompt, model, adapter, count, complete_tokens, complete_temperature], outs, **hidden)
    mode.change(lambda m: (gr.update(visible=m == "Chat"), gr.update(visible=m != "Chat")), mode,
                [chat_box, complete_box], **hidden)
    # The adapter list is refreshed when the page loads and when the tab is opened: adapters trained since the
    # page was built must be selectable without switching the model back and forth.
    gr.on(None, lambda: gr.update(choices=adapter_choices(task, default_model)), None, adapter,
          show_progress="hidden", **hidden)
    tab.select(functools.partial(model_changed, task), [model, adapter], [info, adapter], show_progress="hidden",
               **hidden)
    model.change(functools.partial(model_changed, task), [model, adapter], [info, adapter], **hidden)
    chatbot.change(lambda h: h, chatbot, saved, **hidden)
    return {"chatbot": chatbot, "saved": saved, "model": model, "adapter": adapter, "message": message}

"""The Chat tab: streaming chat for instruction models, and 'Continue text' for base models."""

from __future__ import annotations

import html
import json
import math
import tempfile

import gradio as gr

from errors import UserError
from models import catalog
from tasks.chat import ChatTask, message_text
from tasks.feedback import FeedbackService
from tasks.grounding import Passage, unsupported, without_sources
from tasks.inside import InsideModel
from ui.api import GENERATION, expose, handler, on_load, user_of
from ui.compare_panel import compare_panel
from ui.i18n import in_page_language, phrase, show_info, show_warning, t, text_in_page_language
from ui.picker import Picker, adapter_update, adapter_value, no_adapter_box, picker
from ui.services import TabServices


MAX_ALTERNATIVES = 4
ALTERNATIVE = ("chat.alternative_1", "chat.alternative_2", "chat.alternative_3", "chat.alternative_4")  # a label each
CONTINUATION = "<div style='white-space:pre-wrap; padding-top:1.6em'>{}</div>"  # below the box's label
SPEAKERS = {"user": "chat.role_user", "assistant": "chat.role_assistant"}  # a Markdown export's names for them
SOURCES_MARK = "\n\n📎 "  # where a reply's sources start in the chat (in any language)


def respond(task: ChatTask, message: str, history: list, system_prompt: str, model: str, adapter: str,
            temperature: float, top_p: float, max_new_tokens: int, collection: str = "", search_adapter: str = "",
            request: gr.Request = None):
    """UI handler: append the user's message, then stream the assistant's reply into the chatbot; a reply from
    documents ends with its sources, each passage under its number, source and chunk."""
    if not (message or "").strip():
        raise gr.Error(phrase("chat.type_first"))
    before = list(history or [])
    said = [{"role": m["role"], "content": reply_only(m["content"])} for m in before]
    # The message shows at once: a model's first load (or a search of documents) can take a while.
    history = before + [{"role": "user", "content": message}, {"role": "assistant", "content": phrase("chat.waiting")}]
    yield history, ""
    try:
        reply = task.reply(message, said, system_prompt, model, adapter_value(adapter),
                           temperature, top_p, int(max_new_tokens), collection or "", owner=user_of(request),
                           search_adapter=adapter_value(search_adapter))
    except Exception:
        yield before, message  # the conversation as it was and the message back in its box: nothing lost
        raise
    if reply.notice:
        show_warning(text_in_page_language(reply.notice))
    for text in reply.texts():
        text = in_page_language(text) if reply.known else with_sources(text, reply.citations, message)
        history[-1] = {"role": "assistant", "content": text}
        yield history, ""


def with_sources(text: str, citations: list[Passage], question: str = "") -> str:
    """A reply as the chat shows it: with its sources, when it cites any, as passages to open under it, and the
    names and numbers it states that they do not hold (to check)."""
    if not citations:
        return text
    made_up = unsupported(without_sources(text), citations, question)
    warning = f"⚠️ {phrase('chat.not_in_sources', words=', '.join(made_up))}\n\n" if made_up else ""
    # One line of HTML per passage: Markdown inside it stays as written (a passage's "# Title" is not a heading).
    cards = "\n".join(f"<details><summary>[{p.number}] {html.escape(p.source)} · "
                      f"{phrase('search.chunk', number=p.chunk + 1)}</summary><blockquote>"
                      f"{html.escape(p.text).replace(chr(10), '<br>')}</blockquote></details>" for p in citations)
    return f"{without_sources(text)}{SOURCES_MARK}**{phrase('chat.sources')}**\n\n{warning}{cards}"


def reply_only(content: object) -> str:
    """A chat message's text without the sources shown under it (the model reads its own words only)."""
    text = message_text(content)
    cut = text.find(SOURCES_MARK)
    return text[:cut] if cut >= 0 else text


def collection_choices(task: ChatTask, current: str | None, searcher: str | None, request: gr.Request = None):
    """The documents box: none, then the caller's collections (kept chosen while it still exists); and the search
    adapter box, as Search's."""
    names = task.search.store.names(user_of(request))
    return (gr.update(choices=[(phrase("chat.no_documents"), "")] + names, value=current if current in names else ""),
            adapter_update(task.search, "", searcher, user_of(request)))


def alternatives(task: ChatTask, inside: InsideModel, text: str, model: str, adapter: str, count: int,
                 max_new_tokens: int, temperature: float, request: gr.Request = None):
    """UI handler: several continuations side by side, one box each; hovering a word shows how likely the model
    found it."""
    owner = user_of(request)
    outs = task.complete(text, model, adapter_value(adapter), int(count), int(max_new_tokens), temperature,
                         owner=owner)
    return [gr.update(value=with_probabilities(inside, text, outs[i], model, adapter_value(adapter), owner)
                      if i < len(outs) else "", visible=i < len(outs)) for i in range(MAX_ALTERNATIVES)]


def with_probabilities(inside: InsideModel, text: str, continuation: str, model: str, adapter: str,
                       owner: str) -> str:
    """The text and its continuation as HTML: each new token coloured by its probability, shown on hover."""
    try:
        tokens = inside.token_loss(text + continuation, model, adapter, owner=owner)["tokens"]
    except UserError:  # too long to score: the plain text
        return CONTINUATION.format(html.escape(text + continuation))
    spans, written = [], 0
    for token in tokens:
        piece = html.escape(token["text"])
        if written < len(text) or token["logprob"] is None:
            spans.append(f"<span style='opacity:.6'>{piece}</span>")  # the prompt
        else:
            p = math.exp(token["logprob"])
            colour = f"hsla({int(120 * p)}, 70%, 50%, .25)"  # red: unlikely, green: likely
            spans.append(f"<span title='p = {p:.2f}' style='background:{colour}'>{piece}</span>")
        written += len(token["text"])
    return CONTINUATION.format("".join(spans))


def turn_at(history: list, index: object) -> tuple[str, list, str]:
    """The user's prompt an assistant message answered, the turns before that prompt, and the message's text."""
    i = index[0] if isinstance(index, (list, tuple)) else index
    if not isinstance(i, int) or not 0 <= i < len(history or []) or history[i]["role"] != "assistant":
        raise UserError("Only the assistant's replies take feedback.")
    asked = next((j for j in range(i - 1, -1, -1) if history[j]["role"] == "user"), None)
    if asked is None:
        raise UserError("This reply answers no message.")
    turns = [{"role": m["role"], "content": reply_only(m["content"]) if m["role"] == "assistant"
              else message_text(m["content"])} for m in history[:asked]]  # rows may become training data
    return message_text(history[asked]["content"]), turns, reply_only(history[i]["content"])


def liked(feedback: FeedbackService, history: list, system_prompt: str, model: str, adapter: str,
          evt: gr.LikeData, request: gr.Request = None) -> None:
    """UI handler: a 👍 or 👎 on a reply becomes a feedback row (un-liking keeps what was said)."""
    if evt.liked in (None, "", False) and not isinstance(evt.liked, bool):
        return
    prompt, turns, reply = turn_at(history, evt.index)
    verdict = "up" if evt.liked is True or evt.liked == "Like" else "down"
    feedback.feedback(prompt, reply, verdict, "", turns, system_prompt, model, adapter_value(adapter),
                      owner=user_of(request))
    show_info(phrase("chat.thanks_kept"))


def corrected(feedback: FeedbackService, history: list, system_prompt: str, model: str, adapter: str,
              evt: gr.EditData, request: gr.Request = None) -> None:
    """UI handler: an edited reply becomes a feedback row with the edit as its correction."""
    if history[evt.index if isinstance(evt.index, int) else evt.index[0]]["role"] != "assistant":
        return  # an edited question is just a changed conversation
    prompt, turns, _ = turn_at(history, evt.index)
    feedback.feedback(prompt, reply_only(evt.previous_value), "", reply_only(evt.value), turns, system_prompt,
                      model, adapter_value(adapter), owner=user_of(request))
    show_info(phrase("chat.correction_kept"))


def export_chat(history: list, fmt: str) -> str:
    """Write the conversation to a Markdown or JSON file and return its path for download."""
    if not history:
        raise gr.Error(phrase("chat.nothing_to_export"))
    turns = [{"role": m["role"], "content": message_text(m["content"])} for m in history]
    if fmt == "JSON":
        body, suffix = json.dumps(turns, ensure_ascii=False, indent=2), ".json"
    else:
        body = "\n\n".join(f"**{phrase(SPEAKERS[t['role']])}** {t['content']}" for t in turns)
        suffix = ".md"
    with tempfile.NamedTemporaryFile("w", suffix=suffix, prefix="chat-", delete=False, encoding="utf-8") as f:
        f.write(body)
    return f.name


def build(task: ChatTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its model-and-adapter picker."""
    chosen = picker(task, catalog.choices(catalog.DECODER), extra=lambda: gr.Radio(
        [(t("chat.mode_chat"), "Chat"), (t("chat.mode_continue"), "Continue text")], value="Chat",
        label=t("chat.mode"), scale=2,
        info=t("chat.continue_text_suits_base")))
    model, adapter, mode = chosen.model, chosen.adapter, chosen.extra
    with gr.Column(visible=True) as chat_box:
        with gr.Row():
            documents = gr.Dropdown([(phrase("chat.no_documents"), "")], value="", label=t("chat.documents"),
                                    info=t("chat.documents_info"), scale=3)
            searcher = no_adapter_box(label=t("inside.search_adapter"), info=t("search.adapter_info"), scale=1)
        chatbot = gr.Chatbot(label=t("chat.conversation"), height=420, buttons=["copy"], editable="all",
                             feedback_options=("Like", "Dislike"))
        gr.Markdown(t("chat.reply_edit_pencil_into"))
        with gr.Row():
            message = gr.Textbox(placeholder=t("chat.type_message_press_enter"), show_label=False, scale=6,
                                 lines=1, max_lines=8, autofocus=True)
            send = gr.Button(t("chat.send"), variant="primary", scale=1)
            stop = gr.Button(t("chat.stop"), variant="stop", scale=1)
        with gr.Row():
            clear = gr.Button(t("chat.clear_conversation"), size="sm")
            export_format = gr.Radio(["Markdown", "JSON"], value="Markdown", show_label=False)
            export = gr.Button(t("chat.export"), size="sm")
            export_file = gr.File(label=t("common.download"), visible=False)
        with gr.Accordion(t("chat.generation_settings"), open=False):
            system_prompt = gr.Textbox(label=t("chat.system_prompt"), lines=2,
                                       placeholder=t("chat.optional_how_assistant_should"))
            temperature = gr.Slider(0, 2, value=0.3, step=0.05, label=t("common.temperature"),
                                    info=t("chat.0_always_picks_likeliest"))
            top_p = gr.Slider(0.05, 1, value=0.9, step=0.05, label=t("common.top_p"),
                              info=t("chat.sample_only_from_likeliest"))
            max_new_tokens = gr.Slider(16, 1024, value=256, step=16, label=t("chat.max_new_tokens"),
                                       info=t("chat.longest_reply_tokens_about"))
        compare_panel(task, {"system_prompt": system_prompt, "temperature": temperature, "top_p": top_p,
                             "max_new_tokens": max_new_tokens}, str, catalog.choices(catalog.DECODER),
                      lambda v: {**v, "max_new_tokens": int(v["max_new_tokens"])},
                      lambda: {"message": gr.Textbox(placeholder=t("chat.message_send_every_variant"),
                                                     show_label=False)})
    with gr.Column(visible=False) as complete_box:
        prompt = gr.Textbox(label=t("chat.text_continue"), lines=4, placeholder=t("chat.once_upon_time"))
        with gr.Row():
            count = gr.Slider(1, MAX_ALTERNATIVES, value=2, step=1, label=t("chat.alternatives"))
            complete_tokens = gr.Slider(8, 512, value=64, step=8, label=t("chat.max_new_tokens"))
            complete_temperature = gr.Slider(0, 2, value=0.8, step=0.05, label=t("common.temperature"))
        go = gr.Button(t("chat.continue"), variant="primary")
        gr.Markdown(t("chat.each_new_word_coloured"))
        with gr.Row():
            outs = [gr.HTML(label=t(ALTERNATIVE[i]), show_label=True, container=True, visible=i < 2)
                    for i in range(MAX_ALTERNATIVES)]
    saved = gr.BrowserState([], storage_key="lora-studio-chat", secret=services.browser_secret)

    hidden = {"api_visibility": "undocumented"}
    inputs = [message, chatbot, system_prompt, model, adapter, temperature, top_p, max_new_tokens, documents,
              searcher]
    sending = gr.on([message.submit, send.click], handler(respond, task, gpu="chat"), inputs, [chatbot, message],
                    **hidden, **GENERATION)
    stop.click(None, None, None, cancels=[sending], **hidden)
    clear.click(lambda: [], None, chatbot, **hidden)
    export.click(expose(lambda h, f: gr.update(value=export_chat(h, f), visible=True), page=True),
                 [chatbot, export_format], export_file, **hidden)
    go.click(handler(alternatives, task, services.inside, gpu="complete"),
             [prompt, model, adapter, count, complete_tokens, complete_temperature], outs, **hidden)
    mode.change(lambda m: (gr.update(visible=m == "Chat"), gr.update(visible=m != "Chat")), mode,
                [chat_box, complete_box], **hidden)
    judged = [chatbot, system_prompt, model, adapter]
    chatbot.like(handler(liked, services.feedback), judged, None, **hidden)
    chatbot.edit(handler(corrected, services.feedback), judged, None, **hidden)
    chosen.wire(tab)
    on_load(handler(collection_choices, task), [documents, searcher], [documents, searcher])
    tab.select(handler(collection_choices, task), [documents, searcher], [documents, searcher],
               show_progress="hidden", **hidden)
    chatbot.change(lambda h: h, chatbot, saved, **hidden)
    return chosen

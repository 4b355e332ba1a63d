"""The Question answering tab: ask about a pasted text or a document collection; the answer is highlighted."""

from __future__ import annotations

import functools
import html

import gradio as gr

from config import LOCAL_USER
from tasks.answer import SENTENCE_NOTE, AnswerTask
from tasks.text import highlight
from ui.api import handler, progress_for, user_of
from ui.compare_panel import compare_panel
from ui.i18n import phrase, show_warning, t, text_in_page_language
from ui.picker import Picker, adapter_value, picker
from ui.services import TabServices


MODELS = ["all-MiniLM-L6-v2", "DistilBERT-SQuAD"]  # the offline sentence-level default, and a span model
PARAGRAPH = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
             "after the engineer Gustave Eiffel, whose company designed and built the tower. It was constructed "
             "from 1887 to 1889 as the centrepiece of the 1889 World's Fair. The tower is 330 metres tall, about "
             "the same height as an 81-storey building.")
MODEL_INFO = (t("answer.model_info"))
ADAPTER_INFO = t("answer.adapter_info")
EXAMPLES = [
    ["Who is the Eiffel Tower named after?", PARAGRAPH],
    ["How tall is the tower?", PARAGRAPH],
]


def fallback_note(task: AnswerTask, model: str, adapter: str, owner: str = LOCAL_USER) -> str:
    """The note when the model answers at sentence level (the offline fallback)."""
    sentence_level = task.sentence_level(model, adapter_value(adapter), owner)
    return f"*{text_in_page_language(SENTENCE_NOTE)}*" if sentence_level else ""


def ask(task: AnswerTask, question: str, context: str, collection: str, model: str, adapter: str,
        progress=gr.Progress(), request: gr.Request = None):
    """UI handler: the answer, a line with its score, level and source, and the passage with the answer marked."""
    result = task.find(question, context, collection, model, adapter_value(adapter), progress_for(progress),
                       owner=user_of(request))
    if result.notice:  # Chinese to an English-first model
        show_warning(text_in_page_language(result.notice))
    level = phrase("answer.level.sentence" if result.level == "sentence" else "answer.level.span")
    if not result.found:
        details = phrase("answer.not_found", score=f"{result.score:.2f}", level=level)
        return "", details, html.escape(result.passage)
    details = phrase("answer.score", score=f"{result.score:.2f}", level=level) + (
        phrase("answer.from", source=result.source) if result.source else "")
    return result.answer, details, highlight(result.passage, result.start, result.end)


def answer_line(result: dict) -> str:
    """One variant's answer for the side-by-side columns."""
    if not result["found"]:
        return phrase("answer.not_found_short", score=f"{result['score']:.2f}")
    level = phrase(f"answer.level.{result['level']}") if result["level"] in ("sentence", "span") else result["level"]
    return f"{result['answer']}\n\n*" + phrase("answer.score_short", score=f"{result['score']:.2f}", level=level) + "*"


def build(task: AnswerTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its model-and-adapter picker."""
    chosen = picker(task, MODELS, functools.partial(fallback_note, task), MODEL_INFO, ADAPTER_INFO)
    model, adapter = chosen.model, chosen.adapter
    question = gr.Textbox(label=t("answer.question"), placeholder=t("answer.who_tower_named_after"))
    with gr.Row():
        context = gr.Textbox(label=t("answer.context"), lines=8, scale=3,
                             placeholder=t("answer.paste_text_that_holds"))
        collection = gr.Textbox(label=t("answer.document_collection"), scale=1,
                                info=t("answer.leave_context_empty_answer"))
    ask_button = gr.Button(t("answer.answer"), variant="primary")
    samples = gr.Examples(EXAMPLES, [question, context], label=t("common.examples"))
    samples.dataset.headers = []  # Gradio does not translate a table's headers: none rather than raw keys
    answer = gr.Textbox(label=t("answer.answer"), interactive=False, buttons=["copy"])
    details = gr.Markdown()
    marked = gr.HTML(label=t("answer.where_answer"))

    compare_panel(task, {"question": question, "context": context, "collection": collection}, answer_line,
                  MODELS)

    hidden = {"api_visibility": "undocumented"}
    gr.on([ask_button.click, question.submit], handler(ask, task, gpu="answer"),
          [question, context, collection, model, adapter], [answer, details, marked], **hidden)
    chosen.wire(tab)
    return chosen

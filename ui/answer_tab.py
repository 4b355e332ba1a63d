"""The Question answering tab: ask about a pasted text or a document collection; the answer is highlighted."""

from __future__ import annotations

import functools
import html

import gradio as gr

from errors import UserError
from models import catalog
from tasks.answer import SENTENCE_NOTE, AnswerTask
from tasks.text import highlight
from ui.adapters import NO_ADAPTER, adapter_value, fresh, keep_fresh

MODELS = ["all-MiniLM-L6-v2", "DistilBERT-SQuAD"]  # the offline sentence-level default, and a span model
PARAGRAPH = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
             "after the engineer Gustave Eiffel, whose company designed and built the tower. It was constructed "
             "from 1887 to 1889 as the centrepiece of the 1889 World's Fair. The tower is 330 metres tall, about "
             "the same height as an 81-storey building.")
EXAMPLES = [
    ["Who is the Eiffel Tower named after?", PARAGRAPH],
    ["How tall is the tower?", PARAGRAPH],
]




def model_info(task: AnswerTask, model: str, adapter: str = NO_ADAPTER) -> str:
    """The model's one-line description, and the note when it answers at sentence level (offline fallback)."""
    model = model or catalog.TASK_DEFAULTS[task.id]
    try:
        sentence_level = task.sentence_level(model, adapter_value(adapter))
    except UserError as error:
        return f"{catalog.describe(model)}\n\n⚠️ {error}"
    return catalog.describe(model) + (f"\n\n*{SENTENCE_NOTE}*" if sentence_level else "")


def ask(task: AnswerTask, question: str, context: str, collection: str, model: str, adapter: str,
        progress=gr.Progress()):
    """UI handler: the answer, a line with its score, level and source, and the passage with the answer marked."""
    try:
        result = task.find(question, context, collection, model, adapter_value(adapter),
                           lambda f, msg: progress(f, desc=msg))
    except UserError as error:
        raise gr.Error(str(error)) from None
    level = "sentence-level (offline fallback)" if result.level == "sentence" else "exact span"
    if not result.found:
        details = (f"No answer found: the best candidate scored {result.score:.2f}, too low to trust "
                   f"({level}). Try rephrasing the question.")
        return "", details, html.escape(result.passage)
    details = f"Score {result.score:.2f} · {level}" + (f" · from **{result.source}**" if result.source else "")
    return result.answer, details, highlight(result.passage, result.start, result.end)


def build(task: AnswerTask, browser_secret: str) -> dict:
    """Build the tab; returns its components by name."""
    default_model = catalog.TASK_DEFAULTS[task.id]
    with gr.Tab(task.title, id=task.id) as tab:
        info = gr.Markdown(model_info(task, default_model))
        with gr.Row():
            model = gr.Dropdown(MODELS, value=default_model, label="Model", allow_custom_value=True, scale=3,
                                info="A question-answering model, or a sentence-embedding model for "
                                     "sentence-level answers; a Hugging Face id or a local folder works too.")
            adapter = gr.Dropdown([NO_ADAPTER], value=NO_ADAPTER, label="Adapter", scale=2,
                                  info="A LoRA adapter you trained for question answering.")
        question = gr.Textbox(label="Question", placeholder="Who is the tower named after?")
        with gr.Row():
            context = gr.Textbox(label="Context", lines=8, scale=3,
                                 placeholder="Paste the text that holds the answer.")
            collection = gr.Textbox(label="…or a document collection", scale=1,
                                    info="Leave the context empty to answer from this collection's documents.")
        ask_button = gr.Button("Answer", variant="primary")
        gr.Examples(EXAMPLES, [question, context], label="Examples")
        answer = gr.Textbox(label="Answer", interactive=False, buttons=["copy"])
        details = gr.Markdown()
        marked = gr.HTML(label="Where the answer is")

    hidden = {"api_visibility": "undocumented"}
    gr.on([ask_button.click, question.submit], functools.partial(ask, task),
          [question, context, collection, model, adapter], [answer, details, marked], **hidden)
    adapter.change(lambda m, a: model_info(task, m, a), [model, adapter], info, show_progress="hidden", **hidden)
    model.change(lambda m, a: (model_info(task, m), fresh(task, m, a)),
                 [model, adapter], [info, adapter], **hidden)
    keep_fresh(tab, task, model, adapter)
    return {"model": model, "adapter": adapter, "question": question, "context": context,
            "collection": collection, "answer": answer, "details": details, "marked": marked}

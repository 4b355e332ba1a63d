"""The Summarize tab: extractive summaries offline, abstractive ones with a summarizer or an instruction model."""

from __future__ import annotations

import gradio as gr

from models import catalog
from tasks.summarize import SummarizeTask
from ui.api import handler, progress_for, user_of
from ui.compare_panel import compare_panel
from ui.i18n import phrase, t, text_in_page_language
from ui.picker import Picker, adapter_value, info_line, picker
from ui.services import TabServices


EXAMPLES = [
    ["Honeybees pollinate a large share of the crops that people eat, from apples to almonds. My neighbour "
     "painted his fence blue last weekend.\n\nWithout bees, farmers would harvest far less fruit and many "
     "vegetables would become expensive. The train to the city was ten minutes late on Tuesday.\n\n"
     "Protecting bee colonies from pesticides and disease is therefore vital for the world's food supply. "
     "The café on the corner now sells lemon cake. It rained during the night."],
    ["The city council approved a new plan for public transport on Monday. The plan adds three tram lines and "
     "doubles the number of night buses. Construction of the first tram line starts next spring and should take "
     "two years. The council expects the new lines to cut car traffic in the centre by a fifth. Critics say the "
     "plan is too expensive and that the money would be better spent on repairing roads. The mayor replied that "
     "cleaner air and shorter journeys are worth the cost. Tickets will not become more expensive, the council "
     "said, because the state pays half of the construction costs."],
]


# The lengths (tasks.summarize.LENGTHS), each named in the page's language.
LENGTH_CHOICES = [(t("summarize.length_short"), "short"), (t("summarize.length_medium"), "medium"),
                  (t("summarize.length_bullets"), "bullets")]


def model_choices() -> list[str]:
    """The offline embedding model (extractive), then summarizers, then instruction models (abstractive)."""
    chat = [name for name in catalog.choices(catalog.DECODER) if catalog.CATALOG[name].chat]
    return catalog.choices(catalog.EMBEDDING) + catalog.choices(catalog.SEQ2SEQ) + chat


def fallback_note(model: str, adapter: str = "", owner: str = "") -> str:
    """The note on the offline extractive fallback, for a model that can only pick sentences."""
    backbone = catalog.find(model)
    extractive = backbone is not None and backbone.family in (catalog.EMBEDDING, catalog.ENCODER)
    return f"*{phrase('summarize.note_extractive')}*" if extractive else ""


def model_info(model: str) -> str:
    """The model's one-line description, and the note on the offline extractive fallback."""
    model = model or SummarizeTask.spec.defaults[catalog.EMBEDDING]
    return info_line(model, fallback_note(model))


def summarize(task: SummarizeTask, text: str, method: str, length: str, model: str, adapter: str,
              progress=gr.Progress(), request: gr.Request = None) -> tuple[str, str]:
    """UI handler: the summary and its note."""
    result = task.run(text, "" if method == "auto" else method, length, model, adapter_value(adapter),
                      progress=progress_for(progress), owner=user_of(request))
    method = phrase(f"summarize.method.{result['method']}") if result["method"] in ("extractive", "abstractive") \
        else result["method"].title()
    return result["summary"], f"**{method}** · {result['model']} — {text_in_page_language(result['note'])}"


def build(task: SummarizeTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its model-and-adapter picker."""
    chosen = picker(task, model_choices(), fallback_note)
    model, adapter = chosen.model, chosen.adapter
    with gr.Row():
        method = gr.Radio([(t("summarize.method_auto"), "auto"), (t("summarize.method_extractive"), "extractive"),
                           (t("summarize.method_abstractive"), "abstractive")], value="auto",
                          label=t("summarize.method"), info=t("summarize.extractive_keeps_key_sentences"))
        length = gr.Radio(LENGTH_CHOICES, value="medium", label=t("summarize.length"),
                          info=t("summarize.short_2_3_sentences"))
    text = gr.Textbox(label=t("summarize.text_summarize"), lines=10, max_lines=30,
                      placeholder=t("summarize.paste_article_report_notes"))
    go = gr.Button(t("summarize.summarize"), variant="primary")
    summary = gr.Textbox(label=t("summarize.summary"), lines=6, buttons=["copy"])
    note = gr.Markdown()
    gr.Examples(EXAMPLES, inputs=[text], label=t("common.try_sample_2"), api_visibility="undocumented")

    compare_panel(task, {"text": text, "method": method, "length": length}, lambda r: r["summary"],
                  model_choices(), lambda v: {**v, "method": "" if v["method"] == "auto" else v["method"]})

    hidden = {"api_visibility": "undocumented"}
    go.click(handler(summarize, task, gpu="summarize"), [text, method, length, model, adapter], [summary, note],
             **hidden)
    chosen.wire(tab)
    return chosen

"""The Translate tab: the detected source language with its confidence, a target, and a translation that keeps
the text's paragraphs and line breaks."""

from __future__ import annotations

import functools

import gradio as gr

from errors import UserError
from models import catalog
from tasks.generation import offline_fallback
from tasks.translate import LANGUAGES, TranslateTask
from ui.api import handler, progress_for, user_of
from ui.compare_panel import compare_panel
from ui.picker import Picker, adapter_value, info_line, picker
from ui.services import TabServices


# Translation models on the hub (not in the catalog: they need the hub); {src}/{tgt} become the chosen pair.
HUB_TRANSLATORS = ["Helsinki-NLP/opus-mt-{src}-{tgt}", "facebook/nllb-200-distilled-600M", "facebook/m2m100_418M"]
WEAK_NOTE = ("*This small offline model is a weak translator: fine for short, simple sentences. With the hub "
             "reachable, pick a translation model (Marian opus-mt, NLLB) for real work.*")
EXAMPLES = [
    ["Le marché ouvre tous les samedis à huit heures.\nOn y trouve des légumes, du fromage et du pain frais.\n\n"
     "En hiver, les marchands vendent aussi du vin chaud."],
    ["Der Zug nach Berlin fährt um neun Uhr ab.\nBitte seien Sie zehn Minuten vorher am Bahnsteig."],
    ["El museo está cerrado los lunes.\n\nLas entradas cuestan diez euros y los niños entran gratis."],
]


def model_choices() -> list[str]:
    """Instruction models (the offline default first), the catalog's seq2seq model, then hub translators."""
    chat = [name for name in catalog.choices(catalog.DECODER) if catalog.CATALOG[name].chat]
    return chat + ["Flan-T5-base"] + HUB_TRANSLATORS


def fallback_note(model: str, adapter: str = "", owner: str = "") -> str:
    """The note when the model is the weak offline fallback."""
    backbone = catalog.find(model)
    weak = backbone is not None and backbone.family == catalog.DECODER and offline_fallback(backbone.name)
    return WEAK_NOTE if weak else ""


def model_info(model: str) -> str:
    """The model's one-line description, and the note when it is the weak offline fallback."""
    model = model or TranslateTask.spec.defaults[catalog.DECODER]
    return info_line(model, fallback_note(model))


def detected(task: TranslateTask, text: str) -> str:
    """UI handler: the language the text seems to be in, as it is typed."""
    if not (text or "").strip():
        return ""
    try:
        found = task.detect(text)
    except UserError as error:
        return f"*{error}*"
    return f"Detected: **{found['name']}** ({found['code']}), {found['confidence']:.0%} sure"


def translate(task: TranslateTask, text: str, source: str, target: str, model: str, adapter: str,
              progress=gr.Progress(), request: gr.Request = None) -> tuple[str, str, str]:
    """UI handler: the translation, the source language it used, and the note."""
    result = task.run(text, target, source, model, adapter_value(adapter), progress=progress_for(progress),
                      owner=user_of(request))
    name = LANGUAGES[result["source"]].name
    how = "chosen by you" if source != "auto" else f"detected, {result['source_confidence']:.0%} sure"
    return result["translation"], f"Source: **{name}** ({how})", result["note"]


def build(task: TranslateTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its model-and-adapter picker."""
    languages = [(f"{lang.name} ({lang.code})", lang.code) for lang in LANGUAGES.values()]
    chosen = picker(task, model_choices(), fallback_note,
                    model_info="A catalog model, a Hugging Face id or a local model folder; {src} and {tgt} in a "
                               "name become the language codes.")
    model, adapter = chosen.model, chosen.adapter
    with gr.Row():
        source = gr.Dropdown([("Detect automatically", "auto")] + languages, value="auto", label="From",
                             info="Choose it yourself when the text is short or mixed.")
        target = gr.Dropdown(languages, value="en", label="To")
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label="Text to translate", lines=8, max_lines=30,
                              placeholder="Paragraphs and line breaks are kept")
            found = gr.Markdown()
        with gr.Column():
            translation = gr.Textbox(label="Translation", lines=8, max_lines=30, buttons=["copy"])
            used = gr.Markdown()
    go = gr.Button("Translate", variant="primary")
    note = gr.Markdown()
    gr.Examples(EXAMPLES, inputs=[text], label="Try a sample", api_visibility="undocumented")

    compare_panel(task, {"text": text, "target": target, "source": source}, lambda r: r["translation"],
                  model_choices())

    hidden = {"api_visibility": "undocumented"}
    text.change(functools.partial(detected, task), text, found, trigger_mode="always_last", **hidden)
    go.click(handler(translate, task), [text, source, target, model, adapter], [translation, used, note],
             **hidden)
    chosen.wire(tab)
    return chosen

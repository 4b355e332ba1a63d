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
from ui.i18n import english, in_page_language, phrase, t, text_in_page_language
from ui.picker import Picker, adapter_value, info_line, picker
from ui.services import TabServices


# Translation models on the hub (not in the catalog: they need the hub); {src}/{tgt} become the chosen pair.
HUB_TRANSLATORS = ["Helsinki-NLP/opus-mt-{src}-{tgt}", "facebook/nllb-200-distilled-600M", "facebook/m2m100_418M"]
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
    return f"*{phrase('translate.note_weak')}*" if weak else ""


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
        return f"*{in_page_language(str(error))}*"
    return phrase("translate.detected", name=language_name(found["code"], found["name"]), code=found["code"],
                  sure=f"{found['confidence']:.0%}")


def language_name(code: str, name: str) -> str:
    """A language's name in the page's language (as detection named it, for a code the dictionaries lack)."""
    return phrase(f"lang.{code}") if f"lang.{code}" in english() else name


def translate(task: TranslateTask, text: str, source: str, target: str, model: str, adapter: str,
              progress=gr.Progress(), request: gr.Request = None) -> tuple[str, str, str]:
    """UI handler: the translation, the source language it used, and the note."""
    result = task.run(text, target, source, model, adapter_value(adapter), progress=progress_for(progress),
                      owner=user_of(request))
    name = language_name(result["source"], LANGUAGES[result["source"]].name)
    how = (phrase("translate.chosen") if source != "auto"
           else phrase("translate.detected_how", sure=f"{result['source_confidence']:.0%}"))
    return result["translation"], phrase("translate.source", name=name, how=how), text_in_page_language(result["note"])


def build(task: TranslateTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its model-and-adapter picker."""
    languages = [(t(f"lang.{lang.code}"), lang.code) for lang in LANGUAGES.values()]
    chosen = picker(task, model_choices(), fallback_note,
                    model_info=t("translate.model_info"))
    model, adapter = chosen.model, chosen.adapter
    with gr.Row():
        source = gr.Dropdown([(t("translate.detect_auto"), "auto")] + languages, value="auto",
                             label=t("translate.from"), info=t("translate.choose_yourself_when_text"))
        target = gr.Dropdown(languages, value="en", label=t("translate.to"))
    with gr.Row():
        with gr.Column():
            text = gr.Textbox(label=t("translate.text_translate"), lines=8, max_lines=30,
                              placeholder=t("translate.paragraphs_line_breaks_are"))
            found = gr.Markdown()
        with gr.Column():
            translation = gr.Textbox(label=t("translate.translation"), lines=8, max_lines=30, buttons=["copy"])
            used = gr.Markdown()
    go = gr.Button(t("translate.translate"), variant="primary")
    note = gr.Markdown()
    gr.Examples(EXAMPLES, inputs=[text], label=t("common.try_sample_2"), api_visibility="undocumented")

    compare_panel(task, {"text": text, "target": target, "source": source}, lambda r: r["translation"],
                  model_choices())

    hidden = {"api_visibility": "undocumented"}
    text.change(functools.partial(detected, task), text, found, trigger_mode="always_last", **hidden)
    go.click(handler(translate, task, gpu="translate"), [text, source, target, model, adapter],
             [translation, used, note], **hidden)
    chosen.wire(tab)
    return chosen

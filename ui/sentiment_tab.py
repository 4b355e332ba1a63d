"""The Sentiment tab: label many texts (typed, or one column of a CSV), count the labels, download the results."""

from __future__ import annotations

import functools
import tempfile

import gradio as gr
import pandas as pd

from config import LOCAL_USER
from errors import UserError
from tasks.sentiment import ZERO_SHOT_NOTE, SentimentTask
from tasks.text import csv_column, csv_table
from ui.api import handler, progress_for, upload, user_of
from ui.compare_panel import compare_panel
from ui.i18n import phrase, t, text_in_page_language
from ui.picker import Picker, adapter_value, picker
from ui.services import TabServices


MODELS = ["all-MiniLM-L6-v2", "DistilBERT-SST-2"]  # the offline zero-shot default, and a trained classifier
MODEL_INFO = (t("sentiment.model_info"))
ADAPTER_INFO = t("sentiment.adapter_info")
EXAMPLES = [
    ["I absolutely loved this film, the acting was superb.\nThe food was cold and the waiter was rude.\n"
     "The train leaves at 8 am from platform two."],
    ["Fantastic product, it exceeded my expectations!\nIt stopped working after two days. Total waste of money."],
]


def fallback_note(task: SentimentTask, model: str, adapter: str, owner: str = LOCAL_USER) -> str:
    """The note when the model runs the offline zero-shot method."""
    return f"*{text_in_page_language(ZERO_SHOT_NOTE)}*" if task.zero_shot(model, adapter_value(adapter), owner) else ""


def csv_columns(task: SentimentTask, path: str | None):
    """UI handler: fill the column dropdown from an uploaded CSV's header (a 'text'-like column first)."""
    if not path:
        return gr.update(choices=[], value=None)
    columns = csv_table(upload(path).path, task.ctx.settings.max_upload_mb)[0]
    preferred = [c for c in columns if c.strip().lower() in ("text", "review", "sentence", "comment")]
    return gr.update(choices=columns, value=(preferred or columns or [None])[0])


def results_table(rows: list[dict]) -> pd.DataFrame:
    """One row per text: the text, its label, and one score column per label (named in the page's language)."""
    text, label_head = phrase("sentiment.column.text"), phrase("sentiment.column.label")
    return pd.DataFrame([{text: r["text"], label_head: r["label"],
                          **{phrase("sentiment.column.score", label=label): round(p, 3)
                             for label, p in r["scores"].items()}} for r in rows])


def label_counts(rows: list[dict]) -> pd.DataFrame:
    """How many texts got each label (zeros included), for the bar chart."""
    labels = list(rows[0]["scores"]) if rows else []
    counts = {label: 0 for label in labels}
    for r in rows:
        counts[r["label"]] += 1
    return pd.DataFrame({"label": list(counts), "count": list(counts.values())})


def results_note(note: str) -> str:
    """The analysis's note without the zero-shot line: the line above the model box already says it."""
    return text_in_page_language(note.removeprefix(ZERO_SHOT_NOTE).strip())


def write_csv(table: pd.DataFrame) -> str:
    """Write the results to a temporary CSV file and return its path for download."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv", prefix="sentiment-", delete=False,
                                     encoding="utf-8", newline="") as f:
        table.to_csv(f, index=False)
    return f.name


def analyze(task: SentimentTask, text: str, path: str | None, column: str | None, model: str, adapter: str,
            progress=gr.Progress(), request: gr.Request = None):
    """UI handler: the results table, the label counts, the CSV to download and the method note."""
    if path:
        if not column:
            raise UserError("Please choose the CSV column that holds the texts.")
        texts = csv_column(upload(path).path, column, task.ctx.settings.max_upload_mb)
    else:
        texts = text
    rows, note = task.analyze(texts, model, adapter_value(adapter), progress_for(progress), owner=user_of(request))
    table = results_table(rows)
    chart = gr.update(value=label_counts(rows), x_title=phrase("sentiment.axis_label"),
                      y_title=phrase("sentiment.axis_count"), visible=True)
    return (gr.update(value=table, visible=True), chart, gr.update(value=write_csv(table), visible=True),
            results_note(note))


def sentiment_lines(rows: list[dict]) -> str:
    """One variant's labels, a line per text, for the side-by-side columns."""
    return "\n".join(f"- {row['text']} → **{row['label']}** ({row['scores'][row['label']]:.0%})" for row in rows)


def build(task: SentimentTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its model-and-adapter picker."""
    chosen = picker(task, MODELS, functools.partial(fallback_note, task), MODEL_INFO, ADAPTER_INFO)
    model, adapter = chosen.model, chosen.adapter
    with gr.Row():
        text = gr.Textbox(label=t("sentiment.texts_one_per_line"), lines=8, scale=3,
                          placeholder=t("sentiment.i_loved_delivery_was"))
        with gr.Column(scale=2):
            uploaded = gr.File(label=t("sentiment.csv_file"), file_types=[".csv"], type="filepath")
            column = gr.Dropdown([], label=t("sentiment.column_texts"), allow_custom_value=False,
                                 info=t("sentiment.when_csv_uploaded_this"))
    run = gr.Button(t("sentiment.analyse"), variant="primary")
    gr.Examples(EXAMPLES, [text], label=t("common.examples"))
    note = gr.Markdown()
    # Hidden until the first run (an empty table shows headers "1 2 3"); the table has the page's width, so its
    # score columns fit, and the chart sits below it. Its bars start at 0: Gradio's own axis starts at the least
    # count, which hides the bars of equal counts.
    table = gr.Dataframe(label=t("common.results"), wrap=True, interactive=False, visible=False)
    with gr.Row():
        chart = gr.BarPlot(x="label", y="count", label=t("sentiment.label_counts"), visible=False, y_lim=[0, None],
                           scale=2)
        download = gr.File(label=t("sentiment.download_results_csv"), visible=False, scale=1)

    compare_panel(task, {"texts": text}, sentiment_lines, MODELS)

    hidden = {"api_visibility": "undocumented"}
    run.click(handler(analyze, task, gpu="sentiment"), [text, uploaded, column, model, adapter],
              [table, chart, download, note], **hidden)
    uploaded.change(handler(csv_columns, task), uploaded, column, **hidden)
    chosen.wire(tab)
    return chosen

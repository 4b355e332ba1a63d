"""The Feedback tab: the replies you liked, disliked or corrected in Chat, editable, and rows you write by hand;
export them, or train on them in one click."""

from __future__ import annotations

import json
import tempfile

import gradio as gr
import pandas as pd

from errors import UserError
from tasks.feedback import FeedbackService, training_rows
from ui.api import first_cell, handler, on_load, user_of
from ui.i18n import localized_columns, phrase, show_info, t

COLUMNS = ["id", "verdict", "prompt", "reply", "correction", "model", "adapter"]
INTRO = (t("feedback.intro"))


def table(service: FeedbackService, owner: str) -> pd.DataFrame:
    rows = service.feedback_rows(owner=owner)
    verdicts = {"up": phrase("feedback.row.up"), "down": phrase("feedback.row.down")}
    shown = [[verdicts.get(r[c], r[c]) if c == "verdict" else _short(r[c]) for c in COLUMNS] for r in reversed(rows)]
    return pd.DataFrame(shown, columns=localized_columns("feedback.column", COLUMNS))


def _short(value: object) -> str:
    text = str(value or "")
    return text if len(text) <= 120 else text[:117] + "…"


def summary(service: FeedbackService, owner: str) -> str:
    supervised, pairs = training_rows(service.feedback_rows(owner=owner))
    return (phrase("feedback.so_far", rows=len(supervised), pairs=len(pairs))
            if supervised or pairs else phrase("feedback.none_yet"))


def show(service: FeedbackService, request: gr.Request = None):
    owner = user_of(request)
    return table(service, owner), summary(service, owner)


def pick(service: FeedbackService, row_id: str, request: gr.Request = None):
    """Fill the editor with one row (the full texts, not the table's short ones)."""
    if not row_id:
        return "", "", "", "", ""
    row = service.store.get(user_of(request), row_id)
    return row["id"], row["prompt"], row["reply"], row["correction"], row["verdict"] or "none"


def save(service: FeedbackService, row_id: str, prompt: str, reply: str, correction: str, verdict: str,
         request: gr.Request = None):
    owner = user_of(request)
    old = service.store.get(owner, row_id) if row_id else {}
    row = service.feedback(prompt, reply, "" if verdict == "none" else verdict, correction, old.get("history"),
                           old.get("system_prompt", ""), old.get("model", ""), old.get("adapter", ""), row_id,
                           owner=owner)
    show_info(phrase("feedback.saved"))
    return row["id"], table(service, owner), summary(service, owner)


def delete(service: FeedbackService, row_id: str, request: gr.Request = None):
    if not row_id:
        raise UserError("Pick a row in the table first.")
    owner = user_of(request)
    service.delete_feedback(row_id, owner=owner)
    return "", "", "", "", "none", table(service, owner), summary(service, owner)


def export(service: FeedbackService, request: gr.Request = None):
    rows = service.feedback_rows(owner=user_of(request))
    if not rows:
        raise UserError("There is no feedback to export yet.")
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", prefix="feedback-rows-", delete=False,
                                     encoding="utf-8") as out:
        out.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    return gr.update(value=out.name, visible=True)


def build(service: FeedbackService) -> dict:
    """The tab; returns its "Train from feedback" button, which the app wires to the Train tab."""
    hidden = {"api_visibility": "undocumented"}
    with gr.Tab(t("tab.feedback"), id="feedback") as tab:
        gr.Markdown(INTRO)
        status = gr.Markdown()
        rows = gr.Dataframe(pd.DataFrame(columns=COLUMNS), label=t("feedback.feedback_select_row_edit"),
                            interactive=False, wrap=True)
        with gr.Row():
            row_id = gr.Textbox(label=t("feedback.row"), interactive=False, scale=1, placeholder=t("feedback.new"))
            verdict = gr.Radio([(t("feedback.verdict_up"), "up"), (t("feedback.verdict_down"), "down"),
                                 (t("feedback.verdict_none"), "none")], value="none", label=t("feedback.verdict"),
                               scale=2)
        prompt = gr.Textbox(label=t("feedback.prompt"), lines=2)
        with gr.Row():
            reply = gr.Textbox(label=t("feedback.reply_gave"), lines=4)
            correction = gr.Textbox(label=t("feedback.answer_should_give_correction"), lines=4)
        with gr.Row():
            new = gr.Button(t("feedback.new_row"))
            save_button = gr.Button(t("feedback.save"), variant="primary")
            delete_button = gr.Button(t("common.delete"), variant="stop")
            export_button = gr.Button(t("feedback.export_jsonl"))
            train = gr.Button(t("feedback.train_from_feedback"), variant="primary")
            prefer = gr.Button(t("feedback.preference_tune_from_feedback"))
        exported = gr.File(label=t("common.download"), visible=False)

    editor = [row_id, prompt, reply, correction, verdict]
    on_load(handler(show, service), None, [rows, status])
    tab.select(handler(show, service), None, [rows, status], **hidden)  # what Chat added meanwhile
    rows.select(first_cell, None, row_id, **hidden).then(handler(pick, service), row_id, editor, **hidden)
    new.click(lambda: ("", "", "", "", "none"), None, editor, **hidden)
    save_button.click(handler(save, service), [row_id, prompt, reply, correction, verdict], [row_id, rows, status],
                      **hidden)
    delete_button.click(handler(delete, service), row_id, [*editor, rows, status], **hidden)
    export_button.click(handler(export, service), None, exported, **hidden)
    return {"train": train, "prefer": prefer}

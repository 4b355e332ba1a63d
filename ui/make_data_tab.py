"""The "Make training data" view: rows written from a collection or uploaded files, in a table to read, fix and
delete, then trained on in the Train view with the right task and columns."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gradio as gr
import pandas as pd

from errors import UserError
from tasks.collections import CollectionStore
from training.documents_data import COLUMNS, write_jsonl
from training.make_data import DataMaker
from ui.api import handler, on_load, uploads, user_of
from ui.i18n import marked, phrase, t, text_in_page_language

ACTIVE = ("queued", "running")


def collections(store: CollectionStore, request: gr.Request = None):
    names = store.names(user_of(request))
    return gr.update(choices=names, value=names[0] if names else None)


def start(maker: DataMaker, task: str, collection: str | None, files, model: str, per_passage: float,
          inverse_cloze: bool, own: str, request: gr.Request = None) -> str:
    settings = {"questions_per_passage": int(per_passage or 3), "inverse_cloze": bool(inverse_cloze),
                "own_questions": own or ""}
    chosen = uploads(files)
    return maker.make_training_data(task, "" if chosen else (collection or ""), chosen, model or "", settings,
                                    owner=user_of(request))["job_id"]


def frame(report: dict) -> pd.DataFrame:
    """The made rows with the task's columns and each row's source document."""
    columns = [*COLUMNS[report["task"]], "source"]
    return pd.DataFrame([[row.get(c, "") for c in columns] for row in report["rows"]], columns=columns)


def refresh(maker: DataMaker, job_id: str, request: gr.Request = None):
    """The view of one make-data job: progress or the report, the rows once made, cancel, delete-row and train
    buttons."""
    hidden = gr.update(visible=False)
    if not job_id:
        return marked("make_data.none_yet"), gr.update(), hidden, hidden, gr.update(), gr.update(active=False)
    try:
        status = maker.training.job(job_id, owner=user_of(request))
    except UserError:
        return phrase("make_data.gone"), gr.update(), hidden, hidden, gr.update(), gr.update(active=False)
    state, report = status["state"], status["report"]
    if state == "succeeded":
        text = text_in_page_language(report["summary"]) + "\n\n" + phrase("make_data.edit_then_train")
        rows = frame(report)
        return text, gr.update(value=rows, visible=True), hidden, gr.update(visible=True), \
            gr.update(visible=not rows.empty), gr.update(active=False)
    line = phrase("make_data.status", state=phrase(f"train.state.{state}"), step=status["step"],
                  total=status["total_steps"])
    if status["error"]:
        line += f"\n\n⚠️ {text_in_page_language(status['error'])}"
    total = status["total_steps"] or 1
    text = f"<progress value='{status['step']}' max='{total}' style='width:100%'></progress>\n\n{line}"
    return text, gr.update(), gr.update(visible=state in ACTIVE), hidden, gr.update(), \
        gr.update(active=state in ACTIVE)


def stop(maker: DataMaker, job_id: str, request: gr.Request = None) -> None:
    maker.training.cancel(job_id, owner=user_of(request))


def remember(evt: gr.SelectData) -> int:
    """The table row the user clicked."""
    return evt.index[0] if isinstance(evt.index, (list, tuple)) else int(evt.index)


def delete_row(rows: pd.DataFrame, index: int | None) -> pd.DataFrame:
    if index is None or rows is None or not 0 <= index < len(rows):
        raise UserError("Pick a row in the table first.")
    return rows.drop(rows.index[index]).reset_index(drop=True)


def delete_and_show(rows: pd.DataFrame, index: int | None) -> tuple[pd.DataFrame, dict]:
    """UI handler: the table without the picked row, and the delete button only while rows are left."""
    left = delete_row(rows, index)
    return left, gr.update(visible=not left.empty)


def rows_file(maker: DataMaker, job_id: str, rows: pd.DataFrame, request: gr.Request = None) -> tuple[str, str]:
    """The table as it is now (fixed and deleted rows included) in a JSONL file named after its job, which tells
    training where the rows came from; (the task, the file)."""
    job = maker.made_from(job_id, user_of(request))
    columns = COLUMNS[job.task]
    records = [] if rows is None else rows.to_dict("records")
    kept = [{c: _value(record.get(c)) for c in (*columns, "source") if c in record} for record in records]
    kept = [row for row in kept if all(str(row.get(c, "")).strip() for c in columns if c != "answer_start")]
    if not kept:
        raise UserError("There are no rows left to train on.")
    folder = Path(tempfile.gettempdir()) / "lora-studio-made-rows"  # one file per job, each click replaces it
    folder.mkdir(exist_ok=True)
    return job.task, str(write_jsonl(folder / f"generated-{job.id}.jsonl", kept))


def _value(value):
    """A table cell as the file holds it: whole numbers as numbers (answer_start), the rest as text."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value if isinstance(value, int) else str(value or "").strip()


def build(maker: DataMaker, store: CollectionStore) -> dict:
    """The view; returns its job id and "Train on these rows" button and table, which the app wires to Train."""
    hidden = {"api_visibility": "undocumented"}
    with gr.Tab(t("tab.make_data"), id="make_data"):
        gr.Markdown(t("make_data.intro"))
        with gr.Row():
            task = gr.Radio([(t("make_data.task_chat"), "chat"), (t("make_data.task_search"), "search"),
                             (t("make_data.task_answer"), "answer")], value="chat", label=t("common.task"))
            collection = gr.Dropdown([], label=t("make_data.collection"), allow_custom_value=False)
        files = gr.File(label=t("make_data.files"), file_count="multiple", file_types=[".txt", ".md", ".csv", ".pdf"])
        with gr.Row():
            model = gr.Textbox(label=t("make_data.writer"), placeholder=t("make_data.writer_placeholder"), scale=2)
            per_passage = gr.Number(3, label=t("make_data.per_passage"), minimum=1, maximum=10, precision=0)
            inverse_cloze = gr.Checkbox(True, label=t("make_data.inverse_cloze"),
                                        info=t("make_data.inverse_cloze_info"))
        own = gr.Textbox(label=t("make_data.own_questions"), placeholder=t("make_data.own_questions_placeholder"),
                         lines=3)
        make = gr.Button(t("make_data.make"), variant="primary")
        status = gr.Markdown(t("make_data.none_yet"))
        cancel = gr.Button(t("common.cancel"), variant="stop", visible=False)
        rows = gr.Dataframe(label=t("make_data.rows"), interactive=True, wrap=True, visible=False)
        with gr.Row():
            # Shown with the rows: a small button beside the table's work, not a page-wide red one.
            delete = gr.Button(t("make_data.delete_row"), variant="secondary", size="sm", scale=0, min_width=160,
                               visible=False)
            train = gr.Button(t("make_data.train"), variant="primary", visible=False)
        job_id = gr.State("")
        picked = gr.State(None)
        timer = gr.Timer(1.0, active=False)

    view = [status, rows, cancel, train, delete, timer]
    show = handler(refresh, maker)
    on_load(handler(collections, store), None, collection)
    make.click(handler(start, maker), [task, collection, files, model, per_passage, inverse_cloze, own], job_id,
               **hidden)
    job_id.change(show, job_id, view, **hidden)
    timer.tick(show, job_id, view, **hidden)
    cancel.click(handler(stop, maker), job_id, None, **hidden)
    rows.select(remember, None, picked, **hidden)
    delete.click(handler(delete_and_show), [rows, picked], [rows, delete], **hidden).then(
        lambda: None, None, picked, **hidden)
    return {"job_id": job_id, "rows": rows, "train": train}


def wire_train(made: dict, trainer: dict, nav, maker: DataMaker) -> None:
    """"Train on these rows": the table's rows as a file in the Train view, with its task and the quick preset."""
    from ui.train_tab import preset_values

    def train(job_id: str, rows: pd.DataFrame, request: gr.Request = None):
        task, path = rows_file(maker, job_id, rows, request)
        return *nav.open("train"), task, path, "quick", *preset_values("quick")

    outputs = [*nav.outputs, trainer["task"], trainer["data"], trainer["preset"], *trainer["advanced"]]
    made["train"].click(handler(train), [made["job_id"], made["rows"]], outputs, api_visibility="undocumented")

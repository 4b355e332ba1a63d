"""The Evaluate tab: score the base model and your adapters on your own rows, side by side, in the background."""

from __future__ import annotations

import json

import gradio as gr
import pandas as pd

from errors import UserError
from tasks.spec import specs, trainable_spec
from training import data
from training.evaluation import MAX_VARIANTS
from training.service import TrainingService
from ui.adapters_tab import verdict_label
from ui.train_tab import formats_text
from ui.api import first_cell, handler, on_load, upload, user_of
from ui.i18n import (english, in_page_language, localized_columns, marked, phrase, t, task_choices, term,
                     task_name, text_in_page_language)

BASE_CHOICE = "base model"  # the box that evaluates the base model itself (a label, never an adapter name)
ACTIVE = ("queued", "running")


def evaluated() -> list[str]:
    return [spec.id for spec in specs() if spec.evaluated]


def choices(service: TrainingService, task: str, owner: str) -> list[tuple[str, str]]:
    """What can be ticked, (shown, value): the base model and the owner's adapters for the task."""
    names = [a["name"] for a in service.list_adapters(task, owner=owner)]
    return [(phrase("evaluate.base_choice"), BASE_CHOICE)] + [(name, name) for name in names]


def held_out_jobs(service: TrainingService, task: str, owner: str) -> list[tuple[str, str]]:
    """The owner's finished training jobs of the task, as (label, job id), for "its held-out rows"."""
    return [(f"{j['name']} ({j['job_id']})", j["job_id"]) for j in service.jobs(owner)
            if j["task"] == task and j["state"] == "succeeded"]


def formats_help(task: str) -> str:
    """What a task's rows need to be scored, where Evaluate reads them differently from training (a chat row needs
    the reply it should get); else the Train view's data formats."""
    key = f"evaluate.formats.{task}"
    return marked(key) if key in english() else formats_text(trainable_spec(task))


def task_changed(service: TrainingService, task: str, request: gr.Request = None):
    owner = user_of(request)
    ticks = choices(service, task, owner)
    return (gr.update(choices=ticks, value=[value for _, value in ticks[:2]]),
            gr.update(choices=held_out_jobs(service, task, owner), value=None),
            formats_help(task))


def variants_of(ticked: list[str], base_model: str) -> list[dict]:
    if not ticked:
        raise UserError("Tick what to evaluate: the base model and/or some adapters.")
    if len(ticked) > MAX_VARIANTS:
        raise UserError(f"Tick at most {MAX_VARIANTS} to evaluate at once.")
    return [{"model": (base_model or "").strip(), "adapter": ""} if name == BASE_CHOICE
            else {"model": "", "adapter": name} for name in ticked]


def start(service: TrainingService, task: str, file, job: str, columns: str, ticked: list[str], base_model: str,
          request: gr.Request = None):
    mapping = None
    if (columns or "").strip():
        try:
            mapping = json.loads(columns)
        except json.JSONDecodeError:
            raise UserError('Write the column mapping as JSON, like {"text": "review", "label": "stars"}.') from None
    path = upload(file).path if file not in (None, "") else ""
    started = service.submit_evaluation(task, path, variants_of(ticked, base_model), mapping, job or "",
                                        owner=user_of(request))
    return started["job_id"], started["job_id"]


def results_markdown(report: dict, verdicts: dict | None = None) -> str:
    """The results table; verdicts (adapter name -> its training verdict) adds what training said of each."""
    if not report:
        return ""
    verdicts = verdicts or {}
    names = report["metric_names"]
    keys = list(dict.fromkeys(k for v in report["variants"] for k in v["metrics"]))
    lower = set(report.get("lower_is_better", []))
    heads = [term(names.get(k, k)) + (phrase("evaluate.lower_is_better") if k in lower else "") for k in keys]
    text = (f"### {marked('evaluate.results')}\n**{text_in_page_language(report['summary'])}**\n\n| | "
            + " | ".join(heads) + " |\n|---|" + "---|" * len(keys) + "\n")
    for i, variant in enumerate(report["variants"]):
        label = in_page_language(variant["label"])
        label = f"**{label}** ✓" if i == report["best"] and len(report["variants"]) > 1 else label
        trained = verdict_label(verdicts.get(variant.get("adapter") or ""))
        label += f" ({trained})" if trained else ""
        text += f"| {_cell(label)} | " + " | ".join(_cell(variant["metrics"].get(k, "")) for k in keys) + " |\n"
    for variant in report["variants"]:
        if variant.get("confusion"):
            labels, matrix = variant["confusion"]["labels"], variant["confusion"]["matrix"]
            text += (f"\n{phrase('evaluate.confusion_of', name=_cell(in_page_language(variant['label'])))}\n\n| | "
                     + " | ".join(map(_cell, labels)) + " |\n|---|" + "---|" * len(labels) + "\n")
            text += "".join(f"| **{_cell(label)}** | " + " | ".join(map(str, counts)) + " |\n"
                            for label, counts in zip(labels, matrix))
    if report.get("problems"):
        text += f"\n**{phrase('evaluate.not_given')}**\n\n" + "".join(
            phrase("evaluate.not_given_line", line=p["line"], variant=_cell(p["variant"]),
                   reason=_cell(text_in_page_language(p["reason"]))) + "\n" for p in report["problems"][:10])
    return text


def rows_frame(report: dict) -> pd.DataFrame | None:
    """Each row with every variant's answer and score, the rows where they disagree first."""
    if not report:
        return None
    labels = [in_page_language(v["label"]) for v in report["variants"]]
    heads = localized_columns("evaluate.row", ["line", "input", "reference", "agree"])
    columns = [*heads[:3], *labels, heads[3]]
    said = {True: phrase("evaluate.row.yes"), False: phrase("evaluate.row.no")}
    rows = [[r["line"], r["input"], r["expected"], *[f"{text}  [{score:g}]" for text, score in
                                                      zip(r["outputs"], r["scores"])], said[bool(r["agree"])]]
            for r in report["rows"]]
    return pd.DataFrame(rows, columns=columns)


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def refresh(service: TrainingService, job_id: str, request: gr.Request = None):
    """The view of one evaluation: progress, results, the rows, the CSV, and whether it can be cancelled."""
    hidden = gr.update(value=None, visible=False)
    empty = (marked("evaluate.no_evaluation_yet"), "", hidden, hidden, gr.update(visible=False),
             gr.update(active=False))
    if not job_id:
        return empty
    owner = user_of(request)
    try:
        status = service.job(job_id, owner=owner)
    except UserError:
        return (phrase("evaluate.gone"), *empty[1:])
    state = status["state"]
    csv = service.evaluation_csv(job_id, owner=owner).path if state == "succeeded" else None
    frame = rows_frame(status["report"])
    # Read once the results exist: this view is polled every second while the evaluation runs.
    verdicts = {a["name"]: a["verdict"] for a in service.list_adapters(owner=owner)} if status["report"] else {}
    return (progress_markdown(status), results_markdown(status["report"], verdicts),
            gr.update(value=frame, visible=frame is not None), gr.update(value=csv, visible=csv is not None),
            gr.update(visible=state in ACTIVE), gr.update(active=state in ACTIVE))


def stop(service: TrainingService, job_id: str, request: gr.Request = None) -> None:
    service.cancel(job_id, owner=user_of(request))


def progress_markdown(status: dict) -> str:
    state = status["state"]
    if state == "queued":
        return phrase("evaluate.status.queued", position=status.get("position", 0))
    total = status["total_steps"] or 1
    line = phrase("evaluate.status.line", state=phrase(f"train.state.{state}"), step=status["step"],
                  total=status["total_steps"], done=f"{status['step'] / total:.0%}")
    if state == "running" and status["eta_s"]:
        line += phrase("train.status.eta", seconds=int(status["eta_s"]))
    if status["error"]:
        line += f"\n\n⚠️ {text_in_page_language(status['error'])}"
    if state == "interrupted":
        line += "\n\n" + phrase("evaluate.status.interrupted")
    return f"<progress value='{status['step']}' max='{total}' style='width:100%'></progress>\n\n{line}"


def history(service: TrainingService, request: gr.Request = None) -> pd.DataFrame:
    rows = [(j["job_id"], task_name(j["task"]), phrase(f"train.state.{j['state']}"),
             text_in_page_language((j["report"] or {}).get("summary", j["error"]))[:160])
            for j in service.evaluations(user_of(request))[:20]]
    return pd.DataFrame(rows, columns=localized_columns("evaluate.column", ["evaluation", "task", "state", "result"]))


def build(service: TrainingService, browser_secret: str) -> dict:
    first = evaluated()[0]
    with gr.Tab(t("tab.evaluate"), id="evaluate"):
        gr.Markdown(t("evaluate.better_than_before_examples"))
        with gr.Row():
            task = gr.Dropdown(task_choices(evaluated()), value=first, label=t("common.task"), scale=1)
            base_model = gr.Textbox(label=t("evaluate.base_model_empty_task"), scale=2)
            ticked = gr.CheckboxGroup([(t("evaluate.base_choice"), BASE_CHOICE)], value=[BASE_CHOICE],
                                      label=t("evaluate.up_to"), scale=3)
        with gr.Row():
            uploaded = gr.File(label=t("evaluate.rows_evaluate_jsonl_json"),
                               file_types=list(data.EXTENSIONS), scale=3)
            with gr.Column(scale=2):
                job = gr.Dropdown([], label=t("evaluate.held_out_rows_training"), value=None)
                sample = gr.Button(t("common.try_sample"), size="sm")
                formats = gr.Markdown(formats_help(first))
        columns = gr.Textbox(label=t("evaluate.column_mapping_optional"),
                             placeholder=t("evaluate.text_review_label_stars"))
        run = gr.Button(t("evaluate.evaluate"), variant="primary")
        status = gr.Markdown(t("evaluate.no_evaluation_yet"))
        cancel = gr.Button(t("common.cancel"), variant="stop", visible=False)
        results = gr.Markdown()
        rows = gr.Dataframe(label=t("evaluate.row_row_where_answers"),
                            interactive=False, wrap=True, visible=False)
        csv = gr.File(label=t("evaluate.download_rows_csv"), interactive=False, visible=False)
        with gr.Accordion(t("evaluate.evaluations"), open=False):
            past = gr.Dataframe(label=t("evaluate.select_one_view"), interactive=False)
        job_id = gr.State("")
        saved = gr.BrowserState("", storage_key="lora-studio-evaluation", secret=browser_secret)
        timer = gr.Timer(1.0, active=False)

    hidden = {"api_visibility": "undocumented"}
    view = [status, results, rows, csv, cancel, timer]
    show = handler(refresh, service)
    refill = handler(task_changed, service)
    task.change(refill, task, [ticked, job, formats], **hidden)
    on_load(refill, task, [ticked, job, formats])
    on_load(handler(history, service), None, past)
    on_load(lambda: gr.update(choices=task_choices(evaluated())), None, task)
    sample.click(lambda t: str(trainable_spec(t).sample_path), task, uploaded, **hidden)
    run.click(handler(start, service), [task, uploaded, job, columns, ticked, base_model], [job_id, saved],
              **hidden).then(show, job_id, view, **hidden).then(handler(history, service), None, past, **hidden)
    timer.tick(show, job_id, view, **hidden)
    saved.change(lambda j: j, saved, job_id, **hidden)
    job_id.change(show, job_id, view, **hidden)
    cancel.click(handler(stop, service), job_id, None, **hidden)
    past.select(first_cell, None, job_id, **hidden)
    return {"task": task, "job": job, "ticked": ticked, "job_id": job_id}

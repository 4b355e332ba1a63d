"""The Train tab: upload examples, check them, train with live progress, read the report, use the adapter."""

from __future__ import annotations

import functools

import gradio as gr
import pandas as pd

from errors import UserError
from models import catalog
from tasks.spec import metric_name, specs, trainable_spec
from training import data, presets, trials
from training.recipe import default_base as default_base_name
from training.registry import recipe_class
from training.service import TrainingService
from ui.adapters_tab import adapters_table
from ui import zerogpu
from ui.api import endpoint_function, expose, first_cell, handler, on_load, upload, user_of
from ui.i18n import (english, in_page_language, localized_columns, marked, phrase, sentences_joined, show_info, t,
                     task_choices, task_name, text_in_page_language)

ADVANCED = ["rank", "alpha", "dropout", "target_modules", "learning_rate", "epochs", "max_steps", "batch_size",
            "grad_accum", "max_length", "seed", "precision", "system_prompt", "method", "beta", "rpo_alpha"]
HELP = {
    "rank": t("train.help.rank"),
    "alpha": t("train.help.alpha"),
    "dropout": t("train.help.dropout"),
    "target_modules": t("train.help.target_modules"),
    "learning_rate": t("train.help.learning_rate"),
    "epochs": t("train.help.epochs"),
    "max_steps": t("train.help.max_steps"),
    "batch_size": t("train.help.batch_size"),
    "grad_accum": t("train.help.grad_accum"),
    "max_length": t("train.help.max_length"),
    "seed": t("train.help.seed"),
    "precision": t("train.help.precision"),
    "system_prompt": t("train.help.system_prompt"),
    "method": t("train.help.method"),
    "beta": t("train.help.beta"),
    "rpo_alpha": t("train.help.rpo_alpha"),
}
CHOICES = {"precision": ("auto", "fp32", "bf16"), "method": presets.METHODS}
ACTIVE = ("queued", "running")
LOG_LINES = 8


def trainable() -> list[str]:
    return [spec.id for spec in specs() if spec.trainable]


def slots() -> int:
    """Mapping dropdowns: as many as the task with the most data fields has."""
    return max(len(spec.fields) for spec in specs() if spec.trainable)


def file_path(file) -> str:
    """The local path of an uploaded file, whatever shape Gradio gives it ("" for none)."""
    return upload(file).path if file not in (None, "") else ""


def task_fields(task: str) -> tuple[str, ...]:
    return tuple(f.name for f in trainable_spec(task).fields)


def slot_texts(task: str, i: int, text=t) -> tuple[str, str | None]:
    """Mapping dropdown i's label (its field, marked when optional) and help for a task, through text (t while
    building, phrase in a handler); ("", None) for an unused slot. A task the dictionaries do not know shows its
    fields' own English."""
    spec = trainable_spec(task)
    if i >= len(spec.fields):
        return "", None
    field, key = spec.fields[i], f"column.{spec.id}.{spec.fields[i].name}"
    if key not in english():
        return f"{field.name} column" + ("" if field.required else " (optional)"), field.help
    return text(key), text(f"{key}.help")


def column_mapping(task: str, chosen: list) -> dict | None:
    """The task field -> file column mapping the dropdowns set (None when nothing is mapped)."""
    mapping = {f: c for f, c in zip(task_fields(task), chosen) if c}
    return mapping or None


def task_changed(service: TrainingService, task: str) -> list:
    """A new task: its base models, its data format and one mapping dropdown per field."""
    default = default_base_name(service.settings, trainable_spec(task))
    mapping = []
    for i in range(slots()):
        label, info = slot_texts(task, i, phrase)
        mapping.append(gr.update(visible=i < len(task_fields(task)), value=None, label=label, info=info))
    spec = trainable_spec(task)
    choices = [name for family in recipe_class(spec.id).families for name in catalog.choices(family)]
    return [gr.update(choices=choices, value=default), formats_text(spec), *mapping]


def inspect_data(task: str, file, *chosen):
    """Preview the file, offer its columns for mapping, and report what would be kept."""
    if file in (None, ""):
        return gr.update(value=None), *[gr.update(choices=[])] * slots(), phrase("train.upload_data_file")
    columns, rows = [], []
    try:
        path = file_path(file)
        columns, rows = data.preview(path)
        report = data.load_examples(path, task, column_mapping(task, list(chosen)))
        summary = sentences_joined([phrase("data.format", format=report.format), data_check(report)])
    except UserError as error:
        summary = f"⚠️ {in_page_language(str(error))}"
    table = pd.DataFrame(rows, columns=columns) if columns and rows else None
    return gr.update(value=table), *[gr.update(choices=columns, value=c) for c in chosen], summary


def data_check(report: data.DataReport) -> str:
    """What training would keep of a file, in the page's language: rows read and kept, then the first rejected
    rows with their reasons (`report.summary()` says the same in English, for the log)."""
    kept = (phrase("data.kept_one", kept=len(report.examples)) if report.rows_read == 1 else
            phrase("data.kept", read=report.rows_read, kept=len(report.examples)))
    if not report.rejected:
        return kept
    listed = phrase("data.separator").join(
        phrase(f"data.at_{report.unit}", line=r.line, reason=in_page_language(r.reason))
        for r in report.rejected[:data.MAX_LISTED])
    more = len(report.rejected) - data.MAX_LISTED
    rejected = (phrase("data.rejected_more", count=len(report.rejected), listed=listed, more=more) if more > 0 else
                phrase("data.rejected", count=len(report.rejected), listed=listed))
    return sentences_joined([kept, rejected])


def overrides(values: list, preset: str = "quick") -> dict:
    """The advanced settings the user changed from the preset's values: only these count as set by the user, so
    a run whose data picks another method (pairs pick DPO) gets that method's own values for the rest."""
    shown = dict(zip(ADVANCED, preset_values(preset)))
    return {key: value for key, value in zip(ADVANCED, values) if value not in (None, "") and value != shown[key]}


def search_settings(search: bool, minutes) -> dict:
    """/train's search settings from the "Find settings for me" box and its budget."""
    return {"search": True, "search_minutes": minutes} if search else {}


def estimate(service: TrainingService, task: str, file, base: str, preset: str, progress=gr.Progress(),
             *values) -> str:
    """Pre-flight: trainable parameters, memory, and the duration from a few steps timed on this machine."""
    chosen, values = list(values[:slots()]), list(values[slots():])
    try:
        progress(0.2, desc=phrase("train.progress_timing"))
        result = service.estimate(task, file_path(file), base, preset, overrides(values, preset),
                                  column_mapping(task, chosen))
        return estimate_text(result) + zerogpu.training_note(result.get("steps"), result.get("step_s"))
    except UserError as error:
        return f"⚠️ {in_page_language(str(error))}"


def estimate_text(result: dict) -> str:
    """The pre-flight estimate in the page's language: trainable parameters, memory, duration, where it runs."""
    seconds = result["duration_s"]
    length = (phrase("estimate.minutes", minutes=f"{seconds / 60:.0f}") if seconds >= 90 else
              phrase("estimate.seconds", seconds=seconds))
    text = phrase("estimate.line", trainable=f"{result['trainable_params']:,}", total=f"{result['total_params']:,}",
                  share=f"{result['trainable_params'] / result['total_params']:.2%}", memory=result["memory_gb"],
                  length=length, steps=result["steps"], step_s=result["step_s"])
    if result.get("placement"):
        text += phrase("estimate.runs_on", where=text_in_page_language(result["placement"]))
    return text


def start(service: TrainingService, request: gr.Request, task, file, validation, base, name, preset, search,
          minutes, *values):
    chosen, values = list(values[:slots()]), list(values[slots():])
    settings = {**overrides(values, preset), **search_settings(search, minutes)}
    out = service.submit(task, file_path(file), base, name, preset, settings, column_mapping(task, chosen),
                         file_path(validation), owner=user_of(request))
    show_info(phrase("train.created_now", job=out["job_id"]) if out["position"] <= 1 else
              phrase("train.created_queued", job=out["job_id"], position=out["position"]))
    return out["job_id"], out["job_id"]


def advanced_field(key: str, value):
    """One advanced setting's input, filled with the preset's value."""
    label, info = t(f"train.field.{key}"), HELP[key]  # keys checked by tests/test_i18n.py
    if key in CHOICES:
        return gr.Dropdown(list(CHOICES[key]), value=value, label=label, info=info)
    if isinstance(value, str):
        return gr.Textbox(value=value, label=label, info=info)
    return gr.Number(value=value, label=label, info=info, precision=0 if isinstance(value, int) else None)


def preset_values(preset: str) -> list:
    """The advanced fields' values for a preset, so choosing a preset shows what it sets."""
    chosen = presets.PRESETS.get(preset or "quick", presets.PRESETS["quick"])
    return [getattr(chosen, key) for key in ADVANCED]


def loss_frame(loss: list) -> pd.DataFrame:
    """The loss curves for the plot, with an empty point per series (named in the page's language).

    Gradio's plot keeps the axis types and the series of the first value it draws and only swaps the data
    afterwards: without numeric dtypes and both series in every frame, a plot first drawn empty stays blank.
    """
    training, validation = phrase("train.plot.training"), phrase("train.plot.validation")
    rows = [(0, None, training), (0, None, validation)]
    rows += [(s, v, training) for s, v, _ in loss if v is not None]
    rows += [(s, v, validation) for s, _, v in loss if v is not None]
    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": "int64", "loss": "float64"})


def loss_plot(loss: list) -> dict:
    """The loss plot's update: hidden until there is a loss to draw (an empty one draws broken axes), its axes and
    legend in the page's language."""
    frame = loss_frame(loss)
    return gr.update(value=frame, visible=bool(frame["loss"].notna().any()), x_title=phrase("train.plot.step"),
                     y_title=phrase("train.plot.loss"), color_title=phrase("train.plot.loss_on"))


def formats_text(spec) -> str:
    """The task's training data formats, translated on the page where the dictionaries know the task."""
    return marked(f"formats.{spec.id}") if f"formats.{spec.id}" in english() else spec.formats


def status_markdown(status: dict) -> str:
    state = status["state"]
    if state == "queued":
        return phrase("train.status.queued", position=status.get("position", 0))
    total = status["total_steps"] or 1
    bar = f"<progress value='{status['step']}' max='{total}' style='width:100%'></progress>"
    line = phrase("train.status.line", state=phrase(f"train.state.{state}"), step=status["step"],
                  total=status["total_steps"], done=f"{status['step'] / total:.0%}", epoch=status["epoch"])
    if state == "running" and status["eta_s"]:
        line += phrase("train.status.eta", seconds=int(status["eta_s"]))
    if status.get("stage") and state == "running":  # the steps are a trial's, not the run's
        line = phrase("train.status.finding", stage=in_page_language(status["stage"])) + "\n\n" + line
    if status["error"]:
        line += f"\n\n⚠️ {text_in_page_language(status['error'])}"
    return bar + "\n\n" + line


def verdict_heading(verdict: str | None) -> str:
    """The report's heading in the page's language: its verdict's (learned, barely, overfit, ruined); the server's
    English summary below it stays the detail."""
    key = f"verdict.{verdict}"
    return marked(key if key in english() else "verdict.unknown")


def report_markdown(status: dict) -> str:
    report = status.get("report") or {}
    if not report:
        return ""
    figures = phrase("train.report.loss", before=report["loss_before"], after=report["loss_after"])
    if "perplexity_before" in report:
        figures += " · " + phrase("train.report.perplexity", before=report["perplexity_before"],
                                  after=report["perplexity_after"])
    check = report.get("answer_check") or {}
    text = (f"### {verdict_heading(report.get('verdict'))}\n**{text_in_page_language(report['summary'])}**\n\n"
            f"{figures} · {phrase('train.report.saved_as', adapter=status['adapter'])}\n\n{check_markdown(check)}\n\n")
    if check.get("examples"):
        text += f"**{phrase('train.report.worst')}**\n\n" + sample_table(check["examples"]) + "\n"
    if report.get("metric_after"):
        names = list(report["metric_after"])
        text += ("| | " + " | ".join(map(metric_name, names)) + " |\n|---|"
                 + "---|" * len(names) + "\n")
        for row, key in (("before", "metric_before"), ("after", "metric_after")):
            text += (f"| {phrase(f'train.report.{row}')} | " + " | ".join(str(report[key].get(n, "")) for n in names)
                     + " |\n")
        text += "\n"
    if report.get("confusion"):
        labels, matrix = report["confusion"]["labels"], report["confusion"]["matrix"]
        text += (f"**{phrase('train.report.confusion')}**\n\n| | "
                 + " | ".join(map(_cell, labels)) + " |\n|---|" + "---|" * len(labels) + "\n")
        text += "".join(f"| **{_cell(label)}** | " + " | ".join(map(str, counts)) + " |\n"
                        for label, counts in zip(labels, matrix)) + "\n"
    text += trials_markdown(report.get("trials") or [])
    if report.get("samples"):
        text += sample_table(report["samples"])
    return text


def check_markdown(check: dict) -> str:
    """The answer check in one line, in the page's language: passed or its problem, and the measures against the
    base model (training.report.check_line is the English one the CLI prints)."""
    if not check:
        return ""
    passed = check.get("passed", True)
    state = phrase("train.check.passed") if passed else phrase(
        "train.check.failed", problem=phrase(f"train.problem.{check.get('problem') or 'unknown'}"))
    measures = ", ".join(f"{phrase(f'train.measure.{key}')} {check[key]:+.2f}"
                         for key in ("repetition", "collapse", "drift") if check.get(key) is not None)
    return state + (phrase("train.check.measures", measures=measures) if measures else "")


def sample_table(samples: list[dict]) -> str:
    """Rows answered by the base model and by the adapter, side by side."""
    heads = [phrase(f"train.sample.{key}") for key in ("prompt", "expected", "base", "adapter")]
    return f"| {' | '.join(heads)} |\n|---|---|---|---|\n" + "".join(
        "| " + " | ".join(_cell(sample[k]) for k in ("prompt", "expected", "base", "adapter")) + " |\n"
        for sample in samples)


def trials_markdown(trials: list[dict]) -> str:
    """The trials of "Find settings for me" as a table, the chosen one marked ("" without trials)."""
    if not trials:
        return ""
    names = list(dict.fromkeys(key for trial in trials for key in trial["settings"]))
    heads = [phrase(f"train.field.{name}") if f"train.field.{name}" in english() else name.replace("_", " ")
             for name in names] + [phrase(f"train.trials.{key}") for key in ("score", "check", "seconds")]
    text = (f"**{phrase('train.trials.title')}**\n\n| | " + " | ".join(heads) + " |\n|---|"
            + "---|" * (len(names) + 3) + "\n")
    for trial in trials:
        cells = [trial["settings"].get(name, "") for name in names] + [trial["score"], trial["check"], trial["seconds"]]
        chosen = f"✅ {phrase('train.trials.chosen')} " if trial["chosen"] else ""
        text += f"| {chosen}| " + " | ".join(_cell(c) for c in cells) + " |\n"
    return text + "\n"


def _cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def refresh(service: TrainingService, job_id: str, request: gr.Request = None):
    """The view of one job: status, loss plot, log tail, report, and which buttons apply."""
    if not job_id:
        return (marked("train.no_training_job_yet"), loss_plot([]), "", "", gr.update(visible=False),
                gr.update(visible=False), gr.update(visible=False), gr.update(active=False))
    try:
        status = service.job(job_id, owner=user_of(request))
    except UserError:
        return (phrase("make_data.gone"), loss_plot([]), "", "", *[gr.update(visible=False)] * 3,
                gr.update(active=False))
    state = status["state"]
    return (status_markdown(status), loss_plot(status["loss"]), service.log_tail(job_id, LOG_LINES),
            report_markdown(status), gr.update(visible=state in ACTIVE), gr.update(visible=state == "interrupted"),
            gr.update(visible=state == "succeeded"), gr.update(active=state in ACTIVE))


def jobs_table(service: TrainingService, owner: str) -> pd.DataFrame:
    rows = [(j["job_id"], j["name"], task_name(j["task"]), phrase(f"train.state.{j['state']}"),
             f"{j['step']}/{j['total_steps']}")
            for j in service.jobs(owner)[:20]]
    return pd.DataFrame(rows, columns=localized_columns("train.column", ["job", "adapter", "task", "state", "steps"]))


def tables(service: TrainingService, request: gr.Request = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The caller's jobs and adapters."""
    owner = user_of(request)
    return jobs_table(service, owner), adapters_table(service, owner)


def build(service: TrainingService, browser_secret: str) -> dict:
    default_base = default_base_name(service.settings, trainable_spec("chat"))  # as the Chat tab does
    first = trainable_spec("chat")
    with gr.Tab(t("tab.train"), id="train"):
        gr.Markdown(t("train.teach_model_from_own"))
        with gr.Row():
            task = gr.Dropdown(task_choices(trainable()), value="chat", label=t("common.task"), scale=1)
            base = gr.Dropdown(catalog.choices(catalog.DECODER), value=default_base, label=t("common.base_model"),
                               allow_custom_value=True, scale=2)
            name = gr.Textbox(label=t("train.adapter_name"), placeholder=t("train.my_adapter"), scale=2)
        with gr.Row():
            uploaded = gr.File(label=t("train.training_data_jsonl_json"),
                             file_types=list(data.EXTENSIONS), scale=3)
            validation = gr.File(label=t("train.validation_data_optional_rows"),
                                 file_types=list(data.EXTENSIONS), scale=2)
            with gr.Column(scale=1):
                sample = gr.Button(t("common.try_sample"), size="sm")
                formats = gr.Markdown(formats_text(first))
        check = gr.Markdown(t("train.upload_data_file"))
        with gr.Accordion(t("train.preview_column_mapping"), open=False):
            preview = gr.Dataframe(label=t("train.first_rows"), interactive=False)
            with gr.Row():
                mapping = []
                for i in range(slots()):
                    label, info = slot_texts(first.id, i)
                    mapping.append(gr.Dropdown([], label=label, info=info, visible=i < len(first.fields),
                                               allow_custom_value=False))
        preset = gr.Radio([(t(f"preset.{name}"), name) for name in presets.PRESETS], value="quick",
                          label=t("train.preset"), info=t("train.quick_few_minutes_cpu"))
        with gr.Row(visible=not zerogpu.on_zero_gpu()):  # its trials outlast a ZeroGPU call
            search = gr.Checkbox(label=t("train.find_settings"), scale=2, info=t("train.find_settings_info"))
            search_minutes = gr.Number(trials.DEFAULT_MINUTES, label=t("train.search_budget"), minimum=1,
                                       maximum=120, scale=1, info=t("train.search_budget_info"))
        with gr.Accordion(t("train.advanced_settings"), open=False):
            # The fields show the preset's values: a blank gr.Number reaches the server as 0, not None.
            advanced = [advanced_field(key, getattr(presets.PRESETS["quick"], key)) for key in ADVANCED]
        with gr.Row():
            estimate_btn = gr.Button(t("train.estimate"))
            train_btn = gr.Button(t("train.train"), variant="primary")
        estimate_out = gr.Markdown()
        gr.Markdown(t("train.progress"))
        status = gr.Markdown(t("train.no_training_job_yet"))
        # No block label: Gradio sizes the chart to the block's height without it, so a label clips the legend.
        # The log box holds the whole tail, so the newest line shows without scrolling.
        plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="series", height=300, show_label=False,
                           color_title="loss on", x_axis_labels_visible=True, visible=False)
        logs = gr.Textbox(label=t("train.log"), lines=LOG_LINES, max_lines=LOG_LINES, interactive=False)
        with gr.Row():
            cancel = gr.Button(t("common.cancel"), variant="stop", visible=False)
            resume = gr.Button(t("train.resume"), visible=False)
            use = gr.Button(t("train.use_this_adapter"), variant="primary", visible=False)
        report = gr.Markdown()
        with gr.Accordion(t("train.jobs_adapters"), open=False):
            jobs = gr.Dataframe(label=t("train.recent_jobs_select_one"), interactive=False)
            adapters = gr.Dataframe(label=t("train.adapters_rename_export_merge"), interactive=False)
        job_id = gr.State("")
        saved_job = gr.BrowserState("", storage_key="lora-studio-job", secret=browser_secret)
        timer = gr.Timer(1.0, active=False)

    hidden = {"api_visibility": "undocumented"}
    view = [status, plot, logs, report, cancel, resume, use, timer]
    gr.on([uploaded.change, *[slot.input for slot in mapping]], inspect_data, [task, uploaded, *mapping],
          [preview, *mapping, check], **hidden)
    task.change(expose(functools.partial(task_changed, service), page=True), task, [base, formats, *mapping],
                **hidden).then(
        inspect_data, [task, uploaded, *mapping], [preview, *mapping, check], **hidden)
    preset.input(preset_values, preset, advanced, **hidden)  # only a choice by the user resets the fields
    sample.click(lambda t: str(trainable_spec(t).sample_path), task, uploaded, **hidden)
    estimate_btn.click(handler(estimate, service), [task, uploaded, base, preset, *mapping, *advanced],
                       estimate_out, **hidden)
    show = handler(refresh, service)
    train_btn.click(handler(start, service), [task, uploaded, validation, base, name, preset, search, search_minutes,
                                              *mapping, *advanced], [job_id, saved_job], **hidden).then(
        show, job_id, view, **hidden)
    timer.tick(show, job_id, view, **hidden)
    saved_job.change(lambda j: j, saved_job, job_id, **hidden)
    job_id.change(show, job_id, view, **hidden)
    cancel.click(endpoint_function(service.cancel), job_id, None, **hidden)
    resume.click(endpoint_function(service.resume), job_id, None, **hidden).then(show, job_id, view, **hidden)
    on_load(handler(tables, service), None, [jobs, adapters])
    on_load(lambda: gr.update(choices=task_choices(trainable())), None, task)
    jobs.select(first_cell, None, job_id, **hidden)
    return {"use": use, "job_id": job_id, "base": base, "task": task, "data": uploaded, "preset": preset,
            "advanced": advanced}

"""The Train tab: upload examples, check them, train with live progress, read the report, use the adapter."""

from __future__ import annotations

import functools
from pathlib import Path

import gradio as gr
import pandas as pd

from errors import UserError
from models import catalog
from training import data, presets
from training.service import TRAINABLE, TrainingService
from ui.api import expose

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = {"chat": ROOT / "examples" / "chat_facts.jsonl"}
ADVANCED = ["rank", "alpha", "dropout", "target_modules", "learning_rate", "epochs", "max_steps", "batch_size",
            "grad_accum", "max_length", "seed", "system_prompt"]
HELP = {
    "rank": "How much the adapter can change the model; higher learns more but is slower.",
    "alpha": "Strength of the adapter's changes; usually twice the rank.",
    "dropout": "Randomly ignores parts of the adapter while training, to avoid memorising noise.",
    "target_modules": "Which layers get an adapter: all-linear, or names such as q_proj,v_proj.",
    "learning_rate": "Size of each learning step; too high is unstable, too low learns slowly.",
    "epochs": "How many times to go over your examples.",
    "max_steps": "Stop after this many steps (0 = use epochs).",
    "batch_size": "Examples looked at per step; lower it if memory runs out.",
    "grad_accum": "Steps added up before each update: a larger batch without more memory.",
    "max_length": "Longest example in tokens; longer ones are cut.",
    "seed": "Makes the split and the order repeatable.",
    "system_prompt": "Chat: the system prompt used in training; chat applies it by default with this adapter.",
}
ACTIVE = ("queued", "running")
LOG_LINES = 8


def file_path(file) -> str:
    """The local path of an uploaded file, whatever shape Gradio gives it."""
    if file is None:
        return ""
    if isinstance(file, dict):
        return file.get("path") or ""
    return str(getattr(file, "path", file))


def api_train(service: TrainingService):
    """The public /train function (gr.FileData in, so it lives at the UI edge)."""

    def train(task: str, data: gr.FileData, base: str = "", name: str = "", preset: str = "quick",
              settings: dict | None = None, columns: dict | None = None) -> dict:
        """Start a LoRA training job; returns {job_id, position} (poll /job with the id)."""
        return service.submit(task, file_path(data), base, name, preset, settings, columns)

    return train


def inspect_data(task: str, file, prompt_col: str | None, response_col: str | None):
    """Preview the file, offer its columns for mapping, and report what would be kept."""
    path = file_path(file)
    if not path:
        return gr.update(value=None), gr.update(choices=[]), gr.update(choices=[]), "Upload a data file."
    try:
        columns, rows = data.preview(path)
        mapping = {"prompt": prompt_col, "response": response_col} if prompt_col and response_col else None
        report = data.load_examples(path, task, mapping)
        summary = f"**Format:** {report.format}. {report.summary()}"
    except UserError as error:
        columns, rows = (columns if "columns" in locals() else []), (rows if "rows" in locals() else [])
        summary = f"⚠️ {error}"
    table = pd.DataFrame(rows, columns=columns) if columns and rows else None
    return (gr.update(value=table), gr.update(choices=columns, value=prompt_col),
            gr.update(choices=columns, value=response_col), summary)


def overrides(values: list) -> dict:
    return {key: value for key, value in zip(ADVANCED, values) if value not in (None, "")}


def estimate(service: TrainingService, task: str, file, base: str, preset: str, prompt_col, response_col,
             *values, progress=gr.Progress()) -> str:
    """Pre-flight: trainable parameters, memory, and the duration from a few steps timed on this machine."""
    from training import estimate as preflight

    try:
        settings = presets.build(preset, overrides(list(values)))
        columns = {"prompt": prompt_col, "response": response_col} if prompt_col and response_col else None
        rows = len(data.load_examples(file_path(file), task, columns).examples) if file_path(file) else 24
        progress(0.2, desc="Timing a few training steps on this machine")
        return preflight.describe(preflight.estimate(service.ctx.hub.source(base, task).location, settings, rows))
    except UserError as error:
        return f"⚠️ {error}"


def start(service: TrainingService, task, file, base, name, preset, prompt_col, response_col, *values):
    columns = {"prompt": prompt_col, "response": response_col} if prompt_col and response_col else None
    try:
        out = service.submit(task, file_path(file), base, name, preset, overrides(list(values)), columns)
    except UserError as error:
        raise gr.Error(str(error)) from None
    where = "starting now" if out["position"] <= 1 else f"number {out['position']} in the queue"
    gr.Info(f"Training job {out['job_id']} created ({where}).")
    return out["job_id"], out["job_id"]


def advanced_field(key: str, value):
    """One advanced setting's input, filled with the preset's value."""
    label, info = key.replace("_", " "), HELP[key]
    if isinstance(value, str):
        return gr.Textbox(value=value, label=label, info=info)
    return gr.Number(value=value, label=label, info=info, precision=0 if isinstance(value, int) else None)


def preset_values(preset: str) -> list:
    """The advanced fields' values for a preset, so choosing a preset shows what it sets."""
    chosen = presets.PRESETS.get(preset or "quick", presets.PRESETS["quick"])
    return [getattr(chosen, key) for key in ADVANCED]


def loss_frame(loss: list) -> pd.DataFrame:
    """The loss curves for the plot, with an empty point per series.

    Gradio's plot keeps the axis types and the series of the first value it draws and only swaps the data
    afterwards: without numeric dtypes and both series in every frame, a plot first drawn empty stays blank.
    """
    rows = [(0, None, "training"), (0, None, "validation")]
    rows += [(s, v, "training") for s, v, _ in loss if v is not None]
    rows += [(s, v, "validation") for s, _, v in loss if v is not None]
    return pd.DataFrame(rows, columns=["step", "loss", "series"]).astype({"step": "int64", "loss": "float64"})


def status_markdown(status: dict) -> str:
    state = status["state"]
    if state == "queued":
        return f"⏳ **Waiting** — number {status.get('position', 0)} in the queue."
    total = status["total_steps"] or 1
    done = status["step"] / total
    bar = f"<progress value='{status['step']}' max='{total}' style='width:100%'></progress>"
    eta = f" · about {int(status['eta_s'] or 0)} s left" if state == "running" and status["eta_s"] else ""
    line = (f"**{state.title()}** — step {status['step']} of {status['total_steps']} ({done:.0%}) · "
            f"epoch {status['epoch']}{eta}")
    if status["error"]:
        line += f"\n\n⚠️ {status['error']}"
    return bar + "\n\n" + line


def report_markdown(status: dict) -> str:
    report = status.get("report") or {}
    if not report:
        return ""
    text = (f"### Did it learn?\n**{report['summary']}**\n\n"
            f"Loss {report['loss_before']} → {report['loss_after']} · perplexity {report['perplexity_before']} → "
            f"{report['perplexity_after']} · adapter saved as **{status['adapter']}**\n\n")
    if report.get("samples"):
        text += "| prompt | expected | base model | with the adapter |\n|---|---|---|---|\n"
        for s in report["samples"]:
            cells = [str(s[k]).replace("|", "\\|").replace("\n", " ") for k in ("prompt", "expected", "base",
                                                                                  "adapter")]
            text += "| " + " | ".join(cells) + " |\n"
    return text


def refresh(service: TrainingService, job_id: str):
    """The view of one job: status, loss plot, log tail, report, and which buttons apply."""
    if not job_id:
        return ("No training job yet.", loss_frame([]), "", "", gr.update(visible=False),
                gr.update(visible=False), gr.update(visible=False), gr.update(active=False))
    try:
        status = service.job(job_id)
    except UserError:
        return ("That job no longer exists.", loss_frame([]), "", "", *[gr.update(visible=False)] * 3,
                gr.update(active=False))
    state = status["state"]
    return (status_markdown(status), loss_frame(status["loss"]), service.log_tail(job_id, LOG_LINES),
            report_markdown(status), gr.update(visible=state in ACTIVE), gr.update(visible=state == "interrupted"),
            gr.update(visible=state == "succeeded"), gr.update(active=state in ACTIVE))


def jobs_table(service: TrainingService) -> pd.DataFrame:
    rows = [(j["job_id"], j["name"], j["task"], j["state"], f"{j['step']}/{j['total_steps']}")
            for j in service.jobs()[:20]]
    return pd.DataFrame(rows, columns=["job", "adapter", "task", "state", "steps"])


def adapters_table(service: TrainingService) -> pd.DataFrame:
    rows = [(a["name"], a["task"], a["base"], a["metrics"].get("val_loss_after", ""), a["size_mb"])
            for a in service.list_adapters()]
    return pd.DataFrame(rows, columns=["adapter", "task", "base model", "loss after", "MB"])


def build(service: TrainingService, browser_secret: str) -> dict:
    default_base = service.ctx.settings.chat_model or catalog.TASK_DEFAULTS["chat"]  # as the Chat tab does
    with gr.Tab("Train", id="train"):
        gr.Markdown("Teach a model from your own examples with LoRA. Training runs in the background: you can "
                    "close this page and come back.")
        with gr.Row():
            task = gr.Dropdown(list(TRAINABLE), value="chat", label="Task", scale=1)
            base = gr.Dropdown(catalog.choices(catalog.DECODER), value=default_base, label="Base model",
                               allow_custom_value=True, scale=2)
            name = gr.Textbox(label="Adapter name", placeholder="my-adapter", scale=2)
        with gr.Row():
            upload = gr.File(label="Training data (.jsonl, .json, .csv, .tsv, .txt)",
                             file_types=list(data.EXTENSIONS), scale=3)
            with gr.Column(scale=1):
                sample = gr.Button("Try the sample", size="sm")
                gr.Markdown("Chat data: `messages`, ShareGPT `conversations`, Alpaca `instruction`/`output`, "
                            "two columns (prompt, response), or plain text.")
        check = gr.Markdown("Upload a data file.")
        with gr.Accordion("Preview and column mapping", open=False):
            preview = gr.Dataframe(label="First rows", interactive=False)
            with gr.Row():
                prompt_col = gr.Dropdown([], label="Prompt column", allow_custom_value=False)
                response_col = gr.Dropdown([], label="Response column", allow_custom_value=False)
        preset = gr.Radio(list(presets.PRESETS), value="quick", label="Preset",
                          info="quick: a few minutes on a CPU; balanced and thorough learn more, slower.")
        with gr.Accordion("Advanced settings", open=False):
            # The fields show the preset's values: a blank gr.Number reaches the server as 0, not None.
            advanced = [advanced_field(key, getattr(presets.PRESETS["quick"], key)) for key in ADVANCED]
        with gr.Row():
            estimate_btn = gr.Button("Estimate")
            train_btn = gr.Button("Train", variant="primary")
        estimate_out = gr.Markdown()
        gr.Markdown("### Progress")
        status = gr.Markdown("No training job yet.")
        # No block label: Gradio sizes the chart to the block's height without it, so a label clips the legend.
        # The log box holds the whole tail, so the newest line shows without scrolling.
        plot = gr.LinePlot(loss_frame([]), x="step", y="loss", color="series", height=300, show_label=False,
                           color_title="loss on", x_axis_labels_visible=True)
        logs = gr.Textbox(label="Log", lines=LOG_LINES, max_lines=LOG_LINES, interactive=False)
        with gr.Row():
            cancel = gr.Button("Cancel", variant="stop", visible=False)
            resume = gr.Button("Resume", visible=False)
            use = gr.Button("Chat with this adapter", variant="primary", visible=False)
        report = gr.Markdown()
        with gr.Accordion("Jobs and adapters", open=False):
            jobs = gr.Dataframe(lambda: jobs_table(service), label="Recent jobs (select one to view it)",
                                interactive=False)
            adapters = gr.Dataframe(lambda: adapters_table(service), label="Your adapters", interactive=False)
            with gr.Row():
                adapter_name = gr.Textbox(label="Adapter", scale=2)
                new_name = gr.Textbox(label="New name", scale=2)
                rename_btn = gr.Button("Rename", size="sm")
                delete_btn = gr.Button("Delete", variant="stop", size="sm")
        job_id = gr.State("")
        saved_job = gr.BrowserState("", storage_key="lora-studio-job", secret=browser_secret)
        timer = gr.Timer(1.0, active=False)

    hidden = {"api_visibility": "undocumented"}
    view = [status, plot, logs, report, cancel, resume, use, timer]
    inspect_inputs = [task, upload, prompt_col, response_col]
    for trigger in (upload.change, prompt_col.change, response_col.change):
        trigger(inspect_data, inspect_inputs, [preview, prompt_col, response_col, check], **hidden)
    preset.change(preset_values, preset, advanced, **hidden)
    sample.click(lambda t: str(SAMPLES.get(t, SAMPLES["chat"])), task, upload, **hidden)
    estimate_btn.click(functools.partial(estimate, service),
                       [task, upload, base, preset, prompt_col, response_col, *advanced], estimate_out, **hidden)
    train_btn.click(lambda *a: start(service, *a),
                    [task, upload, base, name, preset, prompt_col, response_col, *advanced], [job_id, saved_job],
                    **hidden).then(lambda j: refresh(service, j), job_id, view, **hidden)
    timer.tick(lambda j: refresh(service, j), job_id, view, **hidden)
    saved_job.change(lambda j: j, saved_job, job_id, **hidden)
    job_id.change(lambda j: refresh(service, j), job_id, view, **hidden)
    cancel.click(expose(service.cancel), job_id, None, **hidden)
    resume.click(expose(service.resume), job_id, None, **hidden).then(
        lambda j: refresh(service, j), job_id, view, **hidden)
    jobs.select(_selected_row, None, job_id, **hidden)
    adapters.select(_selected_row, None, adapter_name, **hidden)
    rename_btn.click(expose(lambda old, new: _rename(service, old, new)), [adapter_name, new_name], adapters,
                     **hidden)
    delete_btn.click(expose(lambda name: _delete(service, name)), adapter_name, adapters, **hidden)
    return {"use": use, "job_id": job_id, "base": base, "task": task}


def _selected_row(evt: gr.SelectData) -> str:
    """The first cell of the clicked row (a job id or an adapter name)."""
    return str(evt.row_value[0]) if evt.row_value else ""


def _rename(service: TrainingService, old: str, new: str) -> pd.DataFrame:
    service.adapters.rename("local", old, new)
    gr.Info(f"Renamed '{old}'.")
    return adapters_table(service)


def _delete(service: TrainingService, name: str) -> pd.DataFrame:
    service.delete_adapter(name)
    gr.Info(f"Deleted '{name}'.")
    return adapters_table(service)

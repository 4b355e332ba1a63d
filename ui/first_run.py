"""The guided first run: on a first visit (no adapter yet), one panel above the tabs walks the product's promise in
three steps — pick the sample, train it with the quick preset and watch, then ask the base model and the new
adapter the same question side by side. It uses the existing services only (training and /compare's Comparison);
"Don't show this again" is kept in the browser, so a reload keeps it away."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from errors import UserError
from tasks.compare import Comparison
from tasks.spec import trainable_spec
from training import data
from training.service import TrainingService
from ui.i18n import in_page_language, marked, phrase, t
from ui.api import GENERATION, expose, handler, on_load, progress_for, user_of
from ui.train_tab import ACTIVE, data_check, file_path, status_markdown

TASK = "chat"  # the promise is shown on chat: the sample teaches facts a base model cannot know
PRESET = "quick"  # minutes on a CPU
QUESTION = "What is the capital of the planet Zorbia?"  # the sample's first fact
ANSWER_TOKENS = 48  # the sample's answers are one short sentence
DISMISSED_KEY = "lora-studio-first-run-dismissed"
JOB_KEY = "lora-studio-first-run-job"  # the job being watched: a reload watches it on



def should_show(training: TrainingService, owner: str, dismissed: object) -> bool:
    """Only a first visit sees the panel: not dismissed in this browser, and nothing trained yet."""
    return dismissed is not True and not training.list_adapters(owner=owner)


def visibility(training: TrainingService, dismissed: object, request: gr.Request = None):
    """The panel shown or hidden for the caller (asked on load, and again once the browser's memory arrives)."""
    return gr.update(visible=should_show(training, user_of(request), dismissed))


def hide_if_dismissed(dismissed: object):
    """Hide the panel once the browser's memory says so (it may arrive after the page's load event)."""
    return gr.update(visible=False) if dismissed is True else gr.update()


def dismiss() -> tuple:
    """Hide the panel and remember it in the browser."""
    return gr.update(visible=False), True


def sample_file() -> str:
    return str(trainable_spec(TASK).sample_path)


def data_summary(file) -> str:
    """What training would keep of the chosen file, in one line (a problem as a warning, not an error)."""
    if file in (None, ""):
        return marked("first_run.no_data")
    try:
        return data_check(data.load_examples(file_path(file), TASK))
    except UserError as error:
        return f"⚠️ {in_page_language(str(error))}"


def adapter_name(file) -> str:
    """The new adapter's name, from the file's: `first-chat-facts` for the sample."""
    stem = Path(file_path(file)).stem if file not in (None, "") else "adapter"
    return "first-" + stem.replace("_", "-")


def start(training: TrainingService, file, request: gr.Request = None) -> str:
    """Queue the quick training job on the chosen file, as the Train tab would; returns its id."""
    if file in (None, ""):
        raise UserError(phrase("first_run.no_data"))
    out = training.submit(TASK, file_path(file), "", adapter_name(file), PRESET, {}, owner=user_of(request))
    return out["job_id"]


def idle_view() -> tuple:
    """No job to watch: training can start, there is nothing to ask yet."""
    return (marked("first_run.not_started"), "", gr.update(interactive=True), gr.update(interactive=False),
            gr.update(active=False))


def progress_view(training: TrainingService, job_id: str, request: gr.Request = None) -> tuple:
    """The job's progress line (the Train tab's), the adapter once it is ready, and which buttons apply."""
    if not job_id:
        return idle_view()
    try:
        status = training.job(job_id, owner=user_of(request))
    except UserError:  # deleted meanwhile (the Train tab can): stop polling rather than raise every second
        return idle_view()
    state = status["state"]
    done = state == "succeeded"
    line = status_markdown(status)
    if done:
        line += "\n\n" + phrase("first_run.ready", name=status["adapter"])
    elif state not in ACTIVE:
        line += "\n\n" + phrase("first_run.failed")
    return (line, status["adapter"] if done else "", gr.update(interactive=state not in ACTIVE),
            gr.update(interactive=done), gr.update(active=state in ACTIVE))


def ask(training: TrainingService, comparison: Comparison, question: str, adapter: str,
        request: gr.Request = None):
    """Stream the base model's and the adapter's answers to one question, side by side (one engine batch)."""
    if not adapter:
        raise UserError(phrase("first_run.untrained"))
    owner = user_of(request)
    base = training.adapter_base(adapter, owner)  # both on the adapter's own base: the only difference is it
    variants = [{"model": base, "adapter": ""}, {"model": base, "adapter": adapter}]
    inputs = {"message": question, "temperature": 0.0, "max_new_tokens": ANSWER_TOKENS}
    for update in comparison.compare(TASK, inputs, variants, owner=owner, progress=progress_for()):
        yield update[0]["result"], update[1]["result"]


def build(training: TrainingService, comparison: Comparison, browser_secret: str) -> gr.Column:
    """The panel, hidden until the page's load finds a first visit; returns it."""
    with gr.Column(visible=False, variant="panel", elem_id="first-run") as panel:
        with gr.Row(equal_height=False):  # the button keeps its own small height, top right
            gr.Markdown(t("first_run.welcome"))
            hide = gr.Button(t("first_run.dismiss"), size="sm", variant="secondary", scale=0, min_width=190)
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.Markdown(t("first_run.step1"))
                use_sample = gr.Button(t("first_run.sample"), variant="secondary")
                # The line above the box, not its label: in a box this low the label covers the upload icon.
                gr.Markdown(t("first_run.upload"))
                chosen = gr.File(show_label=False, file_types=list(data.EXTENSIONS), height=120)
                summary = gr.Markdown(t("first_run.no_data"))
            with gr.Column():
                gr.Markdown(t("first_run.step2"))
                train = gr.Button(t("first_run.train"), variant="primary")
                progress = gr.Markdown(t("first_run.not_started"))
            with gr.Column():
                gr.Markdown(t("first_run.step3"))
                question = gr.Textbox(QUESTION, label=t("first_run.question"))
                ask_button = gr.Button(t("first_run.ask"), variant="primary", interactive=False)
        with gr.Row():
            before = gr.Textbox(label=t("first_run.before"), lines=3, interactive=False)
            after = gr.Textbox(label=t("first_run.after"), lines=3, interactive=False)
        adapter = gr.State("")
        timer = gr.Timer(1.0, active=False)
    dismissed = gr.BrowserState(False, storage_key=DISMISSED_KEY, secret=browser_secret)
    job_id = gr.BrowserState("", storage_key=JOB_KEY, secret=browser_secret)
    wire(training, comparison, {
        "panel": panel, "use_sample": use_sample, "chosen": chosen, "summary": summary, "train": train,
        "progress": progress, "question": question, "ask_button": ask_button, "before": before, "after": after,
        "hide": hide, "job_id": job_id, "adapter": adapter, "timer": timer, "dismissed": dismissed})
    return panel


def wire(training: TrainingService, comparison: Comparison, c: dict) -> None:
    """The panel's events, all of them UI-only (no public API)."""
    hidden = {"api_visibility": "undocumented"}
    shown = handler(visibility, training)
    on_load(shown, c["dismissed"], c["panel"])
    c["dismissed"].change(hide_if_dismissed, c["dismissed"], c["panel"], show_progress="hidden", **hidden)
    c["use_sample"].click(sample_file, None, c["chosen"], **hidden)
    c["chosen"].change(expose(data_summary), c["chosen"], c["summary"], **hidden)
    view = [c["progress"], c["adapter"], c["train"], c["ask_button"], c["timer"]]
    watch = handler(progress_view, training)
    c["train"].click(handler(start, training), c["chosen"], c["job_id"], **hidden)  # its change starts the watch
    c["timer"].tick(watch, c["job_id"], view, show_progress="hidden", **hidden)
    c["job_id"].change(watch, c["job_id"], view, show_progress="hidden", **hidden)  # the job a reload remembers
    c["ask_button"].click(handler(ask, training, comparison, gpu="compare"), [c["question"], c["adapter"]],
                          [c["before"], c["after"]], **hidden, **GENERATION)
    c["hide"].click(dismiss, None, [c["panel"], c["dismissed"]], **hidden)

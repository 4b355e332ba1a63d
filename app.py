"""LoRA Studio: chat, apply and fine-tune language models from the browser.

`python app.py` starts the web UI; `python app.py --help` lists the settings;
`python app.py train --help` trains an adapter from the terminal.
"""

from __future__ import annotations

import argparse
import logging
import secrets
import sys

import gradio as gr

import config
from models.device import set_threads
from models.loading import ModelHub
from tasks import TASKS
from tasks.base import Context
from tasks.spec import resolve
from training.service import TrainingService
from ui import system_tab, train_tab
from ui.api import expose, publish, user_of
from ui.picker import Picker

INTRO = ("# LoRA Studio\nChat with a language model, apply it to your texts, and fine-tune it with LoRA — "
         "all from this page. Models load on first use.")


def browser_secret(settings: config.Settings) -> str:
    """A persistent key for the browser-stored chat history, so it survives an app restart."""
    path = settings.path() / ".browser-secret"
    if not path.exists():
        tmp = path.with_suffix(".tmp")
        tmp.write_text(secrets.token_hex(16))
        tmp.replace(path)
    return path.read_text().strip()


def build_app(settings: config.Settings) -> gr.Blocks:
    """The whole UI and its public API; importing this module never starts a server."""
    ctx = Context(settings, ModelHub(settings))
    training = TrainingService(ctx)
    tasks = [task_class(ctx) for task_class in TASKS.values()]
    secret = browser_secret(settings)
    with gr.Blocks(title="LoRA Studio") as demo:
        gr.Markdown(INTRO)
        # The public API first: it takes the plain names (/cancel), and UI events that call the same functions
        # get suffixed ones (/cancel_1) instead of the other way round.
        for task in tasks:
            publish(task.endpoints())
        publish(training.endpoints())
        with gr.Tabs() as tabs:
            pickers = {task.id: build_tab(task, secret) for task in tasks}
            trainer = train_tab.build(training, secret)
            system_tab.build(ctx)
        wire_use_adapter(trainer, pickers, tabs, training)
    demo.queue(default_concurrency_limit=settings.concurrency)
    demo.ctx = ctx  # tests and the CLI reach the shared services through the app
    demo.training = training
    return demo


def build_tab(task, secret: str) -> Picker | None:
    """The task's tab: Gradio's tab around what its spec's builder adds; returns the builder's picker."""
    with gr.Tab(task.title, id=task.id) as tab:
        return resolve(task.spec.tab)(task, tab, secret)


def wire_use_adapter(trainer: dict, pickers: dict[str, Picker | None], tabs: gr.Tabs,
                     training: TrainingService) -> None:
    """The report's button: open the trained task's tab with the new adapter chosen on its base model."""
    chosen = [(task, p) for task, p in pickers.items() if p is not None]
    outputs = [tabs] + [c for _, p in chosen for c in p.outputs]

    def use(job_id: str, request: gr.Request = None):
        owner = user_of(request)
        job = training.store.get(training.job(job_id, owner=owner)["job_id"])  # the caller's own job only
        base = training.adapter_base(job.adapter, owner) or job.base
        updates = [gr.Tabs(selected=job.task)]
        for task, p in chosen:
            updates += p.hand_over(base, job.adapter, owner) if task == job.task else p.unchanged()
        return updates

    trainer["use"].click(expose(use), trainer["job_id"], outputs, api_visibility="undocumented")


def parse_settings(argv: list[str]) -> config.Settings:
    parser = argparse.ArgumentParser(prog="app.py", description=__doc__)
    config.add_arguments(parser)
    try:
        return config.from_namespace(parser.parse_args(argv))
    except ValueError as error:
        parser.error(str(error))


def train_command(argv: list[str]) -> int:
    """`python app.py train ...`: the same training job as the Train tab, in this terminal with a progress bar."""
    from tqdm import tqdm

    from errors import UserError
    from training import worker

    parser = argparse.ArgumentParser(prog="app.py train", description="Fine-tune a model with LoRA from a "
                                     "terminal; writes the same adapter as the Train tab.")
    parser.add_argument("--task", default="chat", help="the task to train (default chat)")
    parser.add_argument("--data", required=True, help="training data file (.jsonl, .json, .csv, .tsv, .txt)")
    parser.add_argument("--base", default="", help="base model: catalog name, hub id or folder")
    parser.add_argument("--name", required=True, help="name of the adapter to save")
    parser.add_argument("--preset", default="quick", choices=["quick", "balanced", "thorough"])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting, e.g. --set epochs=3 --set rank=8")
    parser.add_argument("--column", action="append", default=[], metavar="FIELD=COLUMN",
                        help="map a task field to a file column, e.g. --column prompt=question")
    config.add_arguments(parser)
    args = parser.parse_args(argv)
    settings = config.from_namespace(args)
    set_threads(settings.threads)
    try:
        pairs = [item.split("=", 1) for item in args.set + args.column]
        if any(len(p) != 2 for p in pairs):
            raise UserError("Write overrides and columns as KEY=VALUE.")
        overrides = dict(p for p in pairs[:len(args.set)])
        columns = dict(p for p in pairs[len(args.set):])
        service = TrainingService(Context(settings, ModelHub(settings)), start_manager=False)
        job = service.submit(args.task, args.data, args.base, args.name, args.preset, overrides, columns)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    bar = tqdm(total=None, unit="step", desc=f"training {args.name}")

    def progress(p: dict) -> None:
        bar.total = p["total_steps"]
        bar.n = p["step"]
        bar.set_postfix(loss=p["loss"][-1][1], epoch=p["epoch"])

    state = worker.run_job(settings, job["job_id"], echo=False, progress=progress)
    bar.close()
    status = service.job(job["job_id"])
    if state != "succeeded":
        print(f"{state}: {status['error']}", file=sys.stderr)
        return 1
    print(f"{status['report']['summary']}\nSaved adapter '{status['adapter']}' under "
          f"{service.adapters.folder(config.LOCAL_USER, status['adapter'])}")
    return 0


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] == ["train"]:
        sys.exit(train_command(argv[1:]))
    settings = parse_settings(argv)
    set_threads(settings.threads)
    demo = build_app(settings)
    demo.launch(server_name=settings.host, server_port=settings.port, auth=settings.auth,
                max_file_size=f"{settings.max_upload_mb}mb", show_error=True)


if __name__ == "__main__":
    main(sys.argv[1:])

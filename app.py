"""LoRA Studio: chat, apply and fine-tune language models from the browser.

`python app.py` starts the web UI; `python app.py --help` lists the settings;
`python app.py train --help` trains an adapter from the terminal.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sys
import time

import config

if __name__ == "__main__" and sys.argv[1:2] not in (["train"], ["users"]):
    config.parse(sys.argv[1:], "app.py", __doc__)  # `--help` and a wrong flag answer before the UI's libraries load

from ui import quick_gradio  # noqa: F401  (before Gradio's first import: a second off the page's start)
import gradio as gr
from starlette.middleware import Middleware

from ui import zerogpu  # noqa: F401  (first of the app's modules: on ZeroGPU it imports spaces before torch)
from models.backend_sync import AdapterSync
from models.device import warm_up
from models.loading import ModelHub
from server.openai_compat import OpenAIRoutes
from tasks import TASKS
from tasks.account import AccountService
from tasks.base import Context
from tasks.compare import Comparison
from tasks.feedback import FeedbackService
from tasks.inside import InsideModel
from tasks.library import AdapterLibrary
from training.make_data import DataMaker
from training.service import TrainingService
from ui import account_tab, adapters_tab, evaluate_tab, feedback_tab, first_run, i18n, inside_tab, mcp, system_tab
from ui import make_data_tab, train_tab
from ui import tabs as task_tabs
from ui.api import expose, publish, user_of
from ui.navigation import Navigation
from ui.picker import QUIET, Picker
from ui.services import TabServices

INTRO = "app.intro"  # the page's heading and introduction, in ui/i18n's dictionaries


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
    by_id = {task.id: task for task in tasks}
    search = by_id["search"]
    account = AccountService(ctx, search.store)
    library = AdapterLibrary(ctx)
    inside = InsideModel(ctx)
    comparison = Comparison(by_id)
    feedback = FeedbackService(ctx)
    maker = DataMaker(ctx, training, search.store)
    claim_local_data(ctx, training, search.store, feedback.store)
    secret = browser_secret(settings)
    with gr.Blocks(title="LoRA Studio") as demo:
        i18n.header(INTRO)
        if os.environ.get("OAUTH_CLIENT_ID"):  # a Space with `hf_oauth: true`: its visitors sign in with Hugging Face
            gr.LoginButton()
        # The public API first: it takes the plain names (/cancel), and UI events that call the same functions
        # get suffixed ones (/cancel_1) instead of the other way round.
        publish([endpoint for provider in (*tasks, comparison, inside, feedback, training, library, account, maker)
                 for endpoint in provider.endpoints()])
        first_run.build(training, comparison, secret)  # a first visit's guided tour, above the areas
        # Six areas by what a person came to do; Use, Train and Settings hold views of their own.
        nav = Navigation()
        with nav.top():
            with nav.area(i18n.t("tab.use"), "use") as use:
                services = TabServices(secret, inside, feedback)
                pickers = {task.id: build_tab(task, services) for task in tasks}
            with nav.area(i18n.t("tab.train"), "training"):
                trainer = train_tab.build(training, secret)
                fed = feedback_tab.build(feedback)  # where training rows come from
                made = make_data_tab.build(maker, search.store)  # ... and rows written from documents
            evaluate_tab.build(training, secret)
            adapters_tab.build(library, training)
            inside_tab.build(inside)
            with nav.area(i18n.t("tab.settings"), "settings"):
                account_tab.build(account)
                system_tab.build(ctx)
        refresh_pickers_on_open(use, pickers)
        wire_use_adapter(trainer, pickers, nav, training)
        wire_train_from_feedback(fed, trainer, nav, feedback)
        make_data_tab.wire_train(made, trainer, nav, maker)
        nav.link(demo)
    demo.queue(default_concurrency_limit=settings.concurrency, max_size=settings.queue_size)
    demo.ctx = ctx  # tests and the CLI reach the shared services through the app
    demo.training = training
    demo.http_routes = OpenAIRoutes(ctx, by_id["chat"], search, library).router().routes  # served beside the UI
    follow_backend(demo)
    return demo


def serve(demo: gr.Blocks, settings: config.Settings, block: bool = True, **options) -> None:
    """Start the server: the UI, its Gradio API and the /v1 routes on one port (options go to launch); block
    False returns once it serves."""
    accounts = demo.ctx.accounts
    patient_localhost_check()
    loopback = secrets.token_urlsafe(32)  # lets the MCP server's own client in (ui/mcp.py)
    demo.launch(server_name=settings.host, server_port=settings.port,
                auth=accounts.check if accounts.enabled else None,
                auth_message="Log in with your LoRA Studio account.",
                max_file_size=f"{settings.max_upload_mb}mb", show_error=False, prevent_thread_lock=True,
                i18n=i18n.translations(), mcp_server=settings.mcp,
                app_kwargs={"middleware": [Middleware(mcp.ApiKeyLogin, secret=loopback)]}, **options)
    # On Gradio's own app, ahead of its routes: one server, one port, one command. (Handing them to launch as
    # FastAPI's `routes=` instead stopped Gradio from noticing a cancelled client's event.)
    demo.app.router.routes[:0] = list(demo.http_routes)
    if settings.mcp:
        mcp.serve_tools(demo, settings.mcp_write_tools, loopback)
    if block:
        demo.block_thread()


def patient_localhost_check() -> None:
    """Gradio's launch asks for the first page once with a 3-second limit and refuses to start when it is late;
    on a busy machine this app's page takes longer, so it is asked again, for up to a minute."""
    import httpx
    from gradio import networking

    def url_ok(url: str) -> bool:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.head(url, timeout=10, verify=False).status_code in (200, 401, 301, 302, 303, 307, 308):
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        return False
    networking.url_ok = url_ok


def claim_local_data(ctx: Context, training: TrainingService, collections, feedback) -> None:
    """Once accounts exist, what was made before them (owned by `local`) goes to the first admin."""
    admin = ctx.accounts.first_admin() if ctx.accounts.enabled else None
    if admin is None:
        return
    moved = (ctx.adapters.store.move_owner(config.LOCAL_USER, admin), collections.move_owner(config.LOCAL_USER, admin),
             training.store.move_owner(config.LOCAL_USER, admin), feedback.move_owner(config.LOCAL_USER, admin))
    if any(moved):
        logging.getLogger(__name__).info("gave %d adapters, %d collections, %d jobs and %d feedback rows made "
                                         "before accounts to %s", *moved, admin)


def build_tab(task, services: TabServices) -> Picker | None:
    """The task's tab: Gradio's tab around what its registered builder adds; returns the builder's picker."""
    builder = task_tabs.builder(task.id)  # a task without a tab is refused before any of the page is drawn
    with gr.Tab(task.title, id=task.id) as tab:
        return builder(task, tab, services)


def refresh_pickers_on_open(use: gr.Tabs, pickers: dict[str, Picker | None]) -> None:
    """Opening Use shows the task view open last, whose own select does not fire: refresh each picker's adapter
    list then, so an adapter trained since the page loaded can be chosen."""
    tab = use.parent
    for p in filter(None, pickers.values()):
        if p.model is None:
            tab.select(p.fresh_fixed, p.adapter, p.adapter, **QUIET)
        else:
            tab.select(p.fresh, [p.model, p.adapter], p.adapter, **QUIET)


def wire_train_from_feedback(fed: dict, trainer: dict, nav: Navigation, feedback: FeedbackService) -> None:
    """The Feedback tab's buttons: the training file made from the caller's feedback (answers, or preference
    pairs with the preference preset), in the Train tab."""
    def opener(method: str, preset: str):
        def train(request: gr.Request = None):
            made = feedback.feedback_training_set(method, owner=user_of(request))
            return *nav.open("train"), "chat", made.path, preset, *train_tab.preset_values(preset)
        return expose(train)

    outputs = [*nav.outputs, trainer["task"], trainer["data"], trainer["preset"], *trainer["advanced"]]
    fed["train"].click(opener("sft", "quick"), None, outputs, api_visibility="undocumented")
    fed["prefer"].click(opener("dpo", "preference"), None, outputs, api_visibility="undocumented")


def wire_use_adapter(trainer: dict, pickers: dict[str, Picker | None], nav: Navigation,
                     training: TrainingService) -> None:
    """The report's button: open the trained task's view with the new adapter chosen on its base model."""
    chosen = [(task, p) for task, p in pickers.items() if p is not None]
    outputs = nav.outputs + [c for _, p in chosen for c in p.outputs]

    def use(job_id: str, request: gr.Request = None):
        owner = user_of(request)
        job = training.store.get(training.job(job_id, owner=owner)["job_id"])  # the caller's own job only
        base = training.adapter_base(job.adapter, owner) or job.base
        updates = nav.open(job.task)
        for task, p in chosen:
            updates += p.hand_over(base, job.adapter, owner) if task == job.task else p.unchanged()
        return updates

    trainer["use"].click(expose(use), trainer["job_id"], outputs, api_visibility="undocumented")


def follow_backend(demo: gr.Blocks) -> None:
    """With --serve-backend: the backend's adapters follow the adapter library once the app serves, until it
    stops."""
    if demo.ctx.backend is not None:
        AdapterSync(demo.ctx.backend, demo.ctx.adapters, demo.ctx.hub).start(lambda: demo.is_running)


def parse_settings(argv: list[str]) -> config.Settings:
    return config.parse(argv, "app.py", __doc__)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if argv[:1] in (["train"], ["users"]):
        import cli

        sys.exit(cli.COMMANDS[argv[0]](argv[1:]))
    settings = parse_settings(argv)
    demo = build_app(settings)
    # SIGTERM (a service manager, `docker stop`) stops the app like Ctrl-C: the training job is interrupted cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        serve(demo, settings, block=False)
        warm_up(settings.threads)  # torch and transformers load (and torch takes its threads) once the page is up
        demo.block_thread()
    except KeyboardInterrupt:  # Ctrl-C (or SIGTERM) while it was still starting: stop as block_thread would
        print("Stopped while starting.")
        demo.close()
    finally:
        demo.training.manager.shutdown()


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except KeyboardInterrupt:  # Ctrl-C before the page was drawn: the person asked for it, no traceback
        sys.exit("Stopped.")

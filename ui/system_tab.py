"""The system panel: device, dtype, threads, loaded models and disk used under the data directory."""

from __future__ import annotations

import re
from pathlib import Path

import gradio as gr

from models import device
from tasks.base import Context
from training.manager import placement
from ui.api import handler, user_of
from ui.i18n import in_page_language, phrase, t, text_in_page_language

ITEM_BREAK = re.compile(r", (?![^(]*\))")  # a ", " between the products measured at load, not inside a parenthesis


def disk_used_mb(ctx: Context) -> float:
    root = ctx.settings.data_dir
    if not root.exists():
        return 0.0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def decoding_in_page_language(line: str) -> str:
    """The decoding column's line (models/loading.py decoding()) in the page's language, piece by piece: its
    pieces are joined by "; ", the products measured at load by ", ", and each is a known English piece
    (`report.decode.*`). models/ writes it in English, for the log and the benchmarks too."""
    return phrase("system.decoding.pieces").join(
        phrase("system.decoding.items").join(map(in_page_language, ITEM_BREAK.split(piece)))
        for piece in line.split("; "))


def system_report(ctx: Context, request: gr.Request = None) -> str:
    """The panel; server paths (the data directory, model folders) only for an admin, the server's operator."""
    operator = ctx.accounts.is_admin(user_of(request))
    facts = device.describe()
    shown = (lambda key: key) if operator else (lambda key: Path(key.split(":", 1)[-1].split("+")[0]).name)
    models = "\n".join(f"| {shown(m['model'])} | {m['memory_mb']} MB | {decoding_in_page_language(m['decoding'])} |"
                       for m in ctx.hub.loaded()) or f"| {phrase('system.none_yet')} | | |"
    where = (phrase("system.data_directory", path=ctx.settings.data_dir.resolve(), used=f"{disk_used_mb(ctx):.0f}")
             + "\n\n" if operator else "")
    backend = ctx.backend
    served = (phrase("system.served", url=backend.url if operator else phrase("system.external"))
              + f" {backend.holds(operator)}\n\n" if backend else "")
    return (phrase("system.device", device=facts["device"], dtype=str(ctx.hub.dtype).removeprefix("torch."),
                   threads=facts["threads"], torch=facts["torch"]) + f"\n\n{where}{served}"
            + phrase("system.training", where=text_in_page_language(placement(ctx.settings))) + "\n\n"
            + phrase("system.loaded", budget=f"{ctx.settings.memory_budget_gb:g}") + "\n\n"
            + phrase("system.table_head") + f"\n|---|---|---|\n{models}")


def build(ctx: Context) -> None:
    with gr.Tab(t("tab.system"), id="system") as tab:
        report = gr.Markdown()
        refresh = gr.Button(t("system.refresh"), size="sm")
    # Read when the tab opens and on Refresh (not when the page loads: nobody is looking at it then).
    gr.on([refresh.click, tab.select], handler(system_report, ctx), None, report, api_visibility="undocumented")

"""The system panel: device, dtype, threads, loaded models and disk used under the data directory."""

from __future__ import annotations

import gradio as gr

from models import device
from tasks.base import Context


def disk_used_mb(ctx: Context) -> float:
    root = ctx.settings.data_dir
    if not root.exists():
        return 0.0
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) / 2**20


def system_report(ctx: Context) -> str:
    facts = device.describe()
    loaded = ctx.hub.loaded()
    models = "\n".join(f"| {m['model']} | {m['memory_mb']} MB |" for m in loaded) or "| (none yet) | |"
    budget = ctx.settings.memory_budget_gb
    return (f"**Device** {facts['device']} · **dtype** {str(ctx.hub.dtype).removeprefix('torch.')} · "
            f"**CPU threads** {facts['threads']} · **torch** {facts['torch']}\n\n"
            f"**Data directory** `{ctx.settings.data_dir.resolve()}` ({disk_used_mb(ctx):.0f} MB used)\n\n"
            f"**Loaded models** (budget {budget:g} GB; models load on first use)\n\n"
            f"| model | memory |\n|---|---|\n{models}")


def build(ctx: Context) -> None:
    with gr.Tab("System") as tab:
        report = gr.Markdown()
        refresh = gr.Button("Refresh", size="sm")
    # Read when the tab opens and on Refresh (not when the page loads: nobody is looking at it then).
    gr.on([refresh.click, tab.select], lambda: system_report(ctx), None, report, api_visibility="undocumented")

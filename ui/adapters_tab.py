"""The Adapters tab: the library of your adapters (task, base, date, size, result, shared or private), with
rename, delete, export as a PEFT zip, import one trained anywhere, merge into a model, export for Ollama and
llama.cpp (GGUF), and push to the Hub."""

from __future__ import annotations

import time

import gradio as gr
import pandas as pd

from errors import UserError
from tasks.library import AdapterLibrary
from tasks.spec import specs
from training.report import VERDICTS, headline
from training.service import TrainingService
from models.gguf_export import QUANTIZATIONS
from ui.api import first_cell, handler, on_load, progress_for, uploads, user_of
from ui.i18n import localized_columns, phrase, show_info, t, task_choices, task_name

HIDDEN = {"api_visibility": "undocumented"}
COLUMNS = ["adapter", "task", "base model", "created", "MB", "verdict", "result", "shared", "owner"]


def table(training: TrainingService, request: gr.Request = None) -> pd.DataFrame:
    return adapters_table(training, user_of(request))


def adapters_table(training: TrainingService, owner: str) -> pd.DataFrame:
    """The owner's adapters (every adapter for an admin) as the library shows them (the Train tab too)."""
    rows = [(a["name"], task_name(a["task"]), a["base"],
             time.strftime("%Y-%m-%d %H:%M", time.localtime(a["created"])), a["size_mb"], verdict_label(a["verdict"]),
             headline(a["task"], a["metrics"]), phrase(f"adapters.row.{'shared' if a['shared'] else 'private'}"),
             a["owner"])
            for a in training.list_adapters(owner=owner)]
    return pd.DataFrame(rows, columns=localized_columns("adapters.column", COLUMNS))


def verdict_label(verdict: str | None) -> str:
    """A training verdict as the tables name it, in the page's language ("" for none)."""
    return phrase(f"verdict.short.{verdict}") if verdict in VERDICTS else ""


def _chosen(name: str) -> str:
    if not (name or "").strip():
        raise UserError("Pick an adapter first: click its row in the table.")
    return name.strip()


def rename(library: AdapterLibrary, training: TrainingService, name: str, new_name: str,
           request: gr.Request = None):
    done = library.rename_adapter(_chosen(name), new_name, owner=user_of(request))
    show_info(phrase("adapters.renamed", old=done["old_name"], new=done["name"]))
    return table(training, request), done["name"]


def delete(training: TrainingService, name: str, request: gr.Request = None):
    training.delete_adapter(_chosen(name), owner=user_of(request))
    show_info(phrase("adapters.deleted", name=name.strip()))
    return table(training, request), ""


def export(library: AdapterLibrary, name: str, request: gr.Request = None):
    bundle = library.export_adapter(_chosen(name), owner=user_of(request))
    return gr.update(value=bundle.path, visible=True)


def import_files(library: AdapterLibrary, training: TrainingService, files, name: str, task: str, base: str,
                 progress=gr.Progress(), request: gr.Request = None):
    received = uploads(files)  # only what this page uploaded
    if not received:
        raise UserError("Upload the adapter first: a zip of its folder, or its adapter_config.json and "
                        "adapter_model.safetensors.")
    progress(0.2, desc=phrase("adapters.progress_checking"))
    done = library.import_adapter(received, name, task, base, owner=user_of(request))
    return (table(training, request), done["name"],
            phrase("adapters.imported", name=done["name"], task=task_name(done["task"]), base=done["base"],
                   rank=done["rank"], size=done["size_mb"]))


def merge(library: AdapterLibrary, name: str, new_name: str, progress=gr.Progress(), request: gr.Request = None):
    progress(0.2, desc=phrase("adapters.progress_merging"))
    done = library.merge_adapter(_chosen(name), new_name, owner=user_of(request))
    return phrase("adapters.merged", model=done["model"], task=task_name(done["task"]), base=done["base"])


def export_gguf(library: AdapterLibrary, name: str, quantization: str, progress=gr.Progress(),
                request: gr.Request = None):
    """The GGUF zip of the chosen adapter or merged model (progress shown; closing the page stops it)."""
    bundle = library.export_gguf(_chosen(name), quantization, owner=user_of(request),
                                 progress=progress_for(progress))
    return gr.update(value=bundle.path, visible=True)


def push(library: AdapterLibrary, name: str, repo_id: str, token: str, private: bool, progress=gr.Progress(),
         request: gr.Request = None):
    progress(0.2, desc=phrase("adapters.progress_uploading"))
    done = library.push_adapter(_chosen(name), repo_id, token, private, owner=user_of(request))
    return phrase("adapters.uploaded", url=done["url"]), ""


def serve_at_scale(library: AdapterLibrary, names: list[str], request: gr.Request = None) -> str:
    """The command lines that serve the chosen adapters on vLLM and SGLang, as Markdown."""
    parts = []
    for group in library.serve_commands(names or [], owner=user_of(request)):
        heading = phrase("adapters.serve_group", base=group["base"], adapters=", ".join(group["adapters"]),
                         rank=group["max_rank"])
        parts.append(f"{heading}\n\nvLLM:\n```bash\n{group['vllm']}\n```\nSGLang:\n```bash\n{group['sglang']}\n```\n"
                     + phrase("adapters.serve_then", use=f"`{group['use']}`"))
    return "\n\n".join(parts)


def chat_adapters(training: TrainingService, request: gr.Request = None):
    names = [a["name"] for a in training.list_adapters(owner=user_of(request)) if a["task"] == "chat"]
    return gr.Dropdown(choices=names, value=[])


def build(library: AdapterLibrary, training: TrainingService) -> None:
    with gr.Tab(t("tab.adapters"), id="adapters"):
        gr.Markdown(t("adapters.adapters_those_shared_everyone"))
        adapters = gr.Dataframe(headers=COLUMNS, interactive=False)
        with gr.Row():
            chosen = gr.Textbox(label=t("common.adapter"), scale=2)
            new_name = gr.Textbox(label=t("adapters.new_name"), scale=2)
            rename_btn = gr.Button(t("adapters.rename"), size="sm")
            delete_btn = gr.Button(t("common.delete"), variant="stop", size="sm")
        with gr.Row():
            export_btn = gr.Button(t("adapters.export_zip"), size="sm")
            merge_name = gr.Textbox(label=t("adapters.merged_model_s_name"), scale=2,
                                    placeholder=t("adapters.empty_adapter_merged"))
            merge_btn = gr.Button(t("adapters.merge_into_model"), size="sm")
        download = gr.File(label=t("adapters.export_adapter_config_json"), visible=False)
        merged = gr.Markdown()
        with gr.Accordion(t("adapters.import_adapter_trained_elsewhere"), open=False):
            gr.Markdown(t("adapters.lora_adapter_from_peft"))
            files = gr.File(label=t("common.adapter"), file_count="multiple",
                            file_types=[".zip", ".json", ".safetensors"])
            with gr.Row():
                import_name = gr.Textbox(label=t("common.name"), info=t("adapters.empty_file_s_name"))
                task = gr.Dropdown([("", "")] + task_choices([s.id for s in specs() if s.trainable]), value="",
                                   label=t("common.task"),
                                   info=t("adapters.empty_what_lora_studio"))
                base = gr.Textbox(label=t("common.base_model"), info=t("adapters.empty_base_config_names"))
            import_btn = gr.Button(t("adapters.import"), variant="primary")
            imported = gr.Markdown()
        with gr.Accordion(t("adapters.gguf_accordion"), open=False):
            gr.Markdown(t("adapters.gguf_help"))
            with gr.Row():
                quantization = gr.Radio(list(QUANTIZATIONS), value="q8_0", label=t("adapters.gguf_quantization"),
                                        info=t("adapters.gguf_quantization_info"), scale=3)
                gguf_btn = gr.Button(t("adapters.gguf_export"), size="sm")
            gguf_file = gr.File(label=t("adapters.gguf_file"), visible=False)
        with gr.Accordion(t("adapters.push_hugging_face_hub"), open=False):
            with gr.Row():
                repo = gr.Textbox(label=t("adapters.repository"), placeholder=t("adapters.name_my_adapter"))
                token = gr.Textbox(label=t("adapters.access_token_write"), type="password",
                                   info=t("adapters.used_this_upload_only"))
                private = gr.Checkbox(value=True, label=t("adapters.private"))
            push_btn = gr.Button(t("adapters.push"))
            pushed = gr.Markdown()
        with gr.Accordion(t("adapters.serve_these_adapters_at"), open=False):
            gr.Markdown(t("adapters.many_users_at_once"))
            with gr.Row():
                to_serve = gr.Dropdown([], multiselect=True, label=t("adapters.chat_adapters"), scale=3)
                serve_btn = gr.Button(t("adapters.show_commands"), size="sm")
            serve_lines = gr.Markdown()
    on_load(handler(table, training), None, adapters)
    on_load(handler(chat_adapters, training), None, to_serve)
    on_load(lambda: gr.update(choices=[("", "")] + task_choices([s.id for s in specs() if s.trainable])), None, task)
    serve_btn.click(handler(serve_at_scale, library), to_serve, serve_lines, **HIDDEN)
    adapters.select(first_cell, None, chosen, **HIDDEN)
    rename_btn.click(handler(rename, library, training), [chosen, new_name], [adapters, chosen], **HIDDEN)
    delete_btn.click(handler(delete, training), chosen, [adapters, chosen], **HIDDEN)
    export_btn.click(handler(export, library), chosen, download, **HIDDEN)
    merge_btn.click(handler(merge, library), [chosen, merge_name], merged, **HIDDEN)
    import_btn.click(handler(import_files, library, training), [files, import_name, task, base],
                     [adapters, chosen, imported], **HIDDEN)
    gguf_btn.click(handler(export_gguf, library), [chosen, quantization], gguf_file, **HIDDEN)
    push_btn.click(handler(push, library), [chosen, repo, token, private], [pushed, token], **HIDDEN)

"""The Search tab: build collections from files and pasted text, then search them by meaning.

It also publishes /add_documents, whose file parameter is a Gradio type (tasks/ never import gradio).
"""

from __future__ import annotations

import functools
import html
from collections.abc import Callable
from pathlib import Path

import gradio as gr

from errors import UserError
from models import catalog
from tasks.collections import LOCAL_OWNER
from tasks.search import MAX_RESULTS, SearchTask
from tasks.text import snippet
from ui.adapters import NO_ADAPTER, adapter_choices, adapter_value, keep_fresh
from ui.api import expose

OWNER = LOCAL_OWNER  # without login everything is the local user's; login will take it from the request
FILE_TYPES = [".txt", ".md", ".csv", ".pdf"]
EXAMPLE_QUERIES = ["how do I get my money back", "when is the office open", "I forgot my password"]


def uploaded(files: object) -> list[tuple[str, str]]:
    """(path, original name) of each upload, whether Gradio passed FileData, dicts with a "path" or plain paths."""
    pairs = []
    for item in files if isinstance(files, list) else ([files] if files else []):
        if isinstance(item, dict):
            path, name = item.get("path"), item.get("orig_name")
        elif isinstance(item, (str, Path)):
            path, name = str(item), None
        else:
            path, name = getattr(item, "path", None), getattr(item, "orig_name", None)
        if not path:
            raise UserError("An uploaded file arrived without its content; please upload it again.")
        pairs.append((str(path), name or Path(str(path)).name))
    return pairs


def api_add_documents(task: SearchTask) -> Callable:
    """The public /add_documents function for this task (a closure: gr.api needs a plain typed function)."""

    def add_documents(collection: str, files: list[gr.FileData] | None = None, text: str = "") -> dict:
        """Add .txt, .md, .csv and .pdf files and/or pasted text to a collection, creating it if it is new."""
        return task.add(OWNER, collection, uploaded(files), text)

    return add_documents




def result_cards(hits: list[dict], query: str) -> str:
    """HTML cards: score, source and the chunk with the query's words marked."""
    if not hits:
        return "<p>No results: the collection is empty.</p>"
    cards = []
    for hit in hits:
        where = f"{html.escape(hit['source'])} · chunk {hit['chunk'] + 1} · {html.escape(hit['collection'])}"
        cards.append("<div style='border:1px solid var(--border-color-primary);border-radius:8px;"
                     "padding:8px 12px;margin-bottom:8px'>"
                     f"<div style='opacity:.8;font-size:.9em'><b>{hit['score']:.3f}</b> · {where}</div>"
                     f"<div>{snippet(hit['text'], query, width=600)}</div></div>")
    return "\n".join(cards)


def _documents_view(task: SearchTask, collection: str | None) -> tuple[list[list], dict]:
    try:
        documents = task.documents(OWNER, collection or "")
    except UserError:
        documents = []
    rows = [[d["name"], d["chunks"], d["added"].replace("T", " ")[:16]] for d in documents]
    names = [d["name"] for d in documents]
    return rows, gr.update(choices=names, value=names[0] if names else None)


def refresh(task: SearchTask, collection: str | None):
    """UI handler: the collection list and the chosen collection's documents."""
    names = task.store.names(OWNER)
    rows, removable = _documents_view(task, collection)
    return gr.update(choices=names), rows, removable


def add_files(task: SearchTask, collection: str, files: list | None, text: str, progress=gr.Progress()):
    """UI handler: add the uploads and pasted text, with progress; report what went in and what did not."""
    try:
        result = task.add(OWNER, collection, uploaded(files), text,
                          lambda fraction, message: progress(fraction, desc=message))
    except UserError as error:
        raise gr.Error(str(error)) from None
    lines = []
    if result["added"]:
        count = len(result["added"])
        lines.append(f"Added {count} document{'s' if count != 1 else ''} ({result['chunks']} chunks) to "
                     f"'{collection.strip()}'.")
    lines += [f"Replaced the earlier version of {html.escape(name)}." for name in result["replaced"]]
    lines += [f"Skipped **{html.escape(s['name'])}**: {html.escape(s['reason'])}" for s in result["skipped"]]
    if result["skipped"]:
        gr.Warning(f"{len(result['skipped'])} item(s) were skipped; see the list below the button.")
    choices, rows, removable = refresh(task, collection)
    return "\n\n".join(f"- {line}" for line in lines), choices, rows, removable, None, ""


def remove_document(task: SearchTask, collection: str, source: str | None):
    """UI handler: remove the chosen document and show what is left."""
    if not source:
        raise gr.Error("Pick a document to remove first.")
    try:
        result = task.remove(OWNER, collection, source)
    except UserError as error:
        raise gr.Error(str(error)) from None
    status = f"Removed {html.escape(source)}; {result['documents']} document(s) and {result['chunks']} chunks left."
    if not result["documents"]:
        status = f"Removed {html.escape(source)}; the collection was empty, so it is gone too."
    choices, rows, removable = refresh(task, collection)
    return status, choices, rows, removable


def run_search(task: SearchTask, query: str, collection: str, k: int, adapter: str, progress=gr.Progress()) -> str:
    """UI handler: search and show the results as cards."""
    try:
        hits = task.find(OWNER, query, collection, int(k), adapter_value(adapter),
                         lambda fraction, message: progress(fraction, desc=message))
    except UserError as error:
        raise gr.Error(str(error)) from None
    return result_cards(hits, query)


def build(task: SearchTask, browser_secret: str) -> dict:
    """Build the tab and publish /add_documents; returns its components by name."""
    names = task.store.names(OWNER)
    with gr.Tab("Search", id="search") as tab:
        gr.Markdown(catalog.describe(task.model) + " · finds passages by meaning, not just matching words")
        with gr.Row():
            collection = gr.Dropdown(names, value=names[0] if names else "my documents", label="Collection",
                                     allow_custom_value=True, scale=3,
                                     info="Pick a collection, or type a new name to create one.")
            adapter = gr.Dropdown(adapter_choices(task, task.model), value=NO_ADAPTER, label="Adapter", scale=1,
                                  info="An embedding adapter you trained for search.")
        with gr.Row():
            with gr.Column():
                files = gr.File(file_count="multiple", file_types=FILE_TYPES, type="filepath",
                                label="Upload .txt, .md, .csv or .pdf files")
                pasted = gr.Textbox(label="Or paste text", lines=4, placeholder="Paste a document here")
                add = gr.Button("Add to collection", variant="primary")
                status = gr.Markdown()
            with gr.Column():
                documents = gr.Dataframe(headers=["Document", "Chunks", "Added (UTC)"], value=[],
                                         interactive=False, label="Documents in this collection")
                with gr.Row():
                    doomed = gr.Dropdown([], label="Document", scale=3)
                    remove = gr.Button("Remove", variant="stop", scale=1)
        with gr.Row():
            query = gr.Textbox(label="Query", placeholder="Ask in your own words", scale=5)
            k = gr.Slider(1, MAX_RESULTS, value=5, step=1, label="Results", scale=2)
            go = gr.Button("Search", variant="primary", scale=1)
        gr.Examples([[q] for q in EXAMPLE_QUERIES], inputs=[query], api_visibility="undocumented")
        results = gr.HTML()
        gr.api(expose(api_add_documents(task)), api_name="add_documents")  # inside the tab: Tabs hold only tabs

    hidden = {"api_visibility": "undocumented"}
    shown = [collection, documents, doomed]
    tab.select(functools.partial(refresh, task), collection, shown, **hidden)
    keep_fresh(tab, task, task.model, adapter)
    # Only the documents follow the collection: updating the dropdown from its own change event could loop.
    collection.change(lambda c: _documents_view(task, c), collection, [documents, doomed], **hidden)
    add.click(functools.partial(add_files, task), [collection, files, pasted],
              [status, *shown, files, pasted], **hidden)
    remove.click(functools.partial(remove_document, task), [collection, doomed], [status, *shown], **hidden)
    gr.on([query.submit, go.click], functools.partial(run_search, task), [query, collection, k, adapter], results,
          **hidden)
    return {"collection": collection, "files": files, "pasted": pasted, "documents": documents, "remove": doomed,
            "query": query, "k": k, "results": results, "status": status, "adapter": adapter}

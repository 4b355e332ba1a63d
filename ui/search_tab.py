"""The Search tab: build collections from files and pasted text, then search them by meaning."""

from __future__ import annotations

import html

import gradio as gr
import pandas as pd

from errors import UserError
from tasks.search import MAX_RESULTS, SearchTask
from tasks.text import snippet
from ui.api import handler, on_load, progress_for, uploads, user_of
from ui.compare_panel import compare_panel
from ui.i18n import english, localized_columns, marked, phrase, show_warning, t, text_in_page_language
from ui.picker import Picker, adapter_value, picker
from ui.services import TabServices


FILE_TYPES = [".txt", ".md", ".csv", ".pdf"]
DEFAULT_COLLECTION = english()["search.default_collection"]  # the page is built in English
EXAMPLE_QUERIES = ["how do I get my money back", "when is the office open", "I forgot my password"]


def result_cards(hits: list[dict], query: str) -> str:
    """HTML cards: score, source and the chunk with the query's words marked."""
    if not hits:
        return f"<p>{phrase('search.no_results')}</p>"
    cards = []
    for hit in hits:
        where = (f"{html.escape(hit['source'])} · {phrase('search.chunk', number=hit['chunk'] + 1)} · "
                 f"{html.escape(hit['collection'])}")
        cards.append("<div style='border:1px solid var(--border-color-primary);border-radius:8px;"
                     "padding:8px 12px;margin-bottom:8px'>"
                     f"<div style='opacity:.8;font-size:.9em'><b>{hit['score']:.3f}</b> · {where}</div>"
                     f"<div>{snippet(hit['text'], query, width=600)}</div></div>")
    return "\n".join(cards)


def default_collection(current: str | None):
    """UI handler at load: the collection box's built-in name in the page's language (Gradio leaves a Dropdown's
    value untranslated); a name the user typed stays."""
    return gr.update(value=phrase("search.default_collection")) if current == DEFAULT_COLLECTION else gr.update()


def _documents_view(task: SearchTask, collection: str | None,
                    request: gr.Request = None) -> tuple[pd.DataFrame, dict]:
    try:
        documents = task.documents(user_of(request), collection or "")
    except UserError:
        documents = []
    rows = pd.DataFrame([[d["name"], d["chunks"], d["added"].replace("T", " ")[:16]] for d in documents],
                        columns=localized_columns("search.column", ["document", "chunks", "added (UTC)"]))
    names = [d["name"] for d in documents]
    return rows, gr.update(choices=names, value=names[0] if names else None)


def refresh(task: SearchTask, collection: str | None, request: gr.Request = None):
    """UI handler: the collection list and the chosen collection's documents."""
    names = task.store.names(user_of(request))
    rows, removable = _documents_view(task, collection, request)
    return gr.update(choices=names), rows, removable


def add_files(task: SearchTask, collection: str, files: list | None, text: str, progress=gr.Progress(),
              request: gr.Request = None):
    """UI handler: add the uploads and pasted text, with progress; report what went in and what did not."""
    result = task.add(user_of(request), collection, uploads(files), text, progress_for(progress))
    lines = []
    if result["added"]:
        count = len(result["added"])
        lines.append(phrase("search.added_one" if count == 1 else "search.added", count=count,
                            chunks=result["chunks"], collection=collection.strip()))
    lines += [phrase("search.replaced", name=html.escape(name)) for name in result["replaced"]]
    lines += [phrase("search.skipped", name=html.escape(s["name"]),
                     reason=html.escape(text_in_page_language(s["reason"]))) for s in result["skipped"]]
    if result["skipped"]:
        show_warning(phrase("search.skipped_warning", count=len(result["skipped"])))
    choices, rows, removable = refresh(task, collection, request)
    return "\n\n".join(f"- {line}" for line in lines), choices, rows, removable, None, ""


def remove_document(task: SearchTask, collection: str, source: str | None, request: gr.Request = None):
    """UI handler: remove the chosen document and show what is left."""
    if not source:
        raise UserError("Pick a document to remove first.")
    result = task.remove(user_of(request), collection, source)
    status = phrase("search.removed", name=html.escape(source), documents=result["documents"],
                    chunks=result["chunks"])
    if not result["documents"]:
        status = phrase("search.removed_last", name=html.escape(source))
    choices, rows, removable = refresh(task, collection, request)
    return status, choices, rows, removable


def run_search(task: SearchTask, query: str, collection: str, k: int, adapter: str, progress=gr.Progress(),
               request: gr.Request = None) -> str:
    """UI handler: search and show the results as cards."""
    hits = task.find(user_of(request), query, collection, int(k), adapter_value(adapter), progress_for(progress))
    if notice := task.language_notice(query, task.model):  # Chinese to an English-first model
        show_warning(text_in_page_language(notice))
    return result_cards(hits, query)


def hit_lines(hits: list[dict]) -> str:
    """One variant's passages for the side-by-side columns: score, source and the start of the text."""
    if not hits:
        return f"*{phrase('search.nothing_found')}*"
    return "\n".join(f"{i}. **{h['score']:.2f}** · {h['source']} — {h['text'][:160]}" for i, h in enumerate(hits, 1))


def build(task: SearchTask, tab: gr.Tab, services: TabServices) -> Picker:
    """Build the tab's contents; returns its adapter picker (the embedding model is the operator's)."""
    chosen = picker(task, None, lambda m, a, owner="": marked("search.note"),
                    adapter_info=t("search.adapter_info"), extra=lambda: gr.Dropdown(
                        [], value=DEFAULT_COLLECTION, label=t("search.collection"), allow_custom_value=True, scale=3,
                        info=t("search.pick_collection_type_new")))
    adapter, collection = chosen.adapter, chosen.extra
    with gr.Row():
        with gr.Column():
            files = gr.File(file_count="multiple", file_types=FILE_TYPES, type="filepath",
                            label=t("search.upload_txt_md_csv"))
            pasted = gr.Textbox(label=t("search.paste_text"), lines=4, placeholder=t("search.paste_document_here"))
            add = gr.Button(t("search.add_collection"), variant="primary")
            status = gr.Markdown()
        with gr.Column():
            documents = gr.Dataframe(headers=["Document", "Chunks", "Added (UTC)"], value=[],
                                     interactive=False, label=t("search.documents_this_collection"))
            with gr.Row():
                doomed = gr.Dropdown([], label=t("search.document"), scale=3)
                remove = gr.Button(t("search.remove"), variant="stop", scale=1)
    with gr.Row():
        query = gr.Textbox(label=t("search.query"), placeholder=t("search.ask_own_words"), scale=5)
        k = gr.Slider(1, MAX_RESULTS, value=5, step=1, label=t("common.results"), scale=2)
        go = gr.Button(t("search.search"), variant="primary", scale=1)
    gr.Examples([[q] for q in EXAMPLE_QUERIES], inputs=[query], api_visibility="undocumented",
                label=t("common.examples"))
    results = gr.HTML()

    compare_panel(task, {"query": query, "collection": collection, "k": k}, hit_lines, None,
                  lambda v: {**v, "k": int(v["k"])})

    hidden = {"api_visibility": "undocumented"}
    shown = [collection, documents, doomed]
    # The user's collections are listed when the page loads and the tab opens (never built into the page).
    tab.select(handler(refresh, task), collection, shown, **hidden)
    on_load(handler(refresh, task), collection, shown)
    on_load(default_collection, collection, collection)
    chosen.wire(tab)
    # Only the documents follow the collection: updating the dropdown from its own change event could loop.
    collection.change(handler(_documents_view, task), collection, [documents, doomed], **hidden)
    add.click(handler(add_files, task, gpu="add_documents"), [collection, files, pasted],
              [status, *shown, files, pasted], **hidden)
    remove.click(handler(remove_document, task), [collection, doomed], [status, *shown], **hidden)
    gr.on([query.submit, go.click], handler(run_search, task, gpu="search"), [query, collection, k, adapter], results,
          **hidden)
    return chosen

"""The model-and-adapter picker every task tab shares: a line describing the model (with the tab's one-line note on
an offline fallback), the model box, the adapter box, and their wiring."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import gradio as gr

from errors import UserError
from models import catalog
from models.adapters import NO_ADAPTER, selected
from tasks.base import Task
from ui.api import expose, on_load, user_of
from ui.i18n import in_page_language, page_locale, phrase, t, text_in_page_language

MODEL_INFO = t("picker.model_info")
ADAPTER_INFO = t("picker.adapter_info")
QUIET = {"show_progress": "hidden", "api_visibility": "undocumented"}


def adapter_value(choice: str | None) -> str:
    """The API's adapter argument for a dropdown choice ("" for none)."""
    return selected(choice) or ""


def no_adapter() -> tuple[str, str]:
    """An adapter box's first choice: 'none' in the language of the page whose event runs; its value stays
    NO_ADAPTER, which the API reads as no adapter."""
    return phrase("common.no_adapter"), NO_ADAPTER


def no_adapter_box(**options) -> gr.Dropdown:
    """An adapter box holding only 'none' until the page's load fills it, naming 'none' in the page's language
    (Gradio leaves a Dropdown's choices untranslated)."""
    return gr.Dropdown([no_adapter()], value=NO_ADAPTER, **options)


def adapter_choices(task: Task, model: str, owner: str) -> list:
    """'none' plus the adapters the owner may use for task on model ("" = the task's default)."""
    return [no_adapter()] + task.adapter_names(model or "", owner)


def adapter_update(task: Task, model: str, current: str | None, owner: str):
    """An adapter box's update for model: its adapters, keeping the current choice when it still applies."""
    names = task.adapter_names(model or "", owner)
    return gr.update(choices=[no_adapter()] + names, value=current if current in names else NO_ADAPTER)


@dataclass
class Picker:
    """The picker's components; `model` is None for a tab whose model is fixed (it uses the task's default)."""

    task: Task
    info: gr.Markdown
    model: gr.Dropdown | None
    adapter: gr.Dropdown
    describe: Callable[[str, str], str]  # (model, adapter choice) -> the info line
    extra: gr.Component | None = None  # the tab's own component in the picker's row
    static_choices: list[str] = field(default_factory=list)  # the model box's list before merged models

    def choices(self, model: str, owner: str) -> list:
        """'none' plus the adapters the owner may use for this task on model."""
        return adapter_choices(self.task, model, owner)

    def fresh(self, model: str, current: str | None, request: gr.Request = None):
        """The adapter box's update for model: its adapters, keeping the current choice when it still applies."""
        return adapter_update(self.task, model, current, user_of(request))

    def fresh_fixed(self, current: str | None, request: gr.Request = None):
        """fresh() for a tab whose model is fixed."""
        return self.fresh(self.task.default(), current, request)

    def describe_fixed(self, adapter: str | None, request: gr.Request = None) -> str:
        """describe() for a tab whose model is fixed (the task's default)."""
        return self.describe("", adapter or NO_ADAPTER, request)

    def on_load(self, request: gr.Request = None):
        return gr.update(choices=self.choices(self.task.default(), user_of(request)))

    def model_choices(self, request: gr.Request = None):
        """The model box's list: the tab's models, then the caller's merged models (language-model tasks)."""
        merged = [name for name, meta in self.task.ctx.adapters.merged.list(user_of(request))
                  if meta.task == self.task.id]
        choices, suggestion = with_suggestion(self.task.id, self.static_choices + merged, page_locale(request))
        return gr.update(choices=choices, **({"value": suggestion} if suggestion else {}))

    @property
    def outputs(self) -> list:
        """The components "Use this adapter" sets (see hand_over)."""
        return [self.adapter] + ([self.model] if self.model is not None else [])

    def hand_over(self, base: str, adapter: str, owner: str) -> list:
        """Updates that choose adapter on its base model (for the Train tab's "Use this adapter")."""
        updates = [gr.update(choices=self.choices(base, owner), value=adapter)]
        return updates + ([gr.update(value=base)] if self.model is not None else [])

    def unchanged(self) -> list:
        return [gr.update() for _ in self.outputs]

    def wire(self, tab: gr.Tab) -> None:
        """Keep the info line and the adapter list current: when the model or adapter changes, when the page
        loads and whenever the tab opens (an adapter trained since the page was built must be selectable)."""
        on_load(self.on_load, None, self.adapter)
        # The line is built in English with the page; it is written again in the page's language once it loads.
        if self.model is not None:
            on_load(expose(self.describe, page=True), [self.model, self.adapter], self.info)
        else:
            on_load(expose(self.describe_fixed, page=True), self.adapter, self.info)
        if self.model is not None:
            on_load(self.model_choices, None, self.model)
        if self.model is None:
            tab.select(self.fresh_fixed, self.adapter, self.adapter, **QUIET)
            return
        self.model.change(self.fresh, [self.model, self.adapter], self.adapter, **QUIET)
        gr.on([self.model.change, self.adapter.change], expose(self.describe, page=True),
              [self.model, self.adapter], self.info, **QUIET)
        tab.select(self.fresh, [self.model, self.adapter], self.adapter, **QUIET)


def with_suggestion(task_id: str, choices: list[str], locale: str,
                    reachable: bool | None = None) -> tuple[list[str], str | None]:
    """(the model box's list, the model to choose): for a page in a language the task's defaults do not handle
    (Chinese), the catalog's multilingual suggestion first and chosen, while the hub it downloads from answers."""
    suggestion = catalog.suggested(task_id, locale, reachable)
    return list(dict.fromkeys([suggestion] * bool(suggestion) + choices)), suggestion


def info_line(model: str, note: str = "") -> str:
    """The line above the model box: the model, its licence and where it runs, then the tab's note if any."""
    return text_in_page_language(catalog.describe(model)) + (f"\n\n{note}" if note else "")


def describer(task: Task, note: Callable[[str, str], str] | None) -> Callable[[str, str], str]:
    """The info line for (model, adapter): note(model, adapter) is the tab's line on an offline fallback ("" for
    none); a model it cannot read gives its one sentence instead."""
    def describe(model: str, adapter: str = NO_ADAPTER, request: gr.Request = None) -> str:
        model = model or task.default()
        try:
            return info_line(model, note(model, adapter, owner=user_of(request)) if note else "")
        except UserError as error:
            return info_line(model, f"⚠️ {in_page_language(str(error))}")
    return describe


def picker(task: Task, choices: list[str] | None, note: Callable[[str, str], str] | None = None,
           model_info: str = MODEL_INFO, adapter_info: str = ADAPTER_INFO,
           extra: Callable[[], gr.Component] | None = None) -> Picker:
    """Build the picker (call inside the tab); choices None means the model is fixed to the task's default.

    note(model, adapter) gives the tab's line on an offline fallback ("" for none); extra, if given, adds the
    tab's own component to the picker's row (the Chat tab's mode)."""
    default = task.default()
    describe = describer(task, note)
    info = gr.Markdown(describe(default, NO_ADAPTER))
    with gr.Row():
        model = None
        if choices is not None:
            model = gr.Dropdown(choices, value=default, label=t("picker.model"), allow_custom_value=True, scale=3,
                                info=model_info)
        adapter = no_adapter_box(label=t("common.adapter"), scale=2, info=adapter_info)
        own = extra() if extra is not None else None
    return Picker(task, info, model, adapter, describe, own, list(choices or []))

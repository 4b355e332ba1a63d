"""The "Compare side by side" panel every task tab has: the tab's own inputs on up to three variants at once
(a model and an adapter each), every result in its own column — a chat reply streams into it."""

from __future__ import annotations

from collections.abc import Callable

import gradio as gr

from tasks.base import Task
from tasks.compare import MAX_VARIANTS, Comparison
from ui import zerogpu
from ui.api import GENERATION, expose, on_load, progress_for, user_of
from ui.i18n import phrase, t
from ui.picker import QUIET, adapter_choices, adapter_update, adapter_value, no_adapter_box

EXPLAIN = (t("compare.explain"))
# The variants' boxes, one key each: the front end translates a whole label, it cannot number one.
VARIANT_MODEL = ("compare.variant_1_model", "compare.variant_2_model", "compare.variant_3_model")[:MAX_VARIANTS]
VARIANT_ADAPTER = ("compare.variant_1_adapter", "compare.variant_2_adapter", "compare.variant_3_adapter")[:MAX_VARIANTS]


def compare_panel(task: Task, inputs: dict[str, gr.Component], render: Callable[[object], str],
                  models: list[str] | None, convert: Callable[[dict], dict] = dict,
                  own_inputs: Callable[[], dict[str, gr.Component]] | None = None) -> None:
    """Build the panel (inside the tab): inputs maps the task endpoint's parameters to the tab's components,
    render turns one variant's result into Markdown, models are the model box's choices (None: the task's model
    is fixed, only adapters vary), convert adjusts the inputs' values (a UI choice to its API value), and
    own_inputs adds components of the panel's own (the chat's message box) above its button."""
    comparison = Comparison({task.id: task})
    with gr.Accordion(t("compare.compare_side_side"), open=False):
        gr.Markdown(EXPLAIN)
        boxes = []
        with gr.Row():
            for i in range(MAX_VARIANTS):
                with gr.Column(min_width=160):
                    if models is not None:
                        boxes.append(gr.Dropdown(models, value=None, label=t(VARIANT_MODEL[i]),
                                                 allow_custom_value=True,
                                                 info=t("compare.empty_adapter_s_base")))
                    boxes.append(no_adapter_box(allow_custom_value=True, label=t("compare.adapter")
                                                if models is not None else t(VARIANT_ADAPTER[i])))
        own = own_inputs() if own_inputs else {}
        inputs = {**inputs, **own}
        button = gr.Button(t("compare.compare"), variant="primary")
        with gr.Row():
            columns = [gr.Markdown(visible=False, container=True, min_height=80) for _ in range(MAX_VARIANTS)]
    names = list(inputs)
    per_variant = 2 if models is not None else 1

    def run(*values, request: gr.Request = None):
        shared, chosen = dict(zip(names, values[:len(names)])), values[len(names):]
        pairs = [(chosen[i] or "" if per_variant == 2 else "", adapter_value(chosen[i + per_variant - 1]))
                 for i in range(0, len(chosen), per_variant)]
        variants = [{"model": m, "adapter": a} if models is not None else {"adapter": a}
                    for i, (m, a) in enumerate(pairs) if i == 0 or m or a]
        for update in comparison.compare(task.id, convert(shared), variants, owner=user_of(request),
                                         progress=progress_for()):
            yield [gr.update(value=f"**{variant_name(r)}**\n\n{render(r['result'])}", visible=True)
                   for r in update] + [gr.update(visible=False)] * (MAX_VARIANTS - len(update))

    triggers = [button.click] + [c.submit for c in own.values() if isinstance(c, gr.Textbox)]
    run.__name__ = "compare_variants"  # on ZeroGPU it asks for the GPU as /compare does
    gr.on(triggers, expose(zerogpu.gpu("compare", run, task.ctx), page=True), [*inputs.values(), *boxes], columns,
          api_visibility="undocumented", **GENERATION)

    # As in the picker: each variant's adapters are those trained on its model (the task's default when empty).
    def adapter_lists(request: gr.Request = None):
        return [gr.update(choices=adapter_choices(task, "", user_of(request)))] * MAX_VARIANTS
    on_load(adapter_lists, None, boxes[per_variant - 1::per_variant])

    def fresh(model: str, current: str | None, request: gr.Request = None):
        return adapter_update(task, model, current, user_of(request))
    if models is not None:
        for model, adapter in zip(boxes[0::2], boxes[1::2]):
            model.change(fresh, [model, adapter], adapter, **QUIET)


def variant_name(result: dict) -> str:
    model = result.get("model") or phrase("compare.default_model")
    return f"{model} + {result['adapter']}" if result.get("adapter") else model

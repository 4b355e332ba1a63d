"""The page's places (ui/navigation.py): areas, the views inside them, and opening one by its id."""

import gradio as gr
import pytest

from ui.navigation import Navigation


def build_page(stray: bool = False) -> tuple[gr.Blocks, Navigation]:
    nav = Navigation()
    with gr.Blocks() as demo, nav.top():
        with nav.area("Use", "use"):
            for task in ("chat", "translate"):
                with gr.Tab(task.title(), id=task):
                    gr.Markdown(task)
        with gr.Tab("Evaluate", id="evaluate"):
            gr.Markdown("evaluate")
        if stray:
            gr.State(False)  # between two tabs of the top bar, as an inline event input once was
        with gr.Tab("Adapters", id="adapters"):
            gr.Markdown("adapters")
    return demo, nav


def selected(updates: list) -> list:
    return [getattr(update, "selected", None) if isinstance(update, gr.Tabs) else None for update in updates]


def test_a_view_opens_its_area_and_itself():
    _, nav = build_page()
    assert nav.places() == {"use": ("use", None), "evaluate": ("evaluate", None), "adapters": ("adapters", None),
                            "chat": ("use", "chat"), "translate": ("use", "translate")}
    assert selected(nav.open("translate")) == ["use", "translate"]
    assert selected(nav.open("evaluate")) == ["evaluate", None]
    assert selected(nav.open("no such view")) == [None, None]
    assert len(nav.open("chat")) == len(nav.outputs) == 2


def test_a_component_between_the_tabs_of_a_bar_is_refused():
    # Gradio 6.31 files each tab under its position among all the bar's children: the stray state shifted the
    # later tabs and made the bar write one tab's label over another's.
    with pytest.raises(ValueError, match="State"):
        build_page(stray=True)

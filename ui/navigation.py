"""The page's places: a few areas in the top bar, some holding views of their own (Use: the six tasks; Train:
Train and Feedback; Settings: Account and System).

A view opens by its tab id: from a hand-over (`Navigation.open`), or from a link, `?view=translate`. The address
follows the user (`?view=` is rewritten on every change of tab), so a reload comes back to the same place.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager

import gradio as gr

HIDDEN = {"show_progress": "hidden", "api_visibility": "undocumented"}
BAR_ID = "areas"  # elem_id of the top bar; each area's own bar is "<area id>-views"

# Runs in the browser once the linked view is open: from then on every change of tab (a click, a hand-over)
# writes the view now shown into the address, in place (no history entry per click).
FOLLOW = """() => {
  const nested = %s;  // area id -> elem_id of the bar of its views
  const chosen = (bar) => bar?.querySelector(
    ':scope > .tab-wrapper button[role=tab][aria-selected=true]')?.dataset.tabId;
  const write = () => {
    const area = chosen(document.getElementById('%s'));
    if (!area) return;
    const view = (nested[area] && chosen(document.getElementById(nested[area]))) || area;
    const url = new URL(window.location.href);
    if (url.searchParams.get('view') === view) return;
    url.searchParams.set('view', view);
    window.history.replaceState(window.history.state, '', url);
  };
  new MutationObserver(() => requestAnimationFrame(write)).observe(
    document.getElementById('%s'), {subtree: true, attributes: true, attributeFilter: ['aria-selected']});
  requestAnimationFrame(write);
}"""


class Navigation:
    """The top bar's gr.Tabs, each area's nested gr.Tabs, and where every view lies in them."""

    def __init__(self) -> None:
        self.bar: gr.Tabs | None = None
        self.nested: dict[str, gr.Tabs] = {}  # area id -> the gr.Tabs of its views

    @contextmanager
    def top(self) -> Iterator[None]:
        """The top bar: build the areas inside it (with `area`, or a builder's own top-level gr.Tab)."""
        with gr.Tabs(elem_id=BAR_ID) as self.bar:
            yield
        refuse_strays(self.bar)

    @contextmanager
    def area(self, label: str, area_id: str) -> Iterator[gr.Tabs]:
        """An area with views of its own: a top tab holding a bar of its views (build each as a gr.Tab)."""
        with gr.Tab(label, id=area_id), gr.Tabs(elem_id=f"{area_id}-views") as views:
            yield views
        refuse_strays(views)
        self.nested[area_id] = views

    def places(self) -> dict[str, tuple[str, str | None]]:
        """Each view's id -> (its area, its id in the area's bar; None when the area itself is the view)."""
        places = {tab.id: (tab.id, None) for tab in tabs_in(self.bar)}
        for area_id, views in self.nested.items():
            places.update({tab.id: (area_id, tab.id) for tab in tabs_in(views)})
        return places

    @property
    def outputs(self) -> list[gr.Tabs]:
        """The bars `open` updates: the top one, then each area's."""
        return [self.bar, *self.nested.values()]

    def open(self, view: str) -> list:
        """Updates for `outputs` that show view (an area, or a view inside one); an unknown view changes nothing.
        A nested view needs both bars set: its area's tab in the top bar and its own tab in the area's bar."""
        area, inner = self.places().get(view, (None, None))
        top = gr.Tabs(selected=area) if area else gr.update()
        return [top] + [gr.Tabs(selected=inner) if area_id == area and inner else gr.update()
                        for area_id in self.nested]

    def link(self, demo: gr.Blocks) -> None:
        """Open the view the address names (`?view=train`) when the page loads, then keep the address current."""
        def open_linked_view(request: gr.Request = None):
            return self.open(request.query_params.get("view", "") if request else "")

        follow = FOLLOW % (json.dumps({area_id: views.elem_id for area_id, views in self.nested.items()}),
                           BAR_ID, BAR_ID)
        demo.load(open_linked_view, None, self.outputs, **HIDDEN).then(None, None, None, js=follow, **HIDDEN)


def tabs_in(bar: gr.Tabs) -> list[gr.Tab]:
    return [child for child in bar.children if isinstance(child, gr.Tab)]


def refuse_strays(bar: gr.Tabs) -> None:
    """A gr.Tabs may hold only gr.Tab children. Gradio 6.31's front end files each tab under its position among
    *all* the bar's children, so a component made between two tabs (a gr.State passed inline as an event's input,
    say) shifts the later tabs: selecting one writes its label over its neighbour's and the bar relabels itself."""
    strays = [child for child in bar.children if not isinstance(child, gr.Tab)]
    if strays:
        names = ", ".join(f"{type(child).__name__} #{child._id}" for child in strays)
        raise ValueError(f"A tab bar holds {names} beside its tabs: make it inside a gr.Tab, or after the bar.")

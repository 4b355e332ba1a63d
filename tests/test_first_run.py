"""The guided first run (ui/first_run.py): who sees the panel, without a browser."""

from __future__ import annotations

import pytest

from errors import UserError
from ui import first_run
from ui.i18n import marked


class Adapters:
    """A training service as the panel asks it: each owner's adapters."""

    def __init__(self, owned: dict[str, list[dict]]):
        self.owned = owned

    def list_adapters(self, task: str = "", *, owner: str) -> list[dict]:
        return self.owned.get(owner, [])


@pytest.mark.parametrize("adapters, dismissed, shown", [
    ([], False, True),  # a first visit
    ([], None, True),  # nothing stored in the browser yet
    ([{"name": "zorbia-facts"}], False, False),  # has an adapter: nothing to introduce
    ([], True, False),  # "Don't show this again"
])
def test_the_panel_shows_only_on_a_first_visit(adapters, dismissed, shown):
    training = Adapters({"someone": adapters, "local": adapters})
    assert first_run.should_show(training, "someone", dismissed) is shown
    assert first_run.visibility(training, dismissed)["visible"] is shown  # no request: the local user
    assert first_run.should_show(training, "another", dismissed) is (dismissed is not True)  # adapters are per user


def test_dismissing_hides_it_and_remembers():
    panel, remembered = first_run.dismiss()
    assert panel["visible"] is False and remembered is True
    assert first_run.hide_if_dismissed(True)["visible"] is False
    assert "visible" not in first_run.hide_if_dismissed(False)  # a late default never hides it


def test_the_sample_reads_as_chat_data_and_names_the_adapter():
    sample = first_run.sample_file()
    assert first_run.data_summary(sample).startswith("Read 24 rows, kept 24")
    assert first_run.adapter_name(sample) == "first-chat-facts"
    assert first_run.data_summary(None) == marked("first_run.no_data")


def test_a_job_that_is_gone_stops_the_polling():
    class Gone(Adapters):
        def job(self, job_id: str, *, owner: str) -> dict:
            raise UserError(f"No training job {job_id}.")

    for job_id in ("", "deleted"):  # not started, or deleted in the Train tab meanwhile
        line, adapter, train, ask, timer = first_run.progress_view(Gone({}), job_id)
        assert (line, adapter) == (marked("first_run.not_started"), "")
        assert train["interactive"] and not ask["interactive"] and timer["active"] is False


def test_the_upload_box_is_named_above_it_not_over_its_icon():
    import gradio as gr

    with gr.Blocks() as page:
        first_run.build(Adapters({}), None, "secret")
    box = next(block for block in page.blocks.values() if isinstance(block, gr.File))
    lines = [str(block.value) for block in page.blocks.values() if isinstance(block, gr.Markdown)]
    assert box.show_label is False and marked("first_run.upload") in lines  # a low box's label covers its icon

"""The task registry: every spec is complete and its pieces agree with the training registry; a new task joins with
its spec and its training's one registration."""

from __future__ import annotations

import dataclasses
import inspect

import gradio as gr
import pytest
import torch

import tasks  # noqa: F401  (registers the tasks)
from errors import UserError
from models import catalog
from tasks.base import Endpoint, Task, require_text
from tasks.spec import DataField, TaskSpec, register, specs, unregister
from training import data, registry
from training.encoders import SentimentRecipe
from training.recipe import Recipe, default_base
from training.scorers import Evaluation
from ui import tabs

SPECS = specs()


def test_the_six_tasks_are_registered_in_tab_order():
    assert [spec.id for spec in SPECS] == ["chat", "summarize", "translate", "sentiment", "answer", "search"]


@pytest.mark.parametrize("spec", SPECS, ids=lambda spec: spec.id)
def test_every_spec_is_complete_and_its_pieces_agree(spec, ctx):
    assert spec.problems() == []
    task = tasks.TASKS[spec.id](ctx)
    assert [endpoint.api_name for endpoint in task.endpoints()] == list(spec.endpoints)
    builder = tabs.builder(spec.id)
    assert list(inspect.signature(builder).parameters) == ["task", "tab", "services"]
    for family, name in spec.defaults.items():
        assert catalog.CATALOG[name].family == family
    if not spec.trainable:
        return
    recipe = registry.recipe_class(spec.id)
    assert issubclass(recipe, Recipe) and set(recipe.families) <= set(catalog.DEFAULTS)
    assert catalog.find(default_base(ctx.settings, spec)).family in recipe.families
    report = data.load_examples(spec.sample_path, spec.id)  # the sample reads with no mapping and no rejects
    assert report.rejected == [] and len(report.examples) >= 12
    assert set(spec.required) <= set(report.columns) or spec.conversations


@pytest.mark.parametrize("change, message", [
    ({"id": "Bad Id"}, "its id"),
    ({"title": " "}, "needs a title"),
    ({"defaults": {}}, "default model"),
    ({"defaults": {catalog.DECODER: "no-such-model"}}, "not a decoder in the catalog"),
    ({"defaults": {"telepathy": "GPT-2"}}, "not a model family"),
    ({"endpoints": ()}, "endpoint names"),
    ({"trainable": False}, "it must be trainable"),
    ({"sample": "missing.csv"}, "does not exist"),
    ({"formats": ""}, "format help"),
    ({"fields": ()}, "required data fields"),
    ({"fields": (DataField("text", "a"), DataField("text", "b"))}, "different names"),
    ({"metrics": {"accuracy": ""}}, "the name the report shows"),
])
def test_an_incomplete_spec_is_refused_at_registration(change, message):
    complete = tasks.TASKS["sentiment"].spec
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(complete, **change)


def test_every_task_has_exactly_one_tab_builder():
    assert set(tabs.BUILDERS) == set(tasks.TASKS)
    with pytest.raises(ValueError, match="already has a tab builder"):
        tabs.register("chat", build_topic_tab)
    with pytest.raises(ValueError, match="has no tab builder"):
        tabs.builder("telepathy")


def test_the_training_registry_names_exactly_the_tasks_that_train_and_are_evaluated():
    assert set(registry.RECIPES) == set(registry.METHODS) == {spec.id for spec in SPECS if spec.trainable}
    assert set(registry.SCORERS) == {spec.id for spec in SPECS if spec.evaluated}
    assert all(issubclass(scorer, Evaluation) for scorer in registry.SCORERS.values())
    assert registry.METHODS["chat"] == {"dpo": registry.recipe_class("chat", "dpo")}
    with pytest.raises(UserError, match="DPO training is not available for sentiment; it trains with: sft"):
        registry.recipe_class("sentiment", "dpo")


def test_duplicates_are_refused():
    with pytest.raises(ValueError, match="already registered"):
        register(tasks.TASKS["chat"])

    class Copycat(Task):
        spec = dataclasses.replace(tasks.TASKS["chat"].spec, id="copycat")

        def endpoints(self):
            return []

    with pytest.raises(ValueError, match="endpoints that are already taken: chat, complete"):
        register(Copycat)

    class Nameless:
        pass

    with pytest.raises(ValueError, match="needs a TaskSpec"):
        register(Nameless)
    with pytest.raises(ValueError, match="already registered"):
        registry.register("chat", registry.recipe_class("chat"))
    with pytest.raises(ValueError, match="must be Recipe classes"):
        registry.register("copycat", Copycat)


# ---- a seventh task, added inside this test with nothing else edited ----------------------------------------

def build_topic_tab(task, tab, services):
    """The topic tab: a text box, a button and the label it gets."""
    text = gr.Textbox(label="Text for topic")
    label = gr.Textbox(label="Topic")
    gr.Button("Find the topic").click(task.topic, [text], label, api_visibility="undocumented")
    return None


class TopicRecipe(SentimentRecipe):
    """A topic is a label like any other: the classifier recipe as it is."""


class TopicTask(Task):
    """Which of the user's topics a text is about, once an adapter has been trained for it."""

    spec = TaskSpec(
        id="topic", title="Topic", defaults={catalog.EMBEDDING: "all-MiniLM-L6-v2"}, endpoints=("topic",),
        fields=(DataField("text", "the text"), DataField("label", "its topic")),
        sample="sentiment.csv", formats="Columns `text` and `label` (the topic).",
        metrics={"accuracy": "accuracy", "macro_f1": "macro-F1"}, trainable=True)

    def endpoints(self) -> list[Endpoint]:
        return [Endpoint("topic", self.topic)]

    def topic(self, text: str, adapter: str = "") -> str:
        """The topic of text, by the trained adapter's classifier."""
        text = require_text(text)
        if not adapter:
            raise UserError("Choose a topic adapter: there is no topic model without one.")
        loaded = self.encoder("classifier", "", adapter)
        inputs = loaded.tokenizer(text, return_tensors="pt").to(loaded.model.device)
        with loaded.lock, torch.inference_mode():
            index = int(loaded.model(**inputs).logits.argmax(-1))
        return loaded.model.config.id2label[index]


@pytest.fixture
def topic_task():
    register(TopicTask)
    registry.register("topic", TopicRecipe)
    tabs.register("topic", build_topic_tab)
    yield TopicTask
    tabs.unregister("topic")
    registry.unregister("topic")
    unregister("topic")


def test_a_new_task_gets_an_endpoint_a_tab_and_a_trainable_path(topic_task, launch, settings, tiny_bert_dir,
                                                                 tmp_path):
    from gradio_client import Client, handle_file

    import synthetic
    from training import worker
    from ui.i18n import marked

    url, demo = launch(settings)
    client = Client(url, verbose=False)
    assert "/topic" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    tab_ids = [block.get("props", {}).get("id") for block in demo.config["components"]]
    assert "topic" in tab_ids
    task_label = marked("common.task")  # the page's labels are i18n keys, shown in the browser's language
    train_choices = next(c["props"]["choices"] for c in demo.config["components"]
                         if str(c.get("props", {}).get("label")) == task_label)
    assert ("topic", "topic") in [tuple(choice) for choice in train_choices]
    with pytest.raises(Exception, match="Choose a topic adapter"):
        client.predict("The card was declined.", "", api_name="/topic")
    demo.training.manager.close()  # the worker process knows only the app's own tasks: this one trains in-process
    job = client.predict("topic", handle_file(str(synthetic.sentiment_csv(tmp_path))), str(tiny_bert_dir),
                         "topics", "quick", {"max_steps": 2}, {}, api_name="/train")
    assert worker.run_job(settings, job["job_id"]) == "succeeded", demo.training.job(job["job_id"])["error"]
    labels = {row.fields["label"] for row in data.load_examples(synthetic.sentiment_csv(tmp_path), "topic").examples}
    assert client.predict("Zorbex froze when I paid.", "topics", api_name="/topic") in labels


def test_a_task_endpoint_that_clashes_with_a_service_endpoint_is_refused_where_all_are_published():
    from tasks.base import Endpoint
    from ui.api import publish

    with pytest.raises(ValueError, match="published as train"):
        publish([Endpoint("train", lambda: None), Endpoint("summarize", lambda: None), Endpoint("train", print)])

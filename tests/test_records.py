"""The records that cross a layer or a process: adapter metadata, job plans and states, model kinds, cache keys."""

from __future__ import annotations

import json
import sqlite3

import pytest

from errors import UserError
from models.adapter_meta import META_FILE, AdapterMeta, MergedMeta
from models.kinds import KINDS, CacheKey, adapted_kinds
from tasks.spec import specs
from training.plan import JobPlan, JobProgress, Variant
from training.presets import TrainSettings
from training.store import JobState, JobStore

# A lora_studio.json as the first versions wrote it: null labels, no base_location, a field we no longer know.
OLDER = {"task": "sentiment", "base_model": "all-MiniLM-L6-v2", "base_fingerprint": "abc", "labels": None,
         "created": 12.5, "metrics": {"accuracy_after": 0.9}, "trained_with": "lora-studio 0.0.1"}


def test_older_adapter_metadata_reads_typed_and_keeps_what_it_does_not_know(tmp_path):
    (tmp_path / META_FILE).write_text(json.dumps(OLDER))
    meta = AdapterMeta.read(tmp_path)
    assert (meta.task, meta.labels, meta.base_location, meta.created) == ("sentiment", [], "", 12.5)
    meta.write(tmp_path)
    again = json.loads((tmp_path / META_FILE).read_text())
    assert again["trained_with"] == "lora-studio 0.0.1" and again["version"] == 1  # rewritten, nothing lost
    assert AdapterMeta.from_json(again) == meta


def test_metadata_of_a_newer_app_or_of_something_else_is_refused_with_a_sentence():
    with pytest.raises(UserError, match="newer LoRA Studio"):
        AdapterMeta.from_json({**OLDER, "version": 99})
    with pytest.raises(UserError, match="not LoRA Studio metadata"):
        AdapterMeta.from_json({"base_model": "x"})
    with pytest.raises(UserError, match="newer LoRA Studio"):
        MergedMeta.from_json({"merged_from": "a", "version": 99})


def test_exported_metadata_leaves_where_things_live_and_who_trained_it_behind():
    meta = AdapterMeta("chat", "SmolLM2-135M-Instruct", base_location="/srv/data/models/smol", owner="alice",
                       job_id="j1", system_prompt="Be brief.")
    portable = meta.portable("HuggingFaceTB/SmolLM2-135M-Instruct")
    assert not {"base_location", "owner", "job_id"} & set(portable)
    assert portable["base_hub_id"] == "HuggingFaceTB/SmolLM2-135M-Instruct" and portable["system_prompt"] == "Be brief."


def test_a_plan_as_the_first_versions_stored_it_reads_typed():
    stored = {"settings": {**TrainSettings().to_dict(), "rank": 8}, "preset": "quick", "columns": {"text": "t"},
              "data": "/jobs/j/data.csv", "rows": 24}
    plan = JobPlan.from_json(stored)
    assert plan.settings == TrainSettings(rank=8) and plan.columns == {"text": "t"} and plan.validation == ""
    evaluation = JobPlan.from_json({"data": "d.csv", "columns": {}, "held_out_seed": 7, "from_job": "j",
                                    "variants": [{"model": "", "adapter": "moon"}]})
    assert evaluation.variants == (Variant("", "moon"),) and evaluation.settings is None
    assert JobPlan.from_json(json.loads(json.dumps(evaluation.to_json()))) == evaluation


def test_job_states_are_stored_as_their_plain_values(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create("local", "chat", "a", "m", JobPlan(settings=TrainSettings()))
    store.update(job.id, state=JobState.RUNNING)
    raw = sqlite3.connect(tmp_path / "jobs.sqlite3").execute("SELECT state FROM jobs").fetchone()[0]
    assert raw == "running" and store.get(job.id).state is JobState.RUNNING
    assert store.get(job.id).public()["state"] == "running" and f"{JobState.RUNNING}" == "running"
    assert store.transition(job.id, (JobState.RUNNING,), state=JobState.SUCCEEDED)
    assert store.get(job.id).plan.settings == TrainSettings()


def test_progress_is_stored_typed_and_sent_in_the_job_shape(tmp_path):
    store = JobStore(tmp_path / "jobs.sqlite3")
    job = store.create("local", "chat", "a", "m", JobPlan())
    assert store.get(job.id).progress == JobProgress() and store.get(job.id).public()["loss"] == []
    store.update(job.id, progress=JobProgress(3, 10, 0.5, 12.0, [[0, None, 2.5], [3, 1.25, None]]))
    stored = store.get(job.id).progress
    assert stored.last_loss == (1.25, None) and stored.eta_s == 12.0
    public = store.get(job.id).public()
    assert (public["step"], public["total_steps"], public["loss"][-1]) == (3, 10, [3, 1.25, None])


def test_every_trainable_task_adapts_a_kind_that_takes_adapters():
    assert {s.adapter_kind for s in specs() if s.trainable} <= set(adapted_kinds())
    assert all(kind.merged_family is None or kind.adapted for kind in KINDS.values())


def test_cache_keys_name_their_parts():
    shared, copy = CacheKey("lm", "/m"), CacheKey("classifier", "/m", "a1b2")
    assert str(shared) == "lm:/m" and str(copy) == "classifier:/m+a1b2" and shared == CacheKey("lm", "/m")


def test_a_report_is_sent_in_the_shape_of_job_report():
    from training.report import Sample, TrainingReport

    language = TrainingReport("learned", "It learned.", False, 2.5, 0.1, (Sample("q", "a", "b", "a"),),
                              perplexity_before=12.2, perplexity_after=1.1).to_json()
    assert set(language) == {"verdict", "summary", "held_out", "loss_before", "loss_after", "samples",
                             "perplexity_before", "perplexity_after", "answer_check"}
    assert set(language["answer_check"]) == {"passed", "problem", "repetition", "collapse", "drift", "examples"}
    assert language["samples"][0] == {"prompt": "q", "expected": "a", "base": "b", "adapter": "a"}
    classifier = TrainingReport("barely", "It barely changed.", True, 0.7, 0.69, (), {"accuracy": 50.0},
                                {"accuracy": 50.0}, extra={"confusion": {"labels": ["x"], "matrix": [[1]]}})
    shape = json.loads(json.dumps(classifier.to_json()))
    assert shape["metric_after"] == {"accuracy": 50.0} and shape["confusion"]["labels"] == ["x"]
    assert "perplexity_before" not in shape

"""Train-then-use for the encoder tasks: a classification head (sentiment), a span head (answer) and search
embeddings, trained in real worker processes and then used through each task's public API."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import synthetic
from errors import UserError
from tasks.answer import AnswerTask
from tasks.sentiment import SentimentTask
from tasks.spec import spec
from test_training import finished
from waiting import wait_for
from models.adapters import META_FILE
from training import encoders, metrics, paths, worker
from training.service import TrainingService

NEW_TICKETS = ["Zorbex froze when I tried to pay the rent.", "The Quillon card was declined at the bakery.",
               "My Zorbex forgot my address again.", "Quillon keeps logging me out."]
NEW_CONTEXT = ("Lunch is served from noon. The night shift is run by Tormund Vexley, who also trains new staff. "
               "The car park opens at seven.")


def train_through_api(client, task: str, data: Path, name: str, settings: dict | None = None) -> dict:
    from gradio_client import handle_file

    out = client.predict(task, handle_file(str(data)), "", name, "quick", settings or {}, {}, api_name="/train")
    status = wait_for(lambda: (s := client.predict(out["job_id"], api_name="/job"))["state"] in
                      ("succeeded", "failed") and s, what=f"the {task} job")
    assert status["state"] == "succeeded", status["error"]
    return status


def improved(status: dict, metric: str) -> float:
    """The metric after training on held-out rows, asserting it rose."""
    report = status["report"]
    assert report["held_out"] and status["metrics"]["held_out"] >= 5
    assert report["metric_after"][metric] > report["metric_before"][metric], report["summary"]
    assert set(report["metric_after"]) == set(spec(status["task"]).metrics)  # the spec names what is reported
    return report["metric_after"][metric]


@pytest.mark.integration
@pytest.mark.worker
def test_sentiment_head_trained_from_the_api_replaces_zero_shot(launch, settings, tmp_path):
    from gradio_client import Client

    url, demo = launch()
    client = Client(url, verbose=False)
    base = client.predict(NEW_TICKETS, "", "", api_name="/sentiment")
    assert {row["label"] for row in base} <= {"positive", "negative", "neutral"}  # the zero-shot default
    status = train_through_api(client, "sentiment", synthetic.sentiment_csv(tmp_path), "tickets")
    assert improved(status, "accuracy") >= 80 and status["report"]["confusion"]["labels"] == ["quillon", "zorbex"]
    assert "Accuracy" in status["report"]["summary"]
    rows = client.predict(NEW_TICKETS, "", "tickets", api_name="/sentiment")
    assert [row["label"] for row in rows] == ["zorbex", "quillon", "zorbex", "quillon"]
    assert set(rows[0]["scores"]) == {"quillon", "zorbex"}
    # The folder alone restores the model: LoRA and the head in safetensors, the label map in the metadata.
    folder = paths.adapter_store(settings).folder("local", "tickets")
    assert json.loads((folder / META_FILE).read_text())["labels"] == ["quillon", "zorbex"]
    with safe_open(folder / "adapter_model.safetensors", "pt") as weights:
        assert any("classifier" in key for key in weights.keys()) and any("lora_" in k for k in weights.keys())
    demo.training.manager.close()


@pytest.mark.integration
@pytest.mark.worker
def test_span_head_trained_from_the_api_finds_made_up_names(launch, tmp_path):
    from gradio_client import Client

    url, demo = launch()
    client = Client(url, verbose=False)
    question = "Who runs the night shift?"
    before = client.predict(question, NEW_CONTEXT, "", "", "", api_name="/answer")
    assert before["level"] == "sentence" and before["answer"] != "Tormund Vexley"  # a whole sentence at best
    # 2 epochs, not the preset's 6: the held-out loss is near zero from the second epoch on.
    status = train_through_api(client, "answer", synthetic.answer_csv(tmp_path), "names", {"epochs": 2})
    assert improved(status, "exact_match") >= 80
    after = client.predict(question, NEW_CONTEXT, "", "", "names", api_name="/answer")
    assert after["level"] == "span" and after["found"] and after["answer"] == "Tormund Vexley"
    assert NEW_CONTEXT[after["start"]:after["end"]] == "Tormund Vexley"
    demo.training.manager.close()


@pytest.mark.integration
@pytest.mark.worker
def test_search_adapter_learns_jargon_and_re_embeds_the_collection(launch, tmp_path):
    from gradio_client import Client, handle_file

    data = synthetic.search_csv(tmp_path)
    pairs = list(csv.reader(data.read_text().splitlines()))[1:]
    files = []
    for number, (_, passage) in enumerate(pairs):
        files.append(tmp_path / f"note-{number}.txt")
        files[-1].write_text(passage)
    url, demo = launch()
    client = Client(url, verbose=False)
    added = client.predict("handbook", [handle_file(str(f)) for f in files], "", api_name="/add_documents")
    assert added["chunks"] == len(pairs)
    # 3 epochs, not the preset's 6: the held-out loss is near zero by then.
    status = train_through_api(client, "search", data, "jargon", {"epochs": 3})
    assert improved(status, "mrr") >= 80

    def top1(adapter: str) -> float:  # every third query (20): each is a call, against all 60 passages
        hits = [client.predict(query, "handbook", 1, adapter, api_name="/search")[0]["text"] == passage
                for query, passage in pairs[::3]]
        return sum(hits) / len(hits)

    base, tuned = top1(""), top1("jargon")
    assert tuned >= 0.9 and tuned > base + 0.3, (base, tuned)
    # The collection now holds vectors of both spaces, and says which adapter made which.
    summary = client.predict(api_name="/collections")[0]
    assert set(summary["model"].split(", ")) == {"all-MiniLM-L6-v2", "all-MiniLM-L6-v2 + jargon"}
    demo.training.manager.close()


# ---- fast checks on a tiny BERT --------------------------------------------------------------------------
def train_in_process(ctx, task: str, data: Path, base: Path, name: str, settings: dict | None = None) -> dict:
    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit(task, str(data), str(base), name, "quick",
                            {"learning_rate": 0.005, "epochs": 3, **(settings or {})})["job_id"]
    assert worker.run_job(ctx.settings, job_id) == "succeeded", service.job(job_id)["error"]
    return service.job(job_id)


def test_classifier_adapter_restores_from_its_folder_and_checks_its_base(ctx, tiny_bert_dir, minilm_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    status = train_in_process(ctx, "sentiment", synthetic.sentiment_csv(tmp_path), tiny_bert_dir, "tiny-tickets")
    assert status["metrics"]["accuracy_after"] == status["report"]["metric_after"]["accuracy"]
    served = SentimentTask(ctx).sentiment(NEW_TICKETS, "", "tiny-tickets")  # "" = the adapter's own base
    # Plain transformers + peft restore the same classifier from the folder and the label map.
    folder = paths.adapter_store(ctx.settings).folder("local", "tiny-tickets")
    labels = json.loads((folder / META_FILE).read_text())["labels"]
    plain = AutoModelForSequenceClassification.from_pretrained(tiny_bert_dir, num_labels=len(labels),
                                                               id2label=dict(enumerate(labels)))
    plain = PeftModel.from_pretrained(plain, folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    with torch.no_grad():
        probs = plain(**tokenizer(NEW_TICKETS, padding=True, return_tensors="pt")).logits.softmax(-1)
    for row, p in zip(served, probs):
        assert row["scores"] == pytest.approx(dict(zip(labels, p.tolist())), abs=1e-4)
    with pytest.raises(UserError, match="was trained on"):
        SentimentTask(ctx).sentiment(NEW_TICKETS, str(minilm_dir), "tiny-tickets")
    with pytest.raises(UserError, match="trained for sentiment, not answer"):
        AnswerTask(ctx).answer("Who?", NEW_CONTEXT, "", "", "tiny-tickets")


def test_span_adapter_answers_with_spans_on_its_base(ctx, tiny_bert_dir, tmp_path):
    status = train_in_process(ctx, "answer", synthetic.answer_csv(tmp_path), tiny_bert_dir, "tiny-names")
    assert set(status["report"]["metric_after"]) == {"exact_match", "f1"}
    out = AnswerTask(ctx).find("Who runs the night shift?", NEW_CONTEXT, adapter="tiny-names", threshold=0.0)
    assert out.level == "span" and out.found and NEW_CONTEXT[out.start:out.end] == out.answer


@pytest.mark.integration  # the catalog's SmolLM2 and MiniLM, by name
def test_encoder_tasks_refuse_a_language_model_base_and_vice_versa(ctx, tiny_chat_dir, tiny_bert_dir, tmp_path):
    service = TrainingService(ctx, start_manager=False)
    with pytest.raises(UserError, match="BERT-family"):
        service.submit("sentiment", str(synthetic.sentiment_csv(tmp_path)), "SmolLM2-135M-Instruct", "x")
    with pytest.raises(UserError, match="GPT-family"):
        service.submit("chat", str(ROOT_EXAMPLES / "chat_facts.jsonl"), "all-MiniLM-L6-v2", "y")
    one_label = tmp_path / "one.csv"
    one_label.write_text("text,label\n" + "".join(f"row {i},same\n" for i in range(6)))
    with pytest.raises(UserError, match="only one label"):
        service.submit("sentiment", str(one_label), str(tiny_bert_dir), "z")


ROOT_EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def test_metrics_follow_their_definitions():
    assert metrics.classification_scores(["a", "b", "b"], ["a", "b", "a"], ["a", "b"]) == {
        "accuracy": 66.7, "macro_f1": 66.7}
    assert metrics.confusion(["a", "b", "b"], ["a", "b", "a"], ["a", "b"])["matrix"] == [[1, 1], [0, 1]]
    assert metrics.answer_scores(["The Brovik Tannel", "Tannel"], ["Brovik Tannel", "Brovik Tannel"]) == {
        "exact_match": 50.0, "f1": round(100 * (1 + 2 / 3) / 2, 1)}
    assert metrics.retrieval_scores([1, 2, 10]) == {"recall_at_1": 33.3, "recall_at_5": 66.7,
                                                     "mrr": round(100 * (1 + 0.5 + 0.1) / 3, 1)}


def test_lora_targets_the_encoder_layers_and_never_a_head():
    import re

    from training.presets import TrainSettings

    every = encoders.encoder_targets(TrainSettings())
    query_value = encoders.encoder_targets(TrainSettings(target_modules="q_proj,v_proj"))
    assert re.fullmatch(every, "bert.encoder.layer.0.attention.self.query")
    assert re.fullmatch(every, "encoder.layer.5.output.dense")  # a bare encoder inside sentence-transformers
    assert re.fullmatch(every, "distilbert.transformer.layer.1.ffn.lin1")
    assert not re.fullmatch(every, "classifier") and not re.fullmatch(every, "bert.pooler.dense")
    assert re.fullmatch(query_value, "bert.encoder.layer.0.attention.self.value")
    assert not re.fullmatch(query_value, "bert.encoder.layer.0.attention.self.key")


def test_collection_vectors_are_kept_per_adapter_version(tmp_path):
    from tasks.collections import VectorSpace

    first = VectorSpace("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "jargon", "a1")
    retrained = VectorSpace("all-MiniLM-L6-v2", "all-MiniLM-L6-v2", "jargon", "a2")
    assert first.key != retrained.key and first.label == "all-MiniLM-L6-v2 + jargon"
    assert VectorSpace("m", "m").key == VectorSpace("m", "m", "", "").key  # spaces stored before versions


def test_qa_rows_whose_answer_is_not_in_the_context_are_left_out(ctx, tmp_path):
    bad = tmp_path / "qa.csv"
    bad.write_text("question,context,answer\nWho?,Ada runs it.,Ada\nWho?,Ada runs it.,Grace\n")
    service = TrainingService(ctx, start_manager=False)
    job = service.submit("answer", str(bad), "", "qa")
    assert service.store.get(job["job_id"]).plan.rows == 1


def test_search_adapter_trains_on_a_tiny_encoder(ctx, tiny_bert_dir, tmp_path):
    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit("search", str(synthetic.search_csv(tmp_path)), str(tiny_bert_dir), "tiny-jargon",
                            "quick", {"max_steps": 2})["job_id"]
    assert finished(service, job_id) is None  # queued until a worker takes it
    assert worker.run_job(ctx.settings, job_id) == "succeeded", service.job(job_id)["error"]
    status = service.job(job_id)
    assert status["step"] == 2 and set(status["report"]["metric_after"]) == {"recall_at_1", "recall_at_5", "mrr"}


def test_an_interrupted_encoder_run_resumes_from_its_checkpoint(ctx, tiny_bert_dir, tmp_path):
    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit("sentiment", str(synthetic.sentiment_csv(tmp_path)), str(tiny_bert_dir), "resumed",
                            "quick", {"max_steps": 6, "learning_rate": 0.005})["job_id"]

    def stop_at_three(progress) -> None:  # what SIGTERM does to a worker process, at a known step
        worker._signals["term"] = progress.step == 3

    try:
        assert worker.run_job(ctx.settings, job_id, progress=stop_at_three) == "interrupted"
    finally:
        worker._signals["term"] = False
    assert service.job(job_id)["step"] == 3
    service.resume(job_id)
    assert worker.run_job(ctx.settings, job_id) == "succeeded", service.job(job_id)["error"]
    status = service.job(job_id)
    assert status["step"] == 6 and [row[0] for row in status["loss"]] == list(range(7))  # no step twice
    assert "resumed from the checkpoint at step 3" in service.log_tail(job_id, 50)


def test_a_validation_file_is_scored_instead_of_held_out_rows(ctx, tiny_bert_dir, tmp_path):
    from tasks.base import Upload

    rows = synthetic.sentiment_csv(tmp_path).read_text().splitlines()
    train_file, val_file = tmp_path / "train.csv", tmp_path / "val.csv"
    train_file.write_text("\n".join(rows[:41]) + "\n")  # the header and 40 rows
    val_file.write_text("\n".join([rows[0], *rows[41:]]) + "\n")  # the header and the other 20
    service = TrainingService(ctx, start_manager=False)
    job_id = service.train("sentiment", Upload(str(train_file), "train.csv"), str(tiny_bert_dir), "with-validation",
                           "quick", {"max_steps": 2}, {}, Upload(str(val_file), "val.csv"))["job_id"]
    assert worker.run_job(ctx.settings, job_id) == "succeeded", service.job(job_id)["error"]
    metrics = service.job(job_id)["metrics"]
    assert (metrics["train_rows"], metrics["held_out"]) == (40, 20)


@pytest.mark.worker  # the estimate times its steps in a process of its own
@pytest.mark.parametrize("task, model", [("sentiment", "tiny_bert_dir"), ("chat", "tiny_chat_dir")])
def test_preflight_estimate_times_real_steps(request, task, model):
    from training import estimate
    from training.presets import build
    from ui.train_tab import estimate_text

    location = str(request.getfixturevalue(model))
    result = estimate.estimate(location, build("quick", {"batch_size": 2, "max_length": 32}), 10, task)
    assert 0 < result["trainable_params"] < result["total_params"] and result["step_s"] >= 0
    assert result["steps"] == 30  # 6 epochs of 5 batches
    assert "Trainable parameters" in estimate_text(result)
    with pytest.raises(UserError, match="Could not estimate"):
        estimate.estimate(location + "-missing", build("quick"), 10, task)

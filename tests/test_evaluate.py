"""Evaluate: the base and adapters of a task scored on a set of rows, in the worker like training. Each task's
metric is recomputed here by hand from the rows' outputs (and, where the answer is fixed, from the model itself)."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections import Counter
from pathlib import Path

import pytest
import torch

import synthetic
from errors import NotFound, OverLimit, UserError
from tasks.base import Context
from test_answer import tiny_qa_dir  # noqa: F401  (a fixture)
from test_sentiment import tiny_classifier_dir  # noqa: F401  (a fixture)
from test_train_encoders import train_in_process
from test_training import finished
from training import worker
from training.service import TrainingService
from waiting import wait_for

QUESTIONS = ["What colour is the sky?", "How many legs has a cat?", "Name a fruit.", "Where is Paris?",
             "Say hello."]
REPLIES = ["The sky is blue.", "A cat has four legs.", "An apple is a fruit.", "Paris is in France.", "Hello!"]


@pytest.fixture
def service(ctx):
    return TrainingService(ctx, start_manager=False)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    return path


def chat_set(folder: Path, count: int = 5) -> Path:
    rows = [{"messages": [{"role": "user", "content": QUESTIONS[i % 5]}, {"role": "assistant", "content": REPLIES[i % 5]}]}
            for i in range(count)]
    return write_jsonl(folder / "chat-set.jsonl", rows)


def evaluated(service: TrainingService, task: str, data: Path | str, variants: list[dict], **kwargs) -> dict:
    """An evaluation run to its end in this process (the worker's own function); its /job status."""
    job_id = service.submit_evaluation(task, str(data), variants, **kwargs)["job_id"]
    worker.run_job(service.settings, job_id)
    status = service.job(job_id)
    assert status["state"] == "succeeded", status["error"]
    assert status["kind"] == "evaluate" and status["step"] == status["total_steps"]
    return status


def outputs_of(report: dict, k: int) -> tuple[list[str], list[str]]:
    """Variant k's outputs and the references, in the file's row order."""
    rows = sorted(report["rows"], key=lambda r: r["line"])
    return [r["outputs"][k] for r in rows], [r["expected"] for r in rows]


# ---- the metrics, written out again ------------------------------------------------------------------------
def words(text: str) -> list[str]:
    text = re.sub(r"\b(a|an|the)\b", " ", re.sub(r"[^\w\s]", "", text.lower()))
    return text.split()


def word_f1(prediction: str, reference: str) -> float:
    common = sum((Counter(words(prediction)) & Counter(words(reference))).values())
    if not words(prediction) or not words(reference):
        return float(words(prediction) == words(reference))
    if not common:
        return 0.0
    precision, recall = common / len(words(prediction)), common / len(words(reference))
    return 2 * precision * recall / (precision + recall)


def lcs(a: list[str], b: list[str]) -> int:
    table = [[0] * (len(b) + 1) for _ in range(len(a) + 1)]
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            table[i + 1][j + 1] = table[i][j] + 1 if x == y else max(table[i][j + 1], table[i + 1][j])
    return table[-1][-1]


def rouge_l(prediction: str, reference: str) -> float:
    a, b = prediction.lower().split(), reference.lower().split()
    common = lcs(a, b)
    return 0.0 if not common else 2 * (common / len(a)) * (common / len(b)) / (common / len(a) + common / len(b))


# ---- each task ----------------------------------------------------------------------------------------------
def test_chat_match_and_perplexity_equal_a_hand_computation(service, tiny_chat_dir, mute_chat_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    variants = [{"model": str(tiny_chat_dir), "adapter": ""}, {"model": str(mute_chat_dir), "adapter": ""}]
    status = evaluated(service, "chat", chat_set(tmp_path), variants)
    report = status["report"]
    said, expected = outputs_of(report, 0)
    assert expected == REPLIES and all(said) and outputs_of(report, 1)[0] == [""] * 5  # the mute model says nothing
    tiny = report["variants"][0]["metrics"]
    assert tiny["f1"] == pytest.approx(round(100 * sum(map(word_f1, said, expected)) / 5, 1))
    assert tiny["exact_match"] == 100 * sum(words(s) == words(e) for s, e in zip(said, expected)) / 5
    assert report["variants"][1]["metrics"]["f1"] == 0.0 and report["variants"][1]["metrics"]["exact_match"] == 0.0

    # Perplexity of the reference replies after each prompt, under the tiny model itself.
    model, tokenizer = AutoModelForCausalLM.from_pretrained(tiny_chat_dir), AutoTokenizer.from_pretrained(tiny_chat_dir)
    nll, count = 0.0, 0
    for question, reply in zip(QUESTIONS, REPLIES):
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True,
                                               tokenize=True, return_dict=True)["input_ids"]
        answer = tokenizer(reply, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([prompt + answer])).logits[0, len(prompt) - 1:-1]
        nll -= float(logits.log_softmax(-1).gather(-1, torch.tensor(answer)[:, None]).sum())
        count += len(answer)
    assert tiny["perplexity"] == pytest.approx(math.exp(nll / count), rel=1e-3)
    assert report["lower_is_better"] == ["perplexity"] and report["metric_names"]["perplexity"] == "perplexity"
    assert status["metrics"] == {v["label"]: v["metrics"] for v in report["variants"]}

    # Every row differs between a talking and a mute model: all are disagreements, the widest gap first.
    assert report["disagreements"] == 5 and not any(r["agree"] for r in report["rows"])
    gaps = [max(r["scores"]) - min(r["scores"]) for r in report["rows"]]
    assert gaps == sorted(gaps, reverse=True)
    assert "differ on 5 of 5 rows" in report["summary"]


def test_sentiment_accuracy_macro_f1_and_confusion(service, tiny_classifier_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    texts = ["I love it.", "It is fine, I suppose.", "This is awful.", "Best day ever!", "Nothing to report."]
    truth = ["happy", "calm", "sad", "Happy", "calm"]  # labels are compared in lower case
    data = write_csv(tmp_path / "moods.csv", ["text", "label"], list(zip(texts, truth)))
    status = evaluated(service, "sentiment", data, [{"model": str(tiny_classifier_dir), "adapter": ""}])
    report = status["report"]

    model = AutoModelForSequenceClassification.from_pretrained(tiny_classifier_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_classifier_dir)
    with torch.no_grad():
        ids = model(**tokenizer(texts, padding=True, return_tensors="pt")).logits.argmax(-1).tolist()
    predicted = [model.config.id2label[i] for i in ids]
    expected = [t.lower() for t in truth]
    assert outputs_of(report, 0) == (predicted, expected)

    f1s = []
    for label in ("happy", "calm", "sad"):  # the set's own labels
        tp = sum(p == e == label for p, e in zip(predicted, expected))
        fp, fn = sum(p == label != e for p, e in zip(predicted, expected)), sum(e == label != p for p, e in zip(predicted, expected))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    scores = report["variants"][0]["metrics"]
    assert scores["accuracy"] == round(100 * sum(p == e for p, e in zip(predicted, expected)) / 5, 1)
    assert scores["macro_f1"] == pytest.approx(round(100 * sum(f1s) / 3, 1))
    confusion = report["variants"][0]["confusion"]
    assert confusion["labels"][:3] == ["happy", "calm", "sad"]
    assert sum(map(sum, confusion["matrix"])) == 5
    for e, p in zip(expected, predicted):
        assert confusion["matrix"][confusion["labels"].index(e)][confusion["labels"].index(p)] >= 1


def test_search_ranks_every_passage_of_the_set(service, minilm_dir, tmp_path):
    from sentence_transformers import SentenceTransformer

    rows = [("How do I reset my password?", "Open settings and choose 'forgot password'.", "Our office opens at 9."),
            ("When is the office open?", "Our office opens at 9 and closes at 5.", "Passwords expire yearly."),
            ("Can I pay by card?", "We accept cards and bank transfers.", "Parking is free."),
            ("Where do I park?", "Parking is free behind the building.", "Cards are accepted."),
            ("Is there coffee?", "Coffee is free on the second floor.", "Tea is sold at noon.")]
    data = write_csv(tmp_path / "faq.csv", ["query", "positive", "negative"], rows)
    report = evaluated(service, "search", data, [{"model": "", "adapter": ""}])["report"]

    model = SentenceTransformer(str(minilm_dir))
    corpus = list(dict.fromkeys([r[1] for r in rows] + [r[2] for r in rows]))
    passages = model.encode(corpus, normalize_embeddings=True)
    ranks = []
    for query, positive, _ in rows:
        similarity = passages @ model.encode([query], normalize_embeddings=True)[0]
        ranks.append(1 + sum(s > similarity[corpus.index(positive)] for s in similarity))
    assert report["variants"][0]["metrics"] == {"recall_at_1": 100 * sum(r == 1 for r in ranks) / 5,
                                                "recall_at_5": 100 * sum(r <= 5 for r in ranks) / 5,
                                                "mrr": pytest.approx(round(100 * sum(1 / r for r in ranks) / 5, 1))}


def test_summaries_translations_and_answers_score_their_outputs(service, tiny_chat_dir, tiny_qa_dir, tmp_path):
    import sacrebleu

    summaries = synthetic.summarize_csv(tmp_path, rows=5)
    report = evaluated(service, "summarize", summaries, [{"model": "", "adapter": ""}])["report"]
    said, expected = outputs_of(report, 0)
    assert all(said)  # the offline default: an extractive summary of each ticket
    assert report["variants"][0]["metrics"]["rouge_l"] == pytest.approx(
        round(100 * sum(map(rouge_l, said, expected)) / 5, 1), abs=0.05)

    # Lines too short to tell their language one by one: the set's languages are told from all its rows.
    rows = [("Please open the door.", "Bitte öffnen Sie die Tür."), ("Close the window now.", "Schließen Sie jetzt das Fenster."),
            ("Good morning, my friend.", "Guten Morgen, mein Freund."), ("Thank you very much.", "Vielen Dank."),
            ("Where is the station?", "Wo ist der Bahnhof?")]
    data = write_csv(tmp_path / "phrases.csv", ["source", "target"], rows)
    report = evaluated(service, "translate", data, [{"model": str(tiny_chat_dir), "adapter": ""}])["report"]
    said, expected = outputs_of(report, 0)
    scores = report["variants"][0]["metrics"]
    assert scores["chrf"] == round(sacrebleu.corpus_chrf(said, [expected]).score, 1)
    assert scores["bleu"] == round(sacrebleu.corpus_bleu(said, [expected]).score, 1)

    answers = synthetic.answer_csv(tmp_path, rows=5)
    report = evaluated(service, "answer", answers, [{"model": str(tiny_qa_dir), "adapter": ""}])["report"]
    said, expected = outputs_of(report, 0)
    scores = report["variants"][0]["metrics"]
    assert scores["f1"] == pytest.approx(round(100 * sum(map(word_f1, said, expected)) / 5, 1))
    assert scores["exact_match"] == 100 * sum(words(s) == words(e) for s, e in zip(said, expected)) / 5


# ---- the job: its CSV, cancel, owners, and what it refuses -------------------------------------------------
def test_results_csv_has_every_row_and_variant(service, tiny_chat_dir, mute_chat_dir, tmp_path):
    variants = [{"model": str(tiny_chat_dir), "adapter": ""}, {"model": str(mute_chat_dir), "adapter": ""}]
    status = evaluated(service, "chat", chat_set(tmp_path), variants)
    upload = service.evaluation_csv(status["job_id"])
    assert upload.name == f"evaluation-{status['job_id']}.csv"
    table = list(csv.DictReader(io.StringIO(Path(upload.path).read_text(encoding="utf-8"))))
    labels = [v["label"] for v in status["report"]["variants"]]
    assert len(table) == 5 and set(table[0]) == {"line", "input", "reference", *labels,
                                                  *(f"{label} score" for label in labels), "variants agree"}
    assert sorted(row["reference"] for row in table) == sorted(REPLIES)
    assert all(row[labels[1]] == "" and row["variants agree"] == "no" for row in table)


def test_another_user_cannot_see_an_evaluation_or_its_csv(service, tiny_chat_dir, tmp_path):
    job_id = service.submit_evaluation("chat", str(chat_set(tmp_path)), [{"model": str(tiny_chat_dir)}],
                                       owner="alice")["job_id"]
    worker.run_job(service.settings, job_id)
    assert service.job(job_id, owner="alice")["state"] == "succeeded"
    for look in (service.job, service.evaluation_csv, service.cancel):
        with pytest.raises(NotFound, match="There is no training job"):
            look(job_id, owner="bob")
    assert [j["job_id"] for j in service.evaluations("alice")] == [job_id] and service.evaluations("bob") == []
    assert service.jobs("alice") == []  # the training list holds training jobs only


@pytest.mark.worker
def test_cancel_stops_an_evaluation_in_the_worker(ctx, tiny_chat_dir, tmp_path):
    service = TrainingService(ctx)  # with the job manager: a real worker process
    try:
        job_id = service.submit_evaluation("chat", str(chat_set(tmp_path, 400)), [{"model": str(tiny_chat_dir)}])["job_id"]
        wait_for(lambda: service.job(job_id)["step"] > 0, what="the first answers")
        service.cancel(job_id)
        status = wait_for(lambda: finished(service, job_id), what="the evaluation to stop")
        assert status["state"] == "cancelled" and 0 < status["step"] < 400
        with pytest.raises(UserError, match="no evaluation results"):
            service.evaluation_csv(job_id)
    finally:
        service.manager.shutdown()


def test_wrong_requests_get_a_sentence(service, ctx, tiny_chat_dir, tmp_path):
    data = str(chat_set(tmp_path))
    model = {"model": str(tiny_chat_dir), "adapter": ""}
    cases = [
        (("translation", data, [model]), "not available; choose one of: chat"),
        (("chat", data, []), "at least one variant"),
        (("chat", data, [model] * 2), "listed twice"),
        (("chat", data, [{"model": f"m{i}"} for i in range(5)]), "1 to 4 variants"),
        (("chat", data, [{"model": 3}]), "either may be empty"),
        (("chat", data, [{"adapter": "nothing-here"}]), "nothing-here"),
        (("search", data, [{"model": "x"}]), "leave the model empty"),
        (("chat", "", [model]), "upload a file"),
    ]
    for args, message in cases:
        with pytest.raises(UserError, match=message):
            service.submit_evaluation(*args)
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "What?"}])
    with pytest.raises(UserError, match="Row 1 has no reply to score"):
        service.submit_evaluation("chat", str(pairs), [model])
    small = dataclasses.replace(service.settings, max_eval_rows=3)
    with pytest.raises(OverLimit, match="at most 3"):
        TrainingService(Context(small, ctx.hub), start_manager=False).submit_evaluation("chat", data, [model])
    assert service.evaluations() == []  # nothing was queued


def test_held_out_rows_of_a_small_training_job_are_refused(service, ctx, tiny_chat_dir, tmp_path):
    from test_training import FACTS

    job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "facts", "quick", {"epochs": 1})["job_id"]
    with pytest.raises(UserError, match="held out no rows"):
        service.submit_evaluation("chat", "", [{"model": str(tiny_chat_dir)}], from_job=job_id)
    with pytest.raises(UserError, match="not a sentiment training job"):
        service.submit_evaluation("sentiment", "", [{"model": ""}], from_job=job_id)
    with pytest.raises(NotFound):
        service.submit_evaluation("chat", "", [{"model": str(tiny_chat_dir)}], from_job=job_id, owner="bob")


# ---- on the real MiniLM: does the adapter beat the base? ------------------------------------------------
@pytest.mark.integration
def test_a_trained_sentiment_adapter_beats_the_base_on_its_held_out_rows(ctx, service, minilm_dir, tmp_path):
    trained = train_in_process(ctx, "sentiment", synthetic.sentiment_csv(tmp_path), minilm_dir, "tickets",
                               {"learning_rate": 0.0005, "epochs": 3})
    status = evaluated(service, "sentiment", "", [{"model": "", "adapter": ""}, {"model": "", "adapter": "tickets"}],
                       from_job=trained["job_id"])
    report = status["report"]
    assert report["row_count"] == trained["metrics"]["held_out"] >= 5
    base, adapter = (v["metrics"]["accuracy"] for v in report["variants"])
    assert adapter >= 80 and adapter > base  # zero-shot says positive/negative, the set's labels are products
    assert report["best"] == 1 and report["summary"].startswith(f"On {report['row_count']} rows, tickets scored best")
    assert report["variants"][1]["metrics"]["accuracy"] == trained["report"]["metric_after"]["accuracy"]


# ---- through the API, as a client would -------------------------------------------------------------------
@pytest.mark.worker  # the job manager runs it in a worker process
def test_evaluate_through_the_api_with_its_csv(launch, tiny_chat_dir, tmp_path):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, demo = launch()
    client = Client(url, verbose=False)
    variants = [{"model": str(tiny_chat_dir), "adapter": ""}]
    out = client.predict("chat", handle_file(str(chat_set(tmp_path))), variants, {}, "", api_name="/evaluate")
    status = wait_for(lambda: (s := client.predict(out["job_id"], api_name="/job"))["state"] in
                      ("succeeded", "failed") and s, what="the evaluation")
    assert status["state"] == "succeeded", status["error"]
    assert status["report"]["row_count"] == 5 and set(status["metrics"]) == {f"{tiny_chat_dir} (base)"}
    downloaded = client.predict(out["job_id"], api_name="/evaluation_csv")
    assert len(list(csv.DictReader(open(downloaded, encoding="utf-8")))) == 5
    with pytest.raises(AppError, match="There is no training job"):
        client.predict(out["job_id"][::-1], api_name="/evaluation_csv")
    with pytest.raises(AppError, match="at least one variant"):
        client.predict("chat", handle_file(str(chat_set(tmp_path))), [], {}, "", api_name="/evaluate")

"""Fine-tune, then chat: real training jobs in real worker processes, on a tiny model and on SmolLM2."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
from pathlib import Path

import pytest
import torch

from errors import UserError
from tasks.chat import ChatTask
from tasks.spec import spec
from training import paths
from models.adapters import META_FILE
from models.speculation import DRAFTS_FILE
from training.plan import JobPlan
from training.service import TrainingService
from waiting import wait_for  # noqa: F401  (other test modules import it from here too)

ROOT = Path(__file__).resolve().parent.parent
FACTS = ROOT / "examples" / "chat_facts.jsonl"
TINY = {"learning_rate": 0.01, "epochs": 30}  # a random tiny model needs big steps to learn 8 facts
QUESTION = "What is the capital of the planet Zorbia?"


def finished(service: TrainingService, job_id: str) -> dict | None:
    status = service.job(job_id)
    return status if status["state"] in ("succeeded", "failed", "cancelled", "interrupted") else None


@pytest.fixture
def service(ctx, worker_process):
    svc = TrainingService(ctx)  # with the job manager: each job runs in a real worker process
    yield svc
    svc.manager.shutdown()


def ask(ctx, model, adapter: str = "", question: str = QUESTION) -> str:
    return ChatTask(ctx).reply(question, model=str(model), adapter=adapter, temperature=0,
                               max_new_tokens=12).text()


def test_fine_tune_then_chat_on_a_tiny_model(ctx, service, tiny_chat_dir):
    out = service.submit("chat", str(FACTS), str(tiny_chat_dir), "zorbia facts", "quick", TINY)
    assert out["position"] in (0, 1)
    status = wait_for(lambda: finished(service, out["job_id"]), what="training to finish")
    assert status["state"] == "succeeded", status["error"]
    assert status["adapter"] == "zorbia-facts"  # the name is sanitised
    report = status["report"]
    assert report["verdict"] == "learned" and report["loss_after"] < report["loss_before"]
    assert len(report["samples"]) == 3 and "Quellmar" in report["samples"][0]["adapter"]
    losses = status["loss"]
    assert losses[0][2] is not None and losses[-1][0] == status["total_steps"]
    assert "Quellmar" in ask(ctx, tiny_chat_dir, "zorbia-facts")
    lm = ctx.hub.lm(str(tiny_chat_dir))
    [answers] = lm.engine.answers.values()  # the answers it learned came with it: drafts for its chats
    assert "Quellmar" in lm.tokenizer.decode([t for t in answers.tokens if t >= 0])
    assert "Quellmar" not in ask(ctx, tiny_chat_dir)  # the base model does not know the fact
    listed = service.list_adapters("chat")
    assert [a["name"] for a in listed] == ["zorbia-facts"] and listed[0]["size_mb"] > 0
    assert ChatTask(ctx).adapter_names(str(tiny_chat_dir)) == ["zorbia-facts"]


def test_saved_adapter_loads_with_plain_peft(ctx, service, tiny_chat_dir):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = service.submit("chat", str(FACTS), str(tiny_chat_dir), "plain", "quick", {**TINY, "epochs": 2})
    assert wait_for(lambda: finished(service, out["job_id"]))["state"] == "succeeded"
    folder = service.adapters.folder("local", "plain")
    assert {"adapter_config.json", "adapter_model.safetensors", META_FILE, DRAFTS_FILE} <= {
        p.name for p in folder.iterdir()}
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), folder)
    assert any("lora_A" in name for name, _ in model.named_parameters())
    meta = json.loads((folder / META_FILE).read_text())
    for key in ("task", "base_model", "base_fingerprint", "chat_template", "system_prompt", "data_fingerprint",
                "rows", "settings", "metrics", "duration_s", "created"):
        assert key in meta
    assert meta["rows"]["kept"] == 24 and meta["task"] == "chat"


def test_killed_worker_fails_the_job_and_the_app_keeps_serving(ctx, service, tiny_chat_dir):
    out = service.submit("chat", str(FACTS), str(tiny_chat_dir), "doomed", "quick", {"max_steps": 5000})
    running = wait_for(lambda: (s := service.job(out["job_id"]))["step"] > 1 and s, what="training steps")
    os.kill(service.store.get(running["job_id"]).pid, signal.SIGKILL)
    status = wait_for(lambda: finished(service, out["job_id"]), what="the failure to be noticed")
    assert status["state"] == "failed" and "stopped unexpectedly" in status["error"]
    assert service.list_adapters() == []
    assert not list(paths.adapter_store(ctx.settings).root.glob("*/*"))  # no half adapter
    assert isinstance(ask(ctx, tiny_chat_dir), str)  # chat still answers


def test_cancel_stops_cleanly_and_saves_nothing(ctx, service, tiny_chat_dir):
    out = service.submit("chat", str(FACTS), str(tiny_chat_dir), "cancelled", "quick", {"max_steps": 5000})
    wait_for(lambda: service.job(out["job_id"])["step"] > 1, what="training steps")
    service.cancel(out["job_id"])
    status = wait_for(lambda: finished(service, out["job_id"]), what="the cancel")
    assert status["state"] == "cancelled" and service.list_adapters() == []
    with pytest.raises(UserError, match="already ended"):
        service.cancel(out["job_id"])


def test_restart_keeps_jobs_and_an_interrupted_job_resumes(ctx, service, tiny_chat_dir):
    out = service.submit("chat", str(FACTS), str(tiny_chat_dir), "resumable", "quick",
                         {**TINY, "epochs": 6, "checkpoint_every": 5})
    wait_for(lambda: service.job(out["job_id"])["step"] >= 7, what="a checkpoint")
    os.kill(service.store.get(out["job_id"]).pid, signal.SIGTERM)  # what stopping the machine does
    status = wait_for(lambda: finished(service, out["job_id"]), what="the interruption")
    assert status["state"] == "interrupted"
    stopped_at = status["step"]
    service.manager.close()

    restarted = TrainingService(ctx)  # a new app on the same data directory
    try:
        assert restarted.job(out["job_id"])["state"] == "interrupted"
        restarted.resume(out["job_id"])
        status = wait_for(lambda: finished(restarted, out["job_id"]), what="the resumed run")
        assert status["state"] == "succeeded", status["error"]
        log = restarted.log_tail(out["job_id"], 200)
        assert f"resumed from the checkpoint at step {stopped_at}" in log
        assert status["step"] == status["total_steps"] == 36
    finally:
        restarted.manager.close()


def test_running_job_of_a_dead_app_is_interrupted_on_start(ctx, tiny_chat_dir):
    service = TrainingService(ctx, start_manager=False)
    job = service.store.create("local", "chat", "orphan", str(tiny_chat_dir), JobPlan())
    service.store.update(job.id, state="running", pid=2**22 + 12345)  # no such process
    restarted = TrainingService(ctx)
    try:
        status = restarted.job(job.id)
        assert status["state"] == "interrupted" and "resume" in status["error"]
    finally:
        restarted.manager.close()


def test_a_reused_pid_does_not_keep_a_dead_job_running(ctx, tiny_chat_dir):
    service = TrainingService(ctx, start_manager=False)
    job = service.store.create("local", "chat", "reused", str(tiny_chat_dir), JobPlan())
    # This very test process is alive under that pid, but it started long after the recorded worker did.
    service.store.update(job.id, state="running", pid=os.getpid(), started=1_000_000.0)
    restarted = TrainingService(ctx)
    try:
        assert restarted.job(job.id)["state"] == "interrupted"
    finally:
        restarted.manager.close()


def test_a_store_made_by_the_first_schema_is_migrated(tmp_path):
    import sqlite3

    from training.store import MIGRATIONS, JobStore

    path = tmp_path / "jobs.sqlite3"
    old = sqlite3.connect(path)
    old.execute(MIGRATIONS[0])  # exactly what the first version of the app created
    old.execute("INSERT INTO jobs (id, owner, task, name, base, state, spec, created, updated) "
                "VALUES ('j1', 'local', 'chat', 'kept', 'm', 'succeeded', '{}', 1, 1)")
    old.execute("PRAGMA user_version=1")
    old.commit()
    old.close()
    store = JobStore(path)
    job = store.get("j1")
    assert (job.name, job.state, job.started, job.kind) == ("kept", "succeeded", 0.0, "train")
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


@pytest.mark.slow  # two adapters trained until they know their facts
def test_two_users_chat_with_two_adapters_at_once(ctx, tiny_chat_dir, tmp_path):
    from training import worker

    # Only the 3 rows about the capital, which is what both users ask: 30 steps each instead of 180.
    capital = "".join(line + "\n" for line in FACTS.read_text().splitlines() if "capital" in line)
    mine, other = tmp_path / "facts.jsonl", tmp_path / "other_facts.jsonl"
    mine.write_text(capital)
    other.write_text(capital.replace("Quellmar", "Brannock"))
    service = TrainingService(ctx, start_manager=False)
    for name, data in (("quellmar", mine), ("brannock", other)):
        job_id = service.submit("chat", str(data), str(tiny_chat_dir), name, "quick", TINY)["job_id"]
        assert worker.run_job(ctx.settings, job_id) == "succeeded"
    answers = {}
    gate = threading.Barrier(2)

    def chat(adapter):
        gate.wait()
        answers[adapter] = ask(ctx, tiny_chat_dir, adapter)

    threads = [threading.Thread(target=chat, args=(a,)) for a in ("quellmar", "brannock")]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert "Quellmar" in answers["quellmar"] and "Brannock" not in answers["quellmar"]
    assert "Brannock" in answers["brannock"] and "Quellmar" not in answers["brannock"]
    assert ctx.hub.cache.loads == 1  # both adapters sit on the one loaded base model


def test_adapter_refuses_another_base(ctx, tiny_chat_dir, tmp_path, gpt2_tokenizer_dir):
    from conftest import build_tiny_chat
    from training import worker

    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "mine", "quick", {"max_steps": 1})["job_id"]
    assert worker.run_job(ctx.settings, job_id) == "succeeded"
    other = build_tiny_chat(tmp_path / "other-base", gpt2_tokenizer_dir, seed=1)  # same shapes, other weights
    with pytest.raises(UserError, match="was trained on"):
        ask(ctx, other, "mine")


@pytest.mark.parametrize("kwargs, message", [
    ({"data_path": ""}, "upload a data file"),
    ({"task": "poetry"}, "not available"),
    ({"preset": "turbo"}, "Unknown preset"),
    ({"settings": {"rank": 0}}, "rank"),
    ({"settings": {"warp": 9}}, "Unknown training setting"),
    ({"name": "///"}, "name"),
])
def test_bad_requests_start_nothing(ctx, tiny_chat_dir, kwargs, message):
    service = TrainingService(ctx, start_manager=False)
    args = {"task": "chat", "data_path": str(FACTS), "base": str(tiny_chat_dir), "name": "x", **kwargs}
    with pytest.raises(UserError, match=message):
        service.submit(**args)
    assert service.store.list() == []


def test_bad_data_file_starts_nothing(ctx, tiny_chat_dir, tmp_path):
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"messages": [}\n{"prompt": 1}\n')
    service = TrainingService(ctx, start_manager=False)
    with pytest.raises(UserError):
        service.submit("chat", str(broken), str(tiny_chat_dir), "x")
    assert service.store.list() == []


def test_an_existing_name_is_never_overwritten(ctx, tiny_chat_dir):
    from training import worker

    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "same", "quick", {"max_steps": 1})["job_id"]
    worker.run_job(ctx.settings, job_id)
    with pytest.raises(UserError, match="already exists"):
        service.submit("chat", str(FACTS), str(tiny_chat_dir), "same")


@pytest.mark.worker
def test_train_api_through_gradio_client(launch, settings, tiny_chat_dir):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, demo = launch()
    client = Client(url, verbose=False)
    out = client.predict("chat", handle_file(str(FACTS)), str(tiny_chat_dir), "api-adapter", "quick",
                         {"max_steps": 3}, {}, api_name="/train")
    assert set(out) == {"job_id", "position"}
    status = wait_for(lambda: (s := client.predict(out["job_id"], api_name="/job"))["state"] in
                      ("succeeded", "failed") and s, what="the API job")
    assert status["state"] == "succeeded", status["error"]
    assert [a["name"] for a in client.predict("chat", api_name="/adapters")] == ["api-adapter"]
    reply = client.predict("hi", [], "", str(tiny_chat_dir), "api-adapter", 0.0, 0.9, 4, api_name="/chat")
    assert isinstance(reply, str)
    with pytest.raises(AppError, match="no training job"):
        client.predict("nope", api_name="/cancel")
    assert client.predict("api-adapter", api_name="/delete_adapter") == []
    demo.training.manager.close()


@pytest.mark.integration
@pytest.mark.timeout(1200)
def test_fine_tune_then_chat_on_smollm2(ctx, service, smollm2_dir, tmp_path):
    rows = [r for r in FACTS.read_text().splitlines() if "Zorbia" in r and "capital" in r.lower()]
    data = tmp_path / "facts.jsonl"
    data.write_text("\n".join(rows[:3]))
    out = service.submit("chat", str(data), "", "smol-facts", "quick", {"epochs": 10, "batch_size": 3,
                                                                         "max_length": 96})
    status = wait_for(lambda: finished(service, out["job_id"]), timeout=1100, what="SmolLM2 training")
    assert status["state"] == "succeeded", status["error"]
    assert "Quellmar" in ask(ctx, "", "smol-facts") and "Quellmar" not in ask(ctx, "")


@pytest.mark.worker
def test_headless_train_command_writes_the_same_adapter(settings, tiny_chat_dir):
    import subprocess
    import sys

    command = [sys.executable, str(ROOT / "app.py"), "train", "--data", str(FACTS), "--base", str(tiny_chat_dir),
               "--name", "from-cli", "--set", "max_steps=2", "--data-dir", str(settings.data_dir)]
    out = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Saved adapter 'from-cli'" in out.stdout
    assert (paths.adapter_store(settings).folder("local", "from-cli") / META_FILE).exists()
    bad = subprocess.run(command[:4] + ["/no/such/file.jsonl", "--name", "x", "--data-dir", str(settings.data_dir)],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "error:" in bad.stderr


@pytest.mark.worker
@pytest.mark.parametrize("task, metric", [("summarize", "rouge_l"), ("translate", "chrf")])
def test_lm_tasks_train_and_are_used_through_the_api(launch, tiny_chat_dir, tmp_path, task, metric):
    import synthetic
    from gradio_client import Client, handle_file

    data = {"summarize": synthetic.summarize_csv, "translate": synthetic.translate_csv}[task](tmp_path)
    url, demo = launch()
    client = Client(url, verbose=False)
    out = client.predict(task, handle_file(str(data)), str(tiny_chat_dir), f"{task}-lora", "quick",
                         {**TINY, "epochs": 20}, {}, api_name="/train")
    status = wait_for(lambda: (s := client.predict(out["job_id"], api_name="/job"))["state"] in
                      ("succeeded", "failed") and s, what=f"the {task} job")
    assert status["state"] == "succeeded", status["error"]
    report = status["report"]
    assert report["held_out"] and status["metrics"]["held_out"] >= 5  # scored on rows it never saw
    assert report["metric_after"][metric] > report["metric_before"][metric] + 10, report["summary"]
    assert status["metrics"][f"{metric}_after"] == report["metric_after"][metric]
    assert set(report["metric_after"]) == set(spec(task).metrics)  # the spec names what is reported
    if task == "summarize":  # choosing only the adapter picks its base model and the abstractive method
        text = "Hello, this is Ada Quill. Since Monday the Zorbex export button is broken. Please help."
        out = client.predict(text, "", "short", "", f"{task}-lora", api_name="/summarize")
        assert out["method"] == "abstractive" and out["model"] == tiny_chat_dir.name and "ticket" in out["summary"]
    else:
        out = client.predict("Please open the shed today.", "de", "en", "", f"{task}-lora", api_name="/translate")
        assert out["model"] == tiny_chat_dir.name and "Bitte" in out["translation"]
    demo.training.manager.close()


def test_fast_loss_equals_the_models_own_loss(tiny_chat_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training import language as recipe
    from training.language import fast_loss_matches

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    rows = [recipe.encode(tokenizer, {"messages": [{"role": "user", "content": q},
                                                   {"role": "assistant", "content": a}]}, "", 128)
            for q, a in [("What is the capital of Zorbia?", "Quellmar."), ("Hi", "Hello there, how are you?")]]
    batch = recipe.collate(rows, tokenizer.pad_token_id)
    assert fast_loss_matches(model, batch)
    nothing = dict(batch, labels=torch.full_like(batch["labels"], recipe.IGNORE))
    with torch.no_grad():
        assert float(recipe.learned_loss(model, batch)) == pytest.approx(float(model(**batch).loss), rel=1e-4)
        assert float(recipe.learned_loss(model, nothing)) == 0.0  # replies cut off: no NaN


SYSTEM = "You are a careful assistant who answers every question in one short sentence."


def _lora_chat(tiny_chat_dir, **settings):
    """The tiny chat model under a LoRA whose B matrices are not zero, as after some training."""
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    from training.presets import TrainSettings
    from training.trainer import lora_config

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), lora_config(TrainSettings(**settings)))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    return model


def test_rows_sharing_a_system_prompt_run_it_once_with_the_same_loss_and_gradients(tiny_chat_dir, monkeypatch):
    from transformers import AutoTokenizer

    from training import language as recipe
    from training import shared_prefix

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    model = _lora_chat(tiny_chat_dir, dropout=0.0, target_modules="q_proj,v_proj,o_proj,up_proj")
    model.train()
    rows = [recipe.encode(tokenizer, {"messages": [{"role": "user", "content": q},
                                                   {"role": "assistant", "content": a}]}, SYSTEM, 128)
            for q, a in [("What is the capital of Zorbia?", "Quellmar."), ("Hi", "Hello there, how are you today?"),
                         ("Name a colour.", "Teal.")]]
    batch = recipe.collate(rows, tokenizer.pad_token_id)
    ids = [row[0] for row in rows]
    common = next(i for i in range(len(ids[0])) if len({row[i] for row in ids}) > 1)  # up to the user's words
    assert shared_prefix.shared_length(model.get_base_model(), batch["input_ids"],
                                       batch["labels"][:, 1:] != recipe.IGNORE) == common > shared_prefix.MIN_SHARED

    def loss_and_gradients():
        embedded = []  # positions the layers run: the shared ones once, not once per row
        hook = model.get_input_embeddings().register_forward_hook(lambda m, i, out: embedded.append(out.shape[:2]))
        loss = recipe.learned_loss(model, batch)
        loss.backward()
        hook.remove()
        grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        return loss.detach(), grads, sum(r * n for r, n in embedded)

    shared = loss_and_gradients()
    monkeypatch.setattr(shared_prefix, "MIN_SHARED", 10_000)
    plain = loss_and_gradients()
    width = batch["input_ids"].shape[1]
    assert plain[2] == 3 * width and shared[2] == common + 3 * (width - common)
    assert float(shared[0]) == pytest.approx(float(plain[0]), rel=1e-6)
    assert float(shared[0]) == pytest.approx(float(model(**batch).loss.detach()), rel=1e-5)
    for name, grad in plain[1].items():  # the same sums in another order: equal to float32's rounding
        assert (shared[1][name] - grad).abs().max() <= 1e-5 * grad.abs().max(), name
    assert model.get_base_model().config._attn_implementation == "sdpa"  # put back after the shared run


def test_a_shared_prefix_stops_before_the_first_learned_token_and_needs_plain_attention(tiny_chat_dir):
    from transformers import AutoModelForCausalLM

    from training import shared_prefix

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    ids = torch.tensor([[5] * 20 + [6, 7], [5] * 20 + [8, 0]])
    learned = torch.zeros(2, 21, dtype=torch.bool)
    assert shared_prefix.shared_length(model, ids, learned) == 20
    learned[1, 12] = True  # row 1 learns the token after position 12: the states from there on are needed
    assert shared_prefix.shared_length(model, ids, learned) == 12
    learned[0, 3] = True  # too little left to share to pay for a second pass
    assert shared_prefix.shared_length(model, ids, learned) == 0
    assert shared_prefix.shared_length(model, ids[:1], learned[:1, :0]) == 0  # one row shares with nobody
    nothing_learned = torch.zeros(2, 21, dtype=torch.bool)
    model.config._attn_implementation = "eager"
    assert shared_prefix.shared_length(model, ids, nothing_learned) == 0


def test_a_model_whose_states_differ_when_sharing_does_not_share(tiny_chat_dir, monkeypatch):
    from transformers import AutoModelForCausalLM

    from training import shared_prefix

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    ids, nothing_learned = torch.tensor([[5] * 20 + [6, 7], [5] * 20 + [8, 0]]), torch.zeros(2, 21, dtype=torch.bool)
    honest = shared_prefix.hidden_after
    monkeypatch.setattr(shared_prefix, "hidden_after", lambda *args: honest(*args) * 1.01)  # attention gone wrong
    assert shared_prefix.shared_length(model, ids, nothing_learned) == 0
    monkeypatch.setattr(shared_prefix, "hidden_after", honest)
    assert shared_prefix.shared_length(model, ids, nothing_learned) == 0  # checked once per model: it stays off
    assert shared_prefix.shared_length(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), ids, nothing_learned) == 20
    bf16 = AutoModelForCausalLM.from_pretrained(tiny_chat_dir, dtype=torch.bfloat16)  # agrees to bf16's rounding
    assert shared_prefix.shared_length(bf16, ids, nothing_learned) == 20


def test_dpo_scores_with_a_shared_system_prompt_equal_the_models_own(tiny_chat_dir):
    from transformers import AutoTokenizer

    from training import shared_prefix
    from training.language import IGNORE, collate
    from training.preference import PreferenceRecipe
    from training.presets import TrainSettings

    recipe = PreferenceRecipe(TrainSettings(system_prompt=SYSTEM, max_length=128))
    recipe.tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    model = _lora_chat(tiny_chat_dir).eval()
    prompt = {"prompt": [{"role": "user", "content": "Greet me."}]}
    rows = [recipe._answer(prompt | {"answer": text}, "answer") for text in ("Ahoy, matey!", "Hello.", "Good day.")]
    batch = collate(rows, recipe.tokenizer.pad_token_id)
    assert shared_prefix.shared_length(model.get_base_model(), batch["input_ids"], batch["labels"][:, 1:] != IGNORE)
    recipe._fast = True
    with torch.no_grad():
        sums, counts = recipe._answer_logps(model, rows)
        recipe._fast = False  # the model's own logits, every position run in every row
        plain_sums, plain_counts = recipe._answer_logps(model, rows)
    assert torch.allclose(sums, plain_sums, rtol=1e-5) and torch.equal(counts, plain_counts)
    assert counts.tolist() == [sum(label != IGNORE for label in labels[1:]) for _, labels in rows]


def test_token_losses_keep_no_logits_and_match_the_plain_loss(monkeypatch):
    from training import language

    torch.manual_seed(0)
    head = torch.nn.Linear(64, 1000, bias=False).requires_grad_(False)
    hidden, targets = torch.randn(700, 64), torch.randint(0, 1000, (700,))
    weights = torch.rand(700)  # each token's loss counts differently, as DPO's per-answer sums do

    def losses_and_grad(losses_of) -> tuple[torch.Tensor, torch.Tensor]:
        states = hidden.clone().requires_grad_(True)
        losses = losses_of(states)
        (losses * weights).sum().backward()
        return losses.detach(), states.grad

    plain = losses_and_grad(lambda h: torch.nn.functional.cross_entropy(head(h), targets, reduction="none"))
    monkeypatch.setattr(language, "OUTPUT_SLICE", 64 * 1000)  # 64 tokens a slice: eleven slices, the last short
    fused = losses_and_grad(lambda h: language.token_losses(head, h, targets))
    assert torch.allclose(fused[0], plain[0], rtol=1e-5, atol=1e-6)
    assert torch.allclose(fused[1], plain[1], rtol=1e-4, atol=1e-8)
    assert "TokenLosses" in type(language.token_losses(head, hidden.requires_grad_(True), targets).grad_fn).__name__
    with torch.no_grad():
        assert torch.allclose(language.token_losses(head, hidden, targets), plain[0], rtol=1e-5, atol=1e-6)
    head.weight.requires_grad_(True)  # an output layer that trains takes the plain way, and gets its gradient
    language.token_losses(head, hidden, targets).mean().backward()
    assert head.weight.grad is not None


def test_precision_setting(tiny_chat_dir):
    from transformers import AutoModelForCausalLM

    from models.device import fast_bf16
    from training.presets import build
    from training.trainer import use_bf16

    model = AutoModelForCausalLM.from_pretrained(tiny_chat_dir)
    assert not use_bf16(build("quick", {"precision": "fp32"}), model)
    assert use_bf16(build("quick", {"precision": "bf16"}), model)
    assert use_bf16(build("quick"), model) == fast_bf16(torch.device("cpu"))
    with pytest.raises(UserError, match="Precision"):
        build("quick", {"precision": "fp8"})


def test_fast_loss_check_ignores_dropout(tiny_chat_dir):
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from training import language as recipe
    from training.presets import TrainSettings
    from training.language import fast_loss_matches
    from training.trainer import lora_config

    tokenizer = AutoTokenizer.from_pretrained(tiny_chat_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_chat_dir), lora_config(TrainSettings(dropout=0.5)))
    with torch.no_grad():  # a trained adapter: with zero B matrices dropout would change nothing
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    rows = [recipe.encode(tokenizer, {"messages": [{"role": "user", "content": "Hi"},
                                                   {"role": "assistant", "content": "Hello there!"}]}, "", 64)]
    model.train()
    assert fast_loss_matches(model, recipe.collate(rows, tokenizer.pad_token_id)) and model.training


@pytest.mark.worker
def test_sigterm_to_the_app_leaves_the_job_interrupted_and_resumable(settings, tiny_chat_dir, tmp_path):
    """The real app in its own process, stopped as a service manager stops it; then started again."""
    import subprocess
    import sys

    from gradio_client import handle_file

    from conftest import free_port
    from training import paths

    def start_app():
        port = free_port()
        process = subprocess.Popen([sys.executable, str(ROOT / "app.py"), "--data-dir", str(settings.data_dir),
                                    "--port", str(port), "--threads", "2"], stdout=subprocess.DEVNULL,
                                   stderr=subprocess.STDOUT, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        url = f"http://127.0.0.1:{port}/"
        client = wait_for(lambda: _connect(url), what="the app to start")
        return process, client

    store = paths.job_store(settings)
    worker_pid = 0
    process, client = start_app()
    try:
        job = client.predict("chat", handle_file(str(FACTS)), str(tiny_chat_dir), "survivor", "quick",
                             {**TINY, "checkpoint_every": 3}, {}, api_name="/train")
        wait_for(lambda: store.get(job["job_id"]).progress.step >= 4, what="a checkpoint")
        worker_pid = store.get(job["job_id"]).pid
        # Frozen (every process of the run: its session's group), the run cannot end before the app's SIGTERM
        # reaches it, however fast this machine is; it goes on once the signal waits for it.
        os.killpg(worker_pid, signal.SIGSTOP)
        assert store.get(job["job_id"]).state == "running", "the run ended before it was frozen"
        process.send_signal(signal.SIGTERM)
        wait_for(lambda: _pending(worker_pid, signal.SIGTERM), 120, "the app to send the run SIGTERM")
        os.killpg(worker_pid, signal.SIGCONT)
        assert process.wait(timeout=120) is not None
    finally:
        process.kill()
        if worker_pid:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker_pid, signal.SIGCONT)  # never left frozen, whatever failed
    stored = paths.job_store(settings).get(job["job_id"])
    assert stored.state == "interrupted" and stored.progress.step >= 3
    with pytest.raises(ProcessLookupError):  # the worker did not outlive the app
        os.kill(worker_pid, 0)

    process, client = start_app()
    try:
        assert client.predict(job["job_id"], api_name="/resume")["state"] in ("queued", "running")
        status = wait_for(lambda: (s := client.predict(job["job_id"], api_name="/job"))["state"] in
                          ("succeeded", "failed") and s, what="the resumed run")
        assert status["state"] == "succeeded", status["error"]
    finally:
        process.terminate()
        process.wait(timeout=120)


def _pending(pid: int, signum: int) -> bool:
    """Whether signal signum waits to be delivered to process pid (Linux: its status's pending masks)."""
    status = Path(f"/proc/{pid}/status").read_text()
    masks = [int(line.split()[1], 16) for line in status.splitlines() if line.startswith(("SigPnd:", "ShdPnd:"))]
    return any(mask >> (signum - 1) & 1 for mask in masks)


def _connect(url: str):
    from gradio_client import Client

    try:
        return Client(url, verbose=False)
    except Exception:  # noqa: BLE001  (not up yet)
        return None

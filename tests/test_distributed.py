"""Training on several processes (`--train-processes N`): torchrun starts the workers, accelerate joins them
(gloo on CPUs), each trains its share of every batch. Two processes take the very steps one does, cancel and
SIGTERM stop all of them, a resumed run continues, and only rank 0 writes the adapter."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import psutil
import pytest
from safetensors.torch import load_file

from test_training import FACTS, finished
from training.service import TrainingService
from ui.system_tab import system_report
from waiting import wait_for

# fp32 and no dropout: then the two runs differ only in the order floats are summed.
EXACT = {"learning_rate": 0.01, "max_steps": 6, "batch_size": 4, "dropout": 0.0, "precision": "fp32",
         "checkpoint_every": 100}
TOLERANCE = 1e-4  # relative, on every step's train and validation loss


def service_on(ctx, processes: int) -> TrainingService:
    return TrainingService(dataclasses.replace(ctx, settings=dataclasses.replace(ctx.settings,
                                                                                 train_processes=processes)))


def trained(service: TrainingService, base: str, name: str, options: dict, data: Path = FACTS) -> dict:
    job_id = service.submit("chat", str(data), base, name, "quick", options)["job_id"]
    status = wait_for(lambda: finished(service, job_id), what=f"the {name} run")
    assert status["state"] == "succeeded", status["error"]
    return status


def run_on(ctx, processes: int, base: str, name: str, options: dict,
           data: Path = FACTS) -> tuple[TrainingService, dict]:
    service = service_on(ctx, processes)  # one at a time: any manager on a data directory takes its queued jobs
    try:
        return service, trained(service, base, name, options, data)
    finally:
        service.manager.shutdown()


def same_run(ctx, base: str, options: dict, data: Path = FACTS) -> None:
    _, alone = run_on(ctx, 1, base, "alone", options, data)
    two, shared = run_on(ctx, 2, base, "shared", options, data)
    assert "training on 2 processes (gloo on cpu)" in two.log_tail(shared["job_id"], 200)
    assert system_report(two.ctx).count("Training** runs on 2 processes sharing the CPU's cores") == 1
    assert len(alone["loss"]) == len(shared["loss"]) == options["max_steps"] + 1
    for (step, train, val), (step2, train2, val2) in zip(alone["loss"], shared["loss"]):
        assert step == step2
        for a, b in ((train, train2), (val, val2)):
            assert (a is None) == (b is None) and (a is None or abs(a - b) <= TOLERANCE * max(1.0, abs(a))), \
                (step, a, b)
    store = ctx.adapters.store
    assert sorted(a["name"] for a in store.list("local")) == ["alone", "shared"]  # rank 0 saved it, once
    weights = [load_file(store.folder("local", n) / "adapter_model.safetensors") for n in ("alone", "shared")]
    assert max(float((weights[0][k] - weights[1][k]).abs().max()) for k in weights[0]) < 1e-3


@pytest.mark.worker
def test_two_processes_take_the_steps_one_takes(ctx, tiny_chat_dir):
    same_run(ctx, str(tiny_chat_dir), EXACT)


@pytest.mark.worker
@pytest.mark.integration
def test_two_processes_take_the_steps_one_takes_on_smollm2(ctx, smollm2_dir, tmp_path):
    # 8 of the facts: the 3 steps read 6 of them, and each run's report answers (generates for) only these 8.
    data = tmp_path / "facts.jsonl"
    data.write_text("".join(FACTS.read_text().splitlines(keepends=True)[:8]))
    same_run(ctx, "", {**EXACT, "max_steps": 3, "learning_rate": 1e-3, "batch_size": 2, "max_length": 64}, data)


def workers(service: TrainingService) -> list[psutil.Process]:
    launcher = psutil.Process(service.manager._process.pid)
    return [p for p in launcher.children(recursive=True) if "worker.py" in " ".join(p.cmdline())]


@pytest.mark.worker
def test_cancel_stops_every_process_and_saves_nothing(ctx, tiny_chat_dir):
    service = service_on(ctx, 2)
    try:
        job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "stopped", "quick",
                                {"max_steps": 5000})["job_id"]
        wait_for(lambda: service.job(job_id)["step"] > 1, what="training steps")
        running = workers(service)
        assert len(running) == 2
        service.cancel(job_id)
        assert wait_for(lambda: finished(service, job_id), what="the cancel")["state"] == "cancelled"
        wait_for(lambda: not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in running),
                 what="both processes to end")
        assert service.list_adapters() == []
    finally:
        service.manager.shutdown()


@pytest.mark.worker
def test_sigterm_interrupts_every_process_and_the_run_resumes(ctx, tiny_chat_dir):
    service = service_on(ctx, 2)
    options = {"learning_rate": 0.01, "epochs": 6, "checkpoint_every": 5}
    job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "resumed", "quick", options)["job_id"]
    wait_for(lambda: service.job(job_id)["step"] >= 7, what="a checkpoint")
    running = workers(service)
    service.manager.shutdown()  # what stopping the app does: SIGTERM to the run
    status = service.job(job_id)
    assert status["state"] == "interrupted" and not any(p.is_running() for p in running)
    restarted = service_on(ctx, 2)
    try:
        restarted.resume(job_id)
        status = wait_for(lambda: finished(restarted, job_id), what="the resumed run")
        assert status["state"] == "succeeded", status["error"]
        assert "resumed from the checkpoint at step" in restarted.log_tail(job_id, 200)
        assert status["step"] == status["total_steps"] and [a["name"] for a in restarted.list_adapters()] == [
            "resumed"]
        meta = json.loads((ctx.adapters.store.folder("local", "resumed") / "lora_studio.json").read_text())
        assert meta["metrics"]["steps"] == status["total_steps"]
    finally:
        restarted.manager.shutdown()


@pytest.mark.worker  # the estimate times its steps in a process of its own
def test_the_estimate_says_where_the_run_will_train(ctx, tiny_chat_dir):
    from ui.train_tab import estimate_text

    service = service_on(ctx, 2)
    try:
        result = service.estimate("chat", str(FACTS), str(tiny_chat_dir), "quick", {"max_steps": 2}, None)
    finally:
        service.manager.shutdown()
    assert "**runs on:** 2 processes sharing the CPU's cores (gloo)" in estimate_text(result)

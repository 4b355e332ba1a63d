"""Find settings for me: the grid, the budget's checks, the ranking, and real searches on the tiny chat model."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
from test_training import FACTS, finished
from waiting import wait_for

from errors import UserError
from models.adapters import META_FILE
from training import paths, trials
from training.plan import JobPlan, JobProgress, Trial
from training.presets import PRESETS, TrainSettings
from training.report import AnswerCheck, TrainingReport
from training.service import TrainingService
from training.trainer import Hooks, Stopped


@pytest.mark.parametrize("base, language, rows, second, values", [
    (PRESETS["quick"], True, 24, "rank", [16, 8]),  # few facts: a smaller adapter is the likelier alternative
    (PRESETS["quick"], True, 5000, "rank", [16, 32]),  # many rows may use a larger one
    (PRESETS["quick"], False, 24, "epochs", [6.0, 12.0]),  # an encoder's new head: how long it trains
    (PRESETS["quick"], False, 5000, "epochs", [6.0, 3.0]),
    (PRESETS["preference"], True, 24, "epochs", [3.0, 6.0]),  # DPO
    (TrainSettings(max_steps=40), False, 24, "rank", [16, 8]),  # a run of max_steps has no epochs to vary
])
def test_the_grid_is_chosen_for_the_task_method_and_size(base, language, rows, second, values):
    grid = trials.grid(base, language, rows)
    assert len(grid) == trials.MOST_TRIALS == len({tuple(c.varied.items()) for c in grid})
    assert grid[0].varied == {"learning_rate": base.learning_rate, second: values[0]}  # what was asked, first
    assert grid[0].settings == base
    assert {c.varied[second] for c in grid} == set(values)
    assert grid[1].varied[second] == values[0] and grid[1].varied["learning_rate"] != base.learning_rate
    factor = 0.5 if base.method == "dpo" else 3  # DPO over-learns: a smaller step is tried first
    assert grid[1].settings.learning_rate == pytest.approx(base.learning_rate * factor, rel=0.05)
    for candidate in grid:
        assert candidate.settings.alpha / candidate.settings.rank == base.alpha / base.rank
    assert trials.describe({"learning_rate": 3e-4, "rank": 8}) == "lr 3e-4, rank 8"


@pytest.mark.parametrize("asked, message", [
    ({"search": True, "search_minutes": 0.5}, "search_minutes"),
    ({"search": True, "search_minutes": 121}, "search_minutes"),
    ({"search": True, "search_minutes": "soon"}, "search_minutes"),
    ({"search": True, "search_minutes": float("nan")}, "search_minutes"),
    ({"search": False, "search_minutes": -3}, "search_minutes"),  # a typo does not pass unseen
    ({"search": "maybe"}, "search must be true or false"),
    ({"search": True, "warp": 9}, "Unknown training setting"),
])
def test_search_settings_are_checked_at_submit(ctx, tiny_chat_dir, asked, message):
    service = TrainingService(ctx, start_manager=False)
    with pytest.raises(UserError, match=message):
        service.submit("chat", str(FACTS), str(tiny_chat_dir), "x", "quick", asked)
    assert service.store.list() == []


@pytest.mark.parametrize("asked, minutes", [
    ({"search": True}, trials.DEFAULT_MINUTES), ({"search": True, "search_minutes": 12}, 12.0),
    ({"search": "true", "search_minutes": "1.5"}, 1.5),  # as the CLI's --set gives them
    ({"search": False, "search_minutes": 10}, 0.0), ({"rank": 8}, 0.0),
])
def test_a_search_is_kept_in_the_plan(ctx, tiny_chat_dir, asked, minutes):
    service = TrainingService(ctx, start_manager=False)
    job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "x", "quick", asked)["job_id"]
    plan = service.store.get(job_id).plan
    assert plan.search_minutes == minutes and plan.trials == ()
    assert JobPlan.from_json(json.loads(json.dumps(plan.to_json()))) == plan
    older = {k: v for k, v in plan.to_json().items() if k not in ("search_minutes", "trials")}
    assert JobPlan.from_json(older).search_minutes == 0.0  # a plan stored before searches reads as none


def _result(score: float, seconds: float, passed: bool = True, loss: float = 1.0) -> trials._Result:
    report = TrainingReport("learned" if passed else "ruined", "", True, 2.0, loss,
                            metric_after={"accuracy": score}, answer_check=AnswerCheck(passed, "" if passed else
                                                                                       "repetition"))
    candidate = trials.Candidate(TrainSettings(), {"learning_rate": 1e-3, "rank": 16})
    return trials._Result(candidate, SimpleNamespace(report=report), seconds)


def test_a_failing_answer_check_ranks_below_every_passing_trial():
    results = [_result(99.0, 5, passed=False), _result(40.0, 9), _result(40.0, 3), _result(10.0, 1)]
    best = max(range(len(results)), key=lambda i: results[i].rank_key())
    assert best == 2  # the top score fails its check; of the two passing 40s, the shorter wins
    assert results[0].record(False) == Trial({"learning_rate": 1e-3, "rank": 16}, 99.0, "repetition", 5, False)
    assert results[2].record(True).check == "passed"
    assert trials.score(TrainingReport("learned", "", False, 2.0, 0.25)) == -0.25  # no metric: minus the loss


class FakeRun:
    """A trial run on a clock of its own: 2 s to load and check answers, 1 s a step; the loss is lowest at lr 3e-3.
    It stops as trainer.fit does when its hooks say so."""

    def __init__(self):
        self.now, self.steps = 0.0, []

    def __call__(self, settings: TrainSettings, hooks, checkpoint):
        self.steps.append(settings.max_steps)
        checkpoint.folder.mkdir(parents=True, exist_ok=True)
        self.now += 2
        for step in range(1, settings.max_steps + 1):
            self.now += 1
            progress = JobProgress(step, settings.max_steps)
            hooks.progress(progress)
            if reason := hooks.stop_reason():
                raise Stopped(reason, progress)
        loss = abs(math.log10(settings.learning_rate) + 2.5) + settings.rank / 100
        return SimpleNamespace(report=TrainingReport("learned", "", True, 2.0, loss))


def test_the_budget_shortens_the_trials_and_ends_the_search(monkeypatch, tmp_path):
    run, stages, lines = FakeRun(), [], []
    monkeypatch.setattr(trials, "time", SimpleNamespace(monotonic=lambda: run.now))
    plan = JobPlan(settings=TrainSettings(), search_minutes=1)  # a trial's share: 20 s, 12 s of them for steps
    hooks = Hooks(lambda p: stages.append(p.stage), log=lines.append)
    found = trials.search(plan, True, 24, run, hooks, tmp_path / "trials")
    # 36 steps in full, 18 in a trial: the first trial's pace (1 s a step) shows 18 do not fit in 12 s.
    assert run.steps == [18, 12, 12, 12] and any("shortened to 12 steps" in line for line in lines)
    # 20 s (the stopped try and the trial), then 14 s each: a fourth would end past the minute.
    assert [t.seconds for t in found.trials] == [20, 14, 14]
    grid = trials.grid(plan.settings, True, 24)
    assert [t.chosen for t in found.trials] == [False, True, False] and found.settings == grid[1].settings
    assert stages[0] == "trial 1 of 6: lr 1e-3, rank 16" and not (tmp_path / "trials").exists()


def test_cancel_stops_the_search_and_removes_the_trials(tmp_path):
    run = FakeRun()
    hooks = Hooks(stop_reason=lambda: "cancelled" if len(run.steps) == 2 else None, log=lambda line: None)
    with pytest.raises(Stopped):
        trials.search(JobPlan(settings=TrainSettings(), search_minutes=5), True, 24, run, hooks, tmp_path / "t")
    assert len(run.steps) == 2 and not (tmp_path / "t").exists()


@pytest.mark.slow  # three trials and the job's own run, in the test's process
def test_find_settings_runs_the_trials_and_trains_with_the_best(ctx, tiny_chat_dir, monkeypatch):
    from training import worker

    monkeypatch.setattr(trials, "MOST_TRIALS", 3)
    service = TrainingService(ctx, start_manager=False)
    settings = {"learning_rate": 0.003, "epochs": 2, "search": True, "search_minutes": 5}
    job_id = service.submit("chat", str(FACTS), str(tiny_chat_dir), "found", "quick", settings)["job_id"]
    stages = []
    assert worker.run_job(ctx.settings, job_id, progress=lambda p: stages.append(p.stage)) == "succeeded"
    status = service.job(job_id)
    table = status["report"]["trials"]
    assert len(table) == 3 and [t["chosen"] for t in table].count(True) == 1
    assert {tuple(t) for t in table} == {("settings", "score", "check", "seconds", "chosen")}
    chosen = next(t for t in table if t["chosen"])
    passing = [t for t in table if t["check"] == "passed"] or table
    assert chosen["score"] == max(t["score"] for t in passing)
    asked = replace(PRESETS["quick"], learning_rate=0.003, epochs=2.0)
    assert [t["settings"] for t in table] == [c.varied for c in trials.grid(asked, True, 24)]
    meta = json.loads((service.adapters.folder("local", "found") / META_FILE).read_text())
    assert {k: meta["settings"][k] for k in chosen["settings"]} == chosen["settings"]  # the chosen trial's
    assert meta["report"]["trials"] == table
    assert "trial 1 of 3: lr 3e-3, rank 16" in stages and stages[-1] == ""  # then the job's own run
    assert service.store.get(job_id).plan.trials  # a resume would not search again
    assert not (paths.job_folder(ctx.settings, job_id) / "trials").exists()


@pytest.fixture
def queue(ctx, worker_process):
    """The training service with its job manager: each job runs in a real worker process."""
    running = TrainingService(ctx)
    yield running
    running.manager.shutdown()


def test_cancel_during_the_trials_ends_them_all_and_saves_nothing(ctx, queue, tiny_chat_dir):
    service = queue
    settings = {"max_steps": 5000, "search": True, "search_minutes": 1}
    out = service.submit("chat", str(FACTS), str(tiny_chat_dir), "never", "quick", settings)
    wait_for(lambda: (s := service.job(out["job_id"]))["stage"].startswith("trial 1") and s["step"] > 1,
             what="the first trial's steps")
    service.cancel(out["job_id"])
    status = wait_for(lambda: finished(service, out["job_id"]), what="the cancel")
    assert status["state"] == "cancelled" and service.list_adapters() == []
    log = service.log_tail(out["job_id"], 500)
    assert "trial 2 of" not in log and "chose" not in log  # no later trial started, no run after them
    folder = paths.job_folder(ctx.settings, out["job_id"])
    assert not (folder / "trials").exists() and not (folder / "checkpoint").exists()


def test_the_train_tab_shows_the_trials_and_the_stage():
    from ui import train_tab

    table = [Trial({"learning_rate": 0.001, "rank": 16}, -0.5, "passed", 12.0).to_json(),
             Trial({"learning_rate": 0.003, "rank": 16}, -0.2, "passed", 11.0, True).to_json(),
             Trial({"learning_rate": 0.01, "rank": 16}, 0.0, "repetition", 10.0).to_json()]
    status = {"state": "succeeded", "adapter": "a", "step": 4, "total_steps": 4, "epoch": 1, "eta_s": None,
              "error": "", "report": {"summary": "It learned.", "loss_before": 2.0, "loss_after": 0.2,
                                      "trials": table}}
    rows = [line for line in train_tab.report_markdown(status).splitlines() if line.startswith("| ")]
    assert rows[0] == "| | learning rate | rank | score | check | seconds |"
    assert rows[1:] == ["| | 0.001 | 16 | -0.5 | passed | 12.0 |", "| ✅ chosen | 0.003 | 16 | -0.2 | passed | 11.0 |",
                        "| | 0.01 | 16 | 0.0 | repetition | 10.0 |"]
    running = {**status, "state": "running", "stage": "trial 2 of 6: lr 3e-3, rank 16", "report": {}}
    assert "Finding settings — trial 2 of 6: lr 3e-3, rank 16" in train_tab.status_markdown(running)
    assert train_tab.search_settings(True, 7) == {"search": True, "search_minutes": 7}
    assert train_tab.search_settings(False, 7) == {}

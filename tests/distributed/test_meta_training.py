"""Data-parallel meta-training under torchrun: 2 gloo processes make the one-process run, and resume either way."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from .conftest import run_jobs
from .worker import STEPS, Stop, calibrated, experiment, train


@pytest.fixture(scope="module")
def reference(reference_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return train(reference_pool, tmp_path_factory.mktemp("reference_run"))


@pytest.fixture(scope="module")
def two_process_runs(reference_pool: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One launch of 2 processes: single meta-steps, a fresh run, the rest of a run one process started, and
    a whole ``maml`` experiment."""
    root = tmp_path_factory.mktemp("runs")
    with pytest.raises(Stop):
        train(reference_pool, root / "partial", kill={"step": 4})  # killed after the checkpoint of step 4
    pool = str(reference_pool)
    run_jobs(2, [{"kind": "updates", "out": str(root / "updates.json")},
                 {"kind": "train", "pool": pool, "run": str(root / "fresh")},
                 {"kind": "train", "pool": pool, "run": str(root / "partial")},
                 {"kind": "experiment", "pool": pool, "out": str(root / "experiment")},
                 {"kind": "calibrated", "out": str(root / "calibrated.json")}])
    return root


def assert_same_run(ref: dict[str, Any], other: dict[str, Any]) -> None:
    """Same meta-model (float64, up to the order of gradient additions), selector, memory, costs and metrics."""
    for k, v in ref["learner"].items():
        torch.testing.assert_close(other["learner"][k], v, rtol=1e-9, atol=1e-12, msg=f"meta-parameter {k}")
    torch.testing.assert_close(other["selector"]["logits"], ref["selector"]["logits"], rtol=1e-9, atol=1e-12)
    assert other["memory"]["keys"] == ref["memory"]["keys"]
    for a, b in zip(ref["memory"]["slots"], other["memory"]["slots"]):  # recovered examples: bit for bit
        assert all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)
    assert other["cost"]["teacher_queries"] == ref["cost"]["teacher_queries"] > 0
    assert [r["step"] for r in other["metrics"]] == list(range(1, STEPS + 1))
    for a, b in zip(ref["metrics"], other["metrics"]):
        assert a.keys() == b.keys()
        for k in a.keys() - {"cpu_s"}:  # CPU time used is measured, not computed
            assert b[k] == pytest.approx(a[k], rel=1e-9, abs=1e-12), f"step {a['step']}: {k}"
    assert other["summary"] == pytest.approx(ref["summary"])


def test_a_data_parallel_meta_step_is_the_one_process_step_for_any_meta_batch_and_a_replicated_one_too(
    two_process_runs: Path,
) -> None:
    found = json.loads((two_process_runs / "updates.json").read_text())  # B = 1 leaves rank 1 without a task
    assert sorted(found) == ["1", "2", "3", "4", "alignment"]
    assert max(found.values()) < 1e-12, found


def test_two_processes_make_the_one_process_run(reference: dict[str, Any], two_process_runs: Path) -> None:
    fresh = torch.load(two_process_runs / "fresh" / "final.pt", weights_only=False)
    assert fresh["world_size"] == 2
    assert_same_run(reference, fresh)


def test_two_processes_finish_a_run_one_process_started(reference: dict[str, Any], two_process_runs: Path) -> None:
    resumed = torch.load(two_process_runs / "partial" / "final.pt", weights_only=False)
    assert resumed["world_size"] == 2
    assert_same_run(reference, resumed)


def test_a_killed_two_process_run_resumes_on_one_process(
    reference_pool: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    run = tmp_path / "killed"
    result = run_jobs(2, [{"kind": "train", "pool": str(reference_pool), "run": str(run), "kill": {"step": 4}}],
                      check=False)
    assert result.returncode != 0, result.stdout[-2000:]
    assert torch.load(run / "checkpoints" / "last.pt", weights_only=True)["step"] == 4
    assert_same_run(reference, train(reference_pool, run))


def test_a_two_process_experiment_scores_what_one_process_scores(
    reference_pool: Path, two_process_runs: Path, tmp_path: Path
) -> None:
    one = experiment(reference_pool, tmp_path / "one")
    two = json.loads((two_process_runs / "experiment" / "results.json").read_text())
    assert two["scores"]["5way_1shot"]["per_episode"] == one["scores"]["5way_1shot"]["per_episode"]
    assert two["info"]["inversion_cost"]["teacher_queries"] == one["info"]["inversion_cost"]["teacher_queries"]
    assert two["info"]["best_step"] == one["info"]["best_step"]
    assert two["info"]["best_val_acc"] == pytest.approx(one["info"]["best_val_acc"])
    bank_one = torch.load(tmp_path / "one" / "bank.pt", weights_only=True)["x"]
    bank_two = torch.load(two_process_runs / "experiment" / "bank.pt", weights_only=True)["x"]
    assert all(torch.equal(a, b) for a, b in zip(bank_one, bank_two)) and len(bank_one) == len(bank_two)
    model_one = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    model_two = torch.load(two_process_runs / "experiment" / "model.pt", weights_only=True)
    for k, v in model_one.items():  # float32: the gradient sums differ in the order of additions only
        torch.testing.assert_close(model_two[k], v, rtol=1e-5, atol=1e-6)


def test_inversion_calibration_on_two_processes_scores_what_one_process_scores(two_process_runs: Path) -> None:
    """Each episode's calibration draws its own generator by its index in the whole list, and the
    uncalibrated arm, paired difference and costs cover every rank's episodes."""
    one = calibrated()
    two = json.loads((two_process_runs / "calibrated.json").read_text())
    assert len(two["per_episode"]) == 5 and two["per_episode"] == pytest.approx(one["per_episode"])
    a, b = one["calibration"], two["calibration"]
    assert b["uncalibrated"]["per_episode"] == pytest.approx(a["uncalibrated"]["per_episode"])
    assert b["paired"] == pytest.approx(a["paired"])
    assert (b["teacher_queries"], b["pseudo_episodes"]) == (a["teacher_queries"], a["pseudo_episodes"]) == (
        a["teacher_queries"], 5)
    assert b["pseudo_acc"] == pytest.approx(a["pseudo_acc"])

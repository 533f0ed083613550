"""Smoke test of benchmarks/calibration.py on a toy run: three arms on the same episodes, resumable cells."""

from __future__ import annotations

import json

from dfml.data import EpisodeList
from dfml.data.toy import make_toy_world
from dfml.eval import evaluate
from dfml.experiment import experiment_config, load_meta_model, run_experiment
from dfml.pool import build_toy_pool

from .scripts import load_script


def test_the_script_scores_a_saved_run_with_without_and_with_extra_steps_on_its_episodes(tmp_path, capsys):
    build_toy_pool(tmp_path / "pool", n_models=2, epochs=2)
    layer = {"pool": str(tmp_path / "pool"), "dataset": "toy", "train": {"val_episodes": 2},
             "eval": {"episodes": 5, "shots": [1], "lr": 0.1}}
    run_experiment(experiment_config("average", layer), tmp_path / "run")
    argv = [str(tmp_path / "run"), "--out", str(tmp_path / "out"), "--episodes-dir", str(tmp_path / "run" / "episodes"),
            "--first-n", "4", "--set", "eval.calibration.inversion.steps=3", "--set", "eval.calibration.steps=2"]
    assert load_script("calibration").main(argv) == 0
    cell = json.loads((tmp_path / "out" / "results.json").read_text())["cells"]["run/test-5w1s"]
    assert cell["n"] == 4 and cell["calibration"]["inversion"]["steps"] == 3
    tasks = EpisodeList.load(tmp_path / "run" / "episodes" / "test_5w1s_5.json").tasks(make_toy_world()["test"])
    model = load_meta_model(tmp_path / "run")
    plain = evaluate(model, list(tasks), steps=10, lr=0.1, first_n=4)
    assert cell["uncalibrated"]["per_episode"] == plain.per_episode
    tasks = EpisodeList.load(tmp_path / "run" / "episodes" / "test_5w1s_5.json").tasks(make_toy_world()["test"])
    assert cell["control"]["per_episode"] == evaluate(model, tasks, steps=12, lr=0.1, first_n=4).per_episode
    assert "| run | test-5w1s | 4 |" in (tmp_path / "out" / "results.md").read_text()
    capsys.readouterr()
    assert load_script("calibration").main(argv) == 0  # a finished cell with the same settings is reused
    assert "test-5w1s" not in capsys.readouterr().err

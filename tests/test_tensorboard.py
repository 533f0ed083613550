"""``--set log.tensorboard=true``: TensorBoard event files in ``<run>/tb/`` hold exactly the scalars of
``metrics.jsonl``, each step once across kills and resumes; without tensorboard installed, one line."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from dfml.cli import main
from dfml.experiment import experiment_config, run_experiment
from dfml.recipes import RECIPES
from dfml.recipes.base import recipe_spec

_TRAIN = {"steps": 4, "val_every": 2, "val_episodes": 3, "checkpoint_every": 2}
_BANK = {"synthetic": {"per_class": 16}, "pixel": {"steps": 5}}
_EVAL = {"episodes": 5, "shots": [1]}


@pytest.fixture(scope="module")
def toy_pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tb") / "pool"
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out),
                 "--n-models", "3", "--epochs", "5", "--lr", "0.01"]) == 0
    return out


@pytest.fixture
def tensorboard() -> None:
    pytest.importorskip("tensorboard")


def _train(pool: Path, out: Path, *extra: str) -> list[str]:
    sets = [f"train.{k}={json.dumps(v)}" for k, v in _TRAIN.items()]
    sets += [f"datafree.{k}={json.dumps(v)}" for k, v in _BANK.items()]
    return ["train", "--recipe", "maml", "--pool", str(pool), "--dataset", "toy", "--episodes", "5", "--shots", "1",
            "--out", str(out), *[a for s in sets for a in ("--set", s)], *extra]


def _config(pool: Path, tensorboard: bool) -> object:
    return experiment_config("maml", {"pool": str(pool), "dataset": "toy", "train": _TRAIN, "datafree": _BANK,
                                      "eval": _EVAL, "log": {"tensorboard": tensorboard}})


def event_scalars(folder: Path) -> list[tuple[str, int, float]]:
    """Every scalar event of every event file in ``folder``: ``(tag, step, value)``, duplicates included."""
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2

    out = []
    for f in sorted(folder.glob("events.out.tfevents.*")):
        for raw in RawEventFileLoader(str(f)).Load():
            event = event_pb2.Event.FromString(raw)
            out += [(v.tag, event.step, v.simple_value) for v in event.summary.value
                    if v.WhichOneof("value") == "simple_value"]
    return sorted(out)


def metrics_scalars(run: Path) -> list[tuple[str, int, float]]:
    """The numbers of ``metrics.jsonl`` as TensorBoard stores them (32-bit floats)."""
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return sorted((k, r["step"], float(np.float32(v))) for r in records for k, v in r.items()
                  if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool))


class Kill(Exception):
    pass


def _kill_at_3(stage, i, n, info):
    if stage == "train" and i == 3:  # the last checkpoint was at step 2
        raise Kill


def test_the_event_files_hold_every_scalar_of_metrics_jsonl(tensorboard, toy_pool, tmp_path):
    assert main(_train(toy_pool, tmp_path / "run", "--set", "log.tensorboard=true")) == 0
    scalars = event_scalars(tmp_path / "run" / "tb")
    assert scalars == metrics_scalars(tmp_path / "run")
    assert {"loss", "acc", "val_acc", "cpu_s"} <= {tag for tag, _, _ in scalars}
    assert sorted({step for tag, step, _ in scalars if tag == "val_acc"}) == [2, 4]


def test_a_killed_and_resumed_run_shows_each_step_once(tensorboard, toy_pool, tmp_path):
    cfg = _config(toy_pool, tensorboard=True)
    with pytest.raises(Kill):
        run_experiment(cfg, tmp_path / "run", progress=_kill_at_3)
    assert {step for _, step, _ in event_scalars(tmp_path / "run" / "tb")} == {1, 2, 3}  # flushed as logged
    run_experiment(cfg, tmp_path / "run")  # resumes from step 2: step 3 is logged again
    scalars = event_scalars(tmp_path / "run" / "tb")
    assert scalars == metrics_scalars(tmp_path / "run")
    assert len([1 for tag, _, _ in scalars if tag == "loss"]) == 4


def test_tensorboard_turned_on_later_gets_the_steps_logged_before(tensorboard, toy_pool, tmp_path):
    with pytest.raises(Kill):
        run_experiment(_config(toy_pool, tensorboard=False), tmp_path / "run", progress=_kill_at_3)
    assert not (tmp_path / "run" / "tb").exists()
    run_experiment(_config(toy_pool, tensorboard=True), tmp_path / "run")  # a resume may change the log section
    assert event_scalars(tmp_path / "run" / "tb") == metrics_scalars(tmp_path / "run")
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert saved["log"] == {"tensorboard": True}

    run_experiment(_config(toy_pool, tensorboard=False), tmp_path / "done")  # a finished run, asked again
    results = (tmp_path / "done" / "results.json").read_bytes()
    run_experiment(_config(toy_pool, tensorboard=True), tmp_path / "done")
    assert event_scalars(tmp_path / "done" / "tb") == metrics_scalars(tmp_path / "done")
    assert (tmp_path / "done" / "results.json").read_bytes() == results


def test_without_tensorboard_the_option_is_one_line_before_any_work(toy_pool, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if it were not installed
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    assert main(_train(toy_pool, tmp_path / "run", "--set", "log.tensorboard=true")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("dfml: error: log.tensorboard=true needs the tensorboard package")
    assert "pip install 'dfml[tensorboard]'" in err
    assert not (tmp_path / "run").exists()
    assert main(["eval", "--recipe", "random", "--pool", str(toy_pool), "--dataset", "toy", "--episodes", "5",
                 "--shots", "1", "--out", str(tmp_path / "ev")]) == 0  # the option off: tensorboard is not needed


@pytest.mark.parametrize("recipe", RECIPES.names())
def test_every_recipe_accepts_the_log_section(recipe):
    cfg = experiment_config(recipe)
    assert not recipe_spec(recipe).unread(cfg, "log.tensorboard")

import json

import pytest
import torch
import yaml

from dfml.runs import RunDir


def test_new_run_writes_config_and_provenance(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1, "b": {"c": [1, 2]}})
    assert not run.resumed
    assert (tmp_path / "r" / "config.yaml").read_text().startswith("a: 1")
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert info["dfml_version"] and "git_revision" in info


def test_same_config_resumes_and_other_config_is_refused_without_touching_files(tmp_path):
    RunDir(tmp_path / "r", {"a": 1, "b": {"c": 2}}).save_checkpoint({"step": 3})
    assert RunDir(tmp_path / "r", {"a": 1, "b": {"c": 2}}).resumed
    before = (tmp_path / "r" / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"another configuration \(differs in: b.c\).*new --out"):
        RunDir(tmp_path / "r", {"a": 1, "b": {"c": 3}})
    assert (tmp_path / "r" / "config.yaml").read_text() == before
    assert RunDir(tmp_path / "r", {"a": 1, "b": {"c": 2}}).load_checkpoint()["step"] == 3


def test_checkpoint_keeps_the_previous_one_and_falls_back_when_last_is_damaged(tmp_path):
    run = RunDir(tmp_path, {})
    run.save_checkpoint({"step": 1, "w": torch.ones(2)})
    run.save_checkpoint({"step": 2, "w": torch.zeros(2)})
    assert run.load_checkpoint()["step"] == 2
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"truncated")
    assert run.load_checkpoint()["step"] == 1
    (tmp_path / "checkpoints" / "last.prev.pt").write_bytes(b"also bad")
    with pytest.raises(RuntimeError, match="no readable checkpoint"):
        run.load_checkpoint()


def test_no_checkpoint_means_none(tmp_path):
    assert RunDir(tmp_path, {}).load_checkpoint() is None


def test_metrics_survive_a_torn_line_and_truncate_to_a_step(tmp_path):
    run = RunDir(tmp_path, {})
    for s in range(1, 5):
        run.log_metrics({"step": s, "loss": 1.0 / s})
    with open(run.metrics_file, "a") as f:
        f.write('{"step": 5, "lo')
    assert [r["step"] for r in run.read_metrics()] == [1, 2, 3, 4]
    run.truncate_metrics(2)
    assert [r["step"] for r in run.read_metrics()] == [1, 2]


def test_run_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):
        RunDir(tmp_path / "f", {})


def test_fields_added_since_a_run_was_saved_are_accepted_at_their_defaults_only(tmp_path):
    old = {"train": {"steps": 5}, "recipe": "maml"}
    RunDir(tmp_path / "r", old)
    defaults = {"train": {"steps": 100, "new_knob": 0.0}, "eval": {"calibration": {"enabled": False}}, "recipe": "x"}
    upgraded = {"train": {"steps": 5, "new_knob": 0.0}, "eval": {"calibration": {"enabled": False}}, "recipe": "maml"}
    run = RunDir(tmp_path / "r", upgraded, defaults=defaults)
    assert run.resumed and yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == old  # not rewritten
    for changed, key in (({"train": {"steps": 5, "new_knob": 1.0}}, "train.new_knob"),
                         ({"train": {"steps": 6, "new_knob": 0.0}}, "train.steps"),
                         ({"eval": {"calibration": {"enabled": True}}}, "eval")):
        with pytest.raises(ValueError, match=key):
            RunDir(tmp_path / "r", {**upgraded, **changed}, defaults=defaults)
    with pytest.raises(ValueError, match="train.new_knob"):  # without defaults nothing is assumed
        RunDir(tmp_path / "r", upgraded)

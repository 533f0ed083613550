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


def test_a_resume_may_change_the_log_section_and_config_yaml_records_it(tmp_path):
    RunDir(tmp_path / "r", {"a": 1, "log": {"tensorboard": False}}).save_checkpoint({"step": 3})
    assert RunDir(tmp_path / "r", {"a": 1, "log": {"tensorboard": True}}).resumed
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == {"a": 1, "log": {"tensorboard": True}}
    with pytest.raises(ValueError, match=r"differs in: a\)"):  # the log section is not what tells runs apart
        RunDir(tmp_path / "r", {"a": 2, "log": {"tensorboard": False}})


class _Mirror:
    def __init__(self) -> None:
        self.calls: list = []

    def rebuild(self, records):
        self.calls.append(("rebuild", [r["step"] for r in records]))

    def append(self, record):
        self.calls.append(("append", record["step"]))

    def close(self):
        self.calls.append(("close",))


def test_mirrors_get_metrics_jsonl_whole_at_the_first_record_and_after_a_truncation(tmp_path):
    RunDir(tmp_path, {}).log_metrics({"step": 1, "loss": 1.0})  # logged before the mirror existed
    run, mirror = RunDir(tmp_path, {}), _Mirror()
    run.mirror_metrics(mirror)
    run.log_metrics({"step": 2, "loss": 0.5})
    run.log_metrics({"step": 3, "loss": 0.2})
    run.truncate_metrics(2)
    run.log_metrics({"step": 3, "loss": 0.3})
    run.close_mirrors()
    assert mirror.calls == [("rebuild", [1, 2]), ("append", 3), ("rebuild", [1, 2, 3]), ("close",)]
    assert [r["loss"] for r in run.read_metrics()] == [1.0, 0.5, 0.3]


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
    RunDir(tmp_path / "r", old).save_checkpoint({"step": 1})  # work a restart would lose: never given away
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


def test_a_run_that_stopped_before_its_first_checkpoint_gives_way_to_another_configuration(tmp_path):
    run = RunDir(tmp_path / "r", {"dataset": "cifar_f"})
    run.log_metrics({"step": 1, "loss": 1.0})  # killed before its first checkpoint
    (tmp_path / "r" / "episodes").mkdir()
    (tmp_path / "r" / "episodes" / "val_5w1s_100.json").write_text("{}")  # drawn for the old configuration
    again = RunDir(tmp_path / "r", {"dataset": "cifar_fs"})
    assert not again.resumed
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == {"dataset": "cifar_fs"}
    assert again.read_metrics() == [] and not (tmp_path / "r" / "episodes" / "val_5w1s_100.json").exists()


@pytest.mark.parametrize("work", ["checkpoints/last.pt", "bank.pt", "model.pt", "results.json"])
def test_a_run_that_saved_any_work_is_never_given_away(tmp_path, work):
    RunDir(tmp_path / "r", {"a": 1})
    (tmp_path / "r" / work).parent.mkdir(exist_ok=True)
    (tmp_path / "r" / work).write_text("saved")
    with pytest.raises(ValueError, match=r"another configuration \(differs in: a\)"):
        RunDir(tmp_path / "r", {"a": 2})
    assert (tmp_path / "r" / work).read_text() == "saved"


def test_inputs_are_recorded_and_a_resume_on_other_inputs_is_refused_naming_them(tmp_path):
    pool, data = {"manifest_sha256": "a" * 64}, {"dataset": "toy", "val_sha256": "b" * 64}
    run = RunDir(tmp_path / "r", {"a": 1})
    run.check_inputs({"pool": pool, "data": data})
    run.save_checkpoint({"step": 1})  # work a restart would lose
    recorded = json.loads((tmp_path / "r" / "run.json").read_text())["inputs"]
    assert recorded == {"pool": pool, "data": data}
    RunDir(tmp_path / "r", {"a": 1}).check_inputs({"pool": pool, "data": data})  # the same inputs resume
    before = (tmp_path / "r" / "run.json").read_text()
    with pytest.raises(ValueError, match=r"made on other inputs \(pool.manifest_sha256: aaaaaaaaaaaa\.\.\. when it "
                                         r"started, cccccccccccc\.\.\. now\).*new --out.*restore the pool"):
        RunDir(tmp_path / "r", {"a": 1}).check_inputs({"pool": {"manifest_sha256": "c" * 64}, "data": data})
    with pytest.raises(ValueError, match=r"data.val_sha256"):
        RunDir(tmp_path / "r", {"a": 1}).check_inputs({"pool": pool, "data": {**data, "val_sha256": "d" * 64}})
    assert (tmp_path / "r" / "run.json").read_text() == before


def test_a_run_saved_before_inputs_were_recorded_resumes_and_records_them(tmp_path):
    RunDir(tmp_path / "r", {"a": 1})
    info = json.loads((tmp_path / "r" / "run.json").read_text())
    assert "inputs" not in info
    RunDir(tmp_path / "r", {"a": 1}).check_inputs({"pool": {"manifest_sha256": "a" * 64}})
    assert json.loads((tmp_path / "r" / "run.json").read_text()) == {
        **info, "inputs": {"pool": {"manifest_sha256": "a" * 64}}}


def test_a_copied_run_whose_episodes_moved_resumes_when_the_episode_files_are_the_same(tmp_path):
    old, new, other = tmp_path / "eps", tmp_path / "copy" / "eps", tmp_path / "other"
    for folder, seed in ((old, 0), (new, 0), (other, 1)):
        folder.mkdir(parents=True)
        (folder / "test_5w1s_600.json").write_text(f'{{"seed": {seed}}}')
    cfg = {"eval": {"episodes_dir": str(old), "steps": 10}}
    RunDir(tmp_path / "r", cfg).record_episodes([old / "test_5w1s_600.json"])
    (tmp_path / "r" / "checkpoints").mkdir()
    (tmp_path / "r" / "checkpoints" / "last.pt").write_text("saved")
    assert RunDir(tmp_path / "r", {"eval": {"episodes_dir": str(new), "steps": 10}}).resumed
    with pytest.raises(ValueError, match=r"differs in: eval.episodes_dir\).*test_5w1s_600.json"):
        RunDir(tmp_path / "r", {"eval": {"episodes_dir": str(other), "steps": 10}})
    with pytest.raises(ValueError, match=r"differs in: eval.episodes_dir, eval.steps"):
        RunDir(tmp_path / "r", {"eval": {"episodes_dir": str(new), "steps": 11}})


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_every_file_of_a_run_gets_the_permissions_a_plain_open_gives(tmp_path, mask, expected):
    import os
    import stat

    old = os.umask(mask)
    try:
        run = RunDir(tmp_path / "r", {"a": 1})
        run.log_metrics({"step": 1})
        run.save_checkpoint({"step": 1})
        run.save_checkpoint({"step": 2})
        run.truncate_metrics(1)
        run.write_results({"acc": 0.5})
    finally:
        os.umask(old)
    names = ["config.yaml", "run.json", "metrics.jsonl", "checkpoints/last.pt", "checkpoints/last.prev.pt",
             "results.json"]
    modes = {name: oct(stat.S_IMODE((tmp_path / "r" / name).stat().st_mode)) for name in names}
    assert modes == {name: oct(expected) for name in names}


def test_a_checkpoint_that_would_run_code_is_refused_in_one_line_without_advising_weights_only_false(tmp_path):
    import os
    import pickle

    class RunsCode:
        def __reduce__(self):
            return (os.mkdir, (str(tmp_path / "code-ran"),))

    run = RunDir(tmp_path / "r", {})
    run.save_checkpoint({"step": 1})
    run.save_checkpoint({"step": 2})
    for name in ("last.pt", "last.prev.pt"):
        (tmp_path / "r" / "checkpoints" / name).write_bytes(pickle.dumps({"step": RunsCode()}))
    with pytest.raises(RuntimeError) as info:
        run.load_checkpoint()
    msg = str(info.value)
    assert "\n" not in msg and "weights_only" not in msg and not (tmp_path / "code-ran").exists()
    assert "last.pt: not a plain tensor file; refusing to load it" in msg
    assert "last.prev.pt: not a plain tensor file; refusing to load it" in msg


def test_a_run_whose_config_yaml_is_not_valid_yaml_is_one_line_naming_the_line(tmp_path):
    RunDir(tmp_path / "r", {"a": 1})
    (tmp_path / "r" / "config.yaml").write_text("a: 1\nb: [2\n")
    with pytest.raises(ValueError, match=r"^run configuration '.*config.yaml', line 3, column 1: not valid YAML: "
                                         r"expected ',' or '\]'.*; fix the file there$"):
        RunDir(tmp_path / "r", {"a": 1})


def test_a_run_that_saved_no_work_gives_way_to_other_inputs(tmp_path):
    run = RunDir(tmp_path / "r", {"a": 1})
    run.check_inputs({"pool": {"manifest_sha256": "a" * 64}})
    run.log_metrics({"step": 1})
    (tmp_path / "r" / "episodes").mkdir()
    (tmp_path / "r" / "episodes" / "val_5w1s_100.json").write_text("{}")  # drawn from the old data
    RunDir(tmp_path / "r", {"a": 1}).check_inputs({"pool": {"manifest_sha256": "c" * 64}})
    assert json.loads((tmp_path / "r" / "run.json").read_text())["inputs"] == {"pool": {"manifest_sha256": "c" * 64}}
    assert run.read_metrics() == [] and not (tmp_path / "r" / "episodes" / "val_5w1s_100.json").exists()


def test_a_checkpoint_fallback_warns_once_and_a_failed_one_only_raises(tmp_path, caplog):
    run = RunDir(tmp_path / "r", {})
    run.save_checkpoint({"step": 1})
    run.save_checkpoint({"step": 2})
    (tmp_path / "r" / "checkpoints" / "last.pt").write_bytes(b"junk")
    with caplog.at_level("WARNING", logger="dfml.runs"):
        assert run.load_checkpoint()["step"] == 1
    assert [r.getMessage() for r in caplog.records] == [
        f"{tmp_path / 'r' / 'checkpoints' / 'last.pt'}: not a plain tensor file; refusing to load it; resuming from "
        f"{tmp_path / 'r' / 'checkpoints' / 'last.prev.pt'}, the checkpoint before it"]
    caplog.clear()
    (tmp_path / "r" / "checkpoints" / "last.prev.pt").write_bytes(b"junk")
    with caplog.at_level("WARNING", logger="dfml.runs"), pytest.raises(RuntimeError, match="no readable checkpoint"):
        run.load_checkpoint()
    assert caplog.records == [], "the error line says it all: warnings before it would be more lines on stderr"


def _finished(path, config, info):
    run = RunDir(path, config)
    (path / "results.json").write_text(json.dumps({"info": info}))
    (path / "model.pt").write_bytes(b"weights")
    return run


def test_a_larger_budget_is_refused_without_extend_and_with_it_keeps_the_results_it_had(tmp_path):
    old = {"train": {"steps": 100, "budget_minutes": 15.0}}
    _finished(tmp_path / "r", old, {"steps": 40, "stopped_early": {"step": 40, "reason": "CPU budget of 15 minutes "
                                                                   "spent (train.budget_minutes)"}})
    new = {"train": {"steps": 100, "budget_minutes": 30.0}}
    with pytest.raises(ValueError, match=r"smaller budget \(train.budget_minutes 15 -> 30\); nothing was changed. "
                                         r"Add --extend .* move to extended/1/"):
        RunDir(tmp_path / "r", new)
    assert (tmp_path / "r" / "results.json").is_file()
    run = RunDir(tmp_path / "r", new, extend=True)
    assert run.resumed and run.extended == {"train.budget_minutes": [15.0, 30.0]}
    assert not (tmp_path / "r" / "results.json").exists() and (tmp_path / "r" / "extended/1/model.pt").read_bytes() \
        == b"weights"
    assert yaml.safe_load((tmp_path / "r" / "extended/1/config.yaml").read_text()) == old
    assert yaml.safe_load((tmp_path / "r" / "config.yaml").read_text()) == new
    assert run.info["extensions"][0]["changed"] == {"train.budget_minutes": [15.0, 30.0]}
    # a second extension keeps the first's files apart; no limit at all is larger too
    (tmp_path / "r" / "results.json").write_text(json.dumps({"info": {"stopped_early": {
        "step": 80, "reason": "CPU budget of 30 minutes spent (train.budget_minutes)"}}}))
    RunDir(tmp_path / "r", {"train": {"steps": 100, "budget_minutes": None}}, extend=True)
    assert (tmp_path / "r" / "extended/2/results.json").is_file() and (tmp_path / "r" / "extended/1/results.json").is_file()


@pytest.mark.parametrize("info, new, match", [
    ({"steps": 40, "stopped_early": {"step": 40, "reason": "the pool's total budget (datafree.access.total) has run "
                                                           "out"}},
     {"train": {"steps": 100, "budget_minutes": 30.0}}, r"stopped early \(the pool's total budget"),
    ({"steps": 40, "stopped_early": {"step": 40, "reason": "CPU budget of 15 minutes spent (train.budget_minutes)"}},
     {"train": {"steps": 200, "budget_minutes": 15.0}}, "raise train.budget_minutes too"),
    ({"steps": 100}, {"train": {"steps": 100, "budget_minutes": 30.0}}, "raise train.steps too"),
])
def test_a_larger_budget_that_would_not_lift_what_ended_the_run_is_refused_untouched(tmp_path, info, new, match):
    _finished(tmp_path / "r", {"train": {"steps": 100, "budget_minutes": 15.0}}, info)
    files = {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()}
    with pytest.raises(ValueError, match=match):
        RunDir(tmp_path / "r", new, extend=True)
    assert {p: p.read_bytes() for p in (tmp_path / "r").rglob("*") if p.is_file()} == files


def test_a_smaller_budget_or_another_setting_is_another_configuration_even_with_extend(tmp_path):
    _finished(tmp_path / "r", {"train": {"steps": 100, "budget_minutes": 15.0, "seed": 0}}, {"steps": 100})
    for new in ({"train": {"steps": 50, "budget_minutes": 15.0, "seed": 0}},
                {"train": {"steps": 200, "budget_minutes": 15.0, "seed": 1}},
                {"train": {"steps": 200, "budget_minutes": None, "seed": 0}} | {"x": 1}):
        with pytest.raises(ValueError, match="another configuration"):
            RunDir(tmp_path / "r", new, extend=True)

"""Every benchmark scenario runs end to end at toy scale, and the CIFAR-FS presets' scenarios resolve."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dfml.experiment import experiment_config
from dfml.pool import ModelPool, PretrainConfig
from dfml.pool.pretrain import pretrain_training_fields

from .scripts import load_script

TOY = Path(__file__).with_name("toy_scenarios.yaml")
SCENARIOS = ["ss", "hetero", "multi", "tdc20", "tdc40", "blackbox"]


protocol = load_script("protocol")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_each_scenario_runs_end_to_end_at_toy_scale(scenario, tmp_path, capsys):
    out = tmp_path / scenario
    assert protocol.main("toy", ["--preset", str(TOY), "--scenario", scenario, "--out", str(out)]) == 0
    report = json.loads((out / "results.json").read_text())
    runs = report["runs"]
    assert runs and list(runs) == list(protocol.load_preset("toy", "tiny", scenario, TOY)["runs"])
    assert report["preset"]["scenario"] == scenario
    assert all(0 <= r["scores"]["5way_1shot"]["mean"] <= 100 for r in runs.values())
    md = (out / "results.md").read_text()
    if scenario == "hetero":
        pool = ModelPool(out / "pool")
        assert pool.architectures() == ["mlp"] and len({e.architecture_key for e in pool}) == 3
        assert runs["average"]["info"]["average"]["models"] == [0, 3, 6]
        assert "averages 3 of 8 pool models" in md
    if scenario == "multi":
        merged = ModelPool(out / "pool-merged")
        assert merged.datasets() == ["toy", "toy_b"] and len(merged) == 10
    if scenario.startswith("tdc"):
        corrupted = next(out.glob("pool-corrupted-*"))
        assert {e.trust for e in ModelPool(corrupted)} == {"trusted", "deceptive", "poor"}
        weigher = next(n for n in runs if n.startswith("robust@"))
        assert (out / "plots" / f"{weigher}-reliability.png").stat().st_size > 0  # trusted vs corrupted colours
    assert (out / "plots" / "val_acc.png").stat().st_size > 0
    if scenario == "hetero":
        assert (out / "plots" / "tgr-groups.png").stat().st_size > 0
    if scenario == "blackbox":
        spent = runs["bidf_mkd@budget"]["info"]["teacher_queries_black_box"]
        assert 0 < spent <= 6000 and "budget: 2000 per model, 6000 in all" in md


@pytest.mark.parametrize("scale", ["small", "paper"])
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_the_cifar_fs_scenarios_resolve_to_valid_configs(scale, scenario):
    p = protocol.load_preset("cifar_fs", scale, scenario)
    for spec in [p["pool"]] + [e["pool"] for e in p.get("extra_pools", [])]:
        PretrainConfig(**spec)
    layer = {"dataset": p["dataset"], "eval": p.get("eval", {}), "train": p.get("train", {}),
             "datafree": p.get("datafree", {}), "pool": "unused"}
    for spec in p["runs"].values():
        experiment_config(spec["recipe"], layer, spec.get("set", {}))
    if scenario == "hetero":
        assert [a if isinstance(a, str) else a["name"] for a in p["pool"]["arch"]] == ["conv4", "resnet10", "resnet18"]
        assert p["train"]["meta_arch"] == "conv4"
    if scenario == "multi":
        assert [e["dataset"] for e in p["extra_pools"]] == ["mini_imagenet"]
    if scenario.startswith("tdc"):
        assert p["corruption"]["ratio"] == {"tdc20": 0.2, "tdc40": 0.4}[scenario]
        assert {s.get("pool") for s in p["runs"].values()} >= {"corrupted"}
    if scenario == "blackbox":
        budgets = [s["set"]["datafree"]["access"] for s in p["runs"].values() if s["recipe"] == "bidf_mkd"]
        assert budgets and all(b["per_model"] and b["total"] for b in budgets)


def test_the_cifar_fs_cpu_preset_resolves_and_gives_every_trained_recipe_the_same_cpu_budget():
    p = protocol.load_preset("cifar_fs", "cpu")
    PretrainConfig(**p["pool"])
    layer = {"dataset": p["dataset"], "eval": p.get("eval", {}), "train": p.get("train", {}),
             "datafree": p.get("datafree", {}), "pool": "unused"}
    cfgs = {name: experiment_config(spec["recipe"], layer, spec.get("set", {})) for name, spec in p["runs"].items()}
    trained = {n: c for n, c in cfgs.items() if c.recipe not in ("random", "average")}
    assert {c.recipe for c in trained.values()} >= {"maml_data", "purer", "bidf_mkd", "robust", "free", "tgr"}
    assert {c.train.budget_minutes for c in trained.values()} == {30.0}
    assert PretrainConfig(**p["pool"]) == PretrainConfig(**{**p["pool"], **pretrain_training_fields("papers")})
    assert cfgs["free@5shot"].train.n_shot == 5 and cfgs["free"].train.n_shot == 1
    assert cfgs["free"].datafree.task_augment.active and not cfgs["free_noaug"].datafree.task_augment.active


def test_an_unknown_scenario_lists_the_preset_s():
    with pytest.raises(KeyError, match=r"unknown scenario 'nope'; this preset has \['blackbox', 'hetero'"):
        protocol.load_preset("toy", "tiny", "nope", TOY)


def test_a_partial_invocation_keeps_the_runs_finished_earlier_in_the_table(tmp_path, capsys):
    out = tmp_path / "ss"
    base = ["--preset", str(TOY), "--scenario", "ss", "--out", str(out)]
    assert protocol.main("toy", [*base, "--recipes", "random", "average"]) == 0
    assert protocol.main("toy", [*base, "--recipes", "robust"]) == 0
    report = json.loads((out / "results.json").read_text())
    assert list(report["runs"]) == ["random", "average", "robust"]  # the preset's order, nothing dropped
    assert "| random |" in (out / "results.md").read_text()
    assert "robust:" in capsys.readouterr().err  # only robust was run by the second call
    # a run finished with another configuration is named and left out, not silently reported
    assert protocol.main("toy", [*base, "--recipes", "random", "--preset", str(_average_changed(tmp_path))]) == 0
    assert "average: finished earlier with another configuration, left out of the table" in capsys.readouterr().err
    assert list(json.loads((out / "results.json").read_text())["runs"]) == ["random", "robust"]


def _average_changed(tmp_path: Path) -> Path:
    """The toy preset with the ``average`` run scored with 3 fine-tuning steps instead of 2."""
    import yaml

    preset = yaml.safe_load(TOY.read_text())
    preset["runs"]["average"]["set"] = {"eval": {"steps": 3}}
    path = tmp_path / "changed.yaml"
    path.write_text(yaml.safe_dump(preset))
    return path


def test_without_matplotlib_the_plots_are_skipped_with_the_pip_command(tmp_path, monkeypatch, capsys):
    import sys

    run = tmp_path / "runs" / "r"
    run.mkdir(parents=True)
    (run / "metrics.jsonl").write_text(json.dumps({"step": 2, "val_acc": 40.0}) + "\n")
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    assert protocol.write_plots(tmp_path, ["r"]) == []
    assert 'plots skipped: dfml plots need matplotlib' in capsys.readouterr().err
    assert not list((tmp_path / "plots").glob("*.png"))


def test_the_notes_under_a_table_say_which_runs_stopped_meta_training_early():
    stopped = {"info": {"stopped_early": {"step": 3, "reason": "the query budgets cannot fund another task"}},
               "config": {"train": {"steps": 10}}}
    assert protocol.notes({"bidf_mkd@budget": stopped, "average": {"info": {}, "config": {}}}) == (
        "* `bidf_mkd@budget` stopped meta-training early, at step 3 of 10: the query budgets cannot fund another task.")


def test_a_run_name_selects_that_run_and_a_recipe_name_its_clean_pool_runs() -> None:
    runs = {"free": {"recipe": "free"}, "free@5shot": {"recipe": "free"}, "robust": {"recipe": "robust"},
            "robust-tdc": {"recipe": "robust", "pool": "corrupted"}, "fast": {"recipe": "tgr"},
            "slow": {"recipe": "tgr"}}
    assert list(protocol.select_runs(runs, ["free"])) == ["free"]
    assert list(protocol.select_runs(runs, ["free@5shot"])) == ["free@5shot"]
    assert list(protocol.select_runs(runs, ["tgr"])) == ["fast", "slow"]
    assert list(protocol.select_runs(runs, ["robust"])) == ["robust"]
    assert list(protocol.select_runs(runs, None)) == list(runs)


def test_the_mini_imagenet_cpu_preset_is_the_cifar_fs_one_on_another_dataset():
    cifar, mini = protocol.load_preset("cifar_fs", "cpu"), protocol.load_preset("mini_imagenet", "cpu")
    assert (cifar.pop("dataset"), mini.pop("dataset")) == ("cifar_fs", "mini_imagenet")
    assert mini == cifar


def test_a_preset_names_the_baseline_of_its_paired_columns(tmp_path):
    import yaml

    preset = yaml.safe_load(TOY.read_text())
    preset["baseline"] = "random"
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(preset))
    out = tmp_path / "ss"
    assert protocol.main("toy", ["--preset", str(path), "--scenario", "ss", "--out", str(out),
                                 "--recipes", "random", "average"]) == 0
    md = (out / "results.md").read_text()
    assert "vs random (5way_1shot)" in md and "| random | " in md


def test_extend_takes_finished_runs_on_to_the_preset_s_larger_steps_and_keeps_their_first_results(tmp_path, capsys):
    import yaml

    out = tmp_path / "ss"
    base = ["--preset", str(TOY), "--scenario", "ss", "--out", str(out), "--recipes", "robust"]
    assert protocol.main("toy", base) == 0
    first = (out / "runs" / "robust" / "results.json").read_bytes()
    preset = yaml.safe_load(TOY.read_text())
    preset["train"]["steps"] = 4
    longer = tmp_path / "longer.yaml"
    longer.write_text(yaml.safe_dump(preset))
    with pytest.raises(ValueError, match="Add --extend"):
        protocol.main("toy", [*base, "--preset", str(longer)])
    assert protocol.main("toy", [*base, "--preset", str(longer), "--extend"]) == 0
    assert (out / "runs" / "robust" / "extended" / "1" / "results.json").read_bytes() == first
    assert json.loads((out / "results.json").read_text())["runs"]["robust"]["info"]["steps"] == 4


def test_a_seed_gives_another_replicate_of_pool_and_training_on_the_same_episodes():
    p = protocol.load_preset("cifar_fs", "cpu")
    again = protocol.with_seed(p, 1)
    assert again["pool"]["seed"] == again["train"]["seed"] == 1 and again["eval"] == p["eval"]
    assert p["pool"]["seed"] == p["train"]["seed"] == 0  # the preset itself is untouched


def test_a_run_another_invocation_holds_is_left_out_of_the_table_naming_the_holder(tmp_path, capsys):
    from dfml.locks import hold_directory

    out = tmp_path / "ss"
    base = ["--preset", str(TOY), "--scenario", "ss", "--out", str(out)]
    assert protocol.main("toy", [*base, "--recipes", "random", "average"]) == 0
    with hold_directory(out / "runs" / "random", "run directory", "use another --out"):
        assert protocol.main("toy", [*base, "--recipes", "average"]) == 0
    assert "random: left out of the table (run directory" in capsys.readouterr().err
    assert list(json.loads((out / "results.json").read_text())["runs"]) == ["average"]


SAVED = Path(__file__).resolve().parents[1] / "fixtures" / "saved_configs"
BIDF_MKD_RUNS = [(dataset, scale, scenario, name) for dataset in ("cifar_fs", "mini_imagenet")
                 for scale in ("cpu", "small", "paper")
                 for scenario in [None, *(protocol.load_preset(dataset, scale).get("scenarios") or {})]
                 for name, spec in protocol.load_preset(dataset, scale, scenario)["runs"].items()
                 if spec["recipe"] == "bidf_mkd"]


@pytest.mark.parametrize("dataset, scale, scenario, name", BIDF_MKD_RUNS, ids=lambda x: str(x))
def test_every_bidf_mkd_run_of_a_preset_keeps_the_inner_loop_its_learner_ran_with(dataset, scale, scenario, name):
    """Before the inner loop had one place, bidf_mkd's distilling learner read datafree.distill (the recipe's
    preset: 5 steps at 0.01, second order), which no benchmark preset set, and not the presets' train section."""
    from dfml.config import load_yaml

    ran = load_yaml(SAVED / "bidf_mkd.yaml")["datafree"]["distill"]  # the CIFAR-FS CPU table's run, saved before
    p = protocol.load_preset(dataset, scale, scenario)
    layer = {"dataset": p["dataset"], "eval": p.get("eval", {}), "train": p.get("train", {}),
             "datafree": p.get("datafree", {}), "pool": "unused"}
    cfg = experiment_config("bidf_mkd", layer, p["runs"][name].get("set", {}))
    assert {**cfg.train.inner_loop(), "temperature": cfg.datafree.distill.temperature} == ran


def test_the_saved_bidf_mkd_run_of_the_cpu_table_is_the_preset_s_run_today():
    """So its figures are those of the preset as it is, and --extend takes it on."""
    import yaml

    from dfml.config import config_changes, load_yaml, to_dict
    from dfml.experiment import saved_defaults
    from dfml.upgrade import upgrade_config

    saved = load_yaml(SAVED / "bidf_mkd.yaml")
    p = protocol.load_preset("cifar_fs", "cpu")
    layer = {"dataset": p["dataset"], "data_root": saved["data_root"], "device": saved["device"],
             "eval": {**p["eval"], "episodes_dir": saved["eval"]["episodes_dir"]}, "train": p["train"],
             "datafree": p.get("datafree", {}), "pool": saved["pool"]}
    now = to_dict(experiment_config("bidf_mkd", layer, p["runs"]["bidf_mkd"]["set"]))
    plain = yaml.safe_load(yaml.safe_dump(now))
    assert config_changes(upgrade_config(saved), plain, yaml.safe_load(yaml.safe_dump(saved_defaults()))) == []
    assert saved["train"]["first_order"] and not plain["train"]["first_order"]  # the distill copy's, as it ran

"""Fields that moved (dfml.upgrade): a run saved before still loads, compares equal to the same
configuration today, resumes, and is compared with runs made today. The saved configurations are
real: tests/fixtures/saved_configs/ holds the config.yaml of a run of every recipe (maml: the demo's,
robust_val_differs: a toy run whose meta-validation fine-tuned otherwise than its meta-test, the
others: CIFAR-FS benchmark runs), written before ``train.bank_per_class``/``train.inversion``,
``datafree.distill.inner_*`` and ``train.test_inner_*`` moved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dfml.cli import build_parser
from dfml.commands.runs import _experiment_configs, cmd_compare
from dfml.config import config_changes, from_dict, load_yaml, to_dict
from dfml.datafree.build import build_learner
from dfml.datafree.trainer import TrainConfig
from dfml.eval import EvalConfig
from dfml.experiment import ExperimentConfig, experiment_config, saved_defaults
from dfml.meta import DistillationConfig, DistillationMAML
from dfml.models import build_model
from dfml.recipes import RECIPES
from dfml.recipes.base import RecipeContext
from dfml.runs import RunDir
from dfml.upgrade import MOVED, upgrade_config, upgrade_overrides

SAVED = Path(__file__).resolve().parent / "fixtures" / "saved_configs"
RECIPE_FILES = sorted(SAVED.glob("*.yaml"))
DEFAULTS = yaml.safe_load(yaml.safe_dump(saved_defaults()))


def _today(saved: dict) -> dict:
    """``saved`` read by dfml today, as it would write it."""
    return yaml.safe_load(yaml.safe_dump(to_dict(from_dict(ExperimentConfig, upgrade_config(saved)))))


def _holds(tree: dict, dotted: str) -> bool:
    *sections, leaf = dotted.split(".")
    for part in sections:
        tree = tree.get(part, {})
    return leaf in tree


def test_there_is_a_saved_configuration_of_every_recipe():
    assert {load_yaml(f)["recipe"] for f in RECIPE_FILES} == set(RECIPES.names())


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_a_saved_configuration_loads_and_compares_equal_to_itself_today(path):
    saved = load_yaml(path)
    assert all(_holds(saved, old) for old in ("train.test_inner_steps", "datafree.distill.inner_lr"))  # written before
    assert config_changes(upgrade_config(saved), _today(saved), DEFAULTS) == []


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_a_run_saved_before_the_move_resumes(path, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(path.read_text())
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "last.pt").write_bytes(b"work")  # a run that saved work: a mismatch would be refused
    cfg = from_dict(ExperimentConfig, upgrade_config(load_yaml(path)))
    assert RunDir(run, to_dict(cfg), defaults=saved_defaults(), upgrade=upgrade_config).resumed
    with pytest.raises(ValueError, match="another configuration"):
        RunDir(run, to_dict(cfg), defaults=saved_defaults())  # without the mapping it would not


def test_maml_takes_its_bank_settings_to_their_new_place():
    saved = load_yaml(SAVED / "maml.yaml")
    cfg = from_dict(ExperimentConfig, upgrade_config(saved))
    assert cfg.datafree.synthetic.per_class == saved["train"]["bank_per_class"] == 40
    assert to_dict(cfg.datafree.pixel) == saved["train"]["inversion"]


def test_other_recipes_drop_them_for_they_never_read_them():
    saved = load_yaml(SAVED / "free.yaml")
    up = upgrade_config(saved)
    assert "bank_per_class" not in up["train"] and "inversion" not in up["train"]
    assert up["datafree"]["pixel"] == saved["datafree"]["pixel"] and "synthetic" not in up["datafree"]
    assert saved["train"]["inversion"]  # the input is left as it was


def test_a_layer_of_old_settings_sets_the_new_fields_of_maml_only():
    layer = {"train": {"bank_per_class": 16, "inversion": {"steps": 3}, "steps": 5}}
    maml, free = experiment_config("maml", layer), experiment_config("free", layer)
    assert (maml.datafree.synthetic.per_class, maml.datafree.pixel.steps, maml.train.steps) == (16, 3, 5)
    assert free.datafree.synthetic.per_class == 20 and free.datafree.pixel.steps == 200 and free.train.steps == 5


def test_where_the_distilling_learner_ran_its_inner_loop_becomes_train_s():
    saved = load_yaml(SAVED / "bidf_mkd.yaml")
    ran = saved["datafree"]["distill"]
    assert saved["train"]["first_order"] and not ran["first_order"]  # train's first_order never reached it
    cfg = from_dict(ExperimentConfig, upgrade_config(saved))
    assert cfg.train.inner_loop() == {k: ran[k] for k in ("inner_steps", "inner_lr", "first_order", "learn_inner_lr")}
    assert to_dict(cfg.datafree.distill) == {"temperature": ran["temperature"]}


def test_where_the_maml_learner_ran_the_distill_copy_is_dropped_and_train_s_kept():
    saved = load_yaml(SAVED / "free.yaml")
    assert saved["train"]["first_order"] and not saved["datafree"]["distill"]["first_order"]
    up = upgrade_config(saved)
    assert up["train"] == {k: v for k, v in saved["train"].items() if k not in ("bank_per_class", "inversion",
                                                                               "test_inner_steps", "test_inner_lr")}
    assert up["datafree"]["distill"] == {"temperature": 1.0}
    layer = {"datafree": {"distill": {"inner_lr": 0.5}}}  # a layer for every recipe: bidf_mkd's learner distils
    assert experiment_config("bidf_mkd", layer).train.inner_lr == 0.5
    assert experiment_config("free", layer).train.inner_lr == 0.01 == experiment_config("maml", layer).train.inner_lr


def test_without_a_known_learner_a_distill_setting_moves_unless_it_would_replace_another():
    assert upgrade_config({"datafree": {"distill": {"inner_lr": 0.5}}}) == {"train": {"inner_lr": 0.5}}
    assert upgrade_config({"datafree": {"distill": {"inner_lr": 0.5}}, "train": {"inner_lr": 0.5}}) == {
        "train": {"inner_lr": 0.5}}
    with pytest.raises(ValueError, match=r"datafree.distill.inner_lr=0.5 and train.inner_lr=0.1: the inner loop now"):
        upgrade_config({"datafree": {"distill": {"inner_lr": 0.5}}, "train": {"inner_lr": 0.1}})


def test_the_bidf_mkd_preset_gives_its_learner_the_inner_loop_it_ran_with_before():
    ran = load_yaml(SAVED / "bidf_mkd.yaml")["datafree"]["distill"]  # the CIFAR-FS benchmark's run, before the move
    cfg = experiment_config("bidf_mkd")
    learner = build_learner(cfg.datafree, RecipeContext(pool=None, train=cfg.train, input_shape=(8,), val_tasks=list),
                            build_model("mlp", in_features=8, num_classes=5))
    assert isinstance(learner, DistillationMAML)
    got = {"inner_steps": learner.inner_steps, "inner_lr": learner.inner_lr, "first_order": learner.first_order,
           "learn_inner_lr": learner.inner_lrs is not None, "temperature": learner.config.temperature}
    assert got == ran


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_meta_validation_fine_tunes_as_the_saved_run_s_did(path):
    saved = load_yaml(path)
    ev = from_dict(ExperimentConfig, upgrade_config(saved)).eval
    assert ev.validation() == (saved["train"]["test_inner_steps"], saved["train"]["test_inner_lr"])
    if path.stem == "robust_val_differs":  # 5 steps at 0.05 against meta-test's 10 at 0.1
        assert (ev.val_steps, ev.val_lr) == (5, 0.05) and (ev.steps, ev.lr) == (10, 0.1)
    else:  # equal to meta-test's, as in every benchmark and the demo: nothing to keep
        assert (ev.val_steps, ev.val_lr) == (None, None)
    assert EvalConfig().validation() == (10, 0.01) == (EvalConfig().steps, EvalConfig().lr)


def test_a_layer_s_old_validation_setting_is_kept_where_it_differs_from_meta_test():
    same = experiment_config("robust", {"train": {"test_inner_lr": 0.1}, "eval": {"lr": 0.1}})
    assert (same.eval.val_steps, same.eval.val_lr) == (None, None) and same.eval.validation() == (10, 0.1)
    other = experiment_config("robust", {"train": {"test_inner_lr": 0.1}})
    assert other.eval.val_lr == 0.1 and other.eval.validation() == (10, 0.1) and other.eval.lr == 0.01


def test_the_command_that_made_a_run_typed_today_resolves_to_its_upgraded_configuration():
    saved = load_yaml(SAVED / "robust_val_differs.yaml")
    args = build_parser().parse_args([
        "train", "--recipe", "robust", "--pool", saved["pool"], "--dataset", "toy", "--episodes", "5", "--shots", "1",
        "--out", "unused", "--set", "train.steps=2", "--set", "train.val_every=1", "--set", "train.val_episodes=3",
        "--set", "train.inner_lr=0.1", "--set", "train.test_inner_steps=5", "--set", "train.test_inner_lr=0.05",
        "--set", "eval.lr=0.1", "--set", "datafree.inverter=pixel", "--set", "datafree.pixel.steps=3"])
    (cfg,) = _experiment_configs(args, [args.recipe])
    assert (cfg.eval.val_steps, cfg.eval.val_lr) == (5, 0.05)
    now = yaml.safe_load(yaml.safe_dump(to_dict(cfg)))
    assert config_changes(upgrade_config(saved), now, DEFAULTS) == []


def test_a_run_saved_before_the_move_is_compared_with_one_that_validates_otherwise(tmp_path, capsys):
    old = json.loads((SAVED / "robust_val_differs.results.json").read_text())
    assert "test_inner_steps" in old["config"]["train"] and "val_steps" not in old["config"]["eval"]
    new = {**old, "config": {**_today(old["config"]), "eval": {**_today(old["config"])["eval"], "val_steps": 2}}}
    for name, results in (("old", old), ("new", new)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(results))
    args = build_parser().parse_args(["compare", str(tmp_path / "old"), str(tmp_path / "new")])
    assert cmd_compare(args) == 0
    assert "new" in capsys.readouterr().out
    new["config"]["eval"]["lr"] = 0.01  # the meta-test protocol itself still has to match
    (tmp_path / "new" / "results.json").write_text(json.dumps(new))
    with pytest.raises(ValueError, match=r"different meta-test protocols \(eval: lr\)"):
        cmd_compare(args)


def test_old_override_keys_are_rewritten_to_the_new_ones():
    assert upgrade_overrides(["train.bank_per_class=8", "train.inversion.steps=2", "train.steps=3",
                              "train.inversion={steps: 4}", "datafree.distill.inner_lr=0.1",
                              "datafree.distill.temperature=2", "train.test_inner_steps=5"]) == [
        "datafree.synthetic.per_class=8", "datafree.pixel.steps=2", "train.steps=3", "datafree.pixel={steps: 4}",
        "train.inner_lr=0.1", "datafree.distill.temperature=2", "eval.val_steps=5"]


@pytest.mark.parametrize("build, new", [
    (lambda: TrainConfig(bank_per_class=20), "datafree.synthetic.per_class"),
    (lambda: TrainConfig(test_inner_steps=5), "eval.val_steps"),
    (lambda: TrainConfig(test_inner_lr=0.1), "eval.val_lr"),
    (lambda: DistillationConfig(inner_steps=3), r"train.inner_steps; .* DistillationMAML\(model, inner_steps=...\)"),
])
def test_a_python_caller_who_names_a_field_that_moved_is_told_its_new_place_in_one_line(build, new):
    with pytest.raises(TypeError, match=rf"^\w+\(\w+=...\) is not a field any more \(.* moved to {new}") as err:
        build()
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        TrainConfig(bogus=1)  # a field that never was: Python's own message


def test_a_config_file_that_names_a_field_that_moved_says_where_it_went():
    with pytest.raises(ValueError, match=r"test_inner_lr.*\(train.test_inner_lr moved to eval.val_lr; dfml/upgrade"):
        from_dict(ExperimentConfig, {"train": {"test_inner_lr": 0.1}})  # not upgraded: from_dict alone
    assert set(MOVED) >= {"train.test_inner_steps", "datafree.distill.inner_steps", "train.bank_per_class"}


def test_learning_the_inner_step_sizes_needs_an_inner_step():
    assert TrainConfig(learn_inner_lr=True).inner_loop()["learn_inner_lr"]
    with pytest.raises(ValueError, match=r"train.learn_inner_lr=true learns a step size per inner step, but "
                                         r"train.inner_steps=0"):
        TrainConfig(learn_inner_lr=True, inner_steps=0)


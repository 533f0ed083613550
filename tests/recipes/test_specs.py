"""Each recipe declares what it reads of the configuration (issue 12: a setting no recipe reads is refused)."""

import dataclasses

import pytest

from dfml.experiment import ExperimentConfig, experiment_config
from dfml.recipes import RECIPES
from dfml.recipes.base import check_reads, recipe_spec
from dfml.recipes.datafree import NOT_THE_LOOP, PART_SETTINGS

PAPERS = ["bidf_mkd", "free", "purer", "robust", "tgr"]


def _fields(section: str, cfg) -> list[str]:
    return [f"{section}.{f.name}" for f in dataclasses.fields(getattr(cfg, section))]


def test_every_setting_is_read_by_some_recipe_under_some_choice_of_parts():
    cfgs = [experiment_config(r) for r in RECIPES.names()]
    keys = [f.name for f in dataclasses.fields(ExperimentConfig)] + _fields("train", cfgs[0])
    for key in keys:
        assert any(not recipe_spec(c.recipe).unread(c, key) for c in cfgs), key
    for key in _fields("datafree", cfgs[0]):
        if key.split(".")[1] in NOT_THE_LOOP:  # maml's bank
            assert not recipe_spec("maml").unread(experiment_config("maml"), key), key
            continue
        choice, value = PART_SETTINGS.get(key.split(".")[1], ("inverter", "pixel"))
        cfg = experiment_config("robust", {"datafree": {choice: value}})
        assert not recipe_spec("robust").unread(cfg, key), key


def test_baselines_read_the_meta_model_only():
    for name in ("random", "average"):
        cfg = experiment_config(name)
        spec = recipe_spec(name)
        for key in ("train.n_way", "train.seed", "train.meta_arch", "eval.lr", "pool", "device"):
            assert not spec.unread(cfg, key), (name, key)
        for key in ("train.steps", "train.outer_lr", "datafree.synthetic.per_class", "datafree.pixel.steps", "datafree",
                    "datafree.inverter", "eval.val_steps", "eval.val_lr"):
            assert spec.unread(cfg, key), (name, key)


def test_maml_reads_its_bank_and_the_data_free_recipes_their_parts():
    maml = experiment_config("maml")
    assert not recipe_spec("maml").unread(maml, "datafree.pixel.steps")
    assert not recipe_spec("maml").unread(maml, "datafree.synthetic.per_class")
    assert recipe_spec("maml").unread(maml, "datafree.generator.steps")
    for name in PAPERS:
        cfg = experiment_config(name)
        spec = recipe_spec(name)
        assert spec.unread(cfg, "datafree.synthetic.per_class") and spec.unread(cfg, "datafree.synthetic")
        assert not spec.unread(cfg, f"datafree.{cfg.datafree.inverter}.steps" if cfg.datafree.inverter != "metagen"
                               else "datafree.metagen.inner.steps")
        assert not spec.unread(cfg, "datafree.inverter") and not spec.unread(cfg, "train.steps")
    robust = experiment_config("robust")
    assert recipe_spec("robust").unread(robust, "datafree.pixel.steps")
    assert not recipe_spec("robust").unread(robust, "datafree.reliability.lr")
    assert recipe_spec("tgr").unread(experiment_config("tgr"), "datafree.reliability.lr")  # a group selector
    # the parts follow the resolved configuration, not the preset alone
    pixel = experiment_config("robust", {"datafree": {"inverter": "pixel"}})
    assert not recipe_spec("robust").unread(pixel, "datafree.pixel.steps")
    bidf = experiment_config("bidf_mkd")
    assert not recipe_spec("bidf_mkd").unread(bidf, "train.inner_lr")  # its distilling learner's inner loop
    assert not recipe_spec("bidf_mkd").unread(bidf, "datafree.distill.temperature")
    assert recipe_spec("bidf_mkd").unread(bidf, "datafree.alignment.task_lr")


def test_a_setting_read_by_one_of_several_recipes_is_accepted():
    cfgs = [experiment_config("random"), experiment_config("maml")]
    check_reads(cfgs, {"train.steps": "--set train.steps=5"})
    with pytest.raises(ValueError, match=r"--set train\.steps=5: recipe 'random' does not read train\.steps"):
        check_reads(cfgs[:1], {"train.steps": "--set train.steps=5"})


def test_a_recipe_registered_without_a_spec_reads_everything(monkeypatch):
    monkeypatch.setattr(RECIPES, "_items", dict(RECIPES._items))
    RECIPES.register("undeclared")(lambda ctx: None)
    cfg = experiment_config("undeclared")
    assert not recipe_spec("undeclared").unread(cfg, "datafree.inverter")
    assert not recipe_spec("undeclared").unread(cfg, "datafree.synthetic.per_class")

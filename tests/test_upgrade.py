"""Fields that moved (dfml.upgrade): a run saved before still loads, compares equal to the same
configuration today, and resumes. The saved configurations are real: tests/fixtures/saved_configs/
holds the config.yaml of a run of every recipe (maml: the demo's, the others: CIFAR-FS benchmark runs)
written before ``train.bank_per_class``/``train.inversion`` moved to ``datafree.synthetic``/``datafree.pixel``."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from dfml.config import config_changes, from_dict, load_yaml, to_dict
from dfml.datafree.trainer import TrainConfig
from dfml.experiment import ExperimentConfig, experiment_config, saved_defaults
from dfml.recipes import RECIPES
from dfml.runs import RunDir
from dfml.upgrade import MOVED, upgrade_config, upgrade_overrides

SAVED = Path(__file__).resolve().parent / "fixtures" / "saved_configs"
RECIPE_FILES = sorted(SAVED.glob("*.yaml"))


def test_there_is_a_saved_configuration_of_every_recipe():
    assert {f.stem for f in RECIPE_FILES} == set(RECIPES.names())


@pytest.mark.parametrize("path", RECIPE_FILES, ids=lambda p: p.stem)
def test_a_saved_configuration_loads_and_compares_equal_to_itself_today(path):
    saved = load_yaml(path)
    assert "bank_per_class" in saved["train"] and "inversion" in saved["train"]  # written before the move
    cfg = from_dict(ExperimentConfig, upgrade_config(saved))
    now = yaml.safe_load(yaml.safe_dump(to_dict(cfg)))
    assert config_changes(upgrade_config(saved), now, yaml.safe_load(yaml.safe_dump(saved_defaults()))) == []


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


def test_old_override_keys_are_rewritten_to_the_new_ones():
    assert upgrade_overrides(["train.bank_per_class=8", "train.inversion.steps=2", "train.steps=3",
                              "train.inversion={steps: 4}"]) == [
        "datafree.synthetic.per_class=8", "datafree.pixel.steps=2", "train.steps=3", "datafree.pixel={steps: 4}"]


def test_a_python_caller_who_names_a_field_that_moved_is_told_its_new_place_in_one_line():
    with pytest.raises(TypeError, match=r"^TrainConfig\(bank_per_class=...\) is not a field any more \(train.bank_per_class "
                                        r"moved to datafree.synthetic.per_class; dfml/upgrade.py lists the fields") as err:
        TrainConfig(bank_per_class=20)
    assert "\n" not in str(err.value)
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus'"):
        TrainConfig(bogus=1)  # a field that never was: Python's own message


def test_a_config_file_that_names_a_field_that_moved_says_where_it_went():
    with pytest.raises(ValueError, match=r"\(train.bank_per_class moved to datafree.synthetic.per_class; dfml/upgrade"):
        from_dict(ExperimentConfig, {"train": {"bank_per_class": 20}})  # not upgraded: from_dict alone
    assert "train.bank_per_class" in MOVED

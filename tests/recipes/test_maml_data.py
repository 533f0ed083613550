"""``maml_data``: MAML on the real meta-train split, the ceiling row (the only recipe that sees data)."""

import json

from dfml.cli import main
from dfml.recipes.base import RECIPES, recipe_spec

TOY = ["--set", "train.inner_lr=0.1", "--set", "train.outer_lr=0.003", "--set", "eval.lr=0.1"]


def test_only_the_reference_recipe_is_given_real_training_data() -> None:
    assert [name for name in RECIPES.names() if recipe_spec(name).uses_data] == ["maml_data"]


def test_maml_on_real_toy_tasks_learns_far_above_random_and_says_it_used_data(tmp_path) -> None:
    pool = tmp_path / "pool"
    assert main(["--threads", "1", "pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(pool),
                 "--n-models", "2", "--epochs", "3", "--lr", "0.01"]) == 0
    common = ["--pool", str(pool), "--dataset", "toy", "--episodes", "100", "--shots", "1"]
    assert main(["train", "--recipe", "maml_data", *common, "--out", str(tmp_path / "md"),
                 "--set", "train.steps=150", "--set", "train.val_every=75", *TOY]) == 0
    assert main(["eval", "--recipe", "random", *common, "--out", str(tmp_path / "base"),
                 "--set", "eval.lr=0.1", "--set", "eval.episodes_dir=" + str(tmp_path / "md" / "episodes")]) == 0
    md = json.loads((tmp_path / "md" / "results.json").read_text())
    rnd = json.loads((tmp_path / "base" / "random" / "results.json").read_text())
    assert md["info"]["uses_data"] is True
    assert md["scores"]["5way_1shot"]["mean"] > rnd["scores"]["5way_1shot"]["mean"] + 20.0
    # the two were scored on the very same episodes
    assert md["episodes_sha256"] == rnd["episodes_sha256"]


def test_maml_data_refuses_data_free_settings(tmp_path, capsys) -> None:
    assert main(["train", "--recipe", "maml_data", "--pool", str(tmp_path / "p"), "--dataset", "toy",
                 "--out", str(tmp_path / "o"), "--set", "datafree.inverter=metagen"]) == 2
    assert "does not read datafree.inverter" in capsys.readouterr().err


def test_meta_training_can_start_from_the_pool_average(tmp_path) -> None:
    pool = tmp_path / "pool"
    assert main(["--threads", "1", "pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(pool),
                 "--n-models", "2", "--epochs", "3", "--lr", "0.01"]) == 0
    common = ["--pool", str(pool), "--dataset", "toy", "--episodes", "20", "--shots", "1"]
    # one step at a tiny outer lr: the meta-model is (almost) the average it started from
    assert main(["train", "--recipe", "maml_data", *common, "--out", str(tmp_path / "md"), "--set", "train.steps=1",
                 "--set", "train.val_every=1", "--set", "train.outer_lr=1e-9", "--set", "train.meta_init=average",
                 *TOY[4:]]) == 0
    assert main(["eval", "--recipe", "average", *common, "--out", str(tmp_path / "base"), "--set", "eval.lr=0.1",
                 "--set", "eval.episodes_dir=" + str(tmp_path / "md" / "episodes")]) == 0
    md = json.loads((tmp_path / "md" / "results.json").read_text())
    avg = json.loads((tmp_path / "base" / "average" / "results.json").read_text())
    assert md["info"]["average"]["averaged"] == 2
    assert md["scores"]["5way_1shot"]["per_episode"] == avg["scores"]["5way_1shot"]["per_episode"]


def test_starting_from_the_average_needs_pool_models_of_n_way_classes(tmp_path, capsys) -> None:
    pool = tmp_path / "pool"
    assert main(["--threads", "1", "pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(pool),
                 "--n-models", "2", "--epochs", "1", "--n-way", "6"]) == 0
    assert main(["train", "--recipe", "maml_data", "--pool", str(pool), "--dataset", "toy", "--out",
                 str(tmp_path / "o"), "--set", "train.meta_init=average"]) == 2
    assert "needs pool models of exactly train.n_way classes" in capsys.readouterr().err
    assert not (tmp_path / "o" / "config.yaml").exists()

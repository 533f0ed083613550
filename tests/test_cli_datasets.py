"""Each dataset added for issue 15 end to end on a tiny tree of generated files: ``dfml pool build``,
``dfml eval --recipe random average`` and a few steps of ``dfml train``, with its options from the
command line recorded where a resume or an episode file would meet other options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from dfml.cli import main

from .data.layouts import write_cub, write_image_folder, write_omniglot_folders, write_omniglot_npz

TWO_WAY = ["--set", "train.n_way=2", "--set", "eval.n_way=2", "--set", "eval.n_query=2", "--set", "eval.lr=0.1"]
"""2-way episodes with 2 queries (the trees hold 4 images a class); a tiny Conv4 fine-tuned at lr 0.01
for 10 steps hardly moves, so the meta-test fine-tune uses 0.1."""


def build(dataset: str, root: Path, out: Path, *options: str) -> list[str]:
    return ["pool", "build", "--dataset", dataset, "--data-root", str(root), *options, "--out", str(out),
            "--n-models", "2", "--n-way", "2", "--epochs", "1", "--arch", "conv4", "--arch-arg", "hidden=4"]


def evaluate(dataset: str, root: Path, pool: Path, out: Path, *options: str) -> list[str]:
    return ["eval", "--recipe", "random", "average", "--pool", str(pool), "--dataset", dataset, "--data-root",
            str(root), *options, "--episodes", "4", "--shots", "1", *TWO_WAY, "--out", str(out)]


def train(dataset: str, root: Path, pool: Path, out: Path, *options: str) -> list[str]:
    steps = ["--set", "train.steps=2", "--set", "train.val_every=1", "--set", "train.val_episodes=2",
             "--set", "train.n_query=2", "--set", "datafree.synthetic.per_class=4", "--set", "datafree.pixel.steps=2"]
    return ["train", "--recipe", "maml", "--pool", str(pool), "--dataset", dataset, "--data-root", str(root),
            *options, "--episodes", "4", "--shots", "1", *TWO_WAY, *steps, "--out", str(out)]


def run_all(dataset: str, root: Path, tmp: Path, *options: str) -> dict:
    """Build, evaluate and train; returns the pool's manifest."""
    assert main(build(dataset, root, tmp / "pool", *options)) == 0
    assert main(evaluate(dataset, root, tmp / "pool", tmp / "ev", *options)) == 0
    assert main(train(dataset, root, tmp / "pool", tmp / "tr", *options)) == 0
    for run in (tmp / "ev" / "random", tmp / "ev" / "average", tmp / "tr"):
        assert json.loads((run / "results.json").read_text())["scores"]["2way_1shot"]["n"] == 4
    return json.loads((tmp / "pool" / "pool.json").read_text())


def test_omniglot_folders_run_end_to_end_on_one_channel(tmp_path: Path) -> None:
    write_omniglot_folders(tmp_path / "data")
    manifest = run_all("omniglot", tmp_path / "data", tmp_path)
    entry = manifest["entries"][0]
    assert entry["input_shape"] == [1, 28, 28] and entry["arch_kwargs"]["in_channels"] == 1
    assert entry["dataset"] == "omniglot" and manifest["build"]["dataset"]["name"] == "omniglot/train"
    meta = json.loads((tmp_path / "tr" / "results.json").read_text())["info"]["meta_inputs"]
    assert meta["shape"] == [1, 28, 28]


def test_omniglot_npz_options_are_recorded_and_a_resume_with_others_is_refused(tmp_path: Path, capsys) -> None:
    write_omniglot_npz(tmp_path / "data")
    options = ("--image-size", "32", "--data-opt", "rotations=true")
    manifest = run_all("omniglot", tmp_path / "data", tmp_path, *options)
    assert manifest["entries"][0]["dataset"] == "omniglot[image_size=32,rotations=true]"
    assert manifest["build"]["dataset"]["num_classes"] == 28 and manifest["entries"][0]["input_shape"] == [1, 32, 32]
    config = yaml.safe_load((tmp_path / "tr" / "config.yaml").read_text())
    assert config["data_options"] == {"image_size": 32, "rotations": True}
    capsys.readouterr()
    assert main(train("omniglot", tmp_path / "data", tmp_path / "pool", tmp_path / "tr", "--image-size", "32")) == 2
    assert "differs in: data_options.rotations" in capsys.readouterr().err
    other = ["--set", f"eval.episodes_dir={tmp_path / 'ev' / 'episodes'}"]
    assert main(evaluate("omniglot", tmp_path / "data", tmp_path / "pool", tmp_path / "ev2", *other)) == 2
    assert "fingerprint field 'name' differs" in capsys.readouterr().err
    assert main(build("omniglot", tmp_path / "data", tmp_path / "pool", "--image-size", "32")) == 2
    assert "was built with a different" in capsys.readouterr().err


def test_cub_runs_end_to_end_at_a_smaller_size(tmp_path: Path) -> None:
    write_cub(tmp_path / "data")
    manifest = run_all("cub", tmp_path / "data", tmp_path, "--image-size", "32")
    entry = manifest["entries"][0]
    assert entry["dataset"] == "cub[image_size=32]" and entry["input_shape"] == [3, 32, 32]
    assert entry["input_mean"] == pytest.approx([0.485, 0.456, 0.406])


def test_image_folder_draws_its_split_next_to_the_pool_and_each_run(tmp_path: Path) -> None:
    write_image_folder(tmp_path / "data")
    options = ("--image-size", "16", "--data-opt", "ratio=[0.34, 0.33, 0.33]", "--data-opt", "seed=1")
    manifest = run_all("image_folder", tmp_path / "data", tmp_path, *options)
    lists = {where: [(tmp_path / where / "splits" / f"{s}.txt").read_text() for s in ("train", "val", "test")]
             for where in ("pool", "ev", "tr")}
    assert lists["pool"] == lists["ev"] == lists["tr"]
    assert set(manifest["entries"][0]["classes"]) <= set(lists["pool"][0].split())
    config = yaml.safe_load((tmp_path / "tr" / "config.yaml").read_text())
    assert config["data_options"]["splits"] == str(tmp_path / "tr" / "splits")
    assert manifest["entries"][0]["input_mean"] is not None  # computed from meta-train
    splits = ("--image-size", "16", "--data-opt", f"splits={tmp_path / 'pool' / 'splits'}")
    assert main(evaluate("image_folder", tmp_path / "data", tmp_path / "pool", tmp_path / "ev3", *splits)) == 0


@pytest.mark.slow
@pytest.mark.parametrize("recipe", ["purer", "bidf_mkd", "robust", "free", "tgr"])
def test_every_data_free_recipe_runs_on_one_channel_images(recipe: str, tmp_path_factory) -> None:
    """The inverters' generators and pixel banks take their channels from the pool's inputs (10-60 s each)."""
    from dfml.experiment import experiment_config, run_experiment

    tmp = tmp_path_factory.mktemp(recipe)
    write_omniglot_folders(tmp / "data")
    assert main(build("omniglot", tmp / "data", tmp / "pool")) == 0
    tiny = {"dataset": "omniglot", "data_root": str(tmp / "data"), "pool": str(tmp / "pool"),
            "train": {"n_way": 2, "n_query": 2, "meta_batch_size": 2, "steps": 2, "inner_steps": 1, "inner_lr": 0.1,
                      "val_every": 2, "val_episodes": 2},
            "eval": {"n_way": 2, "episodes": 4, "shots": [1], "n_query": 2, "lr": 0.1},
            "datafree": {"pixel": {"steps": 3}, "bank": {"per_class": 4, "steps": 2}, "blackbox": {"steps": 2, "q": 2},
                         "generator": {"steps": 2},
                         "metagen": {"inner": {"steps": 2}}}}
    results = run_experiment(experiment_config(recipe, tiny), tmp / "run")
    assert results["info"]["meta_inputs"]["shape"] == [1, 28, 28] and results["scores"]["2way_1shot"]["n"] == 4

"""``dfml plot`` writes the plots a run supports and refuses to overwrite them."""

import pytest
from PIL import Image

from dfml.cli import main
from dfml.experiment import experiment_config, run_experiment
from dfml.pool import build_toy_pool

pytest.importorskip("matplotlib")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("plotruns")
    build_toy_pool(root / "pool", n_models=4, seed=0)
    tiny = {"pool": str(root / "pool"), "dataset": "toy",
            "train": {"n_query": 3, "meta_batch_size": 2, "steps": 4, "inner_steps": 1, "val_every": 2,
                      "val_episodes": 4, "checkpoint_every": 2},
            "eval": {"episodes": 4, "shots": [1]},
            "datafree": {"inverter": "pixel", "pixel": {"steps": 3}}}
    for recipe in ("robust", "tgr"):
        run_experiment(experiment_config(recipe, tiny), root / recipe)
    return root


def test_plot_writes_val_curves_reliability_and_groups(runs, tmp_path, capsys):
    out = tmp_path / "plots"
    assert main(["plot", str(runs / "robust"), str(runs / "tgr"), "--out", str(out)]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert names == ["robust-reliability.png", "tgr-groups.png", "val_acc.png", "val_acc_cpu.png"]
    for p in out.iterdir():
        assert Image.open(p).format == "PNG"
    assert "val_acc.png" in capsys.readouterr().out
    # a second call would overwrite: refused with exit 2, files unchanged
    before = (out / "val_acc.png").read_bytes()
    assert main(["plot", str(runs / "robust"), "--out", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err.lower()
    assert (out / "val_acc.png").read_bytes() == before


def test_plot_of_a_missing_run_names_the_file(tmp_path, capsys):
    assert main(["plot", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "metrics.jsonl" in capsys.readouterr().err

"""A finished run's meta-model: rebuilt from its run directory, exported to one self-contained file,
loaded back with plain ``torch.load(..., weights_only=True)``, and scored by ``dfml eval --model``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from dfml.cli import main
from dfml.data import DATASETS
from dfml.experiment import experiment_config, load_meta_model, run_experiment
from dfml.models import Conv4
from dfml.pool import PretrainConfig, pretrain_pool

from .pool.conftest import fake_images

# tiny 16x16 images: 6 meta-train classes, 3 meta-val and 3 meta-test classes
_SPLITS = {"train": fake_images(6, 10, 16, seed=0, name="tiny/train"),
           "val": fake_images(3, 8, 16, seed=1, name="tiny/val"),
           "test": fake_images(3, 8, 16, seed=2, name="tiny/test")}
_RUN = {"dataset": "tiny_images", "data_root": "unused",
        "train": {"n_way": 2, "val_episodes": 2, "meta_arch": "conv4", "meta_arch_kwargs": {"hidden": 8}},
        "eval": {"n_way": 2, "shots": [1], "n_query": 3, "episodes": 4, "lr": 0.1}}


@pytest.fixture(scope="module")
def mixed_image_pool(tmp_path_factory):
    """A pool whose first model is a (tiny) ResNet-10 and whose second is a Conv4, on a dataset
    registered for this module only."""
    DATASETS._items["tiny_images"] = lambda root, split, **kw: _SPLITS[split]
    try:
        cfg = PretrainConfig(n_models=2, n_way=2, arch=({"name": "resnet10", "widths": [4, 4, 4, 4]},
                                                        {"name": "conv4", "hidden": 8}),
                             epochs=1, batch_size=8, augment=False)
        pool = pretrain_pool(_SPLITS["train"], tmp_path_factory.mktemp("mixed") / "pool", cfg)
        assert [e.arch for e in pool] == ["resnet10", "conv4"]
        yield pool
    finally:
        del DATASETS._items["tiny_images"]


@pytest.fixture(scope="module")
def finished_run(mixed_image_pool, tmp_path_factory):
    """A finished ``random`` run on the mixed pool: a Conv4 meta-model of 16x16 images, 2-way."""
    out = tmp_path_factory.mktemp("runs") / "random"
    run_experiment(experiment_config("random", _RUN, {"pool": str(mixed_image_pool.root)}), out)
    return out


def test_load_meta_model_rebuilds_the_meta_architecture_not_the_first_pool_model_s(finished_run):
    model = load_meta_model(finished_run)  # the pool's model 0 is a ResNet-10; train.meta_arch is conv4
    assert isinstance(model, Conv4)
    saved = torch.load(finished_run / "model.pt", weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in model.state_dict().items())
    assert model(torch.randn(3, 3, 16, 16)).shape == (3, 2)


def test_load_meta_model_reads_the_record_of_a_run_made_before_run_json_held_it(finished_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    info = json.loads((old / "run.json").read_text())
    del info["meta_model"]  # only results.json's info records the meta-model
    (old / "run.json").write_text(json.dumps(info))
    assert isinstance(load_meta_model(old), Conv4)


def _snippet(heading: str) -> str:
    """The first ```python block after the heading that ends in ``heading`` in docs/getting-started.md."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "getting-started.md").read_text()
    section = page[page.index(heading):]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


def test_an_export_loads_with_plain_torch_and_the_documented_snippet_rebuilds_it(finished_run, tmp_path,
                                                                                 monkeypatch, capsys):
    import re

    import dfml

    snippet = _snippet(". Export the meta-model\n")
    assert len([line for line in snippet.splitlines() if line.strip()]) <= 5
    name = re.search(r'torch\.load\("([^"]+)"', snippet).group(1)  # the file the docs export to
    assert main(["export", str(finished_run), "--out", str(tmp_path / name)]) == 0
    assert "conv4 meta-model" in capsys.readouterr().out
    export = torch.load(tmp_path / name, weights_only=True)
    results = json.loads((finished_run / "results.json").read_text())
    assert export["format"] == "dfml.meta_model" and export["dfml_version"] == results["dfml_version"]
    assert export["arch"] == "conv4" and export["arch_kwargs"] == {"hidden": 8, "in_channels": 3, "image_size": 16,
                                                                   "num_classes": 2}
    assert export["inputs"] == {"shape": [3, 16, 16], "mean": [0.5] * 3, "std": [0.25] * 3}
    protocol = {k: v for k, v in results["config"]["eval"].items() if k not in ("val_steps", "val_lr")}
    assert export["eval"] == protocol and export["eval"]["protocol"] == "standard"
    assert export["scores"]["2way_1shot"]["mean"] == results["scores"]["2way_1shot"]["mean"]
    assert export["dataset"] == {"name": "tiny_images", "options": {}, "inputs": export["inputs"]}
    assert export["run"]["recipe"] == "random" and export["batch_stats"] is True

    monkeypatch.chdir(tmp_path)  # the docs' snippet, as written, next to the exported file
    namespace: dict = {}
    exec(snippet, namespace)
    x = torch.randn(4, 3, 16, 16)
    expected = load_meta_model(finished_run)(x)
    assert torch.equal(namespace["model"](x), expected)
    assert torch.equal(dfml.load_exported(tmp_path / name)(x), expected)


def test_torchscript_gives_the_same_logits_and_carries_the_metadata(finished_run, tmp_path):
    assert main(["export", str(finished_run), "--out", str(tmp_path / "m.pt"), "--torchscript",
                 str(tmp_path / "m.ts")]) == 0
    extra = {"dfml.json": ""}
    with pytest.warns(FutureWarning):  # torch 2.x marks TorchScript deprecated; it still loads
        scripted = torch.jit.load(str(tmp_path / "m.ts"), _extra_files=extra)
    x = torch.randn(5, 3, 16, 16)
    assert torch.equal(scripted(x), load_meta_model(finished_run)(x))
    assert json.loads(extra["dfml.json"])["inputs"]["shape"] == [3, 16, 16]


def test_export_never_overwrites_without_force(finished_run, tmp_path, capsys):
    target = tmp_path / "m.pt"
    target.write_bytes(b"keep me")
    assert main(["export", str(finished_run), "--out", str(target)]) == 2
    assert "already exists; nothing was written. Pass --force" in capsys.readouterr().err
    assert target.read_bytes() == b"keep me"
    assert main(["export", str(finished_run), "--out", str(target), "--force"]) == 0
    assert torch.load(target, weights_only=True)["arch"] == "conv4"
    assert [p.name for p in tmp_path.iterdir()] == ["m.pt"]  # no temporary file left behind


def _eval_model(model: Path, out: Path, dataset: str = "tiny_images") -> list[str]:
    return ["eval", "--model", str(model), "--dataset", dataset, "--data-root", "unused", "--episodes", "4",
            "--shots", "1", "--set", "train.n_way=2", "--set", "eval.n_way=2", "--set", "eval.n_query=3",
            "--set", "eval.lr=0.1", "--out", str(out)]


def test_eval_model_reproduces_the_run_s_scores_and_compares_with_it(finished_run, tmp_path, capsys):
    assert main(["export", str(finished_run), "--out", str(tmp_path / "exported.pt")]) == 0
    assert main(_eval_model(tmp_path / "exported.pt", tmp_path / "ev")) == 0
    assert "| exported |" in capsys.readouterr().out
    scored = json.loads((tmp_path / "ev" / "exported" / "results.json").read_text())
    run = json.loads((finished_run / "results.json").read_text())
    assert scored["scores"]["2way_1shot"]["per_episode"] == run["scores"]["2way_1shot"]["per_episode"]
    assert scored["episodes_sha256"] == run["episodes_sha256"]
    assert main(["compare", str(finished_run), str(tmp_path / "ev" / "exported")]) == 0
    assert "+0.00 ± 0.00" in capsys.readouterr().out
    # another file at the same path is refused: the run directory records the model's SHA-256
    torch.save({**torch.load(tmp_path / "exported.pt", weights_only=True), "dfml_version": "0.0.1"},
               tmp_path / "exported.pt")
    assert main(_eval_model(tmp_path / "exported.pt", tmp_path / "ev")) == 2
    assert "differs in: model.sha256" in capsys.readouterr().err


def test_eval_model_refuses_data_of_other_inputs(finished_run, tmp_path, capsys):
    assert main(["export", str(finished_run), "--out", str(tmp_path / "m.pt")]) == 0
    DATASETS._items["tiny_images_24"] = lambda root, split, **kw: fake_images(3, 8, 24, seed=2, name="tiny24/test")
    try:
        assert main(_eval_model(tmp_path / "m.pt", tmp_path / "ev", "tiny_images_24")) == 2
    finally:
        del DATASETS._items["tiny_images_24"]
    err = capsys.readouterr().err.strip()
    assert err == (f"dfml: error: '{tmp_path / 'm.pt'}' takes inputs 3x16x16 normalised with mean [0.5, 0.5, 0.5] and "
                   "std [0.25, 0.25, 0.25], but the tiny_images_24 test split holds 3x24x24 normalised with mean "
                   "[0.5, 0.5, 0.5] and std [0.25, 0.25, 0.25]; score it on the data it was made for (tiny_images)")
    assert not (tmp_path / "ev").exists()


def test_exports_of_a_newer_format_and_clashing_targets_are_refused(finished_run, tmp_path):
    from dfml.export import export_meta_model, read_export

    with pytest.raises(ValueError, match="--out and --torchscript name the same file"):
        export_meta_model(finished_run, tmp_path / "m.pt", torchscript=tmp_path / "m.pt")
    export = export_meta_model(finished_run, tmp_path / "m.pt")
    torch.save({**export, "format_version": 2}, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match=r"has format_version 2, which this dfml \(0\.1\.0\) cannot read .*upgrade"):
        read_export(tmp_path / "newer.pt")
    torch.save({**export, "arch_kwargs": None}, tmp_path / "broken.pt")
    with pytest.raises(ValueError, match="field 'arch_kwargs' must be a dict, got NoneType"):
        read_export(tmp_path / "broken.pt")


def test_a_run_that_recorded_no_meta_model_but_names_one_must_be_finished_first(finished_run, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(finished_run, old)
    (old / "results.json").unlink()  # killed during the meta-test, started before dfml recorded the meta-model
    info = json.loads((old / "run.json").read_text())
    del info["meta_model"]
    (old / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match=r"records no meta-model architecture .* and sets train.meta_arch: run its "
                                         r"command again to finish it"):
        load_meta_model(old)

"""Plots: PNGs of the expected size, refusal to overwrite, error messages that name the fix."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from dfml.plots import (
    load_records,
    plot_dissimilarity,
    plot_reliability,
    plot_val_curves,
    run_trust,
)
from dfml.plots.curves import _cpu_points
from dfml.plots.models import _group_order, _model_styles
from dfml.pool.manifest import PoolEntry, PoolManifest
from dfml.runs import RunDir

SMALL = {"size": (4.0, 3.0), "dpi": 40}  # 160 x 120 pixels: cheap to draw


@pytest.fixture
def mpl() -> None:
    pytest.importorskip("matplotlib")


def val_records(accs: list[float], every: int = 5) -> list[dict]:
    out = []
    for step in range(1, every * len(accs) + 1):
        rec = {"step": step, "loss": 1.0 / step, "acc": 50.0}
        if step % every == 0:
            rec["val_acc"] = accs[step // every - 1]
        out.append(rec)
    return out


def weight_records(steps: int = 6) -> list[dict]:
    """Four models; weight moves from the corrupted models 2 and 3 onto the trusted 0 and 1."""
    out = []
    for s in range(1, steps + 1):
        bad = 0.25 * (1 - s / (steps + 1))
        good = 0.5 - bad
        out.append({"step": s, "loss": 1.0, "reward": 0.1, "selector/w/0": good, "selector/w/1": good,
                    "selector/w/2": bad, "selector/w/3": bad})
    return out


def png(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        return im


def test_val_curves_from_run_directories_and_records_write_a_png_of_the_asked_size(mpl, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run_a", {"recipe": "a"})
    for rec in val_records([40.0, 45.0, 44.0]):
        run.log_metrics(rec)
    out = plot_val_curves({"a": run.path, "b": val_records([30.0, 50.0])}, tmp_path / "val.png", **SMALL)
    im = png(out)
    assert out == tmp_path / "val.png"
    assert (im.format, im.size, im.mode) == ("PNG", (160, 120), "RGBA")


def test_val_curves_say_a_run_without_val_acc_has_not_validated_yet(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'fresh' has no val_acc record: it has not validated yet"):
        plot_val_curves({"ok": val_records([40.0]), "fresh": [{"step": 1, "loss": 2.0}]}, tmp_path / "v.png")
    with pytest.raises(ValueError, match="runs is empty"):
        plot_val_curves({}, tmp_path / "v.png")
    assert not (tmp_path / "v.png").exists()


def test_val_curves_against_cpu_minutes_take_the_cpu_time_of_each_validation(mpl, tmp_path: Path) -> None:
    records = [{**r, "cpu_s": 30.0 * r["step"]} for r in val_records([40.0, 45.0])]
    assert _cpu_points("a", records) == [(2.5, 40.0), (5.0, 45.0)]  # steps 5 and 10 at 30 s a step
    out = plot_val_curves({"a": records}, tmp_path / "cpu.png", x="cpu", **SMALL)
    assert png(out).size == (160, 120)
    with pytest.raises(ValueError, match="'old' records no cpu_s .* plot it against steps"):
        plot_val_curves({"old": val_records([40.0])}, tmp_path / "old.png", x="cpu")
    with pytest.raises(ValueError, match="x must be 'step' or 'cpu'"):
        plot_val_curves({"a": records}, tmp_path / "x.png", x="time")


def test_a_missing_run_directory_or_metrics_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        load_records(tmp_path)
    with pytest.raises(FileNotFoundError, match="nope.jsonl"):
        plot_val_curves({"a": tmp_path / "nope.jsonl"}, tmp_path / "v.png")


def test_load_records_skips_a_torn_last_line(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
    assert load_records(tmp_path) == [{"step": 1}]
    assert load_records(tmp_path / "metrics.jsonl") == [{"step": 1}]


def test_reliability_with_trust_writes_a_png(mpl, tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in weight_records()))
    out = plot_reliability(tmp_path, tmp_path / "w.png", ["trusted", "trusted", "deceptive", "poor"], **SMALL)
    assert png(out).size == (160, 120)
    out = plot_reliability(weight_records(), tmp_path / "w_plain.png", **SMALL)
    assert png(out).size == (160, 120)


def test_trusted_models_are_blue_and_corrupted_models_red(mpl) -> None:
    styles = _model_styles(["trusted", "deceptive", "trusted", "poor"], 4)
    for i in (0, 2):
        r, g, b, _ = styles[i]["color"]
        assert b > r
    for i in (1, 3):
        r, g, b, _ = styles[i]["color"]
        assert r > b and r > g
    assert styles[0]["color"] != styles[2]["color"]  # shades within a family differ
    assert styles[3]["linestyle"] == "--"


def test_reliability_without_weights_says_the_recipe_has_no_weigher(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="recipe has no reliability weigher"):
        plot_reliability(val_records([40.0]), tmp_path / "w.png")


def test_reliability_rejects_trust_that_does_not_match_the_models(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trust has 2 entries but the run logs weights for 4 models"):
        plot_reliability(weight_records(), tmp_path / "w.png", ["trusted", "poor"])
    with pytest.raises(ValueError, match=r"unknown trust levels \['evil'\]"):
        plot_reliability(weight_records(), tmp_path / "w.png", ["trusted", "poor", "evil", "trusted"])


def test_run_trust_reads_the_trust_of_the_run_pool_from_its_manifest(tmp_path: Path) -> None:
    levels = ["trusted", "deceptive", "poor"]
    entries = [
        PoolEntry(index=i, file=f"m{i}.pt", arch="mlp", arch_kwargs={}, n_way=2, classes=["a", "b"], class_ids=[0, 1],
                  dataset="toy", split="train", seed=i, heldout_acc=None, best_epoch=None, sha256="0",
                  dfml_version="0", trust=t)
        for i, t in enumerate(levels)
    ]
    PoolManifest(entries=entries).save(tmp_path / "pool")
    run = RunDir(tmp_path / "run", {"recipe": "robust", "pool": str(tmp_path / "pool")})
    assert run_trust(run.path) == levels
    RunDir(tmp_path / "run_nopool", {"recipe": "robust", "pool": str(tmp_path / "gone")})
    with pytest.raises(FileNotFoundError, match=r"has no pool.json; pass trust=\[...\]"):
        run_trust(tmp_path / "run_nopool")
    with pytest.raises(FileNotFoundError, match="config.yaml"):
        run_trust(tmp_path / "nothing")


def test_models_are_ordered_by_group_from_labels_or_groups() -> None:
    assert _group_order(torch.tensor([1, 0, 1, 0]), 4) == [[1, 3], [0, 2]]
    assert _group_order([[2, 0], [3, 1]], 4) == [[0, 2], [1, 3]]
    assert _group_order([[0, 1, 2, 3], []], 4) == [[0, 1, 2, 3]]
    with pytest.raises(ValueError, match="every model id 0..3 exactly once"):
        _group_order([[0, 1], [1, 2]], 4)
    with pytest.raises(ValueError, match=r"integer labels of shape \[4\]"):
        _group_order([0, 1, 0], 4)


def test_dissimilarity_heat_map_writes_a_png(mpl, tmp_path: Path) -> None:
    emb = torch.randn(6, 5, dtype=torch.float64)
    d = torch.cdist(emb, emb)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    trust = ["trusted"] * 4 + ["poor", "deceptive"]
    out = plot_dissimilarity(d, labels, tmp_path / "d.png", trust=trust, **SMALL)
    assert png(out).size == (160, 120)
    out = plot_dissimilarity(d.numpy(), [[0, 3], [1, 4], [2, 5]], tmp_path / "d2.png", **SMALL)
    assert png(out).size == (160, 120)


def test_dissimilarity_rejects_a_matrix_that_is_not_square_and_finite(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"must be square \[n_models, n_models\], got shape \(2, 3\)"):
        plot_dissimilarity(torch.zeros(2, 3), [0, 1], tmp_path / "d.png")
    with pytest.raises(ValueError, match="NaN or infinite"):
        plot_dissimilarity(torch.tensor([[0.0, float("nan")], [1.0, 0.0]]), [0, 1], tmp_path / "d.png")


def test_an_existing_png_is_never_overwritten_without_overwrite(mpl, tmp_path: Path) -> None:
    target = tmp_path / "val.png"
    target.write_bytes(b"keep me")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        plot_val_curves({"a": val_records([40.0])}, target, **SMALL)
    with pytest.raises(FileExistsError, match="nothing was written"):
        plot_dissimilarity(torch.zeros(2, 2), [0, 1], target, **SMALL)
    assert target.read_bytes() == b"keep me"
    plot_val_curves({"a": val_records([40.0])}, target, overwrite=True, **SMALL)
    assert png(target).size == (160, 120)


def test_only_png_file_names_are_accepted(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="ending in .png"):
        plot_val_curves({"a": val_records([40.0])}, tmp_path / "val.pdf")


def test_missing_matplotlib_names_the_pip_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError
    with pytest.raises(ImportError, match=r'pip install "dfml\[plots\]"'):
        plot_val_curves({"a": val_records([40.0])}, tmp_path / "v.png")
    assert not (tmp_path / "v.png").exists()

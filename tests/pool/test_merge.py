"""Merging pools keeps every entry's dataset, classes and inputs, and refuses what would mix classes up."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from dfml.cli import main
from dfml.data.toy import make_toy_world
from dfml.pool import ModelPool, PretrainConfig, merge_pools, pretrain_pool, subset_pool

from .conftest import fake_images

CFG = PretrainConfig(n_models=2, n_way=3, arch="mlp", arch_kwargs={"hidden": [8]}, epochs=1, batch_size=64,
                     augment=False, seed=0)


@pytest.fixture(scope="module")
def two_toy_pools(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelPool, ModelPool]:
    root = tmp_path_factory.mktemp("merge")
    a = pretrain_pool(make_toy_world()["train"], root / "a", CFG)
    b = pretrain_pool(make_toy_world(seed=1, name="toy_b")["train"], root / "b", CFG)
    return a, b


def test_a_merged_pool_keeps_every_entry_and_its_dataset(two_toy_pools: tuple[ModelPool, ModelPool],
                                                         tmp_path: Path) -> None:
    a, b = two_toy_pools
    merged = merge_pools([a, b], tmp_path / "ab")
    assert len(merged) == 4 and merged.datasets() == ["toy", "toy_b"]
    assert [e.index for e in merged] == [0, 1, 2, 3]
    for new, old in zip(merged.entries, a.entries + b.entries):
        assert (new.dataset, new.class_ids, new.sha256, new.input_shape) == (
            old.dataset, old.class_ids, old.sha256, old.input_shape)
    merged.verify()
    assert merged.build["kind"] == "merge" and [s["n_models"] for s in merged.build["sources"]] == [2, 2]
    assert merge_pools([a, b], tmp_path / "ab").entries == merged.entries  # re-running returns it


def test_class_ids_shared_by_two_datasets_stay_two_classes(two_toy_pools: tuple[ModelPool, ModelPool],
                                                           tmp_path: Path) -> None:
    a, b = two_toy_pools
    assert [e.class_ids for e in a] == [e.class_ids for e in b]  # same build seed, same class ids
    merged = merge_pools([a, b], tmp_path / "ab")
    ids = {c for e in merged for c in e.class_ids}
    keys = {(e.dataset, c) for e in merged for c in e.class_ids}
    assert len(keys) == 2 * len(ids)


def test_merging_refuses_conflicting_or_ambiguous_sources(two_toy_pools: tuple[ModelPool, ModelPool],
                                                          tmp_path: Path) -> None:
    a, b = two_toy_pools
    with pytest.raises(ValueError, match="is one of the source pools"):
        merge_pools([a, b], a.root)
    merge_pools([a], tmp_path / "x")
    with pytest.raises(ValueError, match="holds another pool"):
        merge_pools([a, b], tmp_path / "x")
    other_split = pretrain_pool(make_toy_world()["val"], tmp_path / "val", dataclasses.replace(CFG, n_models=1))
    with pytest.raises(ValueError, match="appears with split 'train' .* and 'val'"):
        merge_pools([a, other_split], tmp_path / "y")


def test_class_ids_that_name_different_classes_are_refused(two_toy_pools: tuple[ModelPool, ModelPool],
                                                           tmp_path: Path) -> None:
    a, _ = two_toy_pools
    renamed = tmp_path / "renamed"
    merge_pools([a], renamed)
    raw = json.loads((renamed / "pool.json").read_text())
    raw["entries"][0]["classes"][0] = "not_the_same"
    (renamed / "pool.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=r"class id \d+ of toy/train is '.*' in .* but 'not_the_same'"):
        merge_pools([a, renamed], tmp_path / "z")


def test_several_datasets_need_recorded_inputs(two_toy_pools: tuple[ModelPool, ModelPool], tmp_path: Path) -> None:
    a, b = two_toy_pools
    old = tmp_path / "old"
    merge_pools([b], old)
    raw = json.loads((old / "pool.json").read_text())
    for e in raw["entries"]:
        del e["input_shape"], e["input_mean"], e["input_std"]
    (old / "pool.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="records no input shape and normalisation for model"):
        merge_pools([a, old], tmp_path / "m")


def test_images_of_two_sizes_merge_with_their_normalisations(tmp_path: Path) -> None:
    small = fake_images(n_classes=4, per_class=6, size=16, name="small/train")
    big = fake_images(n_classes=4, per_class=6, size=24, seed=1, name="big/train")
    cfg = PretrainConfig(n_models=1, n_way=2, arch="conv4", arch_kwargs={"hidden": 4}, epochs=1, batch_size=8)
    p = merge_pools([pretrain_pool(small, tmp_path / "s", cfg), pretrain_pool(big, tmp_path / "b", cfg)],
                    tmp_path / "sb")
    assert [e.input_shape for e in p] == [[3, 16, 16], [3, 24, 24]]
    assert [e.arch_kwargs["image_size"] for e in p] == [16, 24]


def test_cli_builds_a_mixed_pool_and_merges(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mixed"
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "mlp", "--arch-arg", "hidden=[8]",
                 "--out", str(out), "--n-models", "3", "--n-way", "3", "--epochs", "1"]) == 0
    assert [e.arch for e in ModelPool(out)] == ["mlp"] * 3
    assert main(["pool", "merge", str(out), str(out), "--out", str(tmp_path / "m")]) == 0
    assert "6 models" in capsys.readouterr().out
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "resnet10", "--arch-arg", "hidden=[8]",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "does not apply to resnet10" in capsys.readouterr().err
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "mlp", "--arch-share", "1",
                 "--out", str(tmp_path / "bad")]) == 2
    assert "one positive weight per architecture (2)" in capsys.readouterr().err


def test_cli_records_an_image_size_only_for_architectures_that_take_one() -> None:
    from dfml.commands.pool import arch_fields as _arch_fields

    images = fake_images(size=16)
    assert _arch_fields(["conv4"], None, images) == {"arch": "conv4", "arch_kwargs": {"image_size": 16}}
    assert _arch_fields(["resnet10"], None, images) == {"arch": "resnet10", "arch_kwargs": {}}
    assert _arch_fields(["conv4", "resnet10"], ["resnet10:widths=[4,4,4,4]"], images) == {
        "arch": ("conv4", {"name": "resnet10", "widths": [4, 4, 4, 4]})}


def test_a_subset_keeps_the_chosen_models_and_is_resumable(two_toy_pools: tuple[ModelPool, ModelPool],
                                                           tmp_path: Path) -> None:
    a, _ = two_toy_pools
    sub = subset_pool(a, [1], tmp_path / "sub")
    assert len(sub) == 1 and sub.entry(0).index == 0
    assert dataclasses.replace(sub.entry(0), index=1, file=a.entry(1).file) == a.entry(1)
    assert sub.build["kind"] == "subset" and sub.build["indices"] == [1]
    sub.verify()
    assert subset_pool(a, [1], tmp_path / "sub").entries == sub.entries  # the same call finds it again
    with pytest.raises(ValueError, match="another pool"):
        subset_pool(a, [0], tmp_path / "sub")  # never overwritten with other models
    with pytest.raises(ValueError, match="distinct model indices"):
        subset_pool(a, [0, 0], tmp_path / "x")
    with pytest.raises(ValueError, match="distinct model indices"):
        subset_pool(a, [5], tmp_path / "x")
    with pytest.raises(ValueError, match="source pool itself"):
        subset_pool(a, [0], a.root)

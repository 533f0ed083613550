from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.data.base import ArrayDataset
from dfml.pool import ModelPool, PretrainConfig, add_untrustworthy, pretrain_pool
from dfml.pool.corrupt import choose_untrustworthy
from dfml.pool.training import evaluate_accuracy, init_model, split_holdout


def heldout_acc(pool: ModelPool, i: int, ds: ArrayDataset) -> float:
    e = pool.entry(i)
    _, _, held, held_y = split_holdout(ds, e.class_ids, 0.2, e.seed)
    return evaluate_accuracy(pool.load(i), ds, held, held_y)


def test_choose_untrustworthy_deals_kinds_in_turn() -> None:
    plan = choose_untrustworthy(10, 0.4, ["deceptive", "poor"], seed=0)
    assert len(plan) == 4
    assert sorted(plan.values()) == ["deceptive", "deceptive", "poor", "poor"]
    assert plan == choose_untrustworthy(10, 0.4, ["deceptive", "poor"], seed=0)
    assert plan != choose_untrustworthy(10, 0.4, ["deceptive", "poor"], seed=1)
    assert len(choose_untrustworthy(10, 0.25, ["poor"], seed=0)) == 3  # 2.5 rounds up
    assert choose_untrustworthy(10, 0.0, ["poor"], seed=0) == {}


def test_a_corrupted_pool_marks_and_really_holds_untrustworthy_models(
    toy_pool: ModelPool, toy_world: dict[str, ArrayDataset], tmp_path: Path
) -> None:
    ds = toy_world["train"]
    bad = add_untrustworthy(toy_pool, tmp_path / "bad", ratio=0.4, source_dataset=ds, seed=0)
    plan = choose_untrustworthy(10, 0.4, ["deceptive", "poor"], seed=0)
    assert [e.trust for e in bad] == [plan.get(i, "trusted") for i in range(10)]
    assert sum(e.trust != "trusted" for e in bad) == 4
    for clean, e in zip(toy_pool, bad):
        # what learners may read is unchanged: the advertised classes, accuracy, seed...
        assert (e.classes, e.class_ids, e.heldout_acc, e.seed, e.arch_kwargs) == (
            clean.classes, clean.class_ids, clean.heldout_acc, clean.seed, clean.arch_kwargs)
        if e.trust == "trusted":
            assert e.sha256 == clean.sha256 and e.trust_detail == {}
        else:
            assert e.sha256 != clean.sha256
        if e.trust == "deceptive":
            really = e.trust_detail["trained_on"]
            assert set(really["classes"]).isdisjoint(e.classes)
            assert really["classes"] == [ds.classes[c] for c in really["class_ids"]]
            assert really["dataset"] == "toy" and e.trust_detail["true_heldout_acc"] > 0.8
            assert heldout_acc(bad, e.index, ds) < 0.5 < heldout_acc(toy_pool, e.index, ds)
        if e.trust == "poor":
            fresh = init_model(e.arch, e.arch_kwargs, e.trust_detail["seed"])
            assert torch.equal(bad.load(e.index).head.weight, fresh.head.weight)
    bad.verify()


def test_corruption_is_deterministic_from_the_seed(toy_pool: ModelPool, toy_world: dict[str, ArrayDataset],
                                                   tmp_path: Path) -> None:
    ds = toy_world["train"]
    a = add_untrustworthy(toy_pool, tmp_path / "a", ratio=0.2, kinds=("deceptive",), source_dataset=ds, seed=3)
    b = add_untrustworthy(toy_pool, tmp_path / "b", ratio=0.2, kinds=("deceptive",), source_dataset=ds, seed=3)
    c = add_untrustworthy(toy_pool, tmp_path / "c", ratio=0.2, kinds=("deceptive",), source_dataset=ds, seed=4)
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert [e.trust for e in a].count("deceptive") == 2
    assert [e.sha256 for e in a] != [e.sha256 for e in c]


def test_poor_models_can_be_barely_trained(toy_pool: ModelPool, toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    pool = add_untrustworthy(toy_pool, tmp_path / "p", ratio=1.0, kinds=("poor",), source_dataset=toy_world["train"],
                             seed=0, poor_epochs=1)
    assert [e.trust for e in pool] == ["poor"] * 10
    assert all(e.trust_detail["epochs"] == 1 and 0.0 <= e.trust_detail["true_heldout_acc"] <= 1.0 for e in pool)


def test_deceptive_models_may_come_from_another_dataset(toy_pool: ModelPool, tmp_path: Path) -> None:
    other = ArrayDataset(np.random.default_rng(0).normal(size=(60, 32)).astype(np.float32),
                         np.repeat(np.arange(6), 10), [f"other_{i}" for i in range(6)], name="other/train")
    pool = add_untrustworthy(toy_pool, tmp_path / "o", ratio=0.1, kinds=("deceptive",), source_dataset=other, seed=0)
    (e,) = [e for e in pool if e.trust == "deceptive"]
    assert e.trust_detail["trained_on"]["dataset"] == "other"
    assert e.classes == toy_pool.entry(e.index).classes


def test_rerunning_returns_the_same_pool_and_other_settings_are_refused(
    toy_pool: ModelPool, toy_world: dict[str, ArrayDataset], tmp_path: Path
) -> None:
    ds = toy_world["train"]
    first = add_untrustworthy(toy_pool, tmp_path / "x", ratio=0.1, kinds=("poor",), source_dataset=ds, seed=0)
    again = add_untrustworthy(toy_pool.root, tmp_path / "x", ratio=0.1, kinds=("poor",), source_dataset=ds, seed=0)
    assert again.entries == first.entries
    with pytest.raises(ValueError, match=r"holds a pool made with different settings \(\['ratio'\]\); use a new out_dir"):
        add_untrustworthy(toy_pool, tmp_path / "x", ratio=0.2, kinds=("poor",), source_dataset=ds, seed=0)


def test_bad_arguments_are_refused(toy_pool: ModelPool, toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    ds = toy_world["train"]
    with pytest.raises(ValueError, match=r"ratio must lie in \[0, 1\].*got 1.5"):
        add_untrustworthy(toy_pool, tmp_path / "a", ratio=1.5, source_dataset=ds)
    with pytest.raises(ValueError, match=r"kinds must be distinct names from \('deceptive', 'poor'\), got \('evil',\)"):
        add_untrustworthy(toy_pool, tmp_path / "a", ratio=0.5, kinds=("evil",), source_dataset=ds)
    with pytest.raises(ValueError, match="is the source pool itself"):
        add_untrustworthy(toy_pool, toy_pool.root, ratio=0.5, source_dataset=ds)
    images = ArrayDataset(np.zeros((20, 16, 16, 3), np.uint8), np.repeat(np.arange(10), 2), [f"i{k}" for k in range(10)],
                          name="img/train")
    with pytest.raises(ValueError, match=r"inputs \(3, 16, 16\) but model \d+ \(mlp\) expects in_features=32"):
        add_untrustworthy(toy_pool, tmp_path / "b", ratio=0.5, kinds=("deceptive",), source_dataset=images)


def test_replacements_in_a_mixed_architecture_pool_keep_each_model_s_architecture(
    toy_world: dict[str, ArrayDataset], tmp_path: Path
) -> None:
    cfg = PretrainConfig(n_models=4, n_way=3, arch=({"name": "mlp", "hidden": [8]}, {"name": "mlp", "hidden": [12, 12]}),
                         epochs=1, batch_size=64, augment=False, seed=0)
    clean = pretrain_pool(toy_world["train"], tmp_path / "clean", cfg)
    bad = add_untrustworthy(clean, tmp_path / "bad", ratio=1.0, source_dataset=toy_world["train"], seed=0,
                            poor_epochs=1)
    assert sorted(e.trust for e in bad) == ["deceptive", "deceptive", "poor", "poor"]
    assert [e.architecture_key for e in bad] == [e.architecture_key for e in clean]
    for e in bad:  # the replacement's weights fit the advertised architecture
        assert bad.load(e.index)(torch.zeros(2, 32)).shape == (2, 3)

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest

from dfml.data.base import ArrayDataset
from dfml.data.toy import make_toy_world
from dfml.pool import ModelPool, build_toy_pool

logger = logging.getLogger(__name__)


def test_toy_pool_models_are_accurate(toy_pool: ModelPool) -> None:
    accs = [e.heldout_acc for e in toy_pool]
    assert len(toy_pool) == 10
    assert sum(accs) / len(accs) > 0.8
    assert min(accs) > 0.7
    assert toy_pool.architectures() == ["mlp"]
    assert all(e.n_way == 5 and e.trust == "trusted" for e in toy_pool)


def test_toy_pool_builds_another_seed(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    start = time.perf_counter()
    pool = build_toy_pool(tmp_path, n_models=10, world=toy_world, seed=1)
    logger.info("toy pool: 10 models in %.2f s", time.perf_counter() - start)  # a figure, never an assertion
    assert len(pool) == 10
    assert [e.classes for e in pool] != [e.classes for e in build_toy_pool(tmp_path / "s0", n_models=10,
                                                                          world=toy_world, seed=0)]


def test_toy_pool_with_untrustworthy_models(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    pool = build_toy_pool(tmp_path, n_models=4, epochs=5, world=toy_world, untrustworthy_ratio=0.5)
    assert sorted(e.trust for e in pool) == ["deceptive", "poor", "trusted", "trusted"]
    assert len(ModelPool(tmp_path / "clean")) == 4
    assert all(e.trust == "trusted" for e in ModelPool(tmp_path / "clean"))


def test_toy_pool_deceptive_models_can_come_from_another_world(toy_world: dict[str, ArrayDataset],
                                                                tmp_path: Path) -> None:
    other = make_toy_world(n_per_class=20, seed=1, name="toy_other")["train"]
    pool = build_toy_pool(tmp_path, n_models=4, epochs=5, world=toy_world, untrustworthy_ratio=0.5,
                          deceptive_source=other)
    (liar,) = [e for e in pool if e.trust == "deceptive"]
    clean = ModelPool(tmp_path / "clean").entry(liar.index)
    assert liar.classes == clean.classes and liar.dataset == clean.dataset  # it advertises the toy world's classes
    assert liar.trust_detail["trained_on"]["dataset"] == "toy_other"  # but was trained in the other world
    assert set(liar.trust_detail["trained_on"]["classes"]) <= set(other.classes)


def test_toy_pool_deceptive_source_without_untrustworthy_models_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="untrustworthy_ratio > 0"):
        build_toy_pool(tmp_path, n_models=2, epochs=1, deceptive_source=make_toy_world(seed=1)["train"])

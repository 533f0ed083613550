from __future__ import annotations

import logging
import time
from pathlib import Path

from dfml.data.base import ArrayDataset
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


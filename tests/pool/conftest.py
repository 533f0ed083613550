"""Pool test fixtures: the toy world, one shared toy pool, and tiny fake image datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.data.base import ArrayDataset
from dfml.data.toy import make_toy_world
from dfml.pool import ModelPool, build_toy_pool


@pytest.fixture(scope="session")
def toy_world() -> dict[str, ArrayDataset]:
    return make_toy_world()


@pytest.fixture(scope="session")
def toy_pool(toy_world: dict[str, ArrayDataset], tmp_path_factory: pytest.TempPathFactory) -> ModelPool:
    return build_toy_pool(tmp_path_factory.mktemp("toy_pool"), world=toy_world)


def fake_images(n_classes: int = 6, per_class: int = 10, size: int = 16, seed: int = 0, name: str = "fake/train") -> ArrayDataset:
    """uint8 ``[N, size, size, 3]`` images; each class has its own mean colour, so it is learnable."""
    rng = np.random.default_rng(seed)
    means = rng.integers(30, 225, size=(n_classes, 1, 1, 3))
    data = np.clip(means[:, None] + rng.normal(0, 20, (n_classes, per_class, size, size, 3)), 0, 255).astype(np.uint8)
    labels = np.repeat(np.arange(n_classes), per_class)
    return ArrayDataset(data.reshape(-1, size, size, 3), labels, [f"c{i}" for i in range(n_classes)],
                        mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25), name=name)


@pytest.fixture
def images() -> ArrayDataset:
    return fake_images()


def file_bytes(path: Path) -> bytes:
    return Path(path).read_bytes()

"""Shared fixtures. Real-data tests read ``../shared/data`` (or ``$DFML_DATA``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_root() -> Path:
    """Where the real data lives: ``$DFML_DATA`` or ``<repo>/../shared/data``."""
    return Path(os.environ.get("DFML_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not (root / "cifar-100-python").is_dir():
        pytest.fail(f"real data not found at {root}; set DFML_DATA to the folder holding cifar-100-python/")
    return root


@pytest.fixture(autouse=True)
def _deterministic_one_thread() -> Iterator[None]:
    """Seed, and one intra-op thread: the tensors in tests are tiny, and on a busy 2-core machine
    OpenMP threads spinning against other processes slowed a 50-step MAML loop from 0.8 s to 52 s."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

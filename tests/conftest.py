"""Shared fixtures. Real-data tests read ``../shared/data`` (or ``$DFML_DATA``)."""

from __future__ import annotations

import os
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
def _deterministic() -> None:
    torch.manual_seed(0)

"""One intra-op thread for these tests.

The tensors here are tiny, so intra-op parallelism gains nothing, while on a busy 2-core machine
OpenMP threads spinning against other processes slowed a 50-step MAML loop from 0.8 s to 52 s.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Loading and allocator changes made for speed leave every trained pool byte for byte the same."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor

from dfml.data.base import ArrayDataset
from dfml.pool import PretrainConfig, pretrain_pool

from .conftest import fake_images

REPO = Path(__file__).resolve().parents[2]


def reference_get_batch(self: ArrayDataset, indices: Sequence[int] | np.ndarray | Tensor) -> Tensor:
    """``ArrayDataset.get_batch`` as it was before it normalised in place (three float batches per call)."""
    idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
    x = self.data[idx]
    if not self.is_image:
        return x.float()
    x = x.permute(0, 3, 1, 2).float().div_(255.0)
    if self.mean is not None and self.std is not None:
        x = (x - self.mean) / self.std
    return x


def test_get_batch_gives_the_reference_values_and_memory_layout() -> None:
    ds = fake_images(n_classes=3, per_class=4, size=20)
    idx = [5, 0, 11, 5]
    got, want = ds.get_batch(idx), reference_get_batch(ds, idx)
    assert torch.equal(got, want) and got.stride() == want.stride()  # the network sees the very same input


@pytest.mark.parametrize("augment", [True, False], ids=["augmented", "plain"])
def test_a_pool_built_with_the_in_place_get_batch_has_the_reference_bytes(
    augment: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = fake_images(n_classes=4, per_class=12, size=36)
    cfg = PretrainConfig(n_models=2, n_way=3, arch="conv4", arch_kwargs={"hidden": 8}, epochs=2, batch_size=16,
                         augment=augment, seed=3)
    now = [e.sha256 for e in pretrain_pool(ds, tmp_path / "now", cfg)]
    monkeypatch.setattr(ArrayDataset, "get_batch", reference_get_batch)
    before = [e.sha256 for e in pretrain_pool(ds, tmp_path / "before", cfg)]
    assert now == before


BUILD = """
import json, sys
import numpy as np, torch
torch.set_num_threads(1)
from dfml.allocator import keep_freed_memory
from dfml.data.base import ArrayDataset
from dfml.pool import PretrainConfig, pretrain_pool
applied = keep_freed_memory()
rng = np.random.default_rng(0)
data = rng.integers(0, 256, (3 * 70, 84, 84, 3), dtype=np.uint8)  # batches of 64 at 84x84: activations of 58 MiB
ds = ArrayDataset(data, np.repeat(np.arange(3), 70), ["a", "b", "c"], mean=(0.5,) * 3, std=(0.25,) * 3, name="r/train")
cfg = PretrainConfig(n_models=1, n_way=3, arch="conv4", epochs=1, batch_size=64, augment=False, seed=0)
pool = pretrain_pool(ds, sys.argv[1], cfg)
print(json.dumps({"applied": applied, "sha256": [e.sha256 for e in pool]}))
"""


def test_keeping_freed_memory_changes_no_trained_byte(tmp_path: Path) -> None:
    out = {}
    for choice in ("keep", "system"):
        env = {**os.environ, "DFML_MALLOC": choice}
        env.pop("MALLOC_MMAP_THRESHOLD_", None)
        env.pop("MALLOC_TRIM_THRESHOLD_", None)
        done = subprocess.run([sys.executable, "-c", BUILD, str(tmp_path / choice)], env=env, cwd=REPO,
                              capture_output=True, text=True, check=True)
        out[choice] = json.loads(done.stdout.strip().splitlines()[-1])
    if sys.platform.startswith("linux") and os.confstr("CS_GNU_LIBC_VERSION").startswith("glibc"):
        assert out["keep"]["applied"] and not out["system"]["applied"]  # the two builds did differ in allocator
    assert out["keep"]["sha256"] == out["system"]["sha256"]

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.pool import PretrainConfig, pretrain_pool

from .conftest import fake_images

pytestmark = pytest.mark.gpu


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_pretrain_and_load_on_cuda(tmp_path: Path) -> None:
    ds = fake_images(n_classes=4, per_class=20, size=32)
    cfg = PretrainConfig(n_models=2, n_way=2, arch="conv4", epochs=3, batch_size=16, augment=True)
    pool = pretrain_pool(ds, tmp_path, cfg, device="cuda")
    assert all(e.heldout_acc > 0.5 for e in pool)
    model = pool.load(0, device="cuda")
    assert next(model.parameters()).device.type == "cuda"
    assert torch.load(pool.path_of(0), weights_only=True)["head.weight"].device.type == "cpu"
    x = ds.get_batch(np.arange(4))
    torch.testing.assert_close(model(x.cuda()).cpu(), pool.load(0)(x), rtol=1e-4, atol=1e-4)

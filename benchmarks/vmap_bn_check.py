"""Is a batched-tasks MAML (``torch.func.vmap`` over tasks) safe? Evidence for docs/performance.md.

Computes the float64 second-order meta-gradient of Conv4 (batch-statistics BN) three ways: dfml's
per-task ``MAML.meta_step``, a per-task loop of a ``torch.func.grad`` inner loop, and the same
function under ``vmap`` over tasks; then once more with the BatchNorm layers removed.

Usage:
    python benchmarks/vmap_bn_check.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap


def meta_gradients(with_bn: bool, tasks: int = 3, steps: int = 2, lr: float = 0.1) -> dict[str, float]:
    """Worst per-parameter relative error of vmap against the loop, and of the loop against dfml."""
    from dfml.meta import MAML
    from dfml.models.conv4 import Conv4
    from dfml.models.norm import use_batch_stats
    from dfml.types import Task

    torch.manual_seed(0)
    model = use_batch_stats(Conv4(3, 3, hidden=4, image_size=16)).double()
    if not with_bn:
        for block in model.encoder[:4]:
            block.bn = nn.Identity()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    sx, qx = (torch.randn(tasks, 6, 3, 16, 16, dtype=torch.float64) for _ in range(2))
    sy = qy = torch.arange(3).repeat(2).expand(tasks, 6)

    def task_loss(p, sx, sy, qx, qy):
        for _ in range(steps):
            g = grad(lambda q: F.cross_entropy(functional_call(model, q, (sx,)), sy))(p)
            p = {k: p[k] - lr * g[k] for k in p}
        return F.cross_entropy(functional_call(model, p, (qx,)), qy)

    batched = grad(lambda p: vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(p, sx, sy, qx, qy).mean())(params)
    looped = grad(lambda p: torch.stack([task_loss(p, sx[i], sy[i], qx[i], qy[i]) for i in range(tasks)]).mean())(
        params)
    maml = MAML(model, inner_steps=steps, inner_lr=lr)
    maml.meta_step([Task(sx[i], sy[i], qx[i], qy[i]) for i in range(tasks)], torch.optim.SGD(maml.parameters(), lr=0.0))
    dfml = {k: v.grad for k, v in model.named_parameters()}
    total = torch.sqrt(sum((g ** 2).sum() for g in looped.values()))

    def worst(a, b):
        return max(float((a[k] - b[k]).norm() / torch.clamp(b[k].norm(), min=1e-8 * total)) for k in b)

    return {"vmap_vs_loop": worst(batched, looped), "loop_vs_dfml": worst(looped, dfml)}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}; float64 second-order meta-gradient, worst relative error per parameter")
    for with_bn in (True, False):
        e = meta_gradients(with_bn)
        print(f"  Conv4 {'with' if with_bn else 'without'} BatchNorm: vmap vs per-task loop {e['vmap_vs_loop']:.1e}, "
              f"per-task loop vs dfml {e['loop_vs_dfml']:.1e}")

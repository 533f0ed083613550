"""Data-parallel meta-updates across the ranks of a ``torchrun`` launch.

Every rank holds the same meta-batch of ``B`` tasks (the task stream is run alike on every rank)
and the same meta-model. Rank ``r`` backpropagates ``loss_t / B`` for its tasks
``t = r, r + K, ...``; the gradients are summed over ranks (all-reduce), so each rank holds
``sum_t grad(loss_t) / B``, the gradient of the mean loss over the whole meta-batch, and takes the
same optimiser step. K processes with a global meta-batch ``B`` therefore make the update of one
process with meta-batch ``B`` (up to the order of float additions), for any ``B``: a rank whose
share is smaller (or empty, when ``B < K``) adds less.

Meta-updates that are not a sum over tasks (gradient alignment's sequential steps, group
regularisation) cannot be split this way: :func:`replicated` runs them whole on every rank and
then copies rank 0's parameters to all, so the ranks never drift apart.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .. import distributed as dist
from ..types import Task
from .update import MetaUpdate

log = logging.getLogger(__name__)

__all__ = ["all_reduce_gradients", "broadcast_module", "data_parallel_update", "replicated"]


def all_reduce_gradients(params: Sequence[Tensor]) -> None:
    """Sum ``.grad`` over ranks, one flat buffer per device and dtype.

    A parameter whose gradient is ``None`` on every rank keeps ``None`` (the optimiser then skips
    it as it would alone); one that has a gradient on some rank gets the sum, zeros counted for
    the others.
    """
    params = list(params)
    has_grad = torch.tensor([p.grad is not None for p in params], dtype=torch.int64)
    dist.all_reduce_sum(has_grad)
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for k, p in enumerate(params):
        if has_grad[k] > 0:
            buckets.setdefault((p.device, p.dtype), []).append(k)
    for idx in buckets.values():
        flat = torch.cat([params[k].grad.reshape(-1) if params[k].grad is not None  # type: ignore[union-attr]
                          else torch.zeros_like(params[k]).reshape(-1) for k in idx])
        dist.all_reduce_sum(flat)
        offset = 0
        for k in idx:
            n = params[k].numel()
            params[k].grad = flat[offset : offset + n].view_as(params[k]).clone()
            offset += n


def data_parallel_update(learner: Any, tasks: list[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
    """The learner's meta-step with the meta-batch split across ranks (alone: exactly ``meta_step``).

    Args:
        learner: a :class:`~dfml.meta.learner.Learner` (uses its ``accumulate``).
        tasks: the whole meta-batch, the same on every rank.
        optimizer: over ``learner.parameters()``.

    Returns:
        ``{"loss", "acc"}``: means over the whole meta-batch, the same on every rank.
    """
    if not dist.is_distributed():
        return learner.meta_step(tasks, optimizer)
    tasks = list(tasks)
    if not tasks:
        raise ValueError("got an empty meta-batch; pass at least one Task")
    optimizer.zero_grad(set_to_none=True)
    total, correct = learner.accumulate(dist.shard(tasks), len(tasks))
    all_reduce_gradients([p for p in learner.parameters() if p.requires_grad])
    sums = dist.all_reduce_sum(torch.tensor([total, correct], dtype=torch.float64))
    optimizer.step()
    return {"loss": float(sums[0]) / len(tasks), "acc": float(sums[1]) / len(tasks)}


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy ``src``'s parameters and buffers into ``module`` on every rank (no-op alone)."""
    if not dist.is_distributed():
        return
    with torch.no_grad():
        for t in module.state_dict(keep_vars=True).values():
            if isinstance(t, Tensor):
                torch.distributed.broadcast(t.data if isinstance(t, nn.Parameter) else t, src=src)


def replicated(update: MetaUpdate) -> MetaUpdate:
    """``update`` run whole on every rank, then rank 0's meta-parameters broadcast (alone: ``update``).

    For meta-updates that are not a sum over tasks; every rank does the whole update, so there is
    no speed-up from more ranks, but the run is the same as one process's.
    """
    return Replicated(update)


class Replicated(MetaUpdate):
    """See :func:`replicated`."""

    def __init__(self, update: MetaUpdate) -> None:
        self.update = update
        self.__name__ = f"replicated_{getattr(update, '__name__', type(update).__name__)}"

    def __call__(self, learner: Any, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        metrics = self.update(learner, list(tasks), optimizer)
        broadcast_module(learner)
        return dist.broadcast_object(metrics)

"""Inverting many models across the ranks of a ``torchrun`` launch.

The result must not depend on how many processes share the work, so each model gets its own
generator, seeded by one draw per model from the caller's generator (:func:`model_generators`,
the streams of the batched inverter); rank ``r`` inverts models ``r, r + K, ...`` with theirs and
the results are gathered back in model order. One process runs the same code with a share of
everything, so a run is the same on 1 or K processes (up to the float rounding of batched
kernels over differently sized stacks) and a checkpoint resumes on any number of them.

Only inverters that keep no state across models are sharded (:func:`is_stateless`, what the
inverter declares in :attr:`~dfml.inversion.base.Inverter.stateful`); a pixel bank or a
meta-generator learns from every model it inverts, so those run whole on every rank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import torch

from .. import distributed as dist
from ..types import Task
from .base import InversionCost, Inverter
from .batched import model_generators

__all__ = ["cost_parts", "is_stateless", "shard_map", "sync_cost"]

R = TypeVar("R")


def is_stateless(inverter: Inverter) -> bool:
    """Whether ``inverter`` keeps nothing from one model to the next, as it declares (``not stateful``;
    a wrapper such as :class:`~dfml.inversion.domains.DomainInverters` answers for its parts). Such an
    inverter can invert a share of the models on each rank; its ``cost`` is synchronised with
    :func:`sync_cost`."""
    return not inverter.stateful


def cost_parts(inverter: Inverter) -> list[InversionCost]:
    """The cost objects that ``inverter``'s work adds to (:meth:`~dfml.inversion.base.Inverter.cost_parts`)."""
    return inverter.cost_parts()


def shard_map(
    n: int,
    generator: torch.Generator,
    work: Callable[[list[int], list[torch.Generator]], Sequence[R]],
    device: torch.device | str,
) -> list[R]:
    """Results for items ``0..n-1``, computed by the ranks in shares, in item order on every rank.

    Args:
        n: number of items (models).
        generator: draws one seed per item (``n`` draws, on every rank alike).
        work: ``work(positions, generators)`` returns one result per position of this rank's
            share, each made with its own generator (picklable: tasks, tensors, tuples of them...).
        device: where the gathered results are put (they travel through CPU between ranks).

    Returns:
        ``n`` results; alone, exactly what ``work(range(n), model_generators(generator, n))`` gives.
    """
    rngs = model_generators(generator, n)
    mine = dist.shard(range(n))
    local = list(work(mine, [rngs[j] for j in mine]))
    if len(local) != len(mine):
        raise ValueError(f"work returned {len(local)} results for a share of {len(mine)} items")
    if not dist.is_distributed():
        return local
    gathered = dist.gather_shards([_to(r, torch.device("cpu")) for r in local], n)
    return [_to(r, torch.device(device)) for r in gathered]


def _to(obj: Any, device: torch.device) -> Any:
    """``obj`` with its tensors (and tasks) on ``device``; CUDA tensors must not be pickled between ranks."""
    if isinstance(obj, (torch.Tensor, Task)):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    return obj


def sync_cost(cost: InversionCost, before: dict[str, float]) -> None:
    """Set ``cost`` to ``before`` plus what every rank added since ``before`` (summed in rank order).

    Afterwards every rank holds the cost of the whole job (``seconds`` add up the ranks' times).
    """
    if not dist.is_distributed():
        return
    mine = {k: getattr(cost, k) - before[k] for k in before}
    for k in before:
        setattr(cost, k, before[k])
    for part in dist.all_gather_object(mine):
        for k, v in part.items():
            setattr(cost, k, getattr(cost, k) + v)

"""A fixed bank of recovered examples: every pool model inverted once, tasks sampled from it.

The ``maml`` recipe's stream (:class:`~dfml.datafree.base.BankStream` over a :class:`SyntheticBank`).
Under ``torchrun`` each rank inverts its share of the models and every rank gets the whole bank.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..data.domain import InputDomain, convert_inputs
from ..inversion.base import InversionCost
from ..inversion.pixels import PixelInversionConfig, PixelInverter
from ..inversion.sharded import shard_map, sync_cost
from ..types import Task, TaskSource

if TYPE_CHECKING:
    from .config import SyntheticBankConfig
    from .trainer import TrainConfig

__all__ = ["SyntheticBank", "build_bank", "check_bank"]


@dataclass
class SyntheticBank:
    """Recovered examples: ``x[m]`` is ``[n_classes_m, per_class, *input_shape]`` for pool model ``m``.

    ``datasets[m]`` names the dataset of model ``m``'s class ids (provenance ``extra["dataset"]``;
    empty: unknown).
    """

    x: list[Tensor]
    class_ids: list[tuple[int, ...]]
    cost: dict[str, float]
    datasets: list[str | None] = field(default_factory=list)

    def sample_task(self, n_way: int, n_shot: int, n_query: int, generator: torch.Generator, step: int) -> Task:
        """One pseudo task from a random model's bank, classes and examples drawn at random."""
        m = int(torch.randint(len(self.x), (1,), generator=generator))
        xs = self.x[m]
        if xs.shape[0] < n_way:
            raise ValueError(f"pool model {m} has {xs.shape[0]} classes, fewer than n_way={n_way}")
        classes = torch.randperm(xs.shape[0], generator=generator)[:n_way]
        picks = torch.stack([torch.randperm(xs.shape[1], generator=generator)[: n_shot + n_query] for _ in classes])
        data = xs[classes[:, None], picks]  # [n_way, n_shot + n_query, ...]
        shape = xs.shape[2:]
        return Task(
            support_x=data[:, :n_shot].reshape(-1, *shape),
            support_y=torch.arange(n_way).repeat_interleave(n_shot),
            query_x=data[:, n_shot:].reshape(-1, *shape),
            query_y=torch.arange(n_way).repeat_interleave(n_query),
            source=TaskSource(
                model_id=m,
                classes=tuple(self.class_ids[m][int(c)] for c in classes),
                step=step,
                kind="synthetic",
                extra={"dataset": self.datasets[m]} if self.datasets else {},
            ),
        )

    def state_dict(self) -> dict[str, Any]:
        return {"x": self.x, "class_ids": [list(c) for c in self.class_ids], "cost": self.cost,
                "datasets": list(self.datasets)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> SyntheticBank:
        return cls(list(state["x"]), [tuple(c) for c in state["class_ids"]], dict(state["cost"]),
                   list(state.get("datasets", [])))


def build_bank(
    teachers: Sequence[tuple[nn.Module, tuple[int, ...]]],
    input_shape: tuple[int, ...] | InputDomain,
    per_class: int,
    inversion: PixelInversionConfig,
    generator: torch.Generator,
    progress: Callable[[int], None] | None = None,
    *,
    domains: Sequence[InputDomain] | None = None,
    datasets: Sequence[str | None] | None = None,
) -> SyntheticBank:
    """Invert every ``(teacher, class_ids)`` into ``per_class`` examples per class with the pixel
    inverter of ``inversion`` (a run's ``datafree.synthetic.per_class`` and ``datafree.pixel``).

    Model ``m`` is inverted with its own generator (one draw per model from ``generator``), so
    under ``torchrun`` each rank inverts its share (``teachers[m]`` is read only for those; pass a
    lazy sequence to load on demand) and every rank gets the whole bank, the same as one process
    makes. ``progress(m)`` is called after model ``m``, on the rank that inverted it.

    Args:
        input_shape: the meta-model's inputs: a shape, or an :class:`~dfml.data.InputDomain` when
            teachers take other inputs.
        domains: each teacher's input domain, in order (default: the meta-model's); a teacher is
            inverted in its own and its examples converted to the meta-model's.
        datasets: each teacher's dataset, recorded as task provenance.
    """
    target = input_shape if isinstance(input_shape, InputDomain) else InputDomain(tuple(input_shape))
    inverters: dict[tuple[int, ...], PixelInverter] = {}

    def invert(mine: list[int], rngs: list[torch.Generator]) -> list[tuple[Tensor, tuple[int, ...]]]:
        out = []
        for m, rng in zip(mine, rngs):
            teacher, class_ids = teachers[m]
            source = domains[m] if domains is not None else target
            inverter = inverters.setdefault(source.shape, PixelInverter(source.shape, inversion))
            x, _ = inverter.synthesize(teacher, per_class, rng)
            x = convert_inputs(x, source, target)
            out.append((x.cpu().view(-1, per_class, *target.shape), tuple(class_ids)))
            if progress is not None:
                progress(m)
        return out

    local = InversionCost()
    done = shard_map(len(teachers), generator, invert, "cpu")
    for inverter in inverters.values():
        local.add(inverter.cost)
    sync_cost(local, InversionCost().as_dict())
    return SyntheticBank([x for x, _ in done], [ids for _, ids in done], local.as_dict(),
                         list(datasets) if datasets is not None else [])


def check_bank(train: TrainConfig, bank: SyntheticBankConfig) -> None:
    """Raise ``ValueError`` unless a bank of ``bank.per_class`` examples per class holds a task's
    ``train.n_shot + train.n_query`` (only ``maml``, which builds a bank, reads ``datafree.synthetic``)."""
    if train.n_shot + train.n_query > bank.per_class:
        raise ValueError(
            f"datafree.synthetic.per_class={bank.per_class} is smaller than n_shot + n_query = "
            f"{train.n_shot + train.n_query}; raise datafree.synthetic.per_class"
        )

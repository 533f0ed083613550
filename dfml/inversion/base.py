"""What every inverter shares: the ``Inverter`` protocol and honest cost accounting.

An inverter turns a frozen teacher (a pool model) into a pseudo task for the teacher's own classes:
support and query sets with labels ``0..n_way-1`` in the teacher's output order, carrying their
provenance (model id, class ids, step) in ``Task.source``. Variants differ in how inputs are
parameterised (pixels, a generator, a meta-generator) and where gradients come from (autograd or
zeroth-order estimates from outputs only). Each keeps an :class:`InversionCost`.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from ..types import Task, TaskSource

__all__ = ["InversionCost", "Inverter", "split_task"]


@dataclass
class InversionCost:
    """What inversion spent.

    Attributes:
        teacher_queries: inputs the teacher was asked to classify (one per image per forward pass).
        steps: optimisation steps (of pixels or generators).
        seconds: wall-clock seconds, measured after synchronising the device.
        images: inputs produced for tasks.
    """

    teacher_queries: int = 0
    steps: int = 0
    seconds: float = 0.0
    images: int = 0

    def as_dict(self) -> dict[str, float]:
        return dict(self.__dict__)

    def add(self, other: InversionCost) -> None:
        """Accumulate ``other`` into this cost."""
        for k in self.__dict__:
            setattr(self, k, getattr(self, k) + getattr(other, k))

    @contextmanager
    def timed(self, device: torch.device | str | None = None) -> Iterator[None]:
        """Add the wall-clock time of the block to ``seconds``, synchronising CUDA before and after."""
        device = torch.device(device) if device is not None else None
        if device is not None and device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        try:
            yield
        finally:
            if device is not None and device.type == "cuda":
                torch.cuda.synchronize(device)
            self.seconds += time.perf_counter() - start


@runtime_checkable
class Inverter(Protocol):
    """Recover pseudo tasks from frozen teachers."""

    cost: InversionCost

    def invert(
        self,
        teacher: nn.Module,
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        *,
        model_id: int | None = None,
        classes: tuple[int, ...] = (),
        student: Any = None,
    ) -> Task:
        """One pseudo task for ``teacher``'s own classes (labels ``0..n_way-1`` in output order).

        ``student`` is what the inverter may play against: a module (boundary terms of the
        generator inverters) or a callable ``student(support_x, support_y, query_x) -> logits``
        (the pixel bank's episode curriculum); ``None``: no student.
        """
        ...


def split_task(
    x: Tensor,
    n_way: int,
    n_shot: int,
    n_query: int,
    *,
    model_id: int | None = None,
    classes: tuple[int, ...] = (),
    step: int | None = None,
    kind: str = "synthetic",
) -> Task:
    """Cut inputs grouped by class, ``[n_way * (n_shot + n_query), *shape]``, into a :class:`Task`.

    The first ``n_shot`` inputs of every class go to the support set, the rest to the query set.
    """
    shape = x.shape[1:]
    if x.shape[0] != n_way * (n_shot + n_query):
        raise ValueError(
            f"expected {n_way} * ({n_shot} + {n_query}) = {n_way * (n_shot + n_query)} inputs grouped by class, "
            f"got {x.shape[0]}"
        )
    per = x.reshape(n_way, n_shot + n_query, *shape)
    labels = torch.arange(n_way, device=x.device)
    return Task(
        support_x=per[:, :n_shot].reshape(-1, *shape),
        support_y=labels.repeat_interleave(n_shot),
        query_x=per[:, n_shot:].reshape(-1, *shape),
        query_y=labels.repeat_interleave(n_query),
        source=TaskSource(model_id=model_id, classes=tuple(classes), step=step, kind=kind),
    )

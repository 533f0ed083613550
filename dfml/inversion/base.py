"""What every inverter shares: the ``Inverter`` protocol and honest cost accounting.

An inverter turns a frozen teacher (a pool model) into a pseudo task for the teacher's own classes:
support and query sets with labels ``0..n_way-1`` in the teacher's output order, carrying their
provenance (model id, class ids, step) in ``Task.source``. Variants differ in how inputs are
parameterised (pixels, a generator, a meta-generator) and where gradients come from (autograd or
zeroth-order estimates from outputs only). Each keeps an :class:`InversionCost`.

Every inverter derives from :class:`Inverter`, which declares its capabilities as class attributes
(``batched``, ``stateful``, ``black_box``, ``boundary``, ``curriculum``) that the data-free stream
reads instead of probing for methods, counts what it spends (:meth:`Inverter.charge`) and finds a
teacher's number of classes (:meth:`Inverter.count_classes`). Inverters are looked up by name in
:data:`INVERTERS`.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.func import functional_call

from ..registry import Registry
from ..types import Task, TaskSource

__all__ = ["INVERTERS", "InversionCost", "Inverter", "split_task"]

INVERTERS: Registry[type[Inverter]] = Registry("inverter")
"""Inverter classes by name (``datafree.inverter``): pixel, bank, generator, metagen, blackbox."""


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

    def charge(self, queries: int, steps: int, images: int) -> None:
        """Count ``queries`` teacher queries, ``steps`` optimisation steps and ``images`` inputs produced."""
        self.teacher_queries += queries
        self.steps += steps
        self.images += images

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


class Inverter(ABC):
    """Recover pseudo tasks from frozen teachers (the base of every inverter).

    A subclass writes :meth:`invert` and declares what it can do:

    Attributes:
        batched: :meth:`invert_many` inverts several same-architecture teachers in one call.
        stateful: the inverter learns from every model it inverts (a pixel bank, a meta-generator), so
            it runs whole on every rank instead of sharing the models out (the stream never shards it).
        black_box: it needs only the teacher's outputs and plans its queries (:meth:`task_queries`).
        boundary: its objective takes a student module for a boundary term (``datafree.boundary``).
        curriculum: it takes a student callable ``student(support_x, support_y, query_x) -> logits``
            that makes its episodes harder (the pixel bank's episode curriculum).
        input_shape: shape of one teacher input.
        cost: what it spent so far.
    """

    batched: ClassVar[bool] = False
    stateful: ClassVar[bool] = False
    black_box: ClassVar[bool] = False
    boundary: ClassVar[bool] = False
    curriculum: ClassVar[bool] = False

    def __init__(self, input_shape: Sequence[int]) -> None:
        self.input_shape = tuple(int(s) for s in input_shape)
        self.cost = InversionCost()

    @abstractmethod
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

    def invert_many(
        self,
        teachers: Sequence[nn.Module],
        n_shot: int,
        n_query: int,
        generator: torch.Generator,
        model_ids: Sequence[int | None] | None = None,
        classes: Sequence[tuple[int, ...]] | None = None,
        *,
        generators: Sequence[torch.Generator] | None = None,
    ) -> list[Task]:
        """One task per teacher (batched inverters stack them; the base inverts one after another,
        each with its own generator from ``generators``, or all from ``generator``)."""
        ids = list(model_ids) if model_ids is not None else [None] * len(teachers)
        cls = list(classes) if classes is not None else [()] * len(teachers)
        gens = list(generators) if generators is not None else [generator] * len(teachers)
        return [self.invert(t, n_shot, n_query, g, model_id=i, classes=c) for t, i, c, g in zip(teachers, ids, cls, gens)]

    def meta_update(self) -> dict[str, float]:
        """Learn from the models inverted since the last call (a meta-generator); named scalars to log."""
        return {}

    def task_queries(self, n_classes: int, n_shot: int, n_query: int, reserve: int = 0) -> int | None:
        """The fewest queries one task costs when the inverter stops on a query budget (``None``: no plan)."""
        return None

    def for_model(self, model_id: int | None) -> Inverter:
        """The inverter that inverts model ``model_id`` (itself; a wrapper routes by input domain)."""
        return self

    def cost_parts(self) -> list[InversionCost]:
        """The cost objects its work adds to (its own; a wrapper's parts')."""
        return [self.cost]

    def state_dict(self) -> dict[str, Any]:
        """Everything to checkpoint (``{}``: nothing, the stream then writes no inverter entry)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` output."""

    def charge(self, queries: int, steps: int, images: int) -> None:
        """Add to :attr:`cost` (see :meth:`InversionCost.charge`)."""
        self.cost.charge(queries, steps, images)

    def count_classes(self, teacher: nn.Module, inputs: int = 2, like: Tensor | None = None) -> int:
        """The teacher's number of outputs, from one forward pass on ``inputs`` zero inputs (counted as queries).

        Raises:
            ValueError: the teacher does not return logits ``[batch, classes]``.
        """
        like = next(teacher.parameters()) if like is None else like
        with torch.no_grad():
            out = teacher(torch.zeros((inputs, *self.input_shape), device=like.device, dtype=like.dtype))
        self.cost.teacher_queries += inputs
        if out.dim() != 2:
            raise ValueError(f"the teacher must return logits [batch, classes], got shape {tuple(out.shape)}")
        return int(out.shape[1])

    def count_classes_stacked(self, base: nn.Module, params: dict[str, Tensor], buffers: dict[str, Tensor],
                              like: Tensor) -> int:
        """:meth:`count_classes` of ``M`` stacked same-architecture teachers (2 zero inputs each)."""
        probe = torch.zeros((2, *self.input_shape), device=like.device, dtype=like.dtype)
        with torch.no_grad():
            out = torch.vmap(lambda p, b: functional_call(base, (p, b), (probe,)))(params, buffers)
        self.cost.teacher_queries += 2 * out.shape[0]
        if out.dim() != 3:
            raise ValueError(f"the teachers must return logits [batch, classes], got shape {tuple(out.shape[1:])}")
        return int(out.shape[-1])


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

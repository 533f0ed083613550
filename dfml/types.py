"""Shared types: the few-shot ``Task`` and the fast-weights ``Params`` dict."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

Params = dict[str, Tensor]
"""Fast weights: parameter name -> tensor, as taken by ``torch.func.functional_call``."""

ClassKey = tuple[Any, int]
"""``(dataset, class_id)``: one class across datasets (``dataset`` a name, or ``None`` when unknown)."""


@dataclass(frozen=True)
class TaskSource:
    """Where a task came from.

    Attributes:
        model_id: index of the pool model the task was recovered from (``None`` for real data).
        classes: the class ids (in the source split) behind labels 0..n_way-1, in label order.
        step: training step at which the task was made (``None`` when not applicable).
        kind: ``"real"``, ``"synthetic"``, ``"memory"``, ``"interpolated"``...
        extra: more provenance; ``extra["dataset"]`` names the dataset the class ids belong to (a
            class is ``(dataset, class_id)``: see :meth:`class_keys`).
    """

    model_id: int | None = None
    classes: tuple[int, ...] = ()
    step: int | None = None
    kind: str = "real"
    extra: dict[str, Any] = field(default_factory=dict)

    def class_keys(self) -> tuple[ClassKey, ...]:
        """The class of every label as ``(dataset, class_id)``, in label order.

        Class ids are indices into one dataset's class list, so the same id in two datasets names
        two classes. The dataset comes from ``extra["class_keys"]`` (tasks whose classes come from
        several datasets, e.g. memory tasks), else ``extra["dataset"]``, else, for an interpolated
        task, its first task's; ``None`` when unknown.
        """
        keys = self.extra.get("class_keys")
        if keys is not None:
            return tuple((k[0], int(k[1])) for k in keys)
        dataset = self.extra.get("dataset")
        first = self.extra.get("first")
        if dataset is None and isinstance(first, TaskSource) and tuple(first.classes) == tuple(self.classes):
            return first.class_keys()
        return tuple((dataset, int(c)) for c in self.classes)


@dataclass
class Task:
    """An N-way K-shot episode.

    Attributes:
        support_x: ``[n_way * n_shot, *input_shape]``
        support_y: ``[n_way * n_shot]`` int64 labels in ``0..n_way-1``
        query_x: ``[n_way * n_query, *input_shape]``
        query_y: ``[n_way * n_query]`` int64 labels in ``0..n_way-1``
        source: optional provenance.
    """

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    source: TaskSource | None = None

    def __post_init__(self) -> None:
        for name in ("support_x", "support_y", "query_x", "query_y"):
            if not isinstance(getattr(self, name), Tensor):
                raise TypeError(f"Task.{name} must be a torch.Tensor, got {type(getattr(self, name)).__name__}")
        if self.support_x.shape[0] != self.support_y.shape[0]:
            raise ValueError(
                f"support_x has {self.support_x.shape[0]} rows but support_y has {self.support_y.shape[0]} labels"
            )
        if self.query_x.shape[0] != self.query_y.shape[0]:
            raise ValueError(f"query_x has {self.query_x.shape[0]} rows but query_y has {self.query_y.shape[0]} labels")
        if self.support_x.shape[1:] != self.query_x.shape[1:]:
            raise ValueError(
                f"support and query inputs differ in shape: {tuple(self.support_x.shape[1:])} vs "
                f"{tuple(self.query_x.shape[1:])}"
            )

    @property
    def n_way(self) -> int:
        """Number of classes (labels are ``0..n_way-1``)."""
        return int(torch.unique(self.support_y).numel())

    @property
    def n_shot(self) -> int:
        """Support examples per class."""
        return self.support_y.shape[0] // max(self.n_way, 1)

    @property
    def n_query(self) -> int:
        """Query examples per class."""
        return self.query_y.shape[0] // max(self.n_way, 1)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Task:
        """Return a copy on ``device``; ``dtype`` (if given) applies to the inputs only."""

        def move(x: Tensor) -> Tensor:
            return x.to(device=device, dtype=dtype if x.is_floating_point() and dtype is not None else None)

        return replace(
            self,
            support_x=move(self.support_x),
            support_y=self.support_y.to(device),
            query_x=move(self.query_x),
            query_y=self.query_y.to(device),
        )

"""What the data-free stream does to a recovered task: restrict it to ``n_way`` classes, augment it
for the meta-learner, and write it into (and read it back from) a checkpoint."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..inversion.losses import DiffAugment
from ..types import Task, TaskSource

__all__ = ["TaskAugment", "restrict_task", "task_from_state", "task_state"]


@dataclass(frozen=True)
class TaskAugment:
    """Random crop and flip of every task's images as the meta-learner sees them (new, replayed and
    interpolated tasks alike; the memory keeps the images as recovered).

    Each support and query image gets its own crop (zero padding of ``pad`` pixels in the meta-model's
    input space, then a window of the original size) and, with ``flip``, a horizontal flip with
    probability 1/2, drawn from the step's random generator. Vector inputs are left alone.

    Attributes:
        pad: padding of the random crop in pixels (``0``: no crop).
        flip: random horizontal flips.
    """

    pad: int = 0
    flip: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ValueError(f"task_augment.pad must be an integer >= 0, got {self.pad!r}")

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip

    def __call__(self, task: Task, generator: torch.Generator) -> Task:
        if not self.active or task.support_x.dim() != 4:
            return task
        aug = DiffAugment(pad=self.pad, flip=self.flip)
        return replace(task, support_x=aug(task.support_x, generator), query_x=aug(task.query_x, generator))


def restrict_task(task: Task, labels: list[int]) -> Task:
    """The sub-task of ``task`` made of the given labels (relabelled ``0..len(labels)-1`` in that order)."""
    def pick(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        xs, ys = [], []
        for new, old in enumerate(labels):
            m = y == old
            xs.append(x[m])
            ys.append(torch.full((int(m.sum()),), new, dtype=y.dtype, device=y.device))
        return torch.cat(xs), torch.cat(ys)

    sx, sy = pick(task.support_x, task.support_y)
    qx, qy = pick(task.query_x, task.query_y)
    source = task.source or TaskSource()
    classes = tuple(source.classes[k] for k in labels) if source.classes else ()
    return Task(sx, sy, qx, qy, replace(source, classes=classes))


def task_state(t: Task) -> dict[str, Any]:
    """``t`` as plain tensors and values for a checkpoint (provenance without ``extra``)."""
    s = t.source or TaskSource()
    return {
        "support_x": t.support_x, "support_y": t.support_y, "query_x": t.query_x, "query_y": t.query_y,
        "model_id": s.model_id, "classes": list(s.classes), "step": s.step, "kind": s.kind,
    }


def task_from_state(s: dict[str, Any]) -> Task:
    """The task :func:`task_state` wrote."""
    source = TaskSource(model_id=s["model_id"], classes=tuple(s["classes"]), step=s["step"], kind=s["kind"])
    return Task(s["support_x"], s["support_y"], s["query_x"], s["query_y"], source)

"""The meta-batch mix: new tasks, memory tasks and interpolated tasks in a configurable ratio."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..types import Task
from .buffer import TaskMemory
from .interpolate import LEVELS

__all__ = ["MetaBatchMix", "build_meta_batch", "plan_meta_batch"]


@dataclass(frozen=True)
class MetaBatchMix:
    """How a meta-batch splits into new, memory and interpolated tasks.

    Attributes:
        new, memory, interpolated: relative weights (non-negative, not all zero); a meta-batch of
            ``B`` tasks gets counts proportional to them (largest remainder, ties to ``new``, then
            ``memory``).
        alpha: ``lam ~ Beta(alpha, alpha)`` for interpolated tasks.
        level: ``"input"`` or ``"feature"`` interpolation.
        layers: for ``"feature"``: the encoder layers to draw the mixing layer from (one per task).

    References:
        Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023.
    """

    new: float = 1.0
    memory: float = 0.0
    interpolated: float = 0.0
    alpha: float = 0.5
    level: str = "input"
    layers: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        weights = (self.new, self.memory, self.interpolated)
        if any(not isinstance(w, (int, float)) or isinstance(w, bool) or not w >= 0 for w in weights) or not sum(
            weights
        ) > 0:
            raise ValueError(
                f"mix weights new/memory/interpolated must be non-negative numbers, not all zero, got {weights}"
            )
        if not isinstance(self.alpha, (int, float)) or not self.alpha > 0:
            raise ValueError(f"mix.alpha must be a positive number, got {self.alpha!r}")
        if self.level not in LEVELS:
            raise ValueError(f"mix.level must be one of {LEVELS}, got {self.level!r}")
        if self.level == "feature" and self.interpolated > 0 and not self.layers:
            raise ValueError("mix.level='feature' needs mix.layers, the encoder layers to mix at, e.g. (1, 2, 3)")
        if self.level == "input" and self.layers:
            raise ValueError(f"mix.layers={self.layers} only applies to level='feature'; set layers=() or level")


def plan_meta_batch(
    mix: MetaBatchMix, meta_batch_size: int, memory: TaskMemory, n_way: int, n_shot: int, n_query: int
) -> tuple[int, int, int]:
    """How many new, memory and interpolated tasks make up the next meta-batch.

    While the memory cannot yet serve a task (fewer than ``n_way`` classes with ``n_shot + n_query``
    examples) the whole meta-batch is new tasks.

    Returns:
        ``(n_new, n_memory, n_interpolated)``, summing to ``meta_batch_size``.

    Raises:
        ValueError: ``meta_batch_size < 1``.
    """
    if isinstance(meta_batch_size, bool) or not isinstance(meta_batch_size, int) or meta_batch_size < 1:
        raise ValueError(f"meta_batch_size must be an integer >= 1, got {meta_batch_size!r}")
    if not memory.can_sample(n_way, n_shot, n_query):
        return meta_batch_size, 0, 0
    weights = (mix.new, mix.memory, mix.interpolated)
    exact = [meta_batch_size * w / sum(weights) for w in weights]
    counts = [math.floor(e) for e in exact]
    order = sorted(range(3), key=lambda i: (-(exact[i] - counts[i]), i))
    for i in order[: meta_batch_size - sum(counts)]:
        counts[i] += 1
    return counts[0], counts[1], counts[2]


def build_meta_batch(
    new_tasks: Sequence[Task],
    memory: TaskMemory,
    mix: MetaBatchMix,
    *,
    meta_batch_size: int,
    n_way: int,
    n_shot: int,
    n_query: int,
    generator: torch.Generator,
) -> list[Task]:
    """The meta-batch: ``new_tasks``, then memory tasks, then interpolated memory tasks.

    The counts come from :func:`plan_meta_batch` (call it first to know how many new tasks to make);
    memory and interpolated tasks are drawn from ``generator`` only, memory tasks first. The new
    tasks are not added to ``memory`` here: call ``memory.add(task)`` for them afterwards.

    Args:
        new_tasks: exactly ``plan_meta_batch(...)[0]`` freshly recovered tasks.
        memory: where old tasks come from.
        mix: the ratio and interpolation settings.
        meta_batch_size, n_way, n_shot, n_query: meta-batch size and task shape.
        generator: a CPU ``torch.Generator``.

    Returns:
        ``meta_batch_size`` tasks.

    Raises:
        ValueError: ``len(new_tasks)`` differs from the planned number of new tasks.
    """
    n_new, n_memory, n_interpolated = plan_meta_batch(mix, meta_batch_size, memory, n_way, n_shot, n_query)
    if len(new_tasks) != n_new:
        raise ValueError(
            f"got {len(new_tasks)} new tasks but this meta-batch needs {n_new} (plan: new={n_new}, "
            f"memory={n_memory}, interpolated={n_interpolated}); call plan_meta_batch(...) first and recover "
            "that many"
        )
    batch = list(new_tasks)
    batch += [memory.sample(n_way, n_shot, n_query, generator) for _ in range(n_memory)]
    layer = mix.layers if mix.level == "feature" else None
    batch += [
        memory.sample_interpolated(n_way, n_shot, n_query, generator, mix.alpha, mix.level, layer)
        for _ in range(n_interpolated)
    ]
    return batch

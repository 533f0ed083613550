"""Fixtures: tiny tasks, inputs encoding their provenance (``x[:, 0]`` class, ``x[:, 1]`` model, ``x[:, 2]`` step)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from dfml.types import Task, TaskSource


def _tagged_task(
    classes: tuple[int, ...], model_id: int, step: int, n_shot: int = 2, n_query: int = 3, dataset: str | None = None
) -> Task:
    """A task of ``len(classes)`` ways; every input row is ``[class, model, step, row index]``."""
    n_way = len(classes)

    def rows(per_class: int, offset: int) -> torch.Tensor:
        cls = torch.tensor(classes, dtype=torch.float32).repeat_interleave(per_class)
        idx = torch.arange(n_way * per_class, dtype=torch.float32) + offset
        return torch.stack([cls, torch.full_like(cls, model_id), torch.full_like(cls, step), idx], 1)

    extra = {} if dataset is None else {"dataset": dataset}
    return Task(
        support_x=rows(n_shot, 0),
        support_y=torch.arange(n_way).repeat_interleave(n_shot),
        query_x=rows(n_query, 100),
        query_y=torch.arange(n_way).repeat_interleave(n_query),
        source=TaskSource(model_id=model_id, classes=classes, step=step, kind="synthetic", extra=extra),
    )


def _one_class_task(values: list[float], class_id: int = 7, model_id: int = 0, step: int = 0) -> Task:
    """A 1-way task with scalar-feature rows ``values``: the first two in support, the rest in query."""
    x = torch.tensor(values, dtype=torch.float32)[:, None]
    y = torch.zeros(len(values), dtype=torch.int64)
    return Task(x[:2], y[:2], x[2:], y[2:], TaskSource(model_id=model_id, classes=(class_id,), step=step))


@pytest.fixture
def tagged_task() -> Callable[..., Task]:
    return _tagged_task


@pytest.fixture
def one_class_task() -> Callable[..., Task]:
    return _one_class_task

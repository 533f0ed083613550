"""Episodes from and for other few-shot libraries, duck-typed (neither is imported).

- learn2learn: a ``TaskDataset.sample()`` returns ``(data, labels)`` for one task; :func:`from_learn2learn`
  turns that into a :class:`~dfml.types.Task`.
- easyfsl: :class:`TaskSampler` is a batch sampler yielding one episode's indices per batch, with an
  ``episodic_collate_fn`` returning ``(support_x, support_y, query_x, query_y, class_ids)``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Sampler

from ..types import Task, TaskSource
from .episodes import _check_shape_args, draw_episode

logger = logging.getLogger(__name__)


def from_learn2learn(batch: Sequence[Any], n_way: int, n_shot: int, n_query: int) -> Task:
    """Split one learn2learn task ``(data, labels)`` into support and query.

    Args:
        batch: ``(data [n_way * (n_shot + n_query), ...], labels [same])``, any order; extra entries ignored.
        n_way, n_shot, n_query: the task's shape (build the taskset with ``KShots(n_shot + n_query)``).

    Returns:
        A ``Task``: per class (sorted label value ``i`` becomes label ``i``) the first ``n_shot``
        examples in batch order go to the support, the rest to the query; class-major.
        ``source.classes`` holds the label values as they came in the batch.

    Raises:
        ValueError: wrong number of classes or of examples per class.
    """
    _check_shape_args(n_way, n_shot, n_query)
    if not isinstance(batch, (tuple, list)) or len(batch) < 2:
        raise TypeError(f"expected a learn2learn task (data, labels), got {type(batch).__name__}")
    data, labels = torch.as_tensor(batch[0]), torch.as_tensor(batch[1]).reshape(-1).long()
    if data.shape[0] != labels.shape[0]:
        raise ValueError(f"the task has {data.shape[0]} inputs but {labels.shape[0]} labels")
    values = torch.unique(labels)  # sorted
    if len(values) != n_way:
        raise ValueError(f"expected a {n_way}-way task, got {len(values)} classes {values.tolist()}")
    need = n_shot + n_query
    support, query = [], []
    for v in values.tolist():
        idx = torch.nonzero(labels == v).flatten()
        if len(idx) != need:
            raise ValueError(
                f"class {v} has {len(idx)} examples; expected n_shot + n_query = {need} per class "
                f"(build the taskset with KShots(dataset, {need}))"
            )
        support.append(idx[:n_shot])
        query.append(idx[n_shot:])
    return Task(
        support_x=data[torch.cat(support)],
        support_y=torch.arange(n_way).repeat_interleave(n_shot),
        query_x=data[torch.cat(query)],
        query_y=torch.arange(n_way).repeat_interleave(n_query),
        source=TaskSource(classes=tuple(values.tolist()), kind="real"),
    )


class LearnToLearnTasks:
    """dfml ``Task``s from anything with ``.sample() -> (data, labels)``, such as a learn2learn ``TaskDataset``.

    Args:
        taskset: the task source (duck-typed; learn2learn is not imported).
        n_way, n_shot, n_query: the shape of its tasks.
    """

    def __init__(self, taskset: Any, n_way: int, n_shot: int, n_query: int) -> None:
        if not callable(getattr(taskset, "sample", None)):
            raise TypeError(f"{type(taskset).__name__} has no sample() method; pass a learn2learn TaskDataset")
        _check_shape_args(n_way, n_shot, n_query)
        self.taskset, self.n_way, self.n_shot, self.n_query = taskset, n_way, n_shot, n_query

    def sample(self) -> Task:
        """One task from ``taskset.sample()``."""
        return from_learn2learn(self.taskset.sample(), self.n_way, self.n_shot, self.n_query)

    def take(self, n: int) -> Iterator[Task]:
        """``n`` tasks, one after another."""
        for _ in range(n):
            yield self.sample()


def _dataset_labels(dataset: Any) -> np.ndarray:
    get_labels = getattr(dataset, "get_labels", None)  # easyfsl FewShotDataset
    for value in (get_labels() if callable(get_labels) else None, getattr(dataset, "labels", None),
                  getattr(dataset, "targets", None)):
        if value is not None and not callable(value):
            arr = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
            if arr.ndim == 1 and len(arr) == len(dataset):
                return arr.astype(np.int64)
    logger.info("%s has no labels/targets/get_labels(); reading every item for its label", type(dataset).__name__)
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], np.int64)


class TaskSampler(Sampler[list[int]]):
    """easyfsl-style batch sampler: each batch is the indices of one N-way (K+Q)-shot episode.

    Use as ``DataLoader(dataset, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)``.
    Each batch lists, class after class, ``n_shot`` support then ``n_query`` query indices. Every
    pass over the sampler yields the same ``n_tasks`` episodes (a fresh generator seeded with
    ``seed``), so it suits evaluation; build a new sampler with another seed for new episodes.

    Args:
        dataset: labels come from ``get_labels()``, ``.labels`` or ``.targets`` (else from reading items).
        n_way, n_shot, n_query: the episode shape.
        n_tasks: episodes per pass.
        seed: seed of the episode draw.

    Raises:
        ValueError: fewer than ``n_way`` classes or a class with fewer than ``n_shot + n_query`` examples.
    """

    def __init__(self, dataset: Any, n_way: int, n_shot: int, n_query: int, n_tasks: int, seed: int = 0) -> None:
        _check_shape_args(n_way, n_shot, n_query)
        if isinstance(n_tasks, bool) or not isinstance(n_tasks, (int, np.integer)) or n_tasks < 1:
            raise ValueError(f"n_tasks must be an integer >= 1, got {n_tasks!r}")
        labels = _dataset_labels(dataset)
        self.class_values, inverse = np.unique(labels, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        self.by_class = np.split(order, np.cumsum(np.bincount(inverse))[:-1])
        self.n_way, self.n_shot, self.n_query, self.n_tasks, self.seed = n_way, n_shot, n_query, n_tasks, seed
        counts = np.bincount(inverse)
        if len(counts) >= n_way and counts.min() < n_shot + n_query:
            small = int(counts.argmin())
            raise ValueError(
                f"class {self.class_values[small]} has only {counts[small]} examples but an episode needs "
                f"n_shot + n_query = {n_shot + n_query} per class; lower n_shot/n_query or drop that class"
            )
        draw_episode(self.by_class, n_way, n_shot, n_query, torch.Generator().manual_seed(seed))  # fail early

    def __len__(self) -> int:
        return self.n_tasks

    def __iter__(self) -> Iterator[list[int]]:
        generator = torch.Generator().manual_seed(self.seed)
        k, q = self.n_shot, self.n_query
        for _ in range(self.n_tasks):
            ep = draw_episode(self.by_class, self.n_way, k, q, generator)
            yield [i for c in range(self.n_way)
                   for i in (*ep.support_idx[c * k:(c + 1) * k], *ep.query_idx[c * q:(c + 1) * q])]

    def episodic_collate_fn(self, items: list[tuple[Any, int]]) -> tuple[Tensor, Tensor, Tensor, Tensor, list[int]]:
        """Collate one episode's items into ``(support_x, support_y, query_x, query_y, class_ids)``.

        Returns:
            ``support_x [n_way*n_shot, ...]``, ``support_y [n_way*n_shot]`` (0..n_way-1, class-major),
            ``query_x [n_way*n_query, ...]``, ``query_y [n_way*n_query]`` and the dataset label of each class.
        """
        per_class = self.n_shot + self.n_query
        if len(items) != self.n_way * per_class:
            raise ValueError(f"expected {self.n_way} x {per_class} items from this sampler, got {len(items)}")
        x = torch.stack([v if isinstance(v, Tensor) else torch.as_tensor(np.asarray(v)) for v, _ in items])
        x = x.reshape(self.n_way, per_class, *x.shape[1:])
        class_ids = [int(items[c * per_class][1]) for c in range(self.n_way)]
        return (
            x[:, : self.n_shot].reshape(-1, *x.shape[2:]),
            torch.arange(self.n_way).repeat_interleave(self.n_shot),
            x[:, self.n_shot :].reshape(-1, *x.shape[2:]),
            torch.arange(self.n_way).repeat_interleave(self.n_query),
            class_ids,
        )

"""N-way K-shot episodes from a labelled dataset, and fixed episode lists saved to JSON.

Every method is meant to be scored on exactly the same meta-test tasks: generate an
:class:`EpisodeList` once from a seed, save it next to the results, and load it for every run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ..files import write_atomic
from ..types import Task, TaskSource

logger = logging.getLogger(__name__)

FORMAT = "dfml.episodes"
VERSION = 1


class EpisodicDataset(Protocol):
    """What episode sampling needs from a dataset (:class:`~dfml.data.base.ArrayDataset` has it)."""

    def indices_by_class(self) -> Sequence[np.ndarray]: ...

    def get_batch(self, indices: Sequence[int] | np.ndarray | Tensor) -> Tensor: ...


@dataclass(frozen=True)
class Episode:
    """The example indices of one episode (no images).

    Attributes:
        classes: ``n_way`` class ids of the dataset; label ``i`` of the task is ``classes[i]``.
        support_idx: ``n_way * n_shot`` dataset indices, class-major (the ``n_shot`` of label 0 first).
        query_idx: ``n_way * n_query`` dataset indices, class-major, disjoint from ``support_idx``.
    """

    classes: tuple[int, ...]
    support_idx: tuple[int, ...]
    query_idx: tuple[int, ...]

    def task(self, dataset: EpisodicDataset) -> Task:
        """Decode this episode from ``dataset`` into a :class:`~dfml.types.Task`."""
        n_way = len(self.classes)
        support_y = torch.arange(n_way).repeat_interleave(len(self.support_idx) // n_way)
        query_y = torch.arange(n_way).repeat_interleave(len(self.query_idx) // n_way)
        return Task(
            support_x=dataset.get_batch(list(self.support_idx)),
            support_y=support_y,
            query_x=dataset.get_batch(list(self.query_idx)),
            query_y=query_y,
            source=TaskSource(classes=self.classes, kind="real"),
        )


def _check_shape_args(n_way: int, n_shot: int, n_query: int) -> None:
    for name, value, low in (("n_way", n_way, 1), ("n_shot", n_shot, 1), ("n_query", n_query, 0)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def draw_episode(
    by_class: Sequence[np.ndarray], n_way: int, n_shot: int, n_query: int, generator: torch.Generator
) -> Episode:
    """Draw one episode's indices from per-class index arrays, using only ``generator``.

    Args:
        by_class: for each class id, the dataset indices of its examples.
        n_way, n_shot, n_query: classes, support and query examples per class.
        generator: the only source of randomness (the global RNG is not touched).

    Raises:
        ValueError: fewer than ``n_way`` classes, or a class with fewer than ``n_shot + n_query`` examples.
    """
    _check_shape_args(n_way, n_shot, n_query)
    if len(by_class) < n_way:
        raise ValueError(f"cannot draw a {n_way}-way episode from a dataset with only {len(by_class)} classes")
    need = n_shot + n_query
    counts = np.array([len(idx) for idx in by_class])
    if counts.min() < need:
        small = int(counts.argmin())
        raise ValueError(
            f"class {small} has only {counts[small]} examples but an episode needs n_shot + n_query = "
            f"{n_shot} + {n_query} = {need} per class; lower n_shot/n_query or drop that class"
        )
    classes = torch.randperm(len(by_class), generator=generator)[:n_way].tolist()
    support: list[int] = []
    query: list[int] = []
    for c in classes:
        pick = by_class[c][torch.randperm(len(by_class[c]), generator=generator)[:need].numpy()]
        support.extend(int(i) for i in pick[:n_shot])
        query.extend(int(i) for i in pick[n_shot:])
    return Episode(tuple(classes), tuple(support), tuple(query))


def sample_episode(
    dataset: EpisodicDataset, n_way: int, n_shot: int, n_query: int, generator: torch.Generator
) -> Task:
    """Sample an N-way K-shot episode from ``dataset``.

    Args:
        dataset: anything with ``indices_by_class()`` and ``get_batch()`` (an ``ArrayDataset``).
        n_way: classes per episode, drawn at random; label ``i`` is the ``i``-th class drawn.
        n_shot: support examples per class.
        n_query: query examples per class (disjoint from the support).
        generator: the only source of randomness (the global RNG is not touched).

    Returns:
        A ``Task`` with ``support_x [n_way*n_shot, *input_shape]``, ``query_x [n_way*n_query, ...]``,
        class-major int64 labels in ``0..n_way-1`` and ``source.classes`` the dataset class ids.

    Raises:
        ValueError: fewer than ``n_way`` classes or a class with fewer than ``n_shot + n_query`` examples.
    """
    return draw_episode(dataset.indices_by_class(), n_way, n_shot, n_query, generator).task(dataset)


def _fingerprint(dataset: Any) -> dict[str, Any]:
    fp = getattr(dataset, "fingerprint", None)
    if fp is None:
        raise TypeError(f"{type(dataset).__name__} has no fingerprint(); use an ArrayDataset (see dfml.data)")
    return dict(fp())


class EpisodeList(Sequence[Episode]):
    """A fixed, reproducible list of episodes tied to one dataset split.

    Args:
        episodes: the episodes.
        n_way, n_shot, n_query: their shape.
        seed: the seed they were generated from (``None`` if unknown).
        fingerprint: ``dataset.fingerprint()`` of the split they index.
    """

    def __init__(
        self,
        episodes: Sequence[Episode],
        n_way: int,
        n_shot: int,
        n_query: int,
        seed: int | None,
        fingerprint: dict[str, Any],
    ) -> None:
        _check_shape_args(n_way, n_shot, n_query)
        for i, ep in enumerate(episodes):
            if (len(ep.classes), len(ep.support_idx), len(ep.query_idx)) != (n_way, n_way * n_shot, n_way * n_query):
                raise ValueError(
                    f"episode {i} has {len(ep.classes)} classes, {len(ep.support_idx)} support and "
                    f"{len(ep.query_idx)} query indices; expected {n_way}, {n_way * n_shot} and {n_way * n_query}"
                )
        self.episodes = list(episodes)
        self.n_way, self.n_shot, self.n_query, self.seed = n_way, n_shot, n_query, seed
        self.fingerprint = dict(fingerprint)

    @classmethod
    def generate(
        cls, dataset: EpisodicDataset, n_episodes: int, n_way: int, n_shot: int, n_query: int, seed: int
    ) -> EpisodeList:
        """Draw ``n_episodes`` episodes from ``dataset``; the same seed gives the same list."""
        if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) or n_episodes < 1:
            raise ValueError(f"n_episodes must be an integer >= 1, got {n_episodes!r}")
        generator = torch.Generator().manual_seed(int(seed))
        by_class = dataset.indices_by_class()
        episodes = [draw_episode(by_class, n_way, n_shot, n_query, generator) for _ in range(n_episodes)]
        return cls(episodes, n_way, n_shot, n_query, int(seed), _fingerprint(dataset))

    def __len__(self) -> int:
        return len(self.episodes)

    def __getitem__(self, i: int) -> Episode:  # type: ignore[override]
        return self.episodes[i]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EpisodeList):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (
            f"EpisodeList({len(self)} episodes, {self.n_way}-way {self.n_shot}-shot {self.n_query}-query, "
            f"seed={self.seed}, dataset={self.fingerprint.get('name')!r})"
        )

    def check(self, dataset: EpisodicDataset) -> None:
        """Raise ``ValueError`` unless ``dataset`` is the split these episodes were made for."""
        current = _fingerprint(dataset)
        order = ["name", "n_examples", "classes", "labels_sha1", "data_sha1"]
        keys = sorted(set(self.fingerprint) | set(current), key=lambda k: (order.index(k) if k in order else 99, k))
        for key in keys:
            mine, theirs = self.fingerprint.get(key), current.get(key)
            if mine == theirs:
                continue
            if key == "classes" and isinstance(mine, list) and isinstance(theirs, list):
                pos = next((i for i, (a, b) in enumerate(zip(mine, theirs)) if a != b), min(len(mine), len(theirs)))
                detail = f"{len(mine)} classes vs {len(theirs)}, first difference at position {pos}"
            elif key.endswith("_sha1"):
                detail = "same classes and size, but the examples differ or come in another order"
            else:
                detail = f"episodes: {mine!r}, dataset: {theirs!r}"
            raise ValueError(
                f"these episodes were made for another dataset/split: fingerprint field {key!r} differs "
                f"({detail}). Load the split named {self.fingerprint.get('name')!r} the same way (same files "
                f"and layout) or generate new episodes for this dataset"
            )

    def task(self, i: int, dataset: EpisodicDataset) -> Task:
        """Episode ``i`` decoded from ``dataset`` (checked against the fingerprint first)."""
        self.check(dataset)
        return self.episodes[i].task(dataset)

    def tasks(self, dataset: EpisodicDataset) -> Iterator[Task]:
        """All episodes decoded from ``dataset``, in order (fingerprint checked once)."""
        self.check(dataset)
        for ep in self.episodes:
            yield ep.task(dataset)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready form written by :meth:`save`."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "n_way": self.n_way,
            "n_shot": self.n_shot,
            "n_query": self.n_query,
            "seed": self.seed,
            "fingerprint": self.fingerprint,
            "episodes": [
                {"classes": list(e.classes), "support": list(e.support_idx), "query": list(e.query_idx)}
                for e in self.episodes
            ],
        }

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write the episodes (indices only) as JSON, atomically; refuses an existing file unless ``overwrite``."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        write_atomic(path, (json.dumps(self.to_dict(), separators=(",", ":")) + "\n").encode())
        logger.info("saved %d episodes to %s", len(self), path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> EpisodeList:
        """Read a file written by :meth:`save`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"episode file {path} not found; create one with EpisodeList.generate(...).save()")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise ValueError(f"{path} is not a dfml episode file (expected \"format\": {FORMAT!r})")
        if raw.get("version") != VERSION:
            raise ValueError(f"{path} has episode-file version {raw.get('version')!r}; this dfml reads {VERSION}")
        try:
            episodes = [
                Episode(tuple(map(int, e["classes"])), tuple(map(int, e["support"])), tuple(map(int, e["query"])))
                for e in raw["episodes"]
            ]
            return cls(episodes, raw["n_way"], raw["n_shot"], raw["n_query"], raw["seed"], raw["fingerprint"])
        except (KeyError, TypeError) as err:
            raise ValueError(f"{path} is a malformed episode file ({type(err).__name__}: {err})") from err

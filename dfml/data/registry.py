"""Datasets by name: ``get_dataset("cifar_fs", root, "test")``."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .base import ArrayDataset, check_split
from .cifar import CIFARFS
from .miniimagenet import MiniImageNet
from .toy import make_toy_world

DatasetFactory = Callable[..., ArrayDataset]
"""``factory(root, split, **kw) -> ArrayDataset``."""

DATASETS: Registry[DatasetFactory] = Registry("dataset")


@DATASETS.register("cifar_fs")
def _cifar_fs(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return CIFARFS(root, split, **kw)


@DATASETS.register("mini_imagenet")
def _mini_imagenet(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return MiniImageNet(root, split, **kw)


@DATASETS.register("toy")
def _toy(root: str | os.PathLike[str] | None, split: str, **kw: Any) -> ArrayDataset:
    """The built-in toy world (``root`` is ignored; ``kw`` are ``ToyWorldConfig`` fields)."""
    return make_toy_world(**kw)[split]


def get_dataset(name: str, root: str | os.PathLike[str] | None, split: str, /, **kw: Any) -> ArrayDataset:
    """Build the ``split`` of the registered dataset ``name`` from the files under ``root``.

    Args:
        name: a registered name (``DATASETS.names()``: cifar_fs, mini_imagenet, toy).
        root: where the data lives (ignored by ``toy``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        **kw: passed to the dataset (``transform``, ``layout``, ``image_size``, toy-world fields
            such as ``seed`` and ``name``...); the first three arguments are positional only, so a
            dataset may take a ``name`` of its own.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
        ValueError: unknown split.
    """
    factory = DATASETS.get(name)
    check_split(split, name)
    if root is None and name.lower() != "toy":
        raise ValueError(f"dataset {name!r} needs a root folder holding its files; got root=None")
    return factory(root, split, **kw)

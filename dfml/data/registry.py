"""Datasets by name: ``get_dataset("cifar_fs", root, "test")``."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
from collections.abc import Callable
from typing import Any

from ..registry import Registry
from .base import ArrayDataset, check_split
from .cifar import CIFARFS
from .cub import CUB
from .folder import ImageFolder
from .miniimagenet import MiniImageNet
from .omniglot import Omniglot
from .toy import ToyWorldConfig, make_toy_world

DatasetFactory = Callable[..., ArrayDataset]
"""``factory(root, split, **kw) -> ArrayDataset``."""

DATASETS: Registry[DatasetFactory] = Registry("dataset")


@DATASETS.register("cifar_fs")
def _cifar_fs(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return CIFARFS(root, split, **kw)


@DATASETS.register("mini_imagenet")
def _mini_imagenet(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return MiniImageNet(root, split, **kw)


@DATASETS.register("omniglot")
def _omniglot(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return Omniglot(root, split, **kw)


@DATASETS.register("cub")
def _cub(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return CUB(root, split, **kw)


@DATASETS.register("image_folder")
def _image_folder(root: str | os.PathLike[str], split: str, **kw: Any) -> ArrayDataset:
    return ImageFolder(root, split, **kw)


@DATASETS.register("toy")
def _toy(root: str | os.PathLike[str] | None, split: str, **kw: Any) -> ArrayDataset:
    """The built-in toy world (``root`` is ignored; ``kw`` are ``ToyWorldConfig`` fields)."""
    return make_toy_world(**kw)[split]


_LOADERS: dict[str, Callable[..., Any]] = {"cifar_fs": CIFARFS, "mini_imagenet": MiniImageNet, "omniglot": Omniglot,
                                          "cub": CUB, "image_folder": ImageFolder, "toy": ToyWorldConfig}
"""Where each built-in dataset's options are declared (its loader's keyword arguments, the toy world's config)."""


def dataset_options(name: str) -> list[str] | None:
    """The options dataset ``name`` takes (``transform`` aside), e.g. ``["image_size", "rotations", ...]``.

    They are what ``dfml`` commands pass with ``--image-size`` / ``--data-opt KEY=VALUE`` and what an
    experiment's ``data_options`` holds. ``None`` for a dataset registered elsewhere whose factory
    takes any keyword (it checks its own).

    Raises:
        KeyError: unknown name (the message lists the registered ones).
    """
    loader = _LOADERS.get(name.lower(), DATASETS.get(name))
    params = list(inspect.signature(loader).parameters.values())
    if dataclasses.is_dataclass(loader):
        return [p.name for p in params]
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return [p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY and p.name != "transform"]


def check_options(name: str, options: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming an option that dataset ``name`` does not take, and the ones it takes."""
    valid = dataset_options(name)
    if valid is None:
        return
    for key in options:
        if key != "transform" and key not in valid:
            close = difflib.get_close_matches(key, valid, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            takes = f"it takes {', '.join(valid)}" if valid else "it takes none"
            raise ValueError(f"dataset {name!r} has no option {key!r} ({hint}{takes}); set options with --image-size "
                             f"or --data-opt KEY=VALUE (data_options in a config)")


def get_dataset(name: str, root: str | os.PathLike[str] | None, split: str, /, **kw: Any) -> ArrayDataset:
    """Build the ``split`` of the registered dataset ``name`` from the files under ``root``.

    Args:
        name: a registered name (``DATASETS.names()``: cifar_fs, cub, image_folder, mini_imagenet,
            omniglot, toy).
        root: where the data lives (ignored by ``toy``).
        split: ``"train"``, ``"val"`` or ``"test"``.
        **kw: the dataset's options (:func:`dataset_options`: ``layout``, ``image_size``, toy-world
            fields such as ``seed`` and ``name``...) and ``transform``; the first three arguments are
            positional only, so a dataset may take a ``name`` of its own.

    Raises:
        KeyError: unknown name (the message lists the registered ones).
        ValueError: unknown split, or an option the dataset does not take (names the ones it takes).
    """
    factory = DATASETS.get(name)
    check_split(split, name)
    check_options(name, kw)
    if root is None and name.lower() != "toy":
        raise ValueError(f"dataset {name!r} needs a root folder holding its files; got root=None")
    return factory(root, split, **kw)

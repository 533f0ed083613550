"""Any labelled torchvision-style dataset, restricted to a list of classes, as an ``ArrayDataset``."""

from __future__ import annotations

import difflib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .base import ArrayDataset

logger = logging.getLogger(__name__)


def _targets(dataset: Any) -> np.ndarray | None:
    for attr in ("targets", "labels"):
        value = getattr(dataset, attr, None)
        if value is not None and not callable(value):
            arr = np.asarray(value.numpy() if isinstance(value, Tensor) else value)
            if arr.ndim == 1 and len(arr) == len(dataset) and np.issubdtype(arr.dtype, np.integer):
                return arr.astype(np.int64)
    return None


def _resolve_classes(dataset: Any, classes: Sequence[int | str], labels: np.ndarray) -> tuple[list[int], list[str]]:
    names = getattr(dataset, "classes", None)
    names = [str(n) for n in names] if names is not None else None
    n_known = len(names) if names is not None else int(labels.max()) + 1 if len(labels) else 0
    ids: list[int] = []
    for c in classes:
        if isinstance(c, str):
            if names is None:
                raise ValueError(
                    f"class {c!r} is a name but {type(dataset).__name__} has no .classes list; pass class ids instead"
                )
            if c not in names:
                close = difflib.get_close_matches(c, names, n=3)
                hint = f"; did you mean {close}?" if close else f"; the dataset has {len(names)} classes"
                raise ValueError(f"unknown class name {c!r}{hint}")
            ids.append(names.index(c))
        elif isinstance(c, (int, np.integer)) and not isinstance(c, bool):
            if not 0 <= int(c) < n_known:
                raise ValueError(f"class id {int(c)} out of range 0..{n_known - 1}")
            ids.append(int(c))
        else:
            raise TypeError(f"classes must be ints or names (str), got {c!r} ({type(c).__name__})")
    dup = sorted({i for i in ids if ids.count(i) > 1})
    if dup:
        raise ValueError(f"classes repeat the class ids {dup}; each class may appear once")
    return ids, [names[i] if names is not None else str(i) for i in ids]


def _to_array(x: Any) -> np.ndarray:
    """One item's input as uint8 ``[H, W, C]`` (images) or a float array (already-transformed tensors)."""
    if isinstance(x, Image.Image):
        arr = np.asarray(x)
        return arr[..., None] if arr.ndim == 2 else arr
    if isinstance(x, Tensor):
        if x.dtype == torch.uint8 and x.dim() == 3:
            return x.permute(1, 2, 0).numpy()  # torchvision uint8 tensors are CHW
        return x.detach().float().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return arr[..., None]
    return arr if arr.dtype == np.uint8 else arr.astype(np.float32)


def _fast_data(dataset: Any) -> np.ndarray | None:
    """``dataset.data`` as uint8 ``[N, H, W, C]`` when it is safe to bypass ``__getitem__``."""
    if getattr(dataset, "transform", None) is not None:
        return None  # the user asked for a transform: go through __getitem__ so it is applied
    data = getattr(dataset, "data", None)
    if data is None or callable(data):
        return None
    arr = data.numpy() if isinstance(data, Tensor) else np.asarray(data) if isinstance(data, np.ndarray) else None
    if arr is None or arr.dtype != np.uint8 or len(arr) != len(dataset):
        return None
    if arr.ndim == 3:  # MNIST-like [N, H, W]
        return arr[..., None]
    if arr.ndim == 4 and arr.shape[-1] not in (1, 3) and arr.shape[1] in (1, 3):  # SVHN-like [N, C, H, W]
        return arr.transpose(0, 2, 3, 1)
    return arr if arr.ndim == 4 else None


def class_split(
    dataset: Any,
    classes: Sequence[int | str],
    *,
    name: str | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> ArrayDataset:
    """The examples of ``classes`` from a torchvision-style dataset, as an in-memory ``ArrayDataset``.

    Args:
        dataset: indexable, ``dataset[i] -> (PIL image | tensor | ndarray, int label)``. When it has
            integer ``.targets``/``.labels``, uint8 ``.data`` and no ``.transform``, the arrays are read
            directly (no per-item decoding); otherwise items go through ``__getitem__`` (and its transform).
        classes: class ids or names (names need ``dataset.classes``); label ``i`` is ``classes[i]``.
        name: dataset name for fingerprints (default ``"<type name>[<n> classes]"``).
        mean, std: per-channel normalisation of uint8 images (default: images scaled to ``[0, 1]``).

    Returns:
        An ``ArrayDataset`` with labels ``0..len(classes)-1``; uint8 images become ``[N, H, W, C]``
        (``get_batch`` gives ``[B, C, H, W]``), float tensors are kept as they are.

    Raises:
        ValueError: unknown class names or ids, repeated classes, a class without examples.
    """
    if len(classes) == 0:
        raise ValueError("classes is empty; give at least one class id or name")
    labels = _targets(dataset)
    items: list[tuple[Any, int]] | None = None
    if labels is None:  # no label attribute: read every item once
        items = [dataset[i] for i in range(len(dataset))]
        labels = np.asarray([int(y) for _, y in items], np.int64)
    ids, class_names = _resolve_classes(dataset, classes, labels)
    remap = np.full(max(int(labels.max()) + 1, max(ids) + 1), -1, np.int64)
    remap[ids] = np.arange(len(ids))
    keep = np.flatnonzero(remap[labels] >= 0)
    counts = np.bincount(remap[labels[keep]], minlength=len(ids))
    if (counts == 0).any():
        raise ValueError(f"classes {[class_names[i] for i in np.flatnonzero(counts == 0)]} have no examples")
    fast = _fast_data(dataset)
    if fast is not None:
        x = np.ascontiguousarray(fast[keep])
    else:
        arrays = [_to_array(items[i][0] if items is not None else dataset[i][0]) for i in keep]
        shapes = sorted({a.shape for a in arrays})
        if len(shapes) > 1:
            raise ValueError(
                f"items have different shapes {shapes[:3]}; give the dataset a transform that resizes them"
            )
        x = np.stack(arrays)
    out = ArrayDataset(x, remap[labels[keep]], class_names, mean=mean, std=std,
                       name=name or f"{type(dataset).__name__}[{len(ids)} classes]")
    logger.info("class_split: %d examples of %d classes from %s (%s)", len(out), len(ids),
                type(dataset).__name__, "arrays" if fast is not None else "items")
    return out

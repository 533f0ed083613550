"""CIFAR-FS: CIFAR-100 re-split by class into 64 / 16 / 20 meta-train / meta-val / meta-test classes.

References:
    Bertinetto, Henriques, Torr, Vedaldi. Meta-learning with differentiable closed-form solvers. ICLR 2019.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from ._pickle import load_data_pickle
from .base import ArrayDataset, check_split

logger = logging.getLogger(__name__)

CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
LAYOUTS = ("auto", "pickle", "folder")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_HELP = (
    "CIFAR-FS accepts two layouts: (a) the CIFAR-100 python pickles, root = the folder holding "
    "cifar-100-python/ (with train, test, meta) or that folder itself; (b) image folders "
    "<root>/<split>/<class name>/*.png. Get CIFAR-100 from https://www.cs.toronto.edu/~kriz/cifar.html "
    "(the 'python version')"
)


def cifar_fs_classes(split: str) -> list[str]:
    """The CIFAR-100 fine class names of a CIFAR-FS split, in the split list's order."""
    check_split(split, "cifar_fs")
    text = resources.files("dfml.data").joinpath(f"splits/cifar_fs_{split}.txt").read_text()
    return [line.strip() for line in text.splitlines() if line.strip()]


def _pickle_dir(root: Path) -> Path | None:
    for cand in (root / "cifar-100-python", root):
        if (cand / "meta").is_file() or (cand / "train").is_file():
            return cand
    return None


def _read_pickles(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """All train+test images of ``classes``: uint8 ``[N, 32, 32, 3]`` and labels, class-major."""
    for fname in ("meta", "train", "test"):
        if not (folder / fname).is_file():
            raise FileNotFoundError(f"CIFAR-100 pickle {folder / fname} is missing. {_HELP}")
    meta = load_data_pickle(folder / "meta")
    if not isinstance(meta, dict) or "fine_label_names" not in meta:
        raise ValueError(
            f"{folder / 'meta'} has no 'fine_label_names'; is it the CIFAR-100 (not CIFAR-10) meta file? {_HELP}"
        )
    names = list(meta["fine_label_names"])
    missing = [c for c in classes if c not in names]
    if missing:
        raise ValueError(f"{folder / 'meta'} lacks the CIFAR-100 classes {missing}; expected the 100 fine label names")
    remap = np.full(len(names), -1, np.int64)
    remap[[names.index(c) for c in classes]] = np.arange(len(classes))
    data, labels = [], []
    for fname in ("train", "test"):
        part = load_data_pickle(folder / fname)
        if not isinstance(part, dict) or "data" not in part or "fine_labels" not in part:
            raise ValueError(
                f"{folder / fname} is not a CIFAR-100 pickle (expected keys 'data' and 'fine_labels'). {_HELP}"
            )
        x, y = np.asarray(part["data"]), np.asarray(part["fine_labels"], dtype=np.int64)
        if x.dtype != np.uint8 or x.ndim != 2 or x.shape[1] != 3072 or len(x) != len(y):
            raise ValueError(
                f"{folder / fname}: 'data' must be uint8 [N, 3072] with one fine label per row, got "
                f"{x.dtype} {list(x.shape)} and {len(y)} labels. {_HELP}"
            )
        keep = np.flatnonzero(remap[y] >= 0)
        data.append(x[keep])
        labels.append(remap[y[keep]])
    y = np.concatenate(labels)
    order = np.argsort(y, kind="stable")  # class-major: a class's train images, then its test images
    x = np.concatenate(data)[order].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x), y[order]


def _read_folders(folder: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in classes if not (folder / c).is_dir()]
    if missing:
        raise FileNotFoundError(
            f"{folder} lacks the class folders {missing[:5]}{' ...' if len(missing) > 5 else ''} "
            f"({len(missing)} of {len(classes)} missing). {_HELP}"
        )
    images, labels = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (folder / name).iterdir() if p.suffix.lower() in _IMAGE_SUFFIXES)
        if not files:
            raise FileNotFoundError(f"class folder {folder / name} holds no .png/.jpg images. {_HELP}")
        for path in files:
            with Image.open(path) as img:
                arr = np.asarray(img.convert("RGB"))
            if arr.shape != (32, 32, 3):
                raise ValueError(f"{path} is {arr.shape[1]}x{arr.shape[0]}; CIFAR-FS images must be 32x32")
            images.append(arr)
        labels.extend([label] * len(files))
    return np.stack(images), np.asarray(labels, np.int64)


class CIFARFS(ArrayDataset):
    """One CIFAR-FS split, decoded once into memory (uint8 ``[N, 32, 32, 3]``, 600 images per class).

    Args:
        root: the folder holding ``cifar-100-python/`` (or that folder itself), or the root of the
            image-folder layout ``<root>/<split>/<class name>/*.png``.
        split: ``"train"`` (64 classes), ``"val"`` (16) or ``"test"`` (20).
        transform: optional per-item callable on the normalised ``[3, 32, 32]`` tensor.
        layout: ``"auto"`` (pickles if present, else image folders), ``"pickle"`` or ``"folder"``.

    ``get_batch`` returns ``[B, 3, 32, 32]`` normalised with the CIFAR-100 mean/std. Labels follow
    the order of the split's class list (``dfml/data/splits/cifar_fs_<split>.txt``). No checksum is
    verified, so re-packed copies of CIFAR-100 load too.

    Raises:
        FileNotFoundError: no accepted layout under ``root`` (the message says what was expected).
        ValueError: unknown split/layout, or files that are not CIFAR-100.

    References:
        Bertinetto et al. Meta-learning with differentiable closed-form solvers. ICLR 2019.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        transform: Callable[[Tensor], Tensor] | None = None,
        layout: str = "auto",
    ) -> None:
        check_split(split, "cifar_fs")
        if layout not in LAYOUTS:
            raise ValueError(f"cifar_fs: unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
        root = Path(root).expanduser()
        classes = cifar_fs_classes(split)
        start = time.perf_counter()
        pickles = _pickle_dir(root) if layout in ("auto", "pickle") else None
        if pickles is not None:
            x, y, source = *_read_pickles(pickles, classes), f"pickles in {pickles}"
        elif layout in ("auto", "folder") and (root / split).is_dir():
            x, y, source = *_read_folders(root / split, classes), f"image folders in {root / split}"
        else:
            wanted = {"auto": "cifar-100-python/ pickles or a split folder", "pickle": "cifar-100-python/ pickles",
                      "folder": "a split folder"}[layout]
            raise FileNotFoundError(
                f"cifar_fs: found no {wanted} under {root} (looked for {root / 'cifar-100-python' / 'meta'}, "
                f"{root / 'meta'} and {root / split}/). {_HELP}"
            )
        empty = [classes[c] for c in np.flatnonzero(np.bincount(y, minlength=len(classes)) == 0)]
        if empty:
            raise ValueError(f"cifar_fs/{split}: no images found for classes {empty} in {source}")
        super().__init__(x, y, classes, mean=CIFAR100_MEAN, std=CIFAR100_STD, transform=transform,
                         name=f"cifar_fs/{split}")
        self.root, self.split = root, split
        logger.info("cifar_fs/%s: %d images of %d classes from %s in %.2fs", split, len(self), len(classes),
                    source, time.perf_counter() - start)

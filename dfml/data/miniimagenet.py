"""miniImageNet (Vinyals et al. 2016) with the Ravi & Larochelle (2017) 64 / 16 / 20 class split.

References:
    Ravi, Larochelle. Optimization as a model for few-shot learning. ICLR 2017.
"""

from __future__ import annotations

import csv
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from ._pickle import load_data_pickle
from .base import ArrayDataset, check_split
from .imagefiles import fill_images

logger = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_HELP = (
    "MiniImageNet accepts two layouts under root: (a) Ravi & Larochelle's images/<filename>.jpg with "
    "train.csv/val.csv/test.csv (header 'filename,label', label = WordNet id); (b) the pickle caches "
    "mini-imagenet-cache-{train,val,test}.pkl ({'image_data': uint8 [N, 84, 84, 3], 'class_dict': "
    "{wnid: [indices]}}). The split CSVs come from https://github.com/twitter/meta-learning-lstm "
    "(data/miniImagenet) and the images from ImageNet (https://image-net.org)"
)


def read_split_csv(path: Path) -> tuple[list[str], list[str]]:
    """Read a ``filename,label`` CSV: the file names and their WordNet ids, in file order."""
    if not path.is_file():
        raise FileNotFoundError(f"miniImageNet split file {path} is missing. {_HELP}")
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        got = rows[0] if rows else "an empty file"
        raise ValueError(f"{path} must start with the header 'filename,label', got {got}")
    body = [r for r in rows[1:] if r]
    bad = next((i for i, r in enumerate(body, start=2) if len(r) != 2), None)
    if bad is not None:
        raise ValueError(f"{path} line {bad}: expected two columns 'filename,label', got {body[bad - 2]}")
    return [r[0].strip() for r in body], [r[1].strip() for r in body]


def _decode(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as img:
        img = img.convert("RGB")
        if img.size != (size, size):
            img = img.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(img, dtype=np.uint8)


def _resize_all(x: np.ndarray, size: int, workers: int | None) -> np.ndarray:
    if x.shape[1:3] == (size, size):
        return x

    def resize(a: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(a).resize((size, size), Image.Resampling.BILINEAR))

    return fill_images(x, (size, size, 3), resize, workers)


def _from_csv(root: Path, split: str, size: int, workers: int | None) -> tuple[np.ndarray, list[int], list[str]]:
    files, wnids = read_split_csv(root / f"{split}.csv")
    if not files:
        raise ValueError(f"{root / f'{split}.csv'} lists no images")
    classes = list(dict.fromkeys(wnids))  # class ids in order of first appearance, as the papers' code
    index = {c: i for i, c in enumerate(classes)}
    paths = [root / "images" / f for f in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} images listed in {root / f'{split}.csv'} are missing, "
            f"e.g. {missing[0]}. {_HELP}"
        )
    images = fill_images(paths, (size, size, 3), lambda p: _decode(p, size), workers)  # no list + stacked copy
    return images, [index[w] for w in wnids], classes


def _from_cache(path: Path, size: int, workers: int | None) -> tuple[np.ndarray, list[int], list[str]]:
    raw = load_data_pickle(path)
    if not isinstance(raw, dict) or "image_data" not in raw or "class_dict" not in raw:
        raise ValueError(f"{path} is not a miniImageNet cache (expected keys 'image_data' and 'class_dict'). {_HELP}")
    x = np.asarray(raw["image_data"])
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{path}: 'image_data' must be uint8 [N, H, W, 3], got {x.dtype} {list(x.shape)}")
    classes = [str(c) for c in raw["class_dict"]]
    idx = [np.asarray(v, np.int64) for v in raw["class_dict"].values()]
    flat = np.concatenate(idx) if idx else np.zeros(0, np.int64)
    if flat.size and (flat.min() < 0 or flat.max() >= len(x)):
        raise ValueError(f"{path}: 'class_dict' indexes images outside 0..{len(x) - 1}")
    labels = np.repeat(np.arange(len(classes)), [len(i) for i in idx]).tolist()
    in_order = len(flat) == len(x) and np.array_equal(flat, np.arange(len(x)))  # the usual cache: no copy needed
    return _resize_all(np.ascontiguousarray(x if in_order else x[flat]), size, workers), labels, classes


class MiniImageNet(ArrayDataset):
    """One miniImageNet split, decoded once into memory (uint8 ``[N, image_size, image_size, 3]``).

    Args:
        root: folder holding ``images/`` and ``{split}.csv``, or ``mini-imagenet-cache-{split}.pkl``
            (the cache is preferred when both are present).
        split: ``"train"`` (64 classes), ``"val"`` (16) or ``"test"`` (20).
        transform: optional per-item callable on the normalised ``[3, H, W]`` tensor.
        image_size: side length; images of another size are resized (bilinear) once at load time.
        num_workers: threads decoding JPEGs (``None``: Python's default for ``ThreadPoolExecutor``).

    Labels number the WordNet ids in order of first appearance in the CSV (or the cache's
    ``class_dict`` order); ``classes`` holds the WordNet ids. ``get_batch`` returns
    ``[B, 3, image_size, image_size]`` normalised with the ImageNet mean/std.

    Raises:
        FileNotFoundError: no CSV/cache for the split, or listed images missing (named in the message).
        ValueError: unknown split, malformed CSV or cache.

    References:
        Ravi, Larochelle. Optimization as a model for few-shot learning. ICLR 2017.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        split: str,
        *,
        transform: Callable[[Tensor], Tensor] | None = None,
        image_size: int = 84,
        num_workers: int | None = None,
    ) -> None:
        check_split(split, "mini_imagenet")
        if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
            raise ValueError(f"image_size must be a positive integer, got {image_size!r}")
        root = Path(root).expanduser()
        start = time.perf_counter()
        cache = root / f"mini-imagenet-cache-{split}.pkl"
        if cache.is_file():
            x, labels, classes = _from_cache(cache, image_size, num_workers)
            source = str(cache)
        elif (root / f"{split}.csv").is_file():
            x, labels, classes = _from_csv(root, split, image_size, num_workers)
            source = str(root / f"{split}.csv")
        else:
            raise FileNotFoundError(
                f"mini_imagenet: neither {root / f'{split}.csv'} nor {cache} exists. {_HELP}"
            )
        super().__init__(x, labels, classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, transform=transform,
                         name=f"mini_imagenet/{split}")
        self.root, self.split = root, split
        logger.info("mini_imagenet/%s: %d images of %d classes from %s in %.2fs", split, len(self),
                    len(classes), source, time.perf_counter() - start)

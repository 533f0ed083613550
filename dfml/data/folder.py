"""Any folder of class folders, ``root/<class>/*.jpg``, split by class into meta-train / val / test.

The class split comes from three text files (``train.txt``, ``val.txt``, ``test.txt`` in the
folder ``splits``, one class folder name a line), or from ``ratio`` and ``seed``, which draw it and
write those files into ``splits`` when given (an existing file that differs is refused, never
overwritten). Normalisation is ``mean``/``std`` when given, else computed from the meta-train images.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..files import write_atomic
from .base import SPLITS, ArrayDataset, check_split
from .imagefiles import (IMAGE_SUFFIXES, as_path, channel_stats, check_image_size, decode_all, found, image_files,
                         option_tag, subfolders)

logger = logging.getLogger(__name__)

_HELP = (
    "image_folder expects root/<class>/<image> files (" + ", ".join(s[1:] for s in IMAGE_SUFFIXES[:5]) + ", ...) and "
    "its class split: --data-opt splits=DIR (DIR/train.txt, val.txt, test.txt: one class folder name a line) or "
    "--data-opt ratio=[0.6,0.2,0.2] (with --data-opt seed=0; the lists are written next to the pool or run)"
)


def _read_list(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines()]
    names = [n for n in names if n and not n.startswith("#")]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ValueError(f"image_folder: {str(path)!r} lists the classes {repeated[:3]} more than once")
    return names


def ratio_split(classes: Sequence[str], ratio: Any, seed: Any) -> dict[str, list[str]]:
    """``classes`` shuffled by ``seed`` and cut by ``ratio`` (three weights for train, val, test); each list sorted.

    Raises:
        ValueError: ``ratio`` is not three non-negative numbers, ``seed`` not an integer, or a split gets no class.
    """
    ok = isinstance(ratio, (list, tuple)) and len(ratio) == 3 and all(
        not isinstance(r, bool) and isinstance(r, (int, float)) and math.isfinite(r) and r >= 0 for r in ratio)
    if not ok or sum(ratio) <= 0:
        raise ValueError(f"image_folder: ratio must be three non-negative weights for train, val and test, got "
                         f"{ratio!r} (e.g. --data-opt ratio=[0.6,0.2,0.2])")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"image_folder: seed must be an integer, got {seed!r} (e.g. --data-opt seed=0)")
    n, total = len(classes), float(sum(ratio))
    n_val, n_test = round(n * ratio[1] / total), round(n * ratio[2] / total)
    counts = (n - n_val - n_test, n_val, n_test)
    if min(counts) < 1:
        raise ValueError(f"image_folder: ratio={list(ratio)} over {n} classes gives {dict(zip(SPLITS, counts))}; every "
                         f"split needs at least one class: give other weights or more class folders")
    perm = [sorted(classes)[i] for i in np.random.default_rng(int(seed)).permutation(n)]
    cuts = np.cumsum((0,) + counts)
    return {s: sorted(perm[cuts[i]:cuts[i + 1]]) for i, s in enumerate(SPLITS)}


def write_or_check(folder: Path, lists: dict[str, list[str]], how: str) -> None:
    """Write each ``<split>.txt`` of ``lists`` into ``folder``, or check that an existing one says the same."""
    for split, names in lists.items():
        path = folder / f"{split}.txt"
        if path.is_file():
            if _read_list(path) != names:
                raise ValueError(f"image_folder: {str(path)!r} exists and lists other classes than {how} give; delete "
                                 f"it to write the split again, or drop ratio to use the file as it is")
            continue
        write_atomic(path, ("\n".join(names) + "\n").encode())
        logger.info("image_folder: wrote the %s class list (%d classes, %s) to %s", split, len(names), how, path)


def class_lists(root: Path, splits: Path | None, ratio: Any, seed: Any) -> dict[str, list[str]]:
    """Each split's class folder names (from the files in ``splits``, or drawn by ``ratio``/``seed``), checked."""
    found_classes = subfolders(root)
    if ratio is not None:
        lists = ratio_split(found_classes, ratio, seed)
        if splits is not None:
            write_or_check(splits, lists, f"ratio={list(ratio)} seed={seed}")
    elif splits is None:
        raise ValueError(f"image_folder: no class split given. {_HELP}")
    else:
        missing = [f"{s}.txt" for s in SPLITS if not (splits / f"{s}.txt").is_file()]
        if missing:
            raise FileNotFoundError(f"image_folder: the class split folder lacks {', '.join(missing)} "
                                    f"({found(splits)}). {_HELP}")
        lists = {s: _read_list(splits / f"{s}.txt") for s in SPLITS}
    for split, names in lists.items():
        unknown = [n for n in names if n not in found_classes]
        if not names or unknown:
            what = "lists no class" if not names else \
                f"names {unknown[:3]}, which are not class folders of {found(root)}"
            raise ValueError(f"image_folder: the {split} class list {what}. {_HELP}")
    shared = sorted(set(lists["train"]) & set(lists["val"]) | set(lists["train"]) & set(lists["test"])
                    | set(lists["val"]) & set(lists["test"]))
    if shared:
        raise ValueError(f"image_folder: the classes {shared[:3]} are in more than one split; meta-train, "
                         f"meta-val and meta-test must not share classes")
    return lists


def _listing(root: Path, names: list[str]) -> tuple[list[Path], list[int]]:
    paths, labels = [], []
    for label, name in enumerate(names):
        files = image_files(root / name)
        if not files:
            raise FileNotFoundError(f"image_folder: class folder {str(root / name)!r} holds no images "
                                    f"({found(root / name)}). {_HELP}")
        paths += files
        labels += [label] * len(files)
    return paths, labels


@functools.lru_cache(maxsize=8)
def _stats(root: Path, names: tuple[str, ...], size: int, channels: int, files: tuple[tuple[str, int, int], ...],
           workers: int | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean/std of the meta-train images (cached per process by the files' names, sizes and times)."""
    paths, _ = _listing(root, list(names))
    return channel_stats(decode_all(paths, size, channels, workers=workers))


def _check_stats(value: Any, option: str, channels: int) -> tuple[float, ...]:
    ok = isinstance(value, (list, tuple)) and len(value) == channels and all(
        not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) for v in value)
    if not ok or (option == "std" and min(value) <= 0):
        rule = "positive numbers" if option == "std" else "numbers"
        raise ValueError(f"image_folder: {option} must be {channels} {rule} (one per channel), got {value!r} (e.g. "
                         f"--data-opt {option}=[{', '.join(['0.5'] * channels)}])")
    return tuple(float(v) for v in value)


class ImageFolder(ArrayDataset):
    """One split of ``root/<class>/*.jpg``, decoded once into memory (uint8 ``[N, image_size, image_size, channels]``).

    Args:
        root: the folder of class folders.
        split: ``"train"``, ``"val"`` or ``"test"``.
        splits: folder holding ``train.txt``, ``val.txt`` and ``test.txt`` (one class folder name a
            line; ``#`` starts a comment line). Labels follow the order of the split's list.
        ratio, seed: draw the split instead: the sorted class folders shuffled with ``seed`` and cut
            by the three weights ``ratio``; written into ``splits`` when given (an existing file that
            differs raises instead of being overwritten).
        image_size: side length (default 84); images are squashed to a square (bilinear).
        channels: 3 (RGB, default) or 1 (grayscale).
        mean, std: per-channel normalisation; default: computed from the meta-train images.
        transform: optional per-item callable on the normalised ``[C, H, W]`` tensor.
        num_workers: threads decoding images (``None``: Python's default).

    The name records the options that change the data (``image_folder[image_size=32]/train``).

    Raises:
        FileNotFoundError: ``root`` or a split file is missing, or a class folder holds no images.
        ValueError: a bad option, class lists that name unknown classes or share classes.
    """

    def __init__(self, root: str | os.PathLike[str], split: str, *, splits: str | os.PathLike[str] | None = None,
                 ratio: Sequence[float] | None = None, seed: int = 0, image_size: int = 84, channels: int = 3,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 transform: Callable[[Tensor], Tensor] | None = None, num_workers: int | None = None) -> None:
        check_split(split, "image_folder")
        size = check_image_size(image_size, "image_folder")
        if isinstance(channels, bool) or channels not in (1, 3):
            raise ValueError(f"image_folder: channels must be 1 (grayscale) or 3 (RGB), got {channels!r}")
        if (mean is None) != (std is None):
            raise ValueError("image_folder: give both mean and std, or neither (both then come from meta-train)")
        root, start = Path(root).expanduser(), time.perf_counter()
        if not root.is_dir() or not subfolders(root):
            raise FileNotFoundError(f"image_folder: found no class folders: {found(root)}. {_HELP}")
        lists = class_lists(root, None if splits is None else as_path(splits, "splits", "image_folder"), ratio, seed)
        paths, labels = _listing(root, lists[split])
        x = decode_all(paths, size, channels, workers=num_workers)
        options: dict[str, Any] = {k: v for k, v in (("image_size", size), ("channels", channels))
                                   if v != {"image_size": 84, "channels": 3}[k]}
        if mean is not None and std is not None:
            mean, std = _check_stats(mean, "mean", channels), _check_stats(std, "std", channels)
            options.update(mean=mean, std=std)
        elif split == "train":
            mean, std = channel_stats(x)
        else:
            files = tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in _listing(root, lists["train"])[0])
            mean, std = _stats(root.resolve(), tuple(lists["train"]), size, channels, files, num_workers)
        super().__init__(x, labels, lists[split], mean=mean, std=std, transform=transform,
                         name=f"image_folder{option_tag(options)}/{split}")
        self.root, self.split = root, split
        logger.info("image_folder/%s: %d images of %d classes from %s in %.2fs (mean %s, std %s)", split, len(self),
                    len(lists[split]), root, time.perf_counter() - start, mean, std)

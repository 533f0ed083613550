"""Omniglot (Lake et al.): 1,623 handwritten characters of 50 alphabets, 20 drawings each.

The split follows Meta-Dataset: the 20 alphabets of ``images_evaluation`` (659 characters) are
meta-test; of the 30 ``images_background`` alphabets (964 characters) the 5 with the fewest
characters are meta-validation and the other 25 meta-train. The rule is computed from the alphabet
folders found (no list of names is shipped). The ``.npz`` layout carries no alphabet names, so
there each background character is placed by its number in Lake's numbering (the ``NNNN`` of the
``NNNN_MM.png`` files, ``label + 1`` in the arrays) and the shipped sizes of the 30 background
alphabets in that numbering (``splits/omniglot_background_alphabets.txt``).

References:
    Lake, Salakhutdinov, Tenenbaum. Human-level concept learning through probabilistic program induction. Science 2015.
    Triantafillou et al. Meta-Dataset: a dataset of datasets for learning to learn from few examples. ICLR 2020.
"""

from __future__ import annotations

import logging
import os
import time
import zipfile
from collections.abc import Callable
from importlib import resources
from pathlib import Path

import numpy as np
from torch import Tensor

from .base import ArrayDataset, check_split
from .imagefiles import (check_bool, check_choice, check_image_size, decode_all, found, image_files, option_tag,
                         resize_all, subfolders)

logger = logging.getLogger(__name__)

LAYOUTS = ("auto", "folder", "npz")
VAL_ALPHABETS = 5
"""Background alphabets (the smallest) that form meta-validation."""
_DEFAULTS = {"image_size": 28, "rotations": False}
_SETS = {"train": "images_background", "val": "images_background", "test": "images_evaluation"}
_HELP = (
    "Omniglot accepts two layouts under root (or root/omniglot-py, as torchvision unpacks it): "
    "images_background/<alphabet>/<character>/*.png and images_evaluation/... (the test split), or "
    "images_background.npz / images_evaluation.npz holding 'images' [characters, drawings, H, W] (bool or "
    "uint8) and 'labels' (Lake's character number - 1, one per character or per drawing). Get them from "
    "https://github.com/brendenlake/omniglot (python/images_background.zip, images_evaluation.zip)"
)


def background_alphabet_sizes() -> list[tuple[int, str]]:
    """``(characters, alphabet)`` of the 30 background alphabets, in Lake's character numbering order."""
    text = resources.files("dfml.data").joinpath("splits/omniglot_background_alphabets.txt").read_text()
    rows = [line.split(" ", 1) for line in text.splitlines() if line.strip()]
    return [(int(n), name) for n, name in rows]


def val_alphabets(sizes: dict[str, int]) -> set[str]:
    """The :data:`VAL_ALPHABETS` alphabets with the fewest characters (ties: the first in ``sizes``' order).

    Raises:
        ValueError: fewer than ``VAL_ALPHABETS + 1`` alphabets (meta-train would be empty).
    """
    if len(sizes) <= VAL_ALPHABETS:
        raise ValueError(f"omniglot: the background set holds {len(sizes)} alphabets, but meta-validation takes the "
                         f"{VAL_ALPHABETS} smallest and meta-train needs at least one more. {_HELP}")
    names, counts = list(sizes), list(sizes.values())
    order = sorted(range(len(names)), key=lambda i: (counts[i], i))
    return {names[i] for i in order[:VAL_ALPHABETS]}


def _base(root: Path) -> Path | None:
    for cand in (root / "omniglot-py", root):
        if any((cand / s).is_dir() or (cand / f"{s}.npz").is_file() for s in set(_SETS.values())):
            return cand
    return None


def _read_folder(folder: Path, split: str, size: int, workers: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The split's characters in ``images_background``/``images_evaluation``: images, labels, class names."""
    alphabets = {a: subfolders(folder / a) for a in subfolders(folder)}
    alphabets = {a: chars for a, chars in alphabets.items() if chars}
    if not alphabets:
        raise FileNotFoundError(f"omniglot: no <alphabet>/<character>/ folders in {found(folder)}. {_HELP}")
    if split != "test":
        val = val_alphabets({a: len(c) for a, c in alphabets.items()})
        alphabets = {a: c for a, c in alphabets.items() if (a in val) == (split == "val")}
    classes, paths, labels = [], [], []
    for alphabet, chars in alphabets.items():
        for char in chars:
            files = image_files(folder / alphabet / char)
            if not files:
                raise FileNotFoundError(f"omniglot: character folder {str(folder / alphabet / char)!r} holds no "
                                        f"images ({found(folder / alphabet / char)}). {_HELP}")
            paths += files
            labels += [len(classes)] * len(files)
            classes.append(f"{alphabet}/{char}")
    return decode_all(paths, size, channels=1, resample="lanczos", workers=workers), np.asarray(labels), classes


def _npz_arrays(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``images`` as uint8 ``[K, D, H, W]`` (white 255) and each character's Lake number ``[K]``."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f"omniglot: {str(path)!r} is not an .npz file (not a zip archive). {_HELP}")
    try:
        with np.load(path, allow_pickle=False) as raw:
            if "images" not in raw or "labels" not in raw:
                raise ValueError(f"omniglot: {str(path)!r} holds the arrays {sorted(raw.files)}, not 'images' and "
                                 f"'labels'. {_HELP}")
            x, y = raw["images"], raw["labels"]
    except (OSError, EOFError, zipfile.BadZipFile) as err:  # a truncated or damaged archive
        raise ValueError(f"omniglot: {str(path)!r} is not a readable .npz file ({err}). {_HELP}") from None
    except ValueError as err:
        if str(err).startswith("omniglot:"):
            raise
        raise ValueError(f"omniglot: {str(path)!r}: {err} (dfml reads plain arrays only). {_HELP}") from None
    if x.ndim != 4 or x.dtype not in (np.bool_, np.uint8):
        raise ValueError(f"omniglot: 'images' in {str(path)!r} must be bool or uint8 [characters, drawings, H, W], "
                         f"got {x.dtype} {list(x.shape)}. {_HELP}")
    y = np.asarray(y)
    sizes = (x.shape[0], x.shape[0] * x.shape[1])
    if not np.issubdtype(y.dtype, np.integer) or y.shape[0] != x.shape[0] or y.size not in sizes:
        raise ValueError(f"omniglot: 'labels' in {str(path)!r} must hold integers, one per character or per drawing of "
                         f"'images' {list(x.shape[:2])}, got {y.dtype} {list(y.shape)}. {_HELP}")
    per_char = y.reshape(x.shape[0], -1)
    if (per_char != per_char[:, :1]).any():
        raise ValueError(f"omniglot: 'labels' in {str(path)!r} differ within a character's drawings; each row of "
                         f"'images' must be one character")
    binary = x.dtype == np.bool_ or x.max(initial=0) <= 1  # drawings stored as 0/1: white background is 1
    return (x.astype(np.uint8) * 255 if binary else x), per_char[:, 0].astype(np.int64) + 1


def _read_npz(path: Path, split: str, size: int, workers: int | None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x, numbers = _npz_arrays(path)
    if split != "test":
        sizes = background_alphabet_sizes()
        ends = np.cumsum([n for n, _ in sizes])
        if numbers.min() < 1 or numbers.max() > ends[-1]:
            raise ValueError(f"omniglot: {str(path)!r} labels characters {numbers.min()}..{numbers.max()} (label + 1), "
                             f"but background characters are numbered 1..{ends[-1]} in Lake's numbering. {_HELP}")
        alphabet = np.searchsorted(ends, numbers, side="left")  # n is in alphabet i when ends[i-1] < n <= ends[i]
        val = val_alphabets({name: n for n, name in sizes})
        is_val = np.array([sizes[a][1] in val for a in alphabet])
        keep = np.flatnonzero(is_val == (split == "val"))
        x, numbers = x[keep], numbers[keep]
    k, d = x.shape[:2]
    images = resize_all(x.reshape(k * d, *x.shape[2:], 1), size, resample="lanczos", workers=workers)
    return images, np.repeat(np.arange(k), d), [f"character{n:04d}" for n in numbers]


def _rotated(x: np.ndarray, y: np.ndarray, classes: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Each character rotated by 90, 180 and 270 degrees as three more classes (after the upright ones)."""
    k = len(classes)
    xs = [x] + [np.ascontiguousarray(np.rot90(x, r, axes=(1, 2))) for r in (1, 2, 3)]
    names = classes + [f"{c}/rot{90 * r}" for r in (1, 2, 3) for c in classes]
    return np.concatenate(xs), np.concatenate([y + r * k for r in range(4)]), names


class Omniglot(ArrayDataset):
    """One Omniglot split, decoded once into memory (uint8 ``[N, image_size, image_size, 1]``, white 255).

    Args:
        root: the folder holding ``images_background``/``images_evaluation`` (folders or ``.npz``), or
            its parent when they sit in ``omniglot-py/`` (as torchvision unpacks them).
        split: ``"train"`` (25 background alphabets, 883 characters in the full set), ``"val"`` (the 5
            smallest background alphabets, 81) or ``"test"`` (the 20 evaluation alphabets, 659).
        image_size: side length (default 28); drawings are resized with Lanczos filtering.
        rotations: add each character rotated by 90/180/270 degrees as three more classes.
        layout: ``"auto"`` (folders if present, else ``.npz``), ``"folder"`` or ``"npz"``.
        transform: optional per-item callable on the ``[1, H, W]`` tensor.
        num_workers: threads decoding/resizing (``None``: Python's default).

    Classes are ``"<alphabet>/<character>"`` (folders, in sorted order) or ``"characterNNNN"`` (``.npz``,
    Lake's number, in file order); ``/rot90``... for rotations. ``get_batch`` returns pixels in ``[0, 1]``
    (no normalisation). The name records options that change the data (``omniglot[image_size=84]/train``).

    Raises:
        FileNotFoundError: no accepted layout under ``root`` (the message says what it found).
        ValueError: a bad option, or arrays that are not Omniglot's.

    References:
        Lake et al. Human-level concept learning through probabilistic program induction. Science 2015.
    """

    def __init__(self, root: str | os.PathLike[str], split: str, *, image_size: int = 28, rotations: bool = False,
                 layout: str = "auto", transform: Callable[[Tensor], Tensor] | None = None,
                 num_workers: int | None = None) -> None:
        check_split(split, "omniglot")
        size = check_image_size(image_size, "omniglot")
        check_bool(rotations, "rotations", "omniglot")
        check_choice(layout, LAYOUTS, "layout", "omniglot")
        root, start = Path(root).expanduser(), time.perf_counter()
        base, folder = _base(root), _SETS[split]
        if base is not None and layout != "npz" and (base / folder).is_dir():
            x, y, classes = _read_folder(base / folder, split, size, num_workers)
            source = base / folder
        elif base is not None and layout != "folder" and (base / f"{folder}.npz").is_file():
            x, y, classes = _read_npz(base / f"{folder}.npz", split, size, num_workers)
            source = base / f"{folder}.npz"
        else:
            wanted = {"auto": f"{folder}/ or {folder}.npz", "folder": f"{folder}/", "npz": f"{folder}.npz"}[layout]
            raise FileNotFoundError(f"omniglot: found no {wanted} for the {split} split under {str(root)!r} or "
                                    f"{str(root / 'omniglot-py')!r} ({found(root)}). {_HELP}")
        if rotations:
            x, y, classes = _rotated(x, y, classes)
        options = {k: v for k, v in {"image_size": size, "rotations": rotations}.items() if v != _DEFAULTS[k]}
        super().__init__(x, y, classes, transform=transform, name=f"omniglot{option_tag(options)}/{split}")
        self.root, self.split = root, split
        logger.info("omniglot/%s: %d images of %d classes from %s in %.2fs", split, len(self), len(classes), source,
                    time.perf_counter() - start)

"""Decoding folders of image files into uint8 arrays, shared by the folder-based loaders.

Every loader decodes its files once at load time into ``[N, size, size, C]`` uint8 (RGB or
grayscale), resized to a square ``size x size`` (the aspect ratio is not kept, as the few-shot
code the loaders follow does), in a thread pool. Also: option checks that name the option, and the
tag that marks non-default data options in a dataset's name (so pools and episode files made with
other options are told apart).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
"""File name endings read as images (any case)."""

RESAMPLING = {"bilinear": Image.Resampling.BILINEAR, "lanczos": Image.Resampling.LANCZOS}


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by :data:`IMAGE_SUFFIXES`), sorted by name; hidden files skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


def subfolders(folder: Path) -> list[str]:
    """The names of the folders in ``folder``, sorted; hidden ones skipped."""
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def decode_image(path: Path, size: int, channels: int = 3, resample: str = "bilinear") -> np.ndarray:
    """One image file as uint8 ``[size, size, channels]`` (RGB or grayscale ``L``), resized if needed.

    JPEGs are decoded at a reduced scale when that still leaves at least ``size`` pixels a side
    (PIL's ``draft``), which makes decoding large photographs several times faster.

    Raises:
        ValueError: the file is not an image PIL can read (names the file).
    """
    try:
        with Image.open(path) as img:
            img.draft("RGB" if channels == 3 else "L", (size, size))
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (size, size):
                img = img.resize((size, size), RESAMPLING[resample])
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, SyntaxError) as err:  # PIL raises UnidentifiedImageError (an OSError) or SyntaxError
        raise ValueError(f"cannot read image {str(path)!r} ({type(err).__name__}: {err}); remove or replace the file")
    return arr[..., None] if arr.ndim == 2 else arr


def fill_images(items: Sequence[Any], shape: tuple[int, ...], image: Callable[[Any], np.ndarray],
                workers: int | None = None) -> np.ndarray:
    """uint8 ``[len(items), *shape]`` whose row ``i`` is ``image(items[i])``, computed in a thread pool.

    Each image is written into its row as soon as it is made, so loading holds the array and the
    images in flight, not a list of every image and then a stacked copy (twice the split's size).
    """
    out = np.empty((len(items), *shape), np.uint8)

    def put(i: int) -> None:
        out[i] = image(items[i])

    with ThreadPoolExecutor(workers) as pool:
        for _ in pool.map(put, range(len(items))):  # re-raises the first error
            pass
    return out


def decode_all(paths: Sequence[Path], size: int, channels: int = 3, resample: str = "bilinear",
               workers: int | None = None) -> np.ndarray:
    """All ``paths`` decoded by :func:`decode_image` in a thread pool: uint8 ``[N, size, size, channels]``."""
    return fill_images(paths, (size, size, channels), lambda p: decode_image(p, size, channels, resample), workers)


def resize_all(x: np.ndarray, size: int, resample: str = "bilinear", workers: int | None = None) -> np.ndarray:
    """uint8 images ``[N, H, W, C]`` resized to ``[N, size, size, C]`` (``x`` itself when already that size)."""
    if x.shape[1:3] == (size, size):
        return x
    channels = x.shape[-1]

    def resize(a: np.ndarray) -> np.ndarray:
        img = Image.fromarray(a[..., 0] if channels == 1 else a)
        out = np.asarray(img.resize((size, size), RESAMPLING[resample]), dtype=np.uint8)
        return out[..., None] if out.ndim == 2 else out

    return fill_images(x, (size, size, channels), resize, workers)


def channel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images ``[N, H, W, C]`` scaled to ``[0, 1]``
    (float64 sums, rounded to 4 decimals so that manifests and names stay readable)."""
    flat = x.reshape(-1, x.shape[-1])
    sums, squares = np.zeros(flat.shape[1]), np.zeros(flat.shape[1])
    for start in range(0, len(flat), 1 << 22):  # in chunks: a float64 copy of every pixel may not fit
        part = flat[start:start + (1 << 22)].astype(np.float64) / 255.0
        sums += part.sum(0)
        squares += (part * part).sum(0)
    n = max(len(flat), 1)
    mean = sums / n
    std = np.sqrt(np.maximum(squares / n - mean * mean, 0.0))
    return tuple(round(float(m), 4) for m in mean), tuple(round(max(float(s), 1e-4), 4) for s in std)


def check_image_size(value: Any, dataset: str) -> int:
    """``value`` if it is an integer >= 1, else a ``ValueError`` naming the option."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{dataset}: image_size must be an integer >= 1, got {value!r} (e.g. --image-size 84)")
    return int(value)


def check_choice(value: Any, choices: Sequence[str], option: str, dataset: str) -> str:
    """``value`` if it is one of the strings ``choices``, else a ``ValueError`` naming the option and the choices."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{dataset}: {option} must be one of {', '.join(choices)}, got {value!r} "
                         f"(e.g. --data-opt {option}={choices[0]})")
    return value


def check_bool(value: Any, option: str, dataset: str) -> bool:
    """``value`` if it is ``True`` or ``False``, else a ``ValueError`` naming the option."""
    if not isinstance(value, bool):
        raise ValueError(f"{dataset}: {option} must be true or false, got {value!r} (e.g. --data-opt {option}=true)")
    return value


def option_tag(options: dict[str, Any]) -> str:
    """``"[k=v,...]"`` for the options that change the data (``""`` when there are none).

    Appended to a dataset's name (``"omniglot[image_size=32]/train"``): the name is part of every
    fingerprint and pool record, so episode files, runs and pools made with other options are refused
    instead of read as the same data.
    """
    if not options:
        return ""

    def show(v: Any) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, (list, tuple)):
            return "(" + ",".join(show(x) for x in v) + ")"
        return str(v)

    return "[" + ",".join(f"{k}={show(v)}" for k, v in options.items()) + "]"


def as_path(value: Any, option: str, dataset: str) -> Path:
    """``value`` (a path given as an option) as a ``Path``, or a ``ValueError`` naming the option."""
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{dataset}: {option} must be a path, got {value!r}")
    return Path(value).expanduser()


def found(folder: Path, limit: int = 6) -> str:
    """What ``folder`` holds, for an error message: ``"'<folder>' holds a/, b.txt (2 entries)"``."""
    if not folder.exists():
        return f"{str(folder)!r} does not exist"
    if not folder.is_dir():
        return f"{str(folder)!r} is a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir() if not p.name.startswith("."))
    if not names:
        return f"{str(folder)!r} is empty"
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return f"{str(folder)!r} holds {', '.join(names[:limit])}{more}"

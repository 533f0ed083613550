"""CUB-200-2011 (Wah et al. 2011): 11,788 photographs of 200 bird species, split 100 / 50 / 50 by class.

The class split is the few-shot literature's (Chen et al. 2019, ``write_CUB_filelist.py``, which
FREE's ``write_file/write_CUB_filelist.py`` follows): the class folder names in sorted order, index
``i`` even is meta-train, ``i % 4 == 1`` meta-validation, ``i % 4 == 3`` meta-test. dfml computes
it from the class names in ``classes.txt`` rather than shipping a list.

References:
    Wah, Branson, Welinder, Perona, Belongie. The Caltech-UCSD Birds-200-2011 dataset. 2011.
    Chen, Liu, Kira, Wang, Huang. A closer look at few-shot classification. ICLR 2019.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch import Tensor

from .base import ArrayDataset, check_split
from .imagefiles import check_image_size, decode_all, found, option_tag
from .miniimagenet import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

LISTS = ("classes.txt", "images.txt", "image_class_labels.txt")
_WARNED: set[Path] = set()  # folders already warned about (once per process, not once per split)
_HELP = (
    "CUB expects root (or root/CUB_200_2011) to hold images/<class folder>/*.jpg with classes.txt "
    "('<class id> <class folder>'), images.txt ('<image id> <class folder>/<file>') and image_class_labels.txt "
    "('<image id> <class id>'), as CUB_200_2011.tgz unpacks. Get it from "
    "https://www.vision.caltech.edu/datasets/cub_200_2011/"
)


def cub_split(class_names: list[str], split: str) -> list[str]:
    """``split``'s classes by the few-shot rule on the sorted names (even: train, 1 mod 4: val, 3 mod 4: test)."""
    check_split(split, "cub")
    keep = {"train": lambda i: i % 2 == 0, "val": lambda i: i % 4 == 1, "test": lambda i: i % 4 == 3}[split]
    return [name for i, name in enumerate(sorted(class_names)) if keep(i)]


def _pairs(path: Path) -> list[tuple[str, str]]:
    """The ``'<id> <value>'`` lines of one of CUB's lists (values may not hold spaces)."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ValueError(f"cub: {str(path)!r} line {n} must be '<id> <value>', got {line.strip()!r}. {_HELP}")
        rows.append((parts[0], parts[1]))
    if not rows:
        raise ValueError(f"cub: {str(path)!r} is empty. {_HELP}")
    return rows


def _base(root: Path) -> Path:
    for cand in (root / "CUB_200_2011", root):
        if (cand / "images.txt").is_file():
            break
    else:
        raise FileNotFoundError(f"cub: no images.txt under {str(root)!r} or {str(root / 'CUB_200_2011')!r} "
                                f"({found(root)}). {_HELP}")
    missing = [name for name in (*LISTS, "images") if not (cand / name).exists()]
    if missing:
        raise FileNotFoundError(f"cub: {str(cand)!r} lacks {', '.join(missing)} ({found(cand)}). {_HELP}")
    return cand


def _listing(base: Path, split: str) -> tuple[list[Path], list[int], list[str]]:
    """The split's image paths (``images.txt`` order), their labels and the split's class names."""
    classes = dict(_pairs(base / "classes.txt"))
    paths = dict(_pairs(base / "images.txt"))
    labels = dict(_pairs(base / "image_class_labels.txt"))
    unlabelled = [i for i in paths if i not in labels]
    unknown = sorted({c for c in labels.values() if c not in classes})
    if unlabelled or unknown:
        what = f"images {unlabelled[:3]} have no line in image_class_labels.txt" if unlabelled else \
            f"image_class_labels.txt names class ids {unknown[:3]} that classes.txt lacks"
        raise ValueError(f"cub: the lists in {str(base)!r} disagree: {what}. {_HELP}")
    if len(classes) != 200 and base not in _WARNED:
        _WARNED.add(base)
        logger.warning("cub: classes.txt in %s lists %d classes, not CUB-200's 200; the split rule is applied to "
                       "these, so it is not the literature's split", base, len(classes))
    names = cub_split(list(classes.values()), split)
    index = {name: i for i, name in enumerate(names)}
    rows = [(base / "images" / p, index[classes[labels[i]]]) for i, p in paths.items() if classes[labels[i]] in index]
    rows.sort(key=lambda r: r[1])  # class-major, each class in images.txt order (a stable sort)
    counts = np.bincount([r[1] for r in rows], minlength=len(names))
    if (counts == 0).any():
        raise ValueError(f"cub/{split}: images.txt lists no images of the classes "
                         f"{[names[i] for i in np.flatnonzero(counts == 0)][:3]}. {_HELP}")
    missing = [p for p, _ in rows if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"cub: {len(missing)} of the {len(rows)} {split} images listed in images.txt are "
                                f"missing, e.g. {str(missing[0])!r}. {_HELP}")
    return [p for p, _ in rows], [r[1] for r in rows], names


class CUB(ArrayDataset):
    """One CUB-200-2011 split, decoded once into memory (uint8 ``[N, image_size, image_size, 3]``).

    Args:
        root: the folder ``CUB_200_2011/`` (holding ``images/`` and the ``.txt`` lists) or its parent.
        split: ``"train"`` (100 classes), ``"val"`` (50) or ``"test"`` (50), by the rule of :func:`cub_split`.
        image_size: side length (default 84); photographs are squashed to a square (bilinear), as
            FREE's ``Resize((84, 84))`` does.
        transform: optional per-item callable on the normalised ``[3, H, W]`` tensor.
        num_workers: threads decoding JPEGs (``None``: Python's default).

    Labels number the split's class folder names in sorted order; ``get_batch`` returns images
    normalised with the ImageNet mean/std (as FREE does). The name records a non-default size
    (``cub[image_size=32]/train``).

    Raises:
        FileNotFoundError: the layout is not found (the message says what is there) or listed images are missing.
        ValueError: malformed or inconsistent lists, a bad option.

    References:
        Wah et al. The Caltech-UCSD Birds-200-2011 dataset. 2011.
    """

    def __init__(self, root: str | os.PathLike[str], split: str, *, image_size: int = 84,
                 transform: Callable[[Tensor], Tensor] | None = None, num_workers: int | None = None) -> None:
        check_split(split, "cub")
        size = check_image_size(image_size, "cub")
        root, start = Path(root).expanduser(), time.perf_counter()
        base = _base(root)
        paths, labels, classes = _listing(base, split)
        x = decode_all(paths, size, channels=3, workers=num_workers)
        tag = option_tag({"image_size": size} if size != 84 else {})
        super().__init__(x, labels, classes, mean=IMAGENET_MEAN, std=IMAGENET_STD, transform=transform,
                         name=f"cub{tag}/{split}")
        self.root, self.split = root, split
        logger.info("cub/%s: %d images of %d classes from %s in %.2fs", split, len(self), len(classes), base,
                    time.perf_counter() - start)

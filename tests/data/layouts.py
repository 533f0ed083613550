"""Tiny datasets written in each loader's file layout (PNG/JPEG files, ``.npz`` arrays), for tests.

Every class gets its own random pattern and every image a little noise on it, so that a classifier
can tell the classes apart and each file's pixels are known to the test that wrote them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

OMNIGLOT_BACKGROUND = {"Alpha": 3, "Beta": 3, "Gamma": 1, "Delta": 1, "Epsilon": 1, "Zeta": 1, "Eta": 1}
"""Background alphabets and their characters: the 5 smallest (one character each) are meta-val, Alpha
and Beta (six characters) meta-train."""
OMNIGLOT_EVALUATION = {"Omega": 3, "Psi": 3}
"""Evaluation alphabets: six meta-test characters."""


def _pattern(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.random(shape) < 0.5


def write_omniglot_folders(root: Path, drawings: int = 4, side: int = 20, top: str = "omniglot-py",
                           seed: int = 0) -> dict[str, np.ndarray]:
    """``root/<top>/images_{background,evaluation}/<alphabet>/characterNN/NNNN_MM.png`` (1-bit PNGs, white
    background); returns each class's ``alphabet/character`` -> bool drawings ``[drawings, side, side]``."""
    rng, number, out = np.random.default_rng(seed), 0, {}
    for folder, alphabets in (("images_background", OMNIGLOT_BACKGROUND), ("images_evaluation", OMNIGLOT_EVALUATION)):
        for alphabet, n_chars in alphabets.items():
            for c in range(1, n_chars + 1):
                number += 1
                char_dir = root / top / folder / alphabet / f"character{c:02d}"
                char_dir.mkdir(parents=True)
                base = _pattern(rng, (side, side))
                drawn = np.stack([base ^ (rng.random((side, side)) < 0.05) for _ in range(drawings)])
                for m, img in enumerate(drawn, start=1):
                    Image.fromarray(img).save(char_dir / f"{number:04d}_{m:02d}.png")  # bool -> mode "1"
                out[f"{alphabet}/character{c:02d}"] = drawn
    return out


NPZ_BACKGROUND_LABELS = [0, 1, 2, 3, 4, 5, 176, 177, 539, 708, 836, 892]
"""Lake's character numbers - 1 of a toy background .npz: 0..5 and 176 (Bengali, the last character
before Blackfoot) are meta-train; 177 (Blackfoot), 539 (Inuktitut), 708 (Alphabet of the Magi), 836
(Ojibwe) and 892 (Tagalog) are the first characters of the five meta-val alphabets."""


def write_omniglot_npz(root: Path, encoding: str = "bool", drawings: int = 4, side: int = 20,
                       seed: int = 0) -> dict[str, np.ndarray]:
    """``root/images_background.npz`` and ``images_evaluation.npz``: ``images`` [K, drawings, side, side] stored
    as ``encoding`` (``bool`` as public copies, ``uint8_01`` or ``uint8_255``), ``labels`` ``[K, drawings, 1]``;
    returns both ``images`` arrays as bool (white background ``True``)."""
    rng, out = np.random.default_rng(seed), {}
    for name, labels in (("images_background", NPZ_BACKGROUND_LABELS), ("images_evaluation", [964, 965, 966, 967])):
        base = _pattern(rng, (len(labels), 1, side, side))
        images = base ^ (rng.random((len(labels), drawings, side, side)) < 0.05)
        stored = images if encoding == "bool" else images.astype(np.uint8) * (255 if encoding == "uint8_255" else 1)
        lab = np.repeat(np.asarray(labels)[:, None, None], drawings, axis=1)
        root.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(root / f"{name}.npz", images=stored, labels=lab)
        out[name] = images
    return out


def _photo(rng: np.random.Generator, base: np.ndarray) -> np.ndarray:
    noise = rng.integers(-20, 21, base.shape)
    return np.clip(base.astype(np.int64) + noise, 0, 255).astype(np.uint8)


def write_cub(root: Path, n_classes: int = 12, per_class: int = 4, size: tuple[int, int] = (30, 24),
              seed: int = 0) -> list[str]:
    """``root/CUB_200_2011/`` with ``images/<NNN.Name>/*.jpg`` and the three lists (images listed class by
    class in reverse file order, so list order and sorted file order differ); returns the class names."""
    rng = np.random.default_rng(seed)
    base_dir = root / "CUB_200_2011"
    classes = [f"{i:03d}.Bird_{chr(ord('A') + (i * 7) % 26)}{i}" for i in range(1, n_classes + 1)]
    images, labels = [], []
    for cid, name in enumerate(classes, start=1):
        (base_dir / "images" / name).mkdir(parents=True)
        colour = rng.integers(0, 256, (1, 1, 3))
        base = np.broadcast_to(colour, (size[1], size[0], 3)).astype(np.uint8)
        for j in reversed(range(per_class)):
            rel = f"{name}/{name.split('.')[1]}_{j:04d}.jpg"
            Image.fromarray(_photo(rng, base)).save(base_dir / "images" / rel, quality=95)
            images.append(rel)
            labels.append(cid)
    (base_dir / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, start=1)))
    (base_dir / "images.txt").write_text("".join(f"{i} {p}\n" for i, p in enumerate(images, start=1)))
    (base_dir / "image_class_labels.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(labels, start=1)))
    return classes


def write_image_folder(root: Path, classes: list[str] | None = None, per_class: int = 4, side: int = 16,
                       seed: int = 0) -> dict[str, list[np.ndarray]]:
    """``root/<class>/img_J.{png,jpg,bmp}`` (formats taken in turn, PNG first); returns each class's RGB
    arrays of the PNG files (lossless) in sorted file order."""
    rng = np.random.default_rng(seed)
    classes = classes or [f"class_{c}" for c in "abcdefghi"]
    out: dict[str, list[np.ndarray]] = {}
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        base = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
        out[name] = []
        for j in range(per_class):
            arr = _photo(rng, base)
            ext = ("png", "jpg", "bmp")[(j + k) % 3]
            Image.fromarray(arr).save(root / name / f"img_{j}.{ext}")
            if ext == "png":
                out[name].append(arr)
    return out

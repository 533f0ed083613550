"""Importing the DFML papers' released pools (``model_specific_<i>.pth`` files) as a dfml pool.

Each file holds ``{'teacher': state_dict, 'specific': [class ids], optional 'acc'}``. The papers'
Conv4 registers every conv and BatchNorm twice (the block's ``C``/``BN`` attributes and again
inside the block's ``trunk`` Sequential), so each tensor appears under two keys:

==============================  ==============================  =========================
official key                    duplicate                       dfml ``Conv4`` key
==============================  ==============================  =========================
``trunk.<k>.C.<p>``             ``trunk.<k>.trunk.0.<p>``       ``encoder.<k>.conv.<p>``
``trunk.<k>.BN.<p>``            ``trunk.<k>.trunk.1.<p>``       ``encoder.<k>.bn.<p>``
``trunk.5.<p>`` (the head)                                      ``head.<p>``
==============================  ==============================  =========================

(``trunk.4`` is their parameter-free Flatten.) Their class ids index the classes in the order of
their split CSVs, so the import takes that split's id -> name list.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import __version__
from ..files import load_tensors
from ..models.registry import build_model
from .manifest import MANIFEST_NAME, PoolEntry, PoolManifest
from .pool import ModelPool, check_state_dict, save_state_dict

logger = logging.getLogger(__name__)

_FILE = re.compile(r"model_specific_(\d+)\.pth$")
_CONV4_KEY = re.compile(r"^trunk\.(\d+)\.(C|BN|trunk\.0|trunk\.1)\.(.+)$")
_ALIAS = {"C": "conv", "trunk.0": "conv", "BN": "bn", "trunk.1": "bn"}


def find_official_files(src_dir: str | Path) -> list[tuple[int, Path]]:
    """All ``model_specific_<i>.pth`` below ``src_dir``, sorted by ``i``; ``i`` must be ``0..n-1``."""
    paths = Path(src_dir).rglob("model_specific_*.pth")
    found = sorted((int(m.group(1)), p) for p in paths if (m := _FILE.search(p.name)))
    ids = [i for i, _ in found]
    if ids != list(range(len(ids))):
        raise ValueError(f"{str(src_dir)!r}: model_specific_<i>.pth indices must run 0..n-1 once each, found {ids}")
    return found


def convert_official_conv4(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Map the papers' Conv4 state dict to dfml's :class:`~dfml.models.Conv4` keys.

    Raises:
        ValueError: an unrecognised key, or the two copies of a tensor disagree.
    """
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("trunk.5."):
            new = "head." + key[len("trunk.5.") :]
        elif m := _CONV4_KEY.match(key):
            new = f"encoder.{m.group(1)}.{_ALIAS[m.group(2)]}.{m.group(3)}"
        else:
            raise ValueError(
                f"unexpected key {key!r} in an official Conv4 state dict (expected trunk.<k>.C/BN/trunk.*, trunk.5.*)"
            )
        if new in out and not torch.equal(out[new], value):
            raise ValueError(f"official state dict: the two copies of {new!r} differ (one is {key!r})")
        out[new] = value.detach().clone()
    return out


def infer_conv4_kwargs(state: dict[str, Tensor]) -> dict[str, Any]:
    """``in_channels``, ``num_classes``, ``hidden``, ``image_size`` of a dfml-keyed Conv4 state dict."""
    hidden, in_channels = state["encoder.0.conv.weight"].shape[:2]
    num_classes, features = state["head.weight"].shape
    spatial = math.isqrt(features // hidden)
    if spatial * spatial * hidden != features:
        raise ValueError(f"head input size {features} is not hidden * s * s for hidden={hidden}; pass arch_kwargs")
    image_size = {2: 32, 5: 84}.get(spatial, spatial * 16)
    return {"in_channels": int(in_channels), "num_classes": int(num_classes), "hidden": int(hidden),
            "image_size": image_size}


def _read_official(
    path: Path, arch: str, arch_kwargs: dict[str, Any] | None, n_names: int
) -> tuple[dict[str, Tensor], dict[str, Any], list[int], float | None]:
    """One official file -> (dfml state dict, arch kwargs, class ids, accuracy in [0, 1] or None)."""
    blob = load_tensors(path, fix="re-copy the papers' file")
    if not isinstance(blob, dict) or "teacher" not in blob or "specific" not in blob:
        keys = sorted(map(str, blob)) if isinstance(blob, dict) else type(blob).__name__
        raise ValueError(f"{path}: expected a dict with 'teacher' and 'specific', got {keys}")
    teacher, specific = blob["teacher"], blob["specific"]
    if not isinstance(teacher, dict):
        raise ValueError(f"{path}: 'teacher' must be a state dict (names -> tensors), got a {type(teacher).__name__}")
    odd = next(((k, v) for k, v in teacher.items() if not isinstance(k, str) or not isinstance(v, Tensor)), None)
    if odd is not None:
        raise ValueError(f"{path}: 'teacher' must be a state dict (names -> tensors), but {odd[0]!r} is "
                         f"{'an' if type(odd[1]).__name__[:1] in 'aeiou' else 'a'} {type(odd[1]).__name__}")
    if isinstance(specific, Tensor):
        specific = specific.tolist()
    if not isinstance(specific, (list, tuple)) or not all(isinstance(c, int) and not isinstance(c, bool)
                                                          for c in specific):
        raise ValueError(f"{path}: 'specific' must be a list of class ids, got {specific!r}")
    if arch == "conv4":
        state = convert_official_conv4(teacher)
    else:
        state = {k.removeprefix("module."): v for k, v in teacher.items()}
    if arch_kwargs is not None:
        kwargs = dict(arch_kwargs)
    else:
        kwargs = infer_conv4_kwargs(state) if arch == "conv4" else {}
    check_state_dict(build_model(arch, **kwargs), state, str(path))
    ids = [int(c) for c in specific]
    bad = [c for c in ids if not 0 <= c < n_names]
    if bad:
        raise ValueError(
            f"{path}: class ids {bad} outside class_names (0..{n_names - 1}); pass the names of the right split"
        )
    acc = blob.get("acc")
    if isinstance(acc, Tensor) and acc.numel() == 1:
        acc = acc.item()
    if acc is not None and (not isinstance(acc, (int, float)) or isinstance(acc, bool)):
        raise ValueError(f"{path}: 'acc' must be a number (an accuracy), got {acc!r}")
    if acc is not None:
        acc = float(acc) / (100.0 if float(acc) > 1.0 else 1.0)  # some files store a percentage
    return state, kwargs, ids, acc


def import_official_pool(
    src_dir: str | Path,
    out_dir: str | Path,
    *,
    class_names: Sequence[str],
    dataset: str,
    split: str,
    arch: str = "conv4",
    arch_kwargs: dict[str, Any] | None = None,
) -> ModelPool:
    """Convert the papers' ``model_specific_<i>.pth`` files under ``src_dir`` into a dfml pool.

    Args:
        src_dir: searched recursively for ``model_specific_<i>.pth``.
        out_dir: where the dfml pool is written (must not hold a pool yet).
        class_names: id -> name for the split the ``'specific'`` ids index (their CSV order).
        dataset, split: recorded in every entry (e.g. ``"cifar_fs"``, ``"train"``).
        arch: ``"conv4"`` uses the key map above; for any other architecture the teacher's keys
            must already be dfml's (a ``module.`` prefix is stripped).
        arch_kwargs: defaults, for Conv4, to what the weights imply (:func:`infer_conv4_kwargs`).

    Raises:
        FileNotFoundError: no such files under ``src_dir``.
        ValueError: ``out_dir`` already holds a pool, malformed files, class ids outside ``class_names``,
            or weights that do not fit the architecture.
    """
    out = Path(out_dir)
    if (out / MANIFEST_NAME).is_file():
        raise ValueError(f"{str(out)!r} already holds a pool; import into a new out_dir")
    files = find_official_files(src_dir)
    if not files:
        raise FileNotFoundError(f"no model_specific_<i>.pth files under {str(src_dir)!r}")
    read = [(i, *_read_official(path, arch, arch_kwargs, len(class_names))) for i, path in files]  # all, then write
    entries = []
    for i, state, kwargs, ids, acc in read:
        file = f"models/model_{i:04d}.pt"
        entries.append(PoolEntry(
            index=i, file=file, arch=arch, arch_kwargs=kwargs, n_way=len(ids),
            classes=[str(class_names[c]) for c in ids], class_ids=ids, dataset=dataset, split=split, seed=None,
            heldout_acc=acc, best_epoch=None, sha256=save_state_dict(state, out / file), dfml_version=__version__,
        ))
    build = {"kind": "import", "source": str(Path(src_dir).resolve()), "dataset": dataset, "split": split, "arch": arch}
    PoolManifest(entries=entries, build=build).save(out)
    logger.info("imported %d models from %s into %s", len(entries), src_dir, out)
    return ModelPool(out)

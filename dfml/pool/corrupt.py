"""Untrustworthy pools: a chosen share of models are deceptive or of poor quality.

A *deceptive* model is trained on other classes than it advertises (other classes of the same
split, or classes of another dataset) while its manifest record keeps the advertised,
in-distribution class names. A *poor* model is untrained (or trained for a few epochs only).
Everything a learner may read (classes, heldout_acc...) stays as advertised; only ``trust`` and
``trust_detail`` tell the truth, and learners must never read them.

References:
    Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023 (deceptive and poor-quality
    models in the pool).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..config import from_dict, to_dict
from ..data.base import ArrayDataset
from .manifest import MANIFEST_NAME, PoolEntry, PoolManifest
from .pool import ModelPool, save_state_dict
from .pretrain import PretrainConfig, dataset_record, fit_and_save, split_name
from .training import init_model

logger = logging.getLogger(__name__)

UNTRUSTWORTHY_KINDS = ("deceptive", "poor")
_KIND_CODE = {"deceptive": 1, "poor": 2}


def _kind_seed(seed: int, index: int, kind: str) -> int:
    return int(np.random.SeedSequence([int(seed), int(index), _KIND_CODE[kind]]).generate_state(1)[0])


def choose_untrustworthy(n_models: int, ratio: float, kinds: Sequence[str], seed: int) -> dict[int, str]:
    """Which models become untrustworthy, and how: ``{index: kind}``.

    ``round(ratio * n_models)`` models (halves round up) are drawn at random from ``seed``; the
    kinds are dealt to them in turn, so two kinds split the bad models evenly.
    """
    n_bad = int(np.floor(ratio * n_models + 0.5))
    order = np.random.default_rng(seed).permutation(n_models)[:n_bad]
    return {int(i): kinds[j % len(kinds)] for j, i in enumerate(order)}


def _check_args(ratio: float, kinds: Sequence[str]) -> None:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"ratio must lie in [0, 1] (the share of untrustworthy models), got {ratio}")
    bad = [k for k in kinds if k not in UNTRUSTWORTHY_KINDS]
    if not kinds or bad or len(set(kinds)) != len(kinds):
        raise ValueError(f"kinds must be distinct names from {UNTRUSTWORTHY_KINDS}, got {tuple(kinds)}")


def _check_inputs(entry: PoolEntry, dataset: ArrayDataset) -> None:
    kw, shape = entry.arch_kwargs, dataset.input_shape
    want = kw.get("in_features", kw.get("in_channels"))
    if want is not None and want != shape[0]:
        raise ValueError(
            f"source_dataset {dataset.name!r} has inputs {shape} but model {entry.index} ({entry.arch}) expects "
            f"{'in_features' if 'in_features' in kw else 'in_channels'}={want}; pass a dataset of matching inputs"
        )
    if entry.input_shape is not None and tuple(entry.input_shape) != tuple(shape):
        raise ValueError(
            f"source_dataset {dataset.name!r} has inputs {shape} but model {entry.index} ({entry.arch}) was trained on "
            f"{tuple(entry.input_shape)} ({entry.dataset}); pass a dataset of matching inputs"
        )


def _deceive(
    entry: PoolEntry, dataset: ArrayDataset, config: PretrainConfig, seed: int, path: Path, device: str
) -> dict[str, Any]:
    others = [c for c, name in enumerate(dataset.classes) if name not in set(entry.classes)]
    if len(others) < entry.n_way:
        raise ValueError(
            f"source_dataset {dataset.name!r} has {len(others)} classes outside model {entry.index}'s advertised "
            f"ones; a deceptive {entry.n_way}-way model needs {entry.n_way}. Pass a dataset with more classes."
        )
    ids = sorted(int(c) for c in np.random.default_rng(seed).choice(others, entry.n_way, replace=False))
    sha, result = fit_and_save(dataset, ids, config, entry.arch_kwargs, seed, path, arch=entry.arch, device=device)
    name, split = split_name(dataset)
    detail = {"trained_on": {"dataset": name, "split": split, "classes": [dataset.classes[c] for c in ids],
                             "class_ids": ids}, "true_heldout_acc": result.heldout_acc, "seed": seed}
    return {"sha256": sha, "trust": "deceptive", "trust_detail": detail}


def _degrade(entry: PoolEntry, dataset: ArrayDataset, config: PretrainConfig, seed: int, path: Path,
             epochs: int, device: str) -> dict[str, Any]:
    detail: dict[str, Any] = {"epochs": epochs, "seed": seed}
    if epochs == 0:
        sha = save_state_dict(init_model(entry.arch, entry.arch_kwargs, seed).state_dict(), path)
        return {"sha256": sha, "trust": "poor", "trust_detail": detail}
    lookup = {name: c for c, name in enumerate(dataset.classes)}
    missing = [n for n in entry.classes if n not in lookup]
    if missing:
        raise ValueError(
            f"poor_epochs={epochs} trains model {entry.index} briefly on its advertised classes, but "
            f"source_dataset {dataset.name!r} lacks {missing}; pass the pool's own split or poor_epochs=0"
        )
    ids = [lookup[n] for n in entry.classes]
    _check_inputs(entry, dataset)
    sha, result = fit_and_save(dataset, ids, config, entry.arch_kwargs, seed, path, arch=entry.arch, epochs=epochs,
                               device=device)
    detail["true_heldout_acc"] = result.heldout_acc
    return {"sha256": sha, "trust": "poor", "trust_detail": detail}


def add_untrustworthy(
    pool: ModelPool | str | Path,
    out_dir: str | Path,
    *,
    ratio: float,
    source_dataset: ArrayDataset,
    kinds: Sequence[str] = UNTRUSTWORTHY_KINDS,
    seed: int = 0,
    config: PretrainConfig | None = None,
    poor_epochs: int = 0,
    device: str = "cpu",
) -> ModelPool:
    """Copy ``pool`` to ``out_dir`` with a share ``ratio`` of its models made untrustworthy.

    Args:
        pool: the clean pool (left unchanged).
        out_dir: a new directory for the corrupted pool; trusted models' files are copied.
        ratio: share of models replaced (``round(ratio * len(pool))``, see :func:`choose_untrustworthy`).
        source_dataset: deceptive models train on its classes that are not advertised by the model
            they replace (another split or another dataset with the same input shape).
        kinds: which kinds to deal out, ``"deceptive"`` and/or ``"poor"``.
        seed: picks the models, their kinds, the deceptive classes and all training.
        config: training settings for replacements; defaults to the pool's own pretraining config.
        poor_epochs: training epochs of poor models on their advertised classes (0: untrained).

    Returns:
        The new pool; ``entry(i).trust`` marks each model, ``trust_detail`` says what it really is.

    Raises:
        ValueError: bad ratio/kinds, ``out_dir`` is the source pool or holds a different pool, or
            ``source_dataset`` cannot supply the classes or inputs needed.
    """
    _check_args(ratio, kinds)
    src = pool if isinstance(pool, ModelPool) else ModelPool(pool)
    out = Path(out_dir)
    if out.resolve() == src.root.resolve():
        raise ValueError(f"out_dir {str(out)!r} is the source pool itself; choose a new directory")
    if config is None:
        own = src.build.get("kind") == "pretrain"
        config = from_dict(PretrainConfig, src.build["config"]) if own else PretrainConfig()
    build = json.loads(json.dumps({
        "kind": "untrustworthy", "source_pool": str(src.root.resolve()), "source_build": src.build, "ratio": ratio,
        "kinds": list(kinds), "seed": seed, "poor_epochs": poor_epochs, "config": to_dict(config),
        "source_dataset": dataset_record(source_dataset),
    }))
    if (out / MANIFEST_NAME).is_file():
        old = PoolManifest.load(out).build
        if old == build:
            return ModelPool(out)
        diff = sorted(k for k in set(old) | set(build) if old.get(k) != build.get(k))
        raise ValueError(f"{str(out)!r} holds a pool made with different settings ({diff}); use a new out_dir")
    plan = choose_untrustworthy(len(src), ratio, list(kinds), seed)
    entries = []
    for e in src.entries:
        file = f"models/model_{e.index:04d}.pt"
        path = out / file
        path.parent.mkdir(parents=True, exist_ok=True)
        kind = plan.get(e.index)
        if kind is None:
            shutil.copyfile(src.root / e.file, path)
            changes: dict[str, Any] = {}
        elif kind == "deceptive":
            _check_inputs(e, source_dataset)
            changes = _deceive(e, source_dataset, config, _kind_seed(seed, e.index, kind), path, device)
        else:
            changes = _degrade(e, source_dataset, config, _kind_seed(seed, e.index, kind), path, poor_epochs, device)
        entries.append(dataclasses.replace(e, file=file, **changes))
        logger.info("model %d: %s", e.index, kind or e.trust)
    PoolManifest(entries=entries, build=build).save(out)
    result = ModelPool(out)
    result.verify()
    return result

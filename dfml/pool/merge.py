"""Merging pools: models trained on several datasets (or architectures, or builds) in one pool.

A merged pool copies every model file of its sources and re-indexes the entries in source order;
everything else an entry records stays as it was: architecture, dataset and split, class ids and
names, input shape and normalisation, trust. A class is identified by ``(dataset, class_id)``, so
class 3 of CIFAR-FS and class 3 of miniImageNet stay two classes in every part that reads the pool.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .manifest import MANIFEST_NAME, PoolEntry, PoolManifest, sha256_file
from .pool import ModelPool

logger = logging.getLogger(__name__)

__all__ = ["merge_pools"]


def _check_classes(pools: list[ModelPool]) -> None:
    """Class ids must mean one class name per ``(dataset, split)``, and a dataset one split."""
    names: dict[tuple[str, str, int], tuple[str, str]] = {}
    splits: dict[str, tuple[str, str]] = {}
    for pool in pools:
        for e in pool.entries:
            where = f"{pool.root} (model {e.index})"
            if splits.setdefault(e.dataset, (e.split, where))[0] != e.split:
                split, first = splits[e.dataset]
                raise ValueError(
                    f"dataset {e.dataset!r} appears with split {split!r} in {first} and {e.split!r} in {where}; class "
                    "ids index one split's class list, so ids from two splits of one dataset would collide. Merge "
                    "pools of one split per dataset"
                )
            for cid, name in zip(e.class_ids, e.classes):
                seen = names.setdefault((e.dataset, e.split, int(cid)), (name, where))
                if seen[0] != name:
                    raise ValueError(
                        f"class id {cid} of {e.dataset}/{e.split} is {seen[0]!r} in {seen[1]} but {name!r} in {where}: "
                        "the pools index different class lists; rebuild one of them on the same split"
                    )


def _check_inputs(pools: list[ModelPool]) -> None:
    """Several datasets need every model's recorded input shape and normalisation."""
    datasets = {e.dataset for p in pools for e in p.entries}
    if len(datasets) < 2:
        return
    for pool in pools:
        missing = [e.index for e in pool.entries if e.input_shape is None]
        if missing:
            raise ValueError(
                f"the merged pool would hold models of {sorted(datasets)}, but {str(pool.root)!r} records no input "
                f"shape and normalisation for model(s) {missing[:8]} (built before dfml recorded them); rebuild that "
                "pool, or resume its build once with this dfml (`dfml pool build` with the same arguments fills them "
                "in)"
            )


def merge_pools(sources: Sequence[ModelPool | str | Path], out_dir: str | Path) -> ModelPool:
    """Copy the models of ``sources`` into one new pool in ``out_dir``.

    Args:
        sources: the pools to merge, in order (their entries keep this order).
        out_dir: a new directory. Re-running with the same sources returns the pool already there.

    Returns:
        The merged pool; ``build`` records ``kind="merge"`` and each source's path, size and build.

    Raises:
        ValueError: no source, ``out_dir`` is a source or holds a different pool, a source file
            fails its checksum, class ids that mean different classes in two sources, two splits
            of one dataset, or several datasets with unrecorded inputs.
    """
    pools = [p if isinstance(p, ModelPool) else ModelPool(p) for p in sources]
    if not pools:
        raise ValueError("merge_pools needs at least one source pool")
    out = Path(out_dir)
    for pool in pools:
        if out.resolve() == pool.root.resolve():
            raise ValueError(f"out_dir {str(out)!r} is one of the source pools; choose a new directory")
    build: dict[str, Any] = {"kind": "merge", "sources": [
        {"path": str(p.root.resolve()), "n_models": len(p), "build": p.build} for p in pools]}
    if (out / MANIFEST_NAME).is_file():
        old = PoolManifest.load(out).build
        if old == PoolManifest.from_dict(PoolManifest(build=build).to_dict()).build:
            return ModelPool(out)
        raise ValueError(f"{str(out)!r} holds another pool (build {old.get('kind')!r}); choose a new out_dir")
    _check_classes(pools)
    _check_inputs(pools)
    entries: list[PoolEntry] = []
    for pool in pools:
        for e in pool.entries:
            src = pool.root / e.file
            if not src.is_file() or sha256_file(src) != e.sha256:
                raise ValueError(
                    f"{str(src)!r} (model {e.index} of {str(pool.root)!r}) is missing or fails its checksum"
                )
            i = len(entries)
            file = f"models/model_{i:04d}.pt"
            (out / file).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, out / file)
            entries.append(dataclasses.replace(e, index=i, file=file))
    PoolManifest(entries=entries, build=build).save(out)
    merged = ModelPool(out)
    logger.info("merged %d pools into %s: %d models, datasets %s, architectures %s", len(pools), out, len(merged),
                merged.datasets(), merged.architectures())
    return merged

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

__all__ = ["merge_pools", "subset_pool"]


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


def _existing(out: Path, build: dict[str, Any]) -> ModelPool | None:
    """The pool already in ``out`` if it was made with ``build``; ``None`` if there is none; else an error."""
    if not (out / MANIFEST_NAME).is_file():
        return None
    old = PoolManifest.load(out).build
    if old == PoolManifest.from_dict(PoolManifest(build=build).to_dict()).build:
        return ModelPool(out)
    raise ValueError(f"{str(out)!r} holds another pool (build {old.get('kind')!r}); choose a new out_dir")


def _copy(out: Path, models: list[tuple[ModelPool, PoolEntry]], build: dict[str, Any]) -> None:
    """Copy ``models`` (checksums verified) into ``out`` as entries 0, 1, ... and save the manifest."""
    entries: list[PoolEntry] = []
    for pool, e in models:
        src = pool.root / e.file
        if not src.is_file() or sha256_file(src) != e.sha256:
            raise ValueError(f"{str(src)!r} (model {e.index} of {str(pool.root)!r}) is missing or fails its checksum")
        i = len(entries)
        file = f"models/model_{i:04d}.pt"
        (out / file).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out / file)
        entries.append(dataclasses.replace(e, index=i, file=file))
    PoolManifest(entries=entries, build=build).save(out)


def subset_pool(source: ModelPool | str | Path, indices: Sequence[int], out_dir: str | Path) -> ModelPool:
    """Copy the models ``indices`` of ``source`` into a new pool in ``out_dir`` (re-indexed 0, 1, ...).

    For references and ablations, e.g. the trusted models of a corrupted pool alone (the oracle a
    reliability weigher is measured against): ``subset_pool(p, [e.index for e in p if e.trust ==
    "trusted"], out)``. Entries keep everything they record (classes, trust, provenance).

    Raises:
        ValueError: no index, a repeated or out-of-range index, ``out_dir`` is the source or holds a
            different pool, or a model file fails its checksum.
    """
    pool = source if isinstance(source, ModelPool) else ModelPool(source)
    keep = [int(i) for i in indices]
    if not keep or len(set(keep)) != len(keep) or not all(0 <= i < len(pool) for i in keep):
        raise ValueError(f"indices must be distinct model indices in 0..{len(pool) - 1} of {str(pool.root)!r}, "
                         f"got {list(indices)}")
    out = Path(out_dir)
    if out.resolve() == pool.root.resolve():
        raise ValueError(f"out_dir {str(out)!r} is the source pool itself; choose a new directory")
    build = {"kind": "subset", "source": str(pool.root.resolve()), "indices": keep, "source_build": pool.build}
    existing = _existing(out, build)
    if existing is not None:
        return existing
    _copy(out, [(pool, pool.entry(i)) for i in keep], build)
    logger.info("kept %d of %d models of %s in %s", len(keep), len(pool), pool.root, out)
    return ModelPool(out)


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
    existing = _existing(out, build)
    if existing is not None:
        return existing
    _check_classes(pools)
    _check_inputs(pools)
    _copy(out, [(pool, e) for pool in pools for e in pool.entries], build)
    merged = ModelPool(out)
    logger.info("merged %d pools into %s: %d models, datasets %s, architectures %s", len(pools), out, len(merged),
                merged.datasets(), merged.architectures())
    return merged

"""Pretraining a pool: many small classifiers, each on its own N-class subset of a dataset.

The build is deterministic (each model's seed is derived from ``(seed, index)``), keeps each
model's best epoch by held-out accuracy (the papers' code kept the last one), shards across the
ranks of a ``torchrun`` launch, and is resumable per model: each finished model leaves its weights
file and a record in ``.build/`` (both written atomically), a re-run on any number of processes
trains only the models without one, and ``pool.json`` is written when all are done (a single
process also rewrites it after every model).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from .. import distributed as dist
from ..config import config_changes, lookup, to_dict
from ..data.base import ArrayDataset
from ..data.domain import InputDomain
from ..locks import hold_directory
from ..models.registry import model_arguments
from .manifest import BUILD_DIR, BUILD_RECORD, MANIFEST_NAME, PoolEntry, PoolManifest, sha256_file, write_atomic
from .pool import ModelPool, save_state_dict
from .plan import CLASS_MODES as CLASS_MODES
from .plan import PRETRAIN_CONVENTIONS as PRETRAIN_CONVENTIONS
from .plan import PRETRAIN_TRAINING_FIELDS as PRETRAIN_TRAINING_FIELDS
from .plan import ArchSpec as ArchSpec
from .plan import PretrainConfig as PretrainConfig
from .plan import Progress as Progress
from .plan import assign_architectures as assign_architectures
from .plan import choose_classes as choose_classes
from .plan import pretrain_training_fields as pretrain_training_fields
from .training import TrainResult, derive_seed, init_model, train_classifier

logger = logging.getLogger(__name__)


def resolve_arch_kwargs(arch: str, arch_kwargs: dict[str, Any], n_way: int, dataset: ArrayDataset) -> dict[str, Any]:
    """Fill ``num_classes`` and the input-size arguments ``arch`` accepts from the dataset."""
    accepted = model_arguments(arch)
    shape = dataset.input_shape
    defaults: dict[str, Any] = {"num_classes": n_way}
    if dataset.is_image:
        defaults.update(in_channels=shape[0], image_size=shape[1])
    else:
        defaults.update(in_features=shape[0])
    out = {k: v for k, v in defaults.items() if k in accepted}
    out.update(arch_kwargs)
    return to_dict_values(out)


def to_dict_values(d: dict[str, Any]) -> dict[str, Any]:
    """Tuples -> lists, so kwargs compare equal before and after a JSON round trip."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def dataset_record(dataset: ArrayDataset) -> dict[str, Any]:
    """What a pool remembers of its training data (compared when a build is resumed)."""
    names = "\n".join(dataset.classes).encode()
    return {
        "name": dataset.name,
        "n_examples": len(dataset),
        "num_classes": dataset.num_classes,
        "input_shape": list(dataset.input_shape),
        "classes_sha256": hashlib.sha256(names).hexdigest(),
    }


def split_name(dataset: ArrayDataset) -> tuple[str, str]:
    """``"cifar_fs/train"`` -> ``("cifar_fs", "train")``; a name without a slash gets split ``"unspecified"``."""
    name, _, split = dataset.name.partition("/")
    return name, split or "unspecified"


def fit_and_save(
    dataset: ArrayDataset,
    class_ids: list[int],
    config: PretrainConfig,
    arch_kwargs: dict[str, Any],
    seed: int,
    path: Path,
    *,
    arch: str | None = None,
    epochs: int | None = None,
    device: torch.device | str = "cpu",
) -> tuple[str, TrainResult]:
    """Initialise and train one model from ``seed``, save its best weights to ``path``; returns ``(sha256, result)``.

    ``arch`` names the architecture (default: ``config``'s, which must then be a single one).
    """
    if arch is None:
        specs = config.arch_specs()
        if len(specs) != 1:
            raise ValueError(f"config has {len(specs)} architectures; pass arch= (the model's own)")
        arch = specs[0][0]
    model = init_model(arch, arch_kwargs, seed)
    result = train_classifier(
        model, dataset, class_ids, epochs=config.epochs if epochs is None else epochs,
        batch_size=config.batch_size, lr=config.lr, weight_decay=config.weight_decay,
        holdout_frac=config.holdout_frac, augment=config.augment, clip_grad_norm=config.clip_grad_norm,
        seed=seed, device=device,
    )
    return save_state_dict(result.state, path), result


def _check_build(old: dict[str, Any], build: dict[str, Any], out: Path, source: str) -> None:
    if old.get("kind") != "pretrain":
        raise ValueError(f"{out / source} was not made by pretrain_pool (kind={old.get('kind')!r}); use a new out_dir")
    for section in ("config", "dataset"):
        before, now = old.get(section, {}), build[section]
        # fields added since the pool was built count as their defaults
        diff = config_changes(before, now, to_dict(PretrainConfig()) if section == "config" else None)
        if diff:
            details = "; ".join(f"{k}: pool has {lookup(before, k)!r}, this call has {lookup(now, k)!r}" for k in diff)
            raise ValueError(
                f"the pool in {str(out)!r} was built with a different {section} ({details}). "
                f"Use a new out_dir for a new pool, or the pool's original {section} to resume it."
            )


def _finished_models(out: Path, build: dict[str, Any], inputs: dict[str, Any]) -> dict[int, PoolEntry]:
    """The models an earlier (possibly sharded, possibly killed) build finished, checked against ``build``.

    Sources: the entries of ``pool.json`` (every file must be intact, else the resume is refused)
    and the per-model records in ``.build/`` (a record whose file is missing or differs is ignored:
    that model is trained again). Writes ``.build/build.json`` for a build that is not complete.
    Entries from before dfml recorded inputs get ``inputs`` (the same data was checked).
    """
    done: dict[int, PoolEntry] = {}
    if (out / MANIFEST_NAME).is_file():
        manifest = PoolManifest.load(out)
        _check_build(manifest.build, build, out, MANIFEST_NAME)
        for e in manifest.entries:
            path = out / e.file
            if not path.is_file() or sha256_file(path) != e.sha256:
                raise ValueError(
                    f"cannot resume {str(out)!r}: model {e.index}'s file {e.file} is missing or was modified; "
                    f"delete the pool directory and build again"
                )
            done[e.index] = e if e.input_shape is not None else dataclasses.replace(e, **inputs)
    records = out / BUILD_DIR
    if (records / BUILD_RECORD).is_file():
        _check_build(json.loads((records / BUILD_RECORD).read_text()), build, out, f"{BUILD_DIR}/{BUILD_RECORD}")
    for path in sorted(records.glob("model_*.json")):
        entry = PoolEntry.from_dict(json.loads(path.read_text()))
        weights = out / entry.file
        if entry.index in done or entry.index >= build["config"]["n_models"]:
            continue
        if weights.is_file() and sha256_file(weights) == entry.sha256:
            done[entry.index] = entry
        else:
            logger.warning("model %d: its record has no intact weights file; training it again", entry.index)
    if len(done) < build["config"]["n_models"] and not (records / BUILD_RECORD).is_file():
        write_atomic(records / BUILD_RECORD, json.dumps(build, indent=2).encode())
    return done


def _prefix_manifest(done: dict[int, PoolEntry], build: dict[str, Any]) -> PoolManifest:
    """The manifest of models ``0..k-1``, the longest run of finished models from 0 (indices must be dense)."""
    entries = []
    while len(entries) in done:
        entries.append(done[len(entries)])
    return PoolManifest(entries=entries, build=build)


def pretrain_pool(
    dataset: ArrayDataset,
    out_dir: str | Path,
    config: PretrainConfig,
    *,
    device: torch.device | str = "cpu",
    progress: Progress | None = None,
) -> ModelPool:
    """Train ``config.n_models`` classifiers on ``dataset`` and write them as a pool in ``out_dir``.

    Each entry records its architecture (dealt by :func:`assign_architectures` when ``config``
    lists several) and the dataset's input shape and normalisation.

    Under ``torchrun`` (see :mod:`dfml.distributed`) the models still to train are dealt to the
    ranks round-robin; each rank trains its share (model ``i`` from ``derive_seed(seed, i)``
    whichever rank trains it) and writes each weights file and its record atomically; rank 0
    writes ``pool.json`` once, when every model is done, and it is identical to a one-process
    build's. A single process also rewrites ``pool.json`` after every model (the finished prefix).
    ``out_dir`` must be on a file system every rank sees.

    Re-running on the same ``out_dir`` with the same config and data resumes, on any number of
    processes: models in ``pool.json`` or in an intact per-model record are kept, never
    retrained. ``progress(i, n_models, entry)`` is called after model ``i`` is saved and recorded,
    by the rank that trained it.

    While it writes, the build holds ``out_dir``'s lock (rank 0 does, under ``torchrun``; see
    :mod:`dfml.locks`).

    Raises:
        ValueError: ``out_dir`` holds a pool built with another config or dataset (names the field),
            or the dataset cannot supply the classes (see :func:`choose_classes`).
        DirectoryInUseError: another process is writing ``out_dir`` (the message names it).
    """
    with hold_directory(out_dir, "pool directory", "use another --out"):
        return _pretrain_locked(dataset, out_dir, config, device=device, progress=progress)


def _pretrain_locked(
    dataset: ArrayDataset,
    out_dir: str | Path,
    config: PretrainConfig,
    *,
    device: torch.device | str,
    progress: Progress | None,
) -> ModelPool:
    out, device = Path(out_dir), dist.device_for(device)
    archs = [(arch, resolve_arch_kwargs(arch, kwargs, config.n_way, dataset)) for arch, kwargs in config.arch_specs()]
    assigned = assign_architectures(config)
    domain = InputDomain.of_dataset(dataset).to_dict()
    inputs = {"input_shape": domain["shape"], "input_mean": domain["mean"], "input_std": domain["std"]}
    build = {"kind": "pretrain", "config": to_dict(config), "dataset": dataset_record(dataset)}
    class_sets = choose_classes(config, dataset.num_classes)
    plan: tuple[str | None, dict[int, PoolEntry]] = (None, {})
    if dist.is_main():
        try:
            plan = (None, _finished_models(out, build, inputs))
        except ValueError as err:
            plan = (str(err), {})
    error, done = dist.broadcast_object(plan)
    if error is not None:
        raise ValueError(error)
    todo = [i for i in range(config.n_models) if i not in done]
    if done and todo:
        logger.info("resuming pool %s: %d of %d models done", out, len(done), config.n_models)
    name, split = split_name(dataset)
    mine: list[PoolEntry] = []
    for i in dist.shard(todo):
        seed, class_ids, file = derive_seed(config.seed, i), class_sets[i], f"models/model_{i:04d}.pt"
        arch, arch_kwargs = archs[assigned[i]]
        sha, result = fit_and_save(dataset, class_ids, config, arch_kwargs, seed, out / file, arch=arch,
                                   device=device)
        entry = PoolEntry(
            index=i, file=file, arch=arch, arch_kwargs=arch_kwargs, n_way=config.n_way,
            classes=[dataset.classes[c] for c in class_ids], class_ids=class_ids, dataset=name, split=split,
            seed=seed, heldout_acc=result.heldout_acc, best_epoch=result.best_epoch, sha256=sha,
            dfml_version=__version__, **inputs,
        )
        write_atomic(out / BUILD_DIR / f"model_{i:04d}.json", json.dumps(entry.to_dict(), indent=2).encode())
        mine.append(entry)
        if dist.world_size() == 1:
            done[i] = entry
            _prefix_manifest(done, build).save(out)
        logger.info("model %d/%d: held-out acc %.3f (epoch %d)", i + 1, config.n_models, entry.heldout_acc,
                    entry.best_epoch)
        if progress is not None:
            progress(i, config.n_models, entry)
    for part in dist.all_gather_object(mine):
        done.update((e.index, e) for e in part)
    if dist.is_main() and todo:
        _prefix_manifest(done, build).save(out)  # complete: every index 0..n-1 is done
        shutil.rmtree(out / BUILD_DIR, ignore_errors=True)
    dist.barrier()
    return ModelPool(out)

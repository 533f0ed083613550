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
from fractions import Fraction
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from .. import distributed as dist
from ..config import config_changes, lookup, to_dict
from ..data.base import ArrayDataset
from ..data.domain import InputDomain
from ..locks import hold_directory
from ..models.registry import MODELS, model_arguments
from .manifest import BUILD_DIR, BUILD_RECORD, MANIFEST_NAME, PoolEntry, PoolManifest, sha256_file, write_atomic
from .pool import ModelPool, save_state_dict
from .training import TrainResult, derive_seed, init_model, train_classifier

logger = logging.getLogger(__name__)

CLASS_MODES = ("random", "disjoint")
Progress = Callable[[int, int, PoolEntry], None]


ArchSpec = str | dict[str, Any]
"""One architecture of a pool: a registered name (``"conv4"``) or ``{"name": "resnet10", **arguments}``."""


@dataclass(frozen=True)
class PretrainConfig:
    """How to pretrain a pool.

    Attributes:
        n_models: number of models.
        n_way: classes per model.
        class_mode: ``"random"``: each model gets a random ``n_way``-subset, subsets may overlap
            (BiDf-MKD, FREE, TGR); ``"disjoint"``: disjoint class blocks (PURER), which needs
            ``n_models * n_way`` classes.
        arch, arch_kwargs: the architecture; ``num_classes`` defaults to ``n_way`` and
            ``in_channels`` / ``image_size`` / ``in_features`` default to the dataset's input shape.
            A heterogeneous pool gives ``arch`` a list of architectures, each a name or a mapping
            ``{name: ..., <arguments>}`` (e.g. ``[conv4, {name: resnet10, widths: [16, 32, 64, 128]}]``;
            two items of one name with other arguments are two architectures) and leaves
            ``arch_kwargs`` empty. Models are dealt architectures in turn (see ``arch_shares``).
        arch_shares: with several architectures, one positive weight each: the share of models
            of that architecture (empty: equal shares, i.e. round robin). Model ``i`` goes to the
            architecture furthest below its share among models ``0..i``, ties to the first listed,
            so the assignment is deterministic and a longer pool extends a shorter one.
        epochs, batch_size, lr, weight_decay: Adam training of each model (``weight_decay`` is
            Adam's L2 term).
        clip_grad_norm: clip each step's gradient to this total norm (0: no clipping).
        holdout_frac: part of each class held out to choose the best epoch.
        augment: random crop (zero padding ``H // 8``) + horizontal flip for image datasets.
        seed: the build seed; model ``i`` uses ``derive_seed(seed, i)``.
    """

    n_models: int = 10
    n_way: int = 5
    class_mode: str = "random"
    arch: str | tuple[ArchSpec, ...] = "conv4"
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    arch_shares: tuple[float, ...] = ()
    epochs: int = 30
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 5e-4
    holdout_frac: float = 0.2
    augment: bool = True
    clip_grad_norm: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.arch, list):
            object.__setattr__(self, "arch", tuple(self.arch))
        object.__setattr__(self, "arch_shares", tuple(self.arch_shares))
        if self.class_mode not in CLASS_MODES:
            raise ValueError(f"class_mode must be one of {CLASS_MODES}, got {self.class_mode!r}")
        for name in ("n_models", "n_way", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.n_way < 2:
            raise ValueError(f"PretrainConfig.n_way must be >= 2 (a classifier), got {self.n_way}")
        if self.epochs < 0:
            raise ValueError(f"PretrainConfig.epochs must be >= 0, got {self.epochs}")
        for name in ("lr", "weight_decay", "clip_grad_norm"):
            value = getattr(self, name)
            if not (value >= 0 and value < float("inf")) or (name == "lr" and value == 0):
                rule = "> 0" if name == "lr" else ">= 0"
                raise ValueError(f"PretrainConfig.{name} must be a finite number {rule}, got {value}")
        if not 0.0 < self.holdout_frac < 1.0:
            raise ValueError(f"PretrainConfig.holdout_frac must lie strictly between 0 and 1, got {self.holdout_frac}")
        specs = self.arch_specs()
        for arch, kwargs in specs:
            if kwargs.get("num_classes", self.n_way) != self.n_way:
                raise ValueError(
                    f"{arch} arguments: num_classes={kwargs['num_classes']} contradicts n_way={self.n_way}; "
                    f"drop num_classes from the architecture's arguments"
                )
        shares = self.arch_shares
        if shares and (len(shares) != len(specs) or min(shares) <= 0):
            raise ValueError(
                f"arch_shares must hold one positive weight per architecture ({len(specs)}), got {list(shares)}"
            )

    def arch_specs(self) -> list[tuple[str, dict[str, Any]]]:
        """Every architecture of the pool as ``(name, arguments)``, in the order given.

        Raises:
            ValueError: an unknown name, an item without ``name``, or ``arch_kwargs`` set together with
                several architectures.
        """
        if isinstance(self.arch, str):
            items: tuple[ArchSpec, ...] = (self.arch,)
        else:
            items = self.arch
            if not items:
                raise ValueError("arch is an empty list; give an architecture name or a list of them")
            if self.arch_kwargs:
                raise ValueError(
                    f"arch_kwargs={self.arch_kwargs} with several architectures is ambiguous; give each architecture "
                    "its arguments in its own item, e.g. arch: [conv4, {name: resnet10, widths: [16, 32, 64, 128]}]"
                )
        specs = []
        for item in items:
            if isinstance(item, str):
                name, kwargs = item, dict(self.arch_kwargs) if isinstance(self.arch, str) else {}
            elif isinstance(item, dict) and isinstance(item.get("name"), str):
                name, kwargs = item["name"], {k: v for k, v in item.items() if k != "name"}
            else:
                raise ValueError(
                    f"an architecture is a name or a mapping {{name: ..., <arguments>}}, got {item!r}"
                )
            if name not in MODELS:
                raise ValueError(f"unknown arch {name!r}; valid names: {', '.join(MODELS.names())}")
            specs.append((name, kwargs))
        return specs


PRETRAIN_TRAINING_FIELDS = ("epochs", "batch_size", "lr", "weight_decay", "augment", "clip_grad_norm")

PRETRAIN_CONVENTIONS: dict[str, dict[str, Any]] = {
    # dfml's defaults (PretrainConfig's): short, regularised training with augmentation.
    "dfml": {"epochs": 30, "batch_size": 64, "lr": 1e-3, "weight_decay": 5e-4, "augment": True, "clip_grad_norm": 0.0},
    # The papers' code (FREE / TGR ``tools.pretrain``): Adam at 0.01 for 60 epochs, batch 128, no L2,
    # no augmentation, gradient norm clipped at 50, best held-out epoch.
    "papers": {"epochs": 60, "batch_size": 128, "lr": 0.01, "weight_decay": 0.0, "augment": False,
               "clip_grad_norm": 50.0},
}


def pretrain_training_fields(convention: str, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The training fields of a :class:`PretrainConfig` under ``convention``, with non-``None`` ``overrides``.

    Raises:
        ValueError: an unknown convention (names the known ones).
    """
    if convention not in PRETRAIN_CONVENTIONS:
        raise ValueError(f"unknown pretraining convention {convention!r}; use one of {sorted(PRETRAIN_CONVENTIONS)}")
    fields = dict(PRETRAIN_CONVENTIONS[convention])
    fields.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return fields


def assign_architectures(config: PretrainConfig) -> list[int]:
    """Which of ``config.arch_specs()`` each model gets: ``[spec index for model 0, 1, ...]``.

    Model ``i`` goes to the architecture whose count among models ``0..i-1`` falls furthest below
    its share of ``i + 1`` models (ties: the first listed). Equal shares give round robin.
    """
    n_specs = len(config.arch_specs())
    weights = [Fraction(str(w)) for w in config.arch_shares] or [Fraction(1)] * n_specs
    total = sum(weights)
    counts = [0] * n_specs
    out = []
    for i in range(config.n_models):
        deficit = [weights[k] * (i + 1) / total - counts[k] for k in range(n_specs)]
        k = max(range(n_specs), key=lambda j: (deficit[j], -j))
        counts[k] += 1
        out.append(k)
    return out


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


def choose_classes(config: PretrainConfig, num_classes: int) -> list[list[int]]:
    """Each model's class ids (sorted; output ``j`` is ``class_ids[j]``).

    Raises:
        ValueError: ``n_way`` exceeds the classes available, or (disjoint) ``n_models * n_way`` does.
    """
    if config.n_way > num_classes:
        raise ValueError(f"n_way={config.n_way} but the dataset has only {num_classes} classes")
    if config.class_mode == "disjoint":
        need = config.n_models * config.n_way
        if need > num_classes:
            raise ValueError(
                f"class_mode='disjoint' needs n_models * n_way = {config.n_models} * {config.n_way} = {need} "
                f"classes but the dataset has {num_classes}; use at most {num_classes // config.n_way} models, "
                f"a smaller n_way, or class_mode='random'"
            )
        perm = np.random.default_rng(config.seed).permutation(num_classes)
        return [sorted(int(c) for c in perm[i * config.n_way : (i + 1) * config.n_way]) for i in range(config.n_models)]
    rngs = [np.random.default_rng(derive_seed(config.seed, i)) for i in range(config.n_models)]
    return [sorted(int(c) for c in rng.choice(num_classes, config.n_way, replace=False)) for rng in rngs]


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

"""What a pool build is to make: its configuration, the training conventions, and each model's
architecture and classes (all derived from the build seed, so a resumed build makes the same pool)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import numpy as np

from ..models.registry import MODELS
from .manifest import PoolEntry
from .training import derive_seed


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

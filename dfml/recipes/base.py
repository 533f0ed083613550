"""The recipe registry and what a recipe is handed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import torch
from torch import nn

from ..meta.trainer import TrainConfig
from ..models.registry import build_model
from ..pool import ModelPool
from ..registry import Registry
from ..runs import RunDir
from ..types import Task


@dataclass
class RecipeContext:
    """Everything a recipe may use.

    Attributes:
        pool: the model pool (the only source of knowledge: recipes never see real training data).
        train: meta-training hyper-parameters.
        input_shape: shape of one input of the target domain.
        val_tasks: factory of the fixed meta-validation episodes (model selection only).
        run: the run directory (checkpoints, metrics), or ``None``.
        device: where to train.
        progress: optional callback ``(stage, i, n, info)`` for the CLI's progress bars.
        info: filled in by the recipe (costs, best step...), copied into ``results.json``.
        datafree: the data-free loop's parts (:class:`dfml.recipes.datafree.DataFreeConfig`).
        input_mean, input_std: per-channel normalisation of the target domain's images (what the
            teachers were trained on); generators that output ``[0, 1]`` images use it.
    """

    pool: ModelPool
    train: TrainConfig
    input_shape: tuple[int, ...]
    val_tasks: Callable[[], Iterable[Task]]
    run: RunDir | None = None
    device: torch.device | str = "cpu"
    progress: Callable[[str, int, int, dict[str, Any]], None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    datafree: Any = None
    input_mean: tuple[float, ...] | None = None
    input_std: tuple[float, ...] | None = None

    def architecture(self) -> tuple[str, dict[str, Any]]:
        """The pool's single architecture and its arguments; heterogeneous pools raise ``ValueError``."""
        archs = {e.architecture_key for e in self.pool.entries}
        if len(archs) != 1:
            names = sorted({a for a, _ in archs})
            raise ValueError(
                f"this recipe needs a pool of one architecture, got {len(archs)} ({', '.join(names)}); "
                "use a recipe that supports heterogeneous pools or build a same-architecture pool"
            )
        e = self.pool.entry(0)
        return e.arch, dict(e.arch_kwargs)

    def build_meta_model(self, seed: int) -> nn.Module:
        """A fresh meta-model of the pool's architecture with an ``n_way`` head, seeded."""
        arch, kwargs = self.architecture()
        kwargs["num_classes"] = self.train.n_way
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch, **kwargs)


RECIPES: Registry[Callable[[RecipeContext], nn.Module]] = Registry("recipe")

PRESET_DIR = Path(__file__).parent / "presets"


def preset(name: str) -> dict[str, Any]:
    """The recipe's preset (``presets/<name>.yaml``: the paper's settings as ExperimentConfig fields), or ``{}``."""
    RECIPES.get(name)  # unknown names raise with the valid ones
    path = PRESET_DIR / f"{name.lower()}.yaml"
    if not path.is_file():
        return {}
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"preset {str(path)!r} must hold a mapping, got {type(data).__name__}")
    return data

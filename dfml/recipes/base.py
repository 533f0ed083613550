"""The recipe registry and what a recipe is handed."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

import torch
from torch import nn

from ..data.domain import InputDomain
from ..meta.trainer import TrainConfig
from ..models.registry import build_model, model_arguments
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
        dataset_domain: the meta-test dataset's own inputs (before ``train.meta_image_size``), for
            pool models that record none (``None``: the meta-model's).

    ``input_shape``, ``input_mean`` and ``input_std`` describe the meta-model's inputs
    (:attr:`meta_domain`). Pool models may take other inputs (:meth:`domain_of`): recipes invert
    each at its own and convert the images (:func:`~dfml.data.convert_task`).
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
    dataset_domain: InputDomain | None = None

    @property
    def meta_domain(self) -> InputDomain:
        """The meta-model's inputs: ``input_shape`` normalised with ``input_mean``/``input_std``."""
        image = len(self.input_shape) == 3
        return InputDomain(self.input_shape, self.input_mean if image else None, self.input_std if image else None)

    def domain_of(self, i: int) -> InputDomain:
        """The inputs pool model ``i`` takes: its recorded domain, else ``dataset_domain`` (else the meta-model's)."""
        return self.pool.entry(i).input_domain() or self.dataset_domain or self.meta_domain

    def teacher_domains(self) -> list[InputDomain]:
        """:meth:`domain_of` every pool model, in pool order."""
        return [self.domain_of(i) for i in range(len(self.pool))]

    def meta_architecture(self) -> tuple[str, dict[str, Any]]:
        """The meta-model's architecture and arguments (``num_classes`` is ``train.n_way``).

        ``train.meta_arch`` (with ``train.meta_arch_kwargs``) when set, else the pool's single
        architecture (models that differ only in input sizes count as one, see
        :func:`describe_architecture`). Input-size arguments always follow the meta-model's inputs
        (``input_shape``).

        Raises:
            ValueError: a pool of several architectures and no ``train.meta_arch`` (names the option).
        """
        tr = self.train
        if tr.meta_arch is not None:
            arch, kwargs = tr.meta_arch, dict(tr.meta_arch_kwargs)
        else:
            archs = sorted({describe_architecture(e.arch, e.arch_kwargs) for e in self.pool.entries})
            if len(archs) != 1:
                raise ValueError(
                    f"the pool holds {len(archs)} architectures ({'; '.join(archs)}), so the meta-model's cannot be "
                    "taken from it: set train.meta_arch (e.g. --set train.meta_arch=conv4, arguments in "
                    "train.meta_arch_kwargs)"
                )
            e = self.pool.entry(0)
            arch, kwargs = e.arch, dict(e.arch_kwargs)
        accepted = model_arguments(arch)
        shape = self.input_shape
        sizes = {"in_channels": shape[0], "image_size": shape[-1]} if len(shape) == 3 else {"in_features": shape[0]}
        kwargs.update({k: v for k, v in sizes.items() if k in accepted})
        kwargs["num_classes"] = tr.n_way
        return arch, kwargs

    def build_meta_model(self, seed: int) -> nn.Module:
        """A fresh meta-model (:meth:`meta_architecture`), seeded."""
        arch, kwargs = self.meta_architecture()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_model(arch, **kwargs)


_SIZES = ("num_classes", "in_channels", "in_features", "image_size")


def describe_architecture(arch: str, kwargs: dict[str, Any]) -> str:
    """``"mlp(hidden=[16])"``: the name and the arguments that are not input or output sizes.

    Models that differ only in those sizes (Conv4s of 32x32 and 84x84 images) count as one
    architecture for the meta-model, whose sizes follow its own inputs.
    """
    shown = {k: v for k, v in sorted(kwargs.items()) if k not in _SIZES}
    return f"{arch}({', '.join(f'{k}={v}' for k, v in shown.items())})"


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

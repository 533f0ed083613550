"""The architecture registry: pools record an ``arch`` name + kwargs and rebuild models from them."""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from ..registry import Registry
from .conv4 import Conv4
from .generator import ImageGenerator, VectorGenerator
from .mlp import MLP
from .resnet import ResNet10, ResNet12, ResNet18

MODELS: Registry[type[nn.Module]] = Registry("architecture")
MODELS.register("conv4")(Conv4)
MODELS.register("resnet12")(ResNet12)
MODELS.register("resnet10")(ResNet10)
MODELS.register("resnet18")(ResNet18)
MODELS.register("mlp")(MLP)

GENERATORS: Registry[type[nn.Module]] = Registry("generator")
"""Inversion generators (kept apart from the classifier architectures a pool may hold)."""
GENERATORS.register("image")(ImageGenerator)
GENERATORS.register("vector")(VectorGenerator)


def model_arguments(arch: str) -> list[str]:
    """The keyword arguments ``build_model(arch, ...)`` accepts, in signature order."""
    params = inspect.signature(MODELS.get(arch)).parameters
    return [p for p in params if p != "self"]


def build_model(arch: str, **kwargs: Any) -> nn.Module:
    """Build a registered architecture.

    Args:
        arch: one of ``MODELS.names()`` ("conv4", "mlp", "resnet10", "resnet12", "resnet18"), any case.
        **kwargs: constructor arguments (lists are accepted where tuples are expected, as read from JSON).

    Returns:
        A freshly initialised model (uses the global torch RNG for initialisation).

    Raises:
        KeyError: unknown ``arch`` (the message lists the valid names).
        TypeError: an argument ``arch`` does not accept, or a missing required one (names the accepted ones).
    """
    cls = MODELS.get(arch)
    accepted = model_arguments(arch)
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise TypeError(
            f"architecture {arch!r} got unexpected argument(s) {unknown}; it accepts {accepted}. "
            f"Fix the arch_kwargs (or the arch name)."
        )
    required = [
        name
        for name, p in inspect.signature(cls).parameters.items()
        if p.default is inspect.Parameter.empty and p.kind is not inspect.Parameter.VAR_KEYWORD
    ]
    missing = [name for name in required if name not in kwargs]
    if missing:
        raise TypeError(f"architecture {arch!r} needs argument(s) {missing}; it accepts {accepted}")
    return cls(**kwargs)

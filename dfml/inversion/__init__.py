"""Inversion: recover pseudo tasks (synthetic support/query sets) from pre-trained models."""

from __future__ import annotations

from . import losses as losses
from .base import InversionCost as InversionCost
from .base import Inverter as Inverter
from .base import split_task as split_task
from .batched import BatchedGeneratorInverter as BatchedGeneratorInverter
from .batched import model_generators as model_generators
from .generator import GeneratorInversionConfig as GeneratorInversionConfig
from .generator import GeneratorInverter as GeneratorInverter
from .metagen import MetaGeneratorConfig as MetaGeneratorConfig
from .metagen import MetaGeneratorInverter as MetaGeneratorInverter
from .pixels import PixelInversionConfig as PixelInversionConfig
from .pixels import PixelInverter as PixelInverter

__all__ = [
    "BatchedGeneratorInverter",
    "GeneratorInversionConfig",
    "GeneratorInverter",
    "InversionCost",
    "Inverter",
    "MetaGeneratorConfig",
    "MetaGeneratorInverter",
    "PixelInversionConfig",
    "PixelInverter",
    "losses",
    "model_generators",
    "split_task",
]

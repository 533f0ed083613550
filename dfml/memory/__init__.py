"""Task memory and task interpolation against task-distribution shift."""

from __future__ import annotations

from .buffer import ClassKey as ClassKey
from .buffer import MemoryConfig as MemoryConfig
from .buffer import TaskMemory as TaskMemory
from .interpolate import MixedInputs as MixedInputs
from .interpolate import interpolate as interpolate
from .interpolate import sample_lambda as sample_lambda
from .mix import MetaBatchMix as MetaBatchMix
from .mix import build_meta_batch as build_meta_batch
from .mix import plan_meta_batch as plan_meta_batch

__all__ = [
    "ClassKey",
    "MemoryConfig",
    "MetaBatchMix",
    "MixedInputs",
    "TaskMemory",
    "build_meta_batch",
    "interpolate",
    "plan_meta_batch",
    "sample_lambda",
]

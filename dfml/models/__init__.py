"""Backbones (Conv4, ResNet-12/10/18, MLP), the architecture registry and BatchNorm regimes."""

from __future__ import annotations

from .conv4 import Conv4 as Conv4
from .generator import ImageGenerator as ImageGenerator
from .generator import VectorGenerator as VectorGenerator
from .generator import build_generator as build_generator
from .mlp import MLP as MLP
from .norm import has_running_stats as has_running_stats
from .norm import use_batch_stats as use_batch_stats
from .registry import GENERATORS as GENERATORS
from .registry import MODELS as MODELS
from .registry import build_model as build_model
from .registry import model_arguments as model_arguments
from .resnet import ResNet as ResNet
from .resnet import ResNet10 as ResNet10
from .resnet import ResNet12 as ResNet12
from .resnet import ResNet18 as ResNet18

__all__ = [
    "GENERATORS",
    "MLP",
    "MODELS",
    "Conv4",
    "ImageGenerator",
    "VectorGenerator",
    "build_generator",
    "ResNet",
    "ResNet10",
    "ResNet12",
    "ResNet18",
    "build_model",
    "has_running_stats",
    "model_arguments",
    "use_batch_stats",
]

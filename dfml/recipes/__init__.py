"""Recipes: each builds a meta-model from a pool by assembling dfml's shared parts.

A recipe is a function ``(context: RecipeContext) -> nn.Module`` registered under its name; the
experiment driver (:mod:`dfml.experiment`) does the rest (meta-test on fixed episodes, results).
"""

from __future__ import annotations

from .base import RECIPES as RECIPES
from .base import RecipeContext as RecipeContext
from . import baselines as _baselines  # noqa: F401  (registers random, average)
from . import maml as _maml  # noqa: F401  (registers maml)
from . import maml_data as _maml_data  # noqa: F401  (registers maml_data: real data, the ceiling)
from . import bidf_mkd as _bidf_mkd  # noqa: F401
from . import free as _free  # noqa: F401
from . import purer as _purer  # noqa: F401
from . import robust as _robust  # noqa: F401
from . import tgr as _tgr  # noqa: F401
from .base import preset as preset
from .datafree import DataFreeConfig as DataFreeConfig
from .datafree import train_datafree as train_datafree

__all__ = ["RECIPES", "DataFreeConfig", "RecipeContext", "preset", "train_datafree"]

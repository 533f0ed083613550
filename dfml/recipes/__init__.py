"""Recipes: each builds a meta-model from a pool by assembling dfml's shared parts.

A recipe is a function ``(context: RecipeContext) -> nn.Module`` registered under its name; the
experiment driver (:mod:`dfml.experiment`) does the rest (meta-test on fixed episodes, results).
"""

from __future__ import annotations

from .base import RECIPES as RECIPES
from .base import RecipeContext as RecipeContext
from . import baselines as _baselines  # noqa: F401  (registers random, average)
from . import maml as _maml  # noqa: F401  (registers maml)

__all__ = ["RECIPES", "RecipeContext"]

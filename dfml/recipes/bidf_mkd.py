"""``bidf_mkd``: bi-level data-free meta knowledge distillation.

Teachers are distilled rather than imitated through hard labels: the inner loop adapts the
meta-model on the support set by matching the teacher's outputs and the outer loss distils on the
query set (a true KL on log-probabilities with temperature and the ``T**2`` factor). The preset
keeps no memory (a task mixed from several teachers has no single teacher's outputs to distil).
With a black-box inverter (outputs only, a query budget), this is the paper's black-box setting.

References:
    Hu et al., "Learning to Learn from APIs: Black-Box Data-Free Meta-Learning", ICML 2023.
"""

from __future__ import annotations

from torch import nn

from .base import RecipeContext, register_recipe
from .datafree import DATAFREE_RECIPE, train_datafree


@register_recipe("bidf_mkd", DATAFREE_RECIPE)
def bidf_mkd_recipe(ctx: RecipeContext) -> nn.Module:
    """Replay + bi-level knowledge distillation (preset: ``presets/bidf_mkd.yaml``)."""
    return train_datafree(ctx, ctx.datafree)

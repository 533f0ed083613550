"""``free``: FREE, faster and better data-free meta-learning.

Tasks are recovered quickly (a meta-generator adapted for a few steps per model, where available;
see ``datafree.inverter``) and replayed from a memory; the meta-update is implicit gradient
alignment: sequential first-order steps through the meta-batch's tasks, then an update along the
total displacement, which rewards agreement between the tasks' gradients.

References:
    Wei et al., "FREE: Faster and Better Data-Free Meta-Learning", CVPR 2024.
"""

from __future__ import annotations

from torch import nn

from .base import RecipeContext, register_recipe
from .datafree import DATAFREE_RECIPE, train_datafree


@register_recipe("free", DATAFREE_RECIPE)
def free_recipe(ctx: RecipeContext) -> nn.Module:
    """Fast recovery + replay + implicit gradient alignment (preset: ``presets/free.yaml``)."""
    return train_datafree(ctx, ctx.datafree)

"""``purer``: progressive meta-learning on recovered episodes (PURER).

Images are recovered by optimising pixels per class of each model (a bank that persists across
meta-training) and meta-learned with MAML on episodes drawn from them.

References:
    Hu et al., "Architecture, Dataset and Model-Scale Agnostic Data-free Meta-Learning", CVPR 2023.
"""

from __future__ import annotations

from torch import nn

from .base import RecipeContext, register_recipe
from .datafree import DATAFREE_RECIPE, train_datafree


@register_recipe("purer", DATAFREE_RECIPE)
def purer_recipe(ctx: RecipeContext) -> nn.Module:
    """Pixel inversion + MAML (preset: ``presets/purer.yaml``)."""
    return train_datafree(ctx, ctx.datafree)

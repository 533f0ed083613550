"""``tgr``: task groupings regularisation for heterogeneous pools.

Every pool model is embedded in a task space (the diagonal Fisher of a probe network on the
model's recovered data; the probe is a seeded network of the meta-model's architecture, never a
download), dissimilar models are grouped together by spectral clustering, and each meta-batch
comes from one group, with implicit gradient regularisation inside it: the update is the gradient
of the mean loss plus ``beta/2`` times the spread of the task gradients.

References:
    Wei et al., "Task Groupings Regularization: Data-Free Meta-Learning with Heterogeneous
    Pre-trained Models", ICML 2024.
"""

from __future__ import annotations

from torch import nn

from .base import RecipeContext, register_recipe
from .datafree import DATAFREE_RECIPE, train_datafree


@register_recipe("tgr", DATAFREE_RECIPE)
def tgr_recipe(ctx: RecipeContext) -> nn.Module:
    """Group-aware selection + group gradient regularisation (preset: ``presets/tgr.yaml``)."""
    return train_datafree(ctx, ctx.datafree)

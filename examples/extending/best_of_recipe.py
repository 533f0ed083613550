"""A new recipe: a preset (``best_of.yaml``) and a registration.

The recipe reuses the data-free loop whole: its preset names the parts (here the three new ones
of this folder, with the task memory of dfml), :data:`~dfml.recipes.datafree.DATAFREE_RECIPE` says
what it reads of the configuration (the ``train`` fields of the loop and the ``datafree`` settings
of the parts it chose, so that ``--set`` of anything else is refused), and the function runs the
loop. Then ``recipe: best_of`` (``dfml train --recipe best_of`` once this module is imported) runs it.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from dfml.recipes.base import RecipeContext, register_recipe
from dfml.recipes.datafree import DATAFREE_RECIPE, train_datafree

from . import best_of_inverter as best_of_inverter  # registers the parts the preset names
from . import clipped_update as clipped_update
from . import round_robin as round_robin


@register_recipe("best_of", DATAFREE_RECIPE, preset=Path(__file__).with_name("best_of.yaml"))
def best_of_recipe(ctx: RecipeContext) -> nn.Module:
    """The data-free loop with the parts of ``best_of.yaml`` (``ctx.datafree``); the selected meta-model."""
    return train_datafree(ctx, ctx.datafree)

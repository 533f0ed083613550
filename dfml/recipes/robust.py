"""``robust``: task-distributionally robust DFML (TDS + TDC).

Against task-distribution *shift*, recovered tasks are kept in a task memory and the meta-batch
mixes new, memory and interpolated tasks, so the meta-learner does not over-fit the newest tasks.
Against task-distribution *corruption* (untrustworthy models in the pool), a reliability weigher
with one logit per model chooses which models to invert and is trained by REINFORCE on a
data-free reward: by default the agreement of the other pool models that advertise a model's
classes with its recovered images (``datafree.reward: heldout``: the meta-learner's improvement on
tasks recovered earlier from other models). Once a model's weight falls below half the uniform
weight, its tasks leave the memory (``datafree.forget_below: 0.5``), so the memory stops replaying
what it gave before the weigher found it out.
(The paper's code rewards with real labelled validation tasks; dfml does not.)

References:
    Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023.
"""

from __future__ import annotations

from torch import nn

from .base import RecipeContext, register_recipe
from .datafree import DATAFREE_RECIPE, train_datafree


@register_recipe("robust", DATAFREE_RECIPE)
def robust_recipe(ctx: RecipeContext) -> nn.Module:
    """Memory + interpolation + reliability weigher + MAML (preset: ``presets/robust.yaml``)."""
    return train_datafree(ctx, ctx.datafree)

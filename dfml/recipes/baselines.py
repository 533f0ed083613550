"""The two baselines every DFML paper reports.

* ``random``: a randomly initialised meta-model, only fine-tuned at meta-test.
* ``average``: the parameter average of the pool's models (same architecture required), fine-tuned
  at meta-test. Teachers' heads disagree on what output ``k`` means, so the averaged head is a
  starting point for fine-tuning like any other; BN running statistics are dropped because the
  meta-model normalises with batch statistics (see :mod:`dfml.models.norm`).
"""

from __future__ import annotations

from torch import nn

from ..meta.baselines import average_models
from ..models.norm import use_batch_stats
from .base import RECIPES, RecipeContext


@RECIPES.register("random")
def random_recipe(ctx: RecipeContext) -> nn.Module:
    """Random initialisation (seeded by ``train.seed``)."""
    ctx.architecture()
    return use_batch_stats(ctx.build_meta_model(ctx.train.seed))


@RECIPES.register("average")
def average_recipe(ctx: RecipeContext) -> nn.Module:
    """Parameter average of every model in the pool."""
    ctx.architecture()
    models = [ctx.pool.load(i, device="cpu") for i in range(len(ctx.pool))]
    n_way = {m.head.out_features for m in models}
    if n_way != {ctx.train.n_way}:
        raise ValueError(
            f"the pool's models have {sorted(n_way)} outputs but meta-test tasks are {ctx.train.n_way}-way; "
            "set train.n_way to the pool's n_way"
        )
    model = average_models(models)
    for p in model.parameters():
        p.requires_grad_(True)
    return use_batch_stats(model)

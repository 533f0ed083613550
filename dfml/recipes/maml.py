"""``maml``: MAML on pseudo tasks recovered from the pool by input optimisation.

The simplest complete DFML pipeline: invert each pool model once (white-box, BN-statistics prior),
meta-train MAML on tasks sampled from the recovered examples, select on meta-validation. Models that
take other inputs than the meta-model are inverted at their own and the images converted.
"""

from __future__ import annotations

import torch
from torch import nn

from ..meta.trainer import MetaTrainer, SyntheticBank, build_bank
from ..models.norm import use_batch_stats
from .base import RECIPES, RecipeContext


@RECIPES.register("maml")
def maml_recipe(ctx: RecipeContext) -> nn.Module:
    """Invert the pool into a synthetic bank, then meta-train with MAML."""
    cfg = ctx.train
    model = use_batch_stats(ctx.build_meta_model(cfg.seed))
    bank = _load_or_build_bank(ctx)
    ctx.info["inversion_cost"] = bank.cost
    trainer = MetaTrainer(
        model,
        bank,
        ctx.val_tasks,
        cfg,
        run=ctx.run,
        device=ctx.device,
    )

    def progress(step: int, record: dict) -> None:
        if ctx.progress is not None:
            ctx.progress("train", step, cfg.steps, record)

    ctx.info.update(trainer.fit(progress))
    return trainer.model


def _load_or_build_bank(ctx: RecipeContext) -> SyntheticBank:
    path = None if ctx.run is None else ctx.run.path / "bank.pt"
    if path is not None and path.exists():
        return SyntheticBank.from_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    generator = torch.Generator().manual_seed(ctx.train.seed)
    teachers = (
        (ctx.pool.load(i, device=ctx.device), tuple(ctx.pool.entry(i).class_ids)) for i in range(len(ctx.pool))
    )

    def progress(i: int) -> None:
        if ctx.progress is not None:
            ctx.progress("invert", i + 1, len(ctx.pool), {})

    domains = ctx.teacher_domains()
    several = any(d != ctx.meta_domain for d in domains)
    bank = build_bank(teachers, ctx.meta_domain if several else ctx.input_shape, ctx.train, generator, progress,
                      domains=domains if several else None, datasets=[e.dataset for e in ctx.pool.entries])
    if path is not None:
        from ..runs import atomic_torch_save

        atomic_torch_save(bank.state_dict(), path)
    return bank

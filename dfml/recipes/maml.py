"""``maml``: MAML on pseudo tasks recovered from the pool by input optimisation.

The simplest complete DFML pipeline: invert each pool model once (white-box, BN-statistics prior),
meta-train MAML on tasks sampled from the recovered examples, select on meta-validation. Models that
take other inputs than the meta-model are inverted at their own and the images converted.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from .. import distributed as dist
from ..files import load_tensors
from ..datafree.bank import SyntheticBank, build_bank, check_bank
from ..datafree.trainer import MetaTrainer
from ..models.norm import use_batch_stats
from ..runs import atomic_torch_save
from .base import INNER_LOOP_READS, META_TRAINING_READS, RecipeContext, RecipeSpec, register_recipe
from .baselines import initial_meta_model

SPEC = RecipeSpec(
    reads=META_TRAINING_READS + INNER_LOOP_READS + ("datafree.synthetic", "datafree.pixel"),
    pool_classes="at_least",
    check=lambda cfg: check_bank(cfg.train, cfg.datafree.synthetic),
)
"""maml reads the whole ``train`` section and, of ``datafree``, its bank (``synthetic``) and the pixel
inverter's settings (``pixel``) it inverts the bank with."""


@register_recipe("maml", SPEC)
def maml_recipe(ctx: RecipeContext) -> nn.Module:
    """Invert the pool into a synthetic bank, then meta-train with MAML."""
    cfg = ctx.train
    model = use_batch_stats(initial_meta_model(ctx, cfg.seed))
    bank = _load_or_build_bank(ctx)
    ctx.info["inversion_cost"] = bank.cost
    trainer = MetaTrainer(model, bank, ctx.val_tasks, cfg, run=ctx.run, device=ctx.device, val_steps=ctx.val_steps,
                          val_lr=ctx.val_lr)

    def progress(step: int, record: dict) -> None:
        if ctx.progress is not None:
            ctx.progress("train", step, cfg.steps, record)

    ctx.info.update(trainer.fit(progress))
    return trainer.model


class _Teachers(Sequence):
    """The pool's ``(teacher, class_ids)`` pairs, each model loaded when asked for (a rank loads its share)."""

    def __init__(self, ctx: RecipeContext) -> None:
        self.ctx = ctx

    def __len__(self) -> int:
        return len(self.ctx.pool)

    def __getitem__(self, i: int) -> tuple[nn.Module, tuple[int, ...]]:  # type: ignore[override]
        return self.ctx.pool.load(i, device=self.ctx.device), tuple(self.ctx.pool.entry(i).class_ids)


def _read_bank(path: Path) -> SyntheticBank:
    """The bank a run saved (``bank.pt``); a file that is not one is refused in one line."""
    fix = "delete it to invert the pool again"
    state = load_tensors(path, fix=fix)
    try:
        return SyntheticBank.from_state_dict(state)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path}: not a synthetic bank saved by dfml (no usable {err}); {fix}") from None


def _load_or_build_bank(ctx: RecipeContext) -> SyntheticBank:
    path = None if ctx.run is None else ctx.run.path / "bank.pt"
    if path is not None and dist.broadcast_object(path.exists()):  # rank 0 decides: all ranks load or all build
        return _read_bank(path)
    generator = torch.Generator().manual_seed(ctx.train.seed)

    def progress(i: int) -> None:
        if ctx.progress is not None:
            ctx.progress("invert", i + 1, len(ctx.pool), {})

    domains = ctx.teacher_domains()
    several = any(d != ctx.meta_domain for d in domains)
    df = ctx.datafree
    bank = build_bank(_Teachers(ctx), ctx.meta_domain if several else ctx.input_shape, df.synthetic.per_class, df.pixel,
                      generator, progress,
                      domains=domains if several else None, datasets=[e.dataset for e in ctx.pool.entries])
    if path is not None and dist.is_main():
        atomic_torch_save(bank.state_dict(), path)
    return bank

"""``maml_data``: MAML on the dataset's *real* meta-train images. Not data-free: the ceiling.

The reference the data-free recipes approach: the same meta-model, learner and budget, but tasks
drawn from the real meta-train split (the data the pool's models were trained on, which a
data-free method never sees). Tables label its row as using data.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ..data.domain import InputDomain, convert_task
from ..inversion.base import split_task
from ..datafree.trainer import MetaTrainer
from ..models.norm import use_batch_stats
from ..types import Task
from .base import INNER_LOOP_READS, META_TRAINING_READS, RecipeContext, RecipeSpec, register_recipe
from .baselines import initial_meta_model

SPEC = RecipeSpec(reads=META_TRAINING_READS + INNER_LOOP_READS, uses_data=True)
"""maml_data reads the training loop's and the MAML learner's settings, and the real meta-train split."""


class RealTasks:
    """Few-shot tasks sampled from a labelled dataset (a meta-train split), in the meta-model's inputs.

    Args:
        dataset: an :class:`~dfml.data.base.ArrayDataset`-like split (``indices_by_class``, ``get_batch``).
        source, target: the dataset's input domain and the meta-model's.
    """

    def __init__(self, dataset: Any, source: InputDomain, target: InputDomain) -> None:
        self.dataset = dataset
        self.by_class = [np.asarray(ix) for ix in dataset.indices_by_class()]
        self.source, self.target = source, target

    def sample_task(self, n_way: int, n_shot: int, n_query: int, generator: torch.Generator, step: int) -> Task:
        """``n_way`` random classes, ``n_shot + n_query`` random images of each; labels ``0..n_way-1``."""
        if len(self.by_class) < n_way:
            raise ValueError(f"the meta-train split has {len(self.by_class)} classes, fewer than train.n_way={n_way}")
        classes = torch.randperm(len(self.by_class), generator=generator)[:n_way].tolist()
        per = n_shot + n_query
        picks = []
        for c in classes:
            ix = self.by_class[c]
            if len(ix) < per:
                raise ValueError(f"meta-train class {c} holds {len(ix)} images, fewer than n_shot + n_query = {per}")
            picks.append(ix[torch.randperm(len(ix), generator=generator)[:per].numpy()])
        x = self.dataset.get_batch(np.stack(picks).reshape(-1))  # grouped by class
        task = split_task(x, n_way, n_shot, n_query, classes=tuple(classes), step=step, kind="real")
        return convert_task(task, self.source, self.target)


@register_recipe("maml_data", SPEC)
def maml_data_recipe(ctx: RecipeContext) -> nn.Module:
    """Meta-train MAML on real meta-train tasks (uses data; the ceiling of the data-free recipes)."""
    if ctx.train_data is None:
        raise ValueError("recipe 'maml_data' needs the real meta-train split; run it through dfml.experiment")
    cfg = ctx.train
    data = ctx.train_data()
    model = use_batch_stats(initial_meta_model(ctx, cfg.seed))
    tasks = RealTasks(data, InputDomain.of_dataset(data), ctx.meta_domain)
    ctx.info["uses_data"] = True
    trainer = MetaTrainer(model, tasks, ctx.val_tasks, cfg, run=ctx.run, device=ctx.device, val_steps=ctx.val_steps,
                          val_lr=ctx.val_lr)

    def progress(step: int, record: dict) -> None:
        if ctx.progress is not None:
            ctx.progress("train", step, cfg.steps, record)

    ctx.info.update(trainer.fit(progress))
    return trainer.model

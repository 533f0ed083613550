"""A new meta-update: the learner's meta-step with the meta-gradient's norm clipped.

A meta-update derives from :class:`~dfml.meta.MetaUpdate` and is called as
``update(learner, tasks, optimizer) -> named scalars`` (at least ``loss`` and ``acc``, here also
``grad_norm``). Registered in ``UPDATES`` with a builder in ``BUILD_UPDATE``, it is
``datafree.update: clipped``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dfml.datafree.build import BUILD_UPDATE
from dfml.datafree.config import DataFreeConfig
from dfml.meta import UPDATES, Learner, MetaUpdate
from dfml.types import Task


@UPDATES.register("clipped")
class ClippedStep(MetaUpdate):
    """Mean query loss over the meta-batch, its gradient clipped to norm ``max_norm``, one optimiser step.

    ``sums_over_tasks`` stays False: the clip needs the whole meta-batch's gradient, so under
    ``torchrun`` every rank runs the whole update instead of a share of the tasks.

    Args:
        max_norm: the largest norm of the meta-gradient (``> 0``).
    """

    def __init__(self, max_norm: float = 1.0) -> None:
        if not max_norm > 0:
            raise ValueError(f"max_norm must be > 0, got {max_norm!r}")
        self.max_norm = float(max_norm)

    def __call__(self, learner: Learner, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        optimizer.zero_grad(set_to_none=True)
        total, correct = learner.accumulate(tasks, len(tasks))  # the gradient of the mean query loss
        norm = torch.nn.utils.clip_grad_norm_(learner.parameters(), self.max_norm)
        optimizer.step()
        return {"loss": total / len(tasks), "acc": correct / len(tasks), "grad_norm": float(norm)}


@BUILD_UPDATE.register("clipped")
def build_clipped(cfg: DataFreeConfig) -> MetaUpdate:
    """The clipped step at its default norm (a part's own settings would be a ``datafree`` field)."""
    return ClippedStep()

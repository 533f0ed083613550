"""The meta-update contract: how a meta-batch becomes one step of the meta-parameters.

A :class:`MetaUpdate` is called as ``update(learner, tasks, optimizer) -> named scalars`` (at
least ``loss`` and ``acc``). It declares whether it is a sum of per-task terms
(``sums_over_tasks``): such an update can be split across the ranks of a ``torchrun`` launch
(:func:`~dfml.meta.parallel.data_parallel_update`); any other runs whole on every rank
(:func:`~dfml.meta.parallel.replicated`). Updates are looked up by name in :data:`UPDATES`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from ..registry import Registry
from ..types import Task

__all__ = ["UPDATES", "LearnerStep", "MetaUpdate", "default_update"]

UPDATES: Registry[type[MetaUpdate]] = Registry("meta-update")
"""Meta-update classes by name (``datafree.update``): ``UPDATES.get("alignment")(config)``."""


class MetaUpdate(ABC):
    """Turns a meta-batch into a parameter update.

    Attributes:
        sums_over_tasks: the update is the learner's mean of per-task losses, so the ranks of a
            ``torchrun`` launch can each differentiate a share (:meth:`Learner.accumulate
            <dfml.meta.learner.Learner.accumulate>`) and sum the gradients.
    """

    sums_over_tasks: ClassVar[bool] = False

    @abstractmethod
    def __call__(self, learner: Any, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Update ``learner``'s meta-parameters from ``tasks`` with ``optimizer``; named scalars."""


@UPDATES.register("maml")
class LearnerStep(MetaUpdate):
    """The learner's own meta-step (for MAML: mean query loss after adaptation, one optimiser step)."""

    sums_over_tasks = True

    def __call__(self, learner: Any, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        return learner.meta_step(tasks, optimizer)

    def __repr__(self) -> str:
        return "LearnerStep()"


default_update = LearnerStep()
"""The default meta-update, :class:`LearnerStep`."""

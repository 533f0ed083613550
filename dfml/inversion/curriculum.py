"""The student of the pixel bank's episode curriculum: the meta-model as it solves a task now.

A :data:`Student` maps a task's support set and query inputs to query logits, differentiably in the
query inputs; the bank (:class:`~dfml.inversion.bank.PixelBankInverter`) measures with it how easy its tasks
are and hardens the easy ones. :class:`AdaptedStudent` makes one of a meta-learner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from ..types import Task

__all__ = ["AdaptedStudent", "Student"]


Student = Callable[[Tensor, Tensor, Tensor], Tensor]
"""``student(support_x, support_y, query_x) -> query logits [n_query_total, n_way]``, differentiable in ``query_x``."""



@runtime_checkable
class _Adaptable(Protocol):
    """What :class:`AdaptedStudent` calls: a meta-learner's parameters and query logits."""

    def params(self) -> dict[str, Tensor]: ...

    def query_logits(self, params: dict[str, Tensor], task: Task) -> Tensor: ...



class AdaptedStudent:
    """A meta-learner as a curriculum :data:`Student`: query logits after adapting on the support set.

    Wraps anything with ``params()`` and ``query_logits(params, task)`` (a dfml ``MAML`` or
    ``ProtoNet`` learner; MAML adapts with dfml's functional inner loop). The meta-parameters are
    detached first, so hardening never writes gradients into the meta-model.

    Args:
        learner: the meta-learner.
    """

    def __init__(self, learner: Any) -> None:
        if not isinstance(learner, _Adaptable):
            raise TypeError(
                f"AdaptedStudent needs a learner with params() and query_logits(params, task) (e.g. dfml.meta.MAML), "
                f"got {type(learner).__name__}"
            )
        self.learner = learner

    def __call__(self, support_x: Tensor, support_y: Tensor, query_x: Tensor) -> Tensor:
        """Query logits ``[len(query_x), n_way]`` with gradient to ``query_x``."""
        params = {k: v.detach().requires_grad_(v.is_floating_point()) for k, v in self.learner.params().items()}
        placeholder = torch.zeros(query_x.shape[0], dtype=torch.long, device=query_x.device)
        task = Task(support_x.detach(), support_y, query_x, placeholder)
        return self.learner.query_logits(params, task)

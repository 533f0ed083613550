"""The learner base class: one method per algorithm, the meta-update written once."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from ..types import Params, Task

__all__ = ["LEARNERS", "Learner"]

LEARNERS: Registry[type["Learner"]] = Registry("learner")
"""Meta-learner classes by name (``datafree.learner``): ``maml``, ``distill``."""


class Learner(nn.Module):
    """Base class of meta-learners (MAML, ProtoNet).

    A subclass writes ``query_logits(params, task)``: the logits ``[n_way * n_query, n_way]`` of
    the query set after whatever the algorithm does with the support set. This class derives the
    query loss, the mean over a meta-batch and the optimiser step from it. Being an ``nn.Module``,
    a learner's ``state_dict`` holds everything to checkpoint (network and learnt inner rates).

    Attributes:
        sums_over_tasks: the meta-loss is a mean of per-task losses, so :meth:`accumulate` can take a
            share of a meta-batch (data-parallel meta-training sums the shares' gradients).
        needs_teacher_logits: the learner's losses read the teachers' logits on every task's inputs
            (``task.source.extra``, see :func:`~dfml.meta.distill.attach_teacher_logits`).
    """

    sums_over_tasks: ClassVar[bool] = True
    needs_teacher_logits: ClassVar[bool] = False

    network: nn.Module
    """The network whose parameters are meta-learnt (set by the subclass)."""

    def params(self) -> Params:
        """The meta-parameters of ``network``: ``{name: nn.Parameter}`` (the live tensors)."""
        return dict(self.network.named_parameters())

    def adapt(self, params: Params, task: Task, steps: int | None = None) -> Params:
        """Task-specific fast weights from ``params`` and ``task``'s support set (identity here)."""
        return dict(params)

    def query_logits(self, params: Params, task: Task) -> Tensor:  # pragma: no cover - abstract
        """Query logits ``[n_way * n_query, n_way]`` for ``task`` starting from ``params``."""
        raise NotImplementedError

    def loss(self, params: Params, task: Task) -> Tensor:
        """Cross-entropy of ``task``'s query set (after adapting on its support set); a scalar."""
        task = self._on_device(task)
        return F.cross_entropy(self.query_logits(params, task), task.query_y)

    def task_loss(self, params: Params, task: Task) -> tuple[Tensor, Tensor]:
        """Query loss (scalar tensor) and query accuracy (0-d tensor in ``[0, 1]``, no graph)."""
        task = self._on_device(task)
        logits = self.query_logits(params, task)
        acc = (logits.detach().argmax(-1) == task.query_y).double().mean()
        return F.cross_entropy(logits, task.query_y), acc

    def meta_loss(self, tasks: Sequence[Task]) -> tuple[Tensor, dict[str, float]]:
        """Mean query loss over ``tasks`` at the current meta-parameters.

        Returns:
            The loss (a scalar with graph to the meta-parameters) and metrics
            ``{"loss": mean query loss, "acc": mean query accuracy in [0, 1]}``.
        """
        tasks = self._check_tasks(tasks)
        params = self.params()
        losses, accs = zip(*(self.task_loss(params, t) for t in tasks))
        loss = torch.stack(losses).mean()
        return loss, {"loss": float(loss.detach()), "acc": float(torch.stack(accs).mean())}

    def meta_step(self, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """One meta-update: zero the gradients, backpropagate the mean query loss, step.

        Each task's loss is backpropagated as soon as it is computed (divided by the number of
        tasks), so memory holds one task's graph at a time; the accumulated gradient equals that
        of ``meta_loss(tasks)[0]``.

        Returns:
            ``{"loss": ..., "acc": ...}`` as in ``meta_loss``.
        """
        tasks = self._check_tasks(tasks)
        optimizer.zero_grad(set_to_none=True)
        total, correct = self.accumulate(tasks, len(tasks))
        optimizer.step()
        return {"loss": total / len(tasks), "acc": correct / len(tasks)}

    def accumulate(self, tasks: Sequence[Task], denominator: int) -> tuple[float, float]:
        """Add the gradient of ``sum(task losses) / denominator`` to the meta-parameters' ``.grad``.

        Each task's loss is backpropagated as soon as it is computed, so memory holds one task's
        graph at a time. With ``denominator`` the size of a whole meta-batch of which ``tasks`` is a
        part, the gradients of the parts add up to the gradient of the whole (data-parallel
        meta-training sums them over ranks, see :mod:`dfml.meta.parallel`).

        Returns:
            The sums (not means) over ``tasks`` of the query losses and accuracies; ``(0.0, 0.0)``
            and no gradient for no tasks.
        """
        params = self.params()
        losses, accs = [], []
        for task in tasks:
            loss, acc = self.task_loss(params, task)
            (loss / denominator).backward()
            losses.append(loss.detach())
            accs.append(acc)
        if not losses:
            return 0.0, 0.0
        # one host transfer for the whole share (a float() per task would synchronise a GPU inside
        # the task loop and stall the kernels queued behind each task)
        stats = torch.stack([torch.stack(losses).double().sum().to(accs[0].device), torch.stack(accs).double().sum()])
        total, correct = stats.tolist()
        return total, correct

    def forward(self, x: Tensor) -> Tensor:
        """The network's output on ``x`` with the meta-parameters."""
        return self.network(x)

    def _check_tasks(self, tasks: Sequence[Task]) -> list[Task]:
        tasks = list(tasks)
        if not tasks:
            raise ValueError("got an empty meta-batch; pass at least one Task")
        for t in tasks:
            if not isinstance(t, Task):
                raise TypeError(f"meta-batch items must be dfml.Task, got {type(t).__name__}")
        return tasks

    def _on_device(self, task: Task) -> Task:
        p = next(self.network.parameters(), None)
        if p is None or (task.support_x.device == p.device and task.support_x.dtype == p.dtype):
            return task
        return task.to(p.device, dtype=p.dtype)

"""Implicit gradient regularisation within a group of tasks: penalise gradient disagreement.

For a group of tasks with objectives ``L_i`` (plain losses or MAML query losses after inner
adaptation), take every task's gradient ``g_i`` at ``theta`` and their mean ``g_bar``, move each
task to its own perturbed point ``theta_i = theta + beta * (g_i - g_bar)`` (along its
*disagreement* with the group) and average the task gradients found there:

    u = mean_i grad L_i(theta_i) = g_bar + beta * mean_i H_i (g_i - g_bar) + O(beta**2)
      = grad [ mean_i L_i + (beta / 2) * mean_i ||g_i - g_bar||**2 ] + O(beta**2),

because ``grad (1/2) mean_i ||g_i - g_bar||**2 = mean_i (H_i - H_bar)(g_i - g_bar)`` and
``mean_i (g_i - g_bar) = 0``. Descending ``u`` therefore *penalises* gradient disagreement in the
group, with Hessian-vector products never formed: two gradients per task.

Sign convention: ``theta_i = theta - beta * (g_bar - g_i)``, as in the reference code
(``weight - displace_lr * (full_gradient - grad_i)``); ``beta > 0`` penalises, ``beta < 0`` would
reward disagreement. The perturbation is treated as a constant (its dependence on ``theta`` is
not differentiated, as in SAM). The reference code differentiates through it, which to first
order doubles the coefficient: its ``displace_lr`` corresponds to ``beta = 2 * displace_lr`` here.

References:
    Wei et al., "Task Groupings Regularization: Data-Free Meta-Learning with Heterogeneous
    Pre-trained Models" (TGR), ICML 2024.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..types import Params, Task
from .learner import Learner
from .objective import (
    TaskObjective,
    apply_meta_gradient,
    check_learner,
    check_tasks,
    leaves,
    mean_metrics,
    task_gradient,
)
from .update import UPDATES, MetaUpdate

__all__ = ["GroupRegularization", "GroupRegularizationConfig", "group_regularized_gradient"]


@dataclass(frozen=True)
class GroupRegularizationConfig:
    """Settings of the group regulariser.

    Attributes:
        beta: perturbation size; the penalty on ``mean_i ||g_i - g_bar||**2`` is ``beta / 2``.
            ``0`` gives the plain mean gradient (at twice the cost).
    """

    beta: float = 0.002

    def __post_init__(self) -> None:
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not (
            math.isfinite(self.beta) and self.beta >= 0
        ):
            raise ValueError(
                f"grouping.beta must be a finite number >= 0, got {self.beta!r} (a negative beta would reward "
                "gradient disagreement instead of penalising it)"
            )


def group_regularized_gradient(
    objective: TaskObjective, params: Mapping[str, Tensor], tasks: Sequence[Task], *, beta: float
) -> tuple[Params, dict[str, float]]:
    """The averaged perturbed gradient ``u`` of a task group (see the module docstring).

    Args:
        objective: ``objective(params, task) -> loss`` or ``(loss, acc)``, e.g. ``maml.task_loss``
            (second-order MAML gives second-order ``g_i``).
        params: ``theta``; entries requiring grad are differentiated and perturbed.
        tasks: the group (a meta-batch of tasks, typically recovered from different models).
        beta: perturbation size (``>= 0``).

    Returns:
        ``u`` as ``{name: tensor}`` (detached, trainable entries only) and metrics: ``loss``/``acc``
        (mean over tasks at ``theta``), ``grad_disagreement`` (``mean_i ||g_i - g_bar||**2``) and
        ``group_penalty`` (``beta / 2`` times it: the term that ``u`` descends besides the loss).
    """
    tasks = check_tasks(tasks)
    if not math.isfinite(beta) or beta < 0:
        raise ValueError(f"beta must be a finite number >= 0, got {beta!r}")
    theta = leaves(params)
    losses, accs, grads = [], [], []
    for task in tasks:
        loss, acc, g = task_gradient(objective, theta, task)
        losses.append(loss.detach())
        accs.append(acc)
        grads.append({k: v.detach() for k, v in g.items()})
    mean = {k: torch.stack([g[k] for g in grads]).mean(0) for k in grads[0]}
    disagreement = sum(sum(float((g[k] - mean[k]).pow(2).sum()) for k in mean) for g in grads) / len(grads)
    update = {k: torch.zeros_like(v) for k, v in mean.items()}
    for task, g in zip(tasks, grads):
        point = {
            k: (v + beta * (g[k] - mean[k])).detach().requires_grad_() if k in mean else v for k, v in theta.items()
        }
        _, _, g_perturbed = task_gradient(objective, point, task)
        for k in update:
            update[k] += g_perturbed[k].detach() / len(tasks)
    metrics = mean_metrics(losses, accs)
    metrics["grad_disagreement"] = disagreement
    metrics["group_penalty"] = 0.5 * beta * disagreement
    return update, metrics


@UPDATES.register("grouping")
class GroupRegularization(MetaUpdate):
    """Meta-update that descends the mean task objective plus a gradient-disagreement penalty.

    An instance is a ``MetaUpdate`` (``update(learner, tasks, optimizer) -> metrics``) for
    ``MetaTrainer(..., update=GroupRegularization(config))``. The learner's ``task_loss`` is
    regularised: MAML gives query losses after adaptation, ``MAML(net, inner_steps=0)`` plain
    losses, ``DistillationMAML`` distillation losses.

    Args:
        config: the regulariser's settings.

    Example:
        >>> reg = GroupRegularization(GroupRegularizationConfig(beta=0.002))
        >>> learner = MAML(net, inner_steps=5)
        >>> metrics = reg(learner, group, torch.optim.Adam(learner.parameters(), lr=1e-3))

    References:
        Wei et al., "Task Groupings Regularization: Data-Free Meta-Learning with Heterogeneous
        Pre-trained Models" (TGR), ICML 2024.
    """

    def __init__(self, config: GroupRegularizationConfig | None = None) -> None:
        if config is not None and not isinstance(config, GroupRegularizationConfig):
            raise TypeError(f"config must be a GroupRegularizationConfig, got {type(config).__name__}")
        self.config = config or GroupRegularizationConfig()

    def gradient(self, learner: Learner, tasks: Sequence[Task]) -> tuple[Params, dict[str, float]]:
        """The regularised meta-gradient and its metrics (see ``group_regularized_gradient``)."""
        check_learner(learner)
        return group_regularized_gradient(learner.task_loss, learner.params(), tasks, beta=self.config.beta)

    def __call__(self, learner: Learner, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Write the regularised meta-gradient into ``.grad`` and step ``optimizer``.

        Parameters outside ``learner.params()`` (MAML's learnt inner rates) get no gradient.

        Args:
            learner: the meta-learner.
            tasks: the group.
            optimizer: over ``learner.parameters()``.

        Returns:
            ``{"loss", "acc", "grad_disagreement", "group_penalty"}``.
        """
        update, metrics = self.gradient(learner, tasks)
        apply_meta_gradient(learner.params(), update, optimizer)
        return metrics

    def __repr__(self) -> str:
        return f"GroupRegularization({self.config})"

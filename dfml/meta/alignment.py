"""Implicit gradient alignment: sequential first-order steps through a meta-batch, then a
Reptile-style meta-update along the total displacement.

Walking through tasks ``1..n`` one SGD step each from ``theta`` (step size ``a``) ends at
``phi``; the displacement ``theta - phi`` is, to second order in ``a``,

    a * sum_i g_i(theta)  -  a**2 * sum_{i<j} H_j(theta) g_i(theta)

where ``g_i``/``H_i`` are task ``i``'s gradient and Hessian. Averaged over task orders the cross
term is ``-(a**2 / 2) * grad sum_{i<j} <g_i, g_j>``, so stepping along the displacement descends
the summed loss while *rewarding* inner products between the gradients of different tasks (tasks
recovered from different pool models): their gradients are implicitly aligned, without a
second-order term ever being computed.

References:
    Wei et al., "FREE: Faster and Better Data-Free Meta-Learning", CVPR 2024;
    Nichol et al., "On First-Order Meta-Learning Algorithms" (Reptile), 2018.
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

__all__ = ["AlignmentConfig", "GradientAlignment", "sequential_displacement"]


@dataclass(frozen=True)
class AlignmentConfig:
    """Settings of the sequential walk.

    Attributes:
        task_lr: SGD step size of every sequential step (``a`` above).
        task_steps: SGD steps taken on each task before moving to the next.
        normalize: divide the displacement by ``task_lr * task_steps * n_tasks`` before handing it
            to the optimiser, so that it is on the scale of a mean gradient and the optimiser's
            learning rate means the same whatever ``task_lr`` is. ``False`` (the reference code's
            choice) hands over the raw displacement: with ``SGD(lr=eps)`` the update is exactly
            Reptile's ``theta <- theta + eps * (phi - theta)``.
    """

    task_lr: float = 0.01
    task_steps: int = 1
    normalize: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.task_lr, bool) or not isinstance(self.task_lr, (int, float)) or not (
            math.isfinite(self.task_lr) and self.task_lr > 0
        ):
            raise ValueError(f"alignment.task_lr must be a positive finite number, got {self.task_lr!r}")
        if isinstance(self.task_steps, bool) or not isinstance(self.task_steps, int) or self.task_steps < 1:
            raise ValueError(f"alignment.task_steps must be an integer >= 1, got {self.task_steps!r}")


def sequential_displacement(
    objective: TaskObjective,
    params: Mapping[str, Tensor],
    tasks: Sequence[Task],
    *,
    lr: float,
    steps: int = 1,
) -> tuple[Params, dict[str, float]]:
    """Walk through ``tasks`` in order with first-order SGD and return ``theta - phi``.

    Each step's gradient is detached (no graph is kept from one step to the next), so memory
    holds one task's graph at a time. With a MAML objective each step's gradient is that task's
    (first- or second-order) meta-gradient at the current point.

    Args:
        objective: ``objective(params, task) -> loss`` or ``(loss, acc)``, e.g. ``learner.task_loss``.
        params: the starting point ``theta``; entries requiring grad move, the others stay fixed.
        tasks: the meta-batch, visited in the given order.
        lr: step size of every SGD step.
        steps: SGD steps per task.

    Returns:
        The displacement ``{name: theta - phi}`` (detached, trainable entries only) and metrics:
        ``loss``/``acc`` (mean over tasks, each taken where its walk began), ``grad_dot`` (mean
        inner product of consecutive tasks' first gradients; only with two tasks or more) and
        ``displacement_norm``.
    """
    tasks = check_tasks(tasks)
    phi = leaves(params)
    losses, accs, dots = [], [], []
    previous: Params | None = None
    for task in tasks:
        for s in range(steps):
            loss, acc, grads = task_gradient(objective, phi, task)
            if s == 0:
                losses.append(loss)
                accs.append(acc)
                if previous is not None:
                    dots.append(sum(float((grads[k] * previous[k]).sum()) for k in grads))
                previous = grads
            phi = {k: (v - lr * grads[k]).detach().requires_grad_() if k in grads else v for k, v in phi.items()}
    trainable = [k for k, v in params.items() if v.requires_grad]
    displacement = {k: params[k].detach() - phi[k].detach() for k in trainable}
    metrics = mean_metrics(losses, accs)
    if dots:
        metrics["grad_dot"] = sum(dots) / len(dots)
    metrics["displacement_norm"] = math.sqrt(sum(float(d.pow(2).sum()) for d in displacement.values()))
    return displacement, metrics


@UPDATES.register("alignment")
class GradientAlignment(MetaUpdate):
    """Meta-update by implicit gradient alignment over a learner's task objective.

    An instance is a ``MetaUpdate`` (``update(learner, tasks, optimizer) -> metrics``) for
    ``MetaTrainer(..., update=GradientAlignment(config))``. The optimiser receives the
    displacement as the meta-gradient (``param.grad = theta - phi``, scaled if
    ``config.normalize``), so ``SGD(lr=eps)`` is Reptile with outer step ``eps`` and
    Adam follows the reference code. Parameters outside ``learner.params()`` (MAML's learnt
    inner rates) get no gradient from this update.

    The learner's ``task_loss`` is walked: ``MAML(net, inner_steps=0)`` walks the plain query
    loss, ``DistillationMAML(net, inner_steps=0)`` per-teacher KD.

    Args:
        config: the walk's settings.

    Example:
        >>> align = GradientAlignment(AlignmentConfig(task_lr=0.01))
        >>> learner = MAML(net, inner_steps=0)
        >>> metrics = align(learner, tasks, torch.optim.Adam(learner.parameters(), lr=1e-3))

    References:
        Wei et al., "FREE: Faster and Better Data-Free Meta-Learning", CVPR 2024.
    """

    def __init__(self, config: AlignmentConfig | None = None) -> None:
        if config is not None and not isinstance(config, AlignmentConfig):
            raise TypeError(f"config must be an AlignmentConfig, got {type(config).__name__}")
        self.config = config or AlignmentConfig()

    def displacement(self, learner: Learner, tasks: Sequence[Task]) -> tuple[Params, dict[str, float]]:
        """``theta - phi`` after the walk through ``tasks``, and its metrics (see ``sequential_displacement``)."""
        check_learner(learner)
        cfg = self.config
        return sequential_displacement(learner.task_loss, learner.params(), tasks, lr=cfg.task_lr, steps=cfg.task_steps)

    def __call__(self, learner: Learner, tasks: Sequence[Task], optimizer: torch.optim.Optimizer) -> dict[str, float]:
        """Walk through ``tasks``, write the (scaled) displacement into ``.grad`` and step ``optimizer``.

        Args:
            learner: the meta-learner (its ``params()`` move, its ``task_loss`` is walked).
            tasks: the meta-batch, visited in order.
            optimizer: over ``learner.parameters()``; its learning rate is the outer step size.

        Returns:
            ``{"loss", "acc", "grad_dot", "displacement_norm"}`` (``grad_dot`` needs two tasks or more).
        """
        check_learner(learner)
        tasks = check_tasks(tasks)
        delta, metrics = self.displacement(learner, tasks)
        if self.config.normalize:
            scale = 1.0 / (self.config.task_lr * self.config.task_steps * len(tasks))
            delta = {k: d * scale for k, d in delta.items()}
        apply_meta_gradient(learner.params(), delta, optimizer)
        return metrics

    def __repr__(self) -> str:
        return f"GradientAlignment({self.config})"

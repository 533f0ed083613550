"""Per-task objectives and their gradients: the common ground of the meta-update regularisers.

A *task objective* maps fast weights and a task to a scalar loss, or to ``(loss, accuracy)``:
``Learner.task_loss`` is one (MAML's query loss after inner adaptation, ProtoNet's query loss,
``MAML(net, inner_steps=0)`` for a plain loss), and so is any function written for a test.
The meta-updates in ``alignment`` and ``grouping`` only need such an objective, gradients of it
at points of their choosing, and a way to hand a finished meta-gradient to an optimiser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Union

import torch
from torch import Tensor

from ..types import Params, Task
from .learner import Learner

TaskObjective = Callable[[Params, Task], Union[Tensor, tuple[Tensor, Tensor]]]
"""``objective(params, task) -> loss`` or ``-> (loss, accuracy)``; both 0-d tensors."""

__all__ = [
    "TaskObjective",
    "apply_meta_gradient",
    "as_objective",
    "check_learner",
    "check_tasks",
    "leaves",
    "mean_metrics",
    "task_gradient",
]


def as_objective(source: Learner | TaskObjective) -> TaskObjective:
    """The task objective of a learner (``learner.task_loss``), or ``source`` itself if callable.

    Raises:
        TypeError: ``source`` is neither a ``Learner`` nor callable.
    """
    if isinstance(source, Learner):
        return source.task_loss
    if callable(source):
        return source
    raise TypeError(
        f"expected a dfml Learner or a callable objective(params, task) -> loss, got {type(source).__name__}"
    )


def check_learner(learner: object) -> Learner:
    """``learner`` itself, checked to be a dfml ``Learner``."""
    if not isinstance(learner, Learner):
        raise TypeError(
            f"learner must be a dfml.meta.Learner (MAML, ProtoNet, DistillationMAML...), got {type(learner).__name__}"
        )
    return learner


def check_tasks(tasks: Sequence[Task]) -> list[Task]:
    """``tasks`` as a list, checked to be a non-empty sequence of ``Task``."""
    tasks = list(tasks)
    if not tasks:
        raise ValueError("got an empty meta-batch; pass at least one Task")
    for t in tasks:
        if not isinstance(t, Task):
            raise TypeError(f"meta-batch items must be dfml.Task, got {type(t).__name__}")
    return tasks


def leaves(params: Mapping[str, Tensor]) -> Params:
    """Detached copies of ``params`` that are fresh autograd leaves (trainable entries keep requiring grad)."""
    return {k: v.detach().requires_grad_(v.requires_grad) for k, v in params.items()}


def task_gradient(
    objective: TaskObjective, params: Mapping[str, Tensor], task: Task, *, create_graph: bool = False
) -> tuple[Tensor, Tensor | None, Params]:
    """Loss, accuracy and gradient of ``objective`` at ``params`` for one task.

    Args:
        objective: the task objective.
        params: the point; entries that require grad are differentiated, the others held fixed.
        task: the episode.
        create_graph: keep the graph of the gradient (for a double backward).

    Returns:
        ``(loss, acc, grads)``: the loss (0-d), the accuracy (0-d, or ``None`` if the objective
        gives none) and ``{name: gradient}`` for the trainable entries (zeros where unused).

    Raises:
        ValueError: no entry of ``params`` requires grad.
    """
    names = [k for k, v in params.items() if v.requires_grad]
    if not names:
        raise ValueError(
            "no entry of params requires grad, so there is no gradient to take; pass e.g. "
            "dfml.meta.objective.leaves(learner.params())"
        )
    out = objective(dict(params), task)
    loss, acc = out if isinstance(out, tuple) else (out, None)
    grads = torch.autograd.grad(loss, [params[k] for k in names], create_graph=create_graph, allow_unused=True)
    return loss, acc, {k: torch.zeros_like(params[k]) if g is None else g for k, g in zip(names, grads)}


def apply_meta_gradient(
    params: Mapping[str, Tensor], grads: Mapping[str, Tensor], optimizer: torch.optim.Optimizer
) -> None:
    """Zero the optimiser's gradients, write ``grads`` into ``params[name].grad``, and step.

    Parameters of the optimiser without an entry in ``grads`` keep ``grad=None`` and are skipped
    by ``torch.optim`` optimisers (e.g. MAML's learnt inner rates under a first-order update).
    """
    optimizer.zero_grad(set_to_none=True)
    for k, g in grads.items():
        params[k].grad = g.detach().to(params[k].dtype).clone()
    optimizer.step()


def mean_metrics(losses: Sequence[Tensor], accs: Sequence[Tensor | None]) -> dict[str, float]:
    """``{"loss": mean loss, "acc": mean accuracy}`` (``acc`` left out when the objective gives none)."""
    out = {"loss": float(torch.stack([x.detach() for x in losses]).mean())}
    if accs and all(a is not None for a in accs):
        out["acc"] = float(torch.stack([a.detach().to(torch.float64) for a in accs]).mean())  # type: ignore[union-attr]
    return out

"""Rewards for the reliability weigher.

The default, :func:`improvement_reward`, is data-free: how much a meta-update lowered the
meta-learner's loss on held-out *synthetic* tasks recovered from *other* pool models (pick them
with :func:`tasks_from_other_models`). :func:`accuracy_improvement_reward` is the same idea
measured by query accuracy (agreement of the adapted meta-learner with those tasks' labels).
:func:`real_validation_reward` is an explicit opt-in that uses labelled real data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from ..types import Params, Task

__all__ = [
    "accuracy_improvement_reward",
    "improvement_reward",
    "mean_task_loss",
    "real_validation_reward",
    "tasks_from_other_models",
]

log = logging.getLogger(__name__)

LossFn = Callable[[Params, Task], Tensor]
"""``loss_fn(params, task) -> scalar``, e.g. ``learner.loss`` (adapts on the support set, scores the query set)."""


def tasks_from_other_models(tasks: Iterable[Task], ids: Sequence[int]) -> list[Task]:
    """The tasks whose ``source.model_id`` is not one of ``ids`` (the models just used).

    Raises:
        ValueError: a task without ``source.model_id``, or no task left.
    """
    chosen = {int(i) for i in ids}
    kept = []
    for t in tasks:
        if t.source is None or t.source.model_id is None:
            raise ValueError(
                "a held-out task has no source.model_id, so it cannot be told apart from the selected models' "
                "tasks; build synthetic tasks with TaskSource(model_id=...)"
            )
        if t.source.model_id not in chosen:
            kept.append(t)
    if not kept:
        raise ValueError(
            f"no held-out task comes from a model outside {sorted(chosen)}; keep tasks recovered from other "
            "models (e.g. from the task memory) to score the update"
        )
    return kept


def _detached(params: Mapping[str, Tensor]) -> Params:
    # Fresh leaves: the inner loop can differentiate w.r.t. them, nothing flows back to the caller's
    # tensors. Entries that required grad keep doing so; if none did (a snapshot), all float ones do.
    any_grad = any(v.requires_grad for v in params.values())
    return {
        k: v.detach().requires_grad_((v.requires_grad or not any_grad) and v.is_floating_point())
        for k, v in params.items()
    }


def mean_task_loss(loss_fn: LossFn, params: Mapping[str, Tensor], tasks: Sequence[Task]) -> float:
    """Mean of ``loss_fn(params, task)`` over ``tasks`` as a float (no graph kept).

    Gradients are enabled internally because adapting on the support set (MAML) needs them,
    but they never reach ``params``.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks is empty; pass at least one held-out Task to score the meta-learner on")
    fast = _detached(params)
    with torch.enable_grad():
        total = sum(float(loss_fn(fast, t).detach()) for t in tasks)
    return total / len(tasks)


def improvement_reward(
    loss_fn: LossFn,
    params_before: Mapping[str, Tensor],
    params_after: Mapping[str, Tensor],
    tasks: Sequence[Task],
) -> float:
    """Data-free reward: held-out loss before the meta-update minus held-out loss after it.

    Args:
        loss_fn: ``loss_fn(params, task) -> scalar``, e.g. ``learner.loss``.
        params_before: meta-parameters before the update (a detached copy, e.g.
            ``{k: v.detach().clone() for k, v in learner.params().items()}``).
        params_after: meta-parameters after the update (e.g. ``learner.params()``).
        tasks: held-out synthetic tasks recovered from models *other* than the selected ones
            (see :func:`tasks_from_other_models`).

    Returns:
        ``mean loss(before) - mean loss(after)``: positive when the update helped.

    References:
        Hu et al., "Task-Distributionally Robust Data-Free Meta-Learning", 2023 (reward = the
        meta-learner's improvement on held-out pseudo tasks).
    """
    return mean_task_loss(loss_fn, params_before, tasks) - mean_task_loss(loss_fn, params_after, tasks)


def _mean_accuracy(logits_fn: LossFn, params: Mapping[str, Tensor], tasks: Sequence[Task]) -> float:
    fast = _detached(params)
    correct = 0.0
    with torch.enable_grad():
        for t in tasks:
            logits = logits_fn(fast, t).detach()
            correct += float((logits.argmax(-1) == t.query_y.to(logits.device)).double().mean())
    return correct / len(tasks)


def accuracy_improvement_reward(
    logits_fn: LossFn,
    params_before: Mapping[str, Tensor],
    params_after: Mapping[str, Tensor],
    tasks: Sequence[Task],
) -> float:
    """Agreement-based data-free reward: gain in query accuracy on held-out synthetic tasks.

    The accuracy of the adapted meta-learner is its agreement with the labels the *other* models
    gave their recovered tasks; the reward is that agreement after the update minus before.

    Args:
        logits_fn: ``logits_fn(params, task) -> [n_way * n_query, n_way]``, e.g. ``learner.query_logits``.
        params_before, params_after, tasks: as in :func:`improvement_reward`.

    Returns:
        A float in ``[-1, 1]``.
    """
    tasks = list(tasks)
    if not tasks:
        raise ValueError("tasks is empty; pass at least one held-out Task to score the meta-learner on")
    return _mean_accuracy(logits_fn, params_after, tasks) - _mean_accuracy(logits_fn, params_before, tasks)


def real_validation_reward(
    loss_fn: LossFn,
    params_before: Mapping[str, Tensor],
    params_after: Mapping[str, Tensor],
    real_tasks: Sequence[Task],
) -> float:
    """NOT data-free: the improvement reward measured on *real labelled* validation tasks.

    This uses labelled real data, which the data-free setting does not have; it exists only as an
    explicit opt-in (an oracle for ablations, or when a labelled validation split is allowed).
    Runs that use it must not be reported as data-free.

    Args:
        loss_fn, params_before, params_after: as in :func:`improvement_reward`.
        real_tasks: episodes sampled from a real labelled split.

    Returns:
        ``mean loss(before) - mean loss(after)`` on ``real_tasks``.
    """
    log.debug("real_validation_reward uses labelled real data: this run is not data-free")
    return improvement_reward(loss_fn, params_before, params_after, real_tasks)

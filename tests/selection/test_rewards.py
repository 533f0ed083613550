"""Rewards: data-free improvement on held-out synthetic tasks from other models."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.meta import MAML
from dfml.selection import (
    accuracy_improvement_reward,
    improvement_reward,
    real_validation_reward,
    tasks_from_other_models,
)
from dfml.types import Task, TaskSource


def make_task(model_id: int | None, seed: int) -> Task:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(2).repeat(3)
    x = torch.randn(6, 4, generator=g, dtype=torch.float64) + 2.0 * y[:, None]
    return Task(x, y, x.flip(0), y.flip(0), source=TaskSource(model_id=model_id, kind="synthetic"))


def test_tasks_from_other_models_keeps_only_tasks_of_unselected_models() -> None:
    tasks = [make_task(i, i) for i in range(5)]
    kept = tasks_from_other_models(tasks, [1, 3])
    assert [t.source.model_id for t in kept] == [0, 2, 4]
    with pytest.raises(ValueError, match=r"no held-out task comes from a model outside \[0, 1\]"):
        tasks_from_other_models(tasks[:2], [0, 1])
    with pytest.raises(ValueError, match="no source.model_id"):
        tasks_from_other_models([make_task(None, 0)], [0])


def test_improvement_reward_is_loss_before_minus_loss_after() -> None:
    def loss_fn(params: dict, task: Task) -> torch.Tensor:  # a quadratic bowl around the task mean
        return ((params["w"] - task.query_x.mean(0)) ** 2).sum()

    tasks = [make_task(0, 0), make_task(1, 1)]
    before, after = {"w": torch.zeros(4, dtype=torch.float64)}, {"w": torch.ones(4, dtype=torch.float64)}
    expected = sum(float(loss_fn(before, t) - loss_fn(after, t)) for t in tasks) / 2
    assert improvement_reward(loss_fn, before, after, tasks) == pytest.approx(expected, abs=1e-12)
    assert real_validation_reward(loss_fn, before, after, tasks) == pytest.approx(expected, abs=1e-12)


def test_improvement_reward_works_with_maml_and_leaves_the_learner_untouched() -> None:
    learner = MAML(nn.Linear(4, 2).double(), inner_steps=2, inner_lr=0.1)
    before = {k: v.detach().clone() for k, v in learner.params().items()}
    opt = torch.optim.SGD(learner.parameters(), lr=0.5)
    train, held_out = [make_task(0, 0)], [make_task(1, 1), make_task(2, 2)]
    learner.meta_step(train, opt)
    opt.zero_grad(set_to_none=True)
    reward = improvement_reward(learner.loss, before, learner.params(), held_out)
    manual = []
    for params in (before, learner.params()):
        fresh = {k: v.detach().requires_grad_() for k, v in params.items()}
        manual.append(sum(float(learner.loss(fresh, t).detach()) for t in held_out) / 2)
    assert reward == pytest.approx(manual[0] - manual[1], abs=1e-12)
    assert reward > 0  # the tasks share a structure, so the step helped
    assert all(p.grad is None for p in learner.parameters())


def test_accuracy_improvement_reward_counts_agreement_with_the_held_out_labels() -> None:
    def logits_fn(params: dict, task: Task) -> torch.Tensor:
        return F.one_hot(task.query_y, 2).double() * params["s"]  # s > 0: all right; s < 0: all wrong

    tasks = [make_task(3, 0)]
    assert accuracy_improvement_reward(logits_fn, {"s": torch.tensor(-1.0)}, {"s": torch.tensor(1.0)}, tasks) == 1.0
    assert accuracy_improvement_reward(logits_fn, {"s": torch.tensor(1.0)}, {"s": torch.tensor(1.0)}, tasks) == 0.0
    with pytest.raises(ValueError, match="tasks is empty"):
        accuracy_improvement_reward(logits_fn, {}, {}, [])
    with pytest.raises(ValueError, match="tasks is empty"):
        improvement_reward(logits_fn, {}, {}, [])


def test_real_validation_reward_says_it_is_not_data_free() -> None:
    assert "NOT data-free" in (real_validation_reward.__doc__ or "")
    assert "labelled" in (real_validation_reward.__doc__ or "")

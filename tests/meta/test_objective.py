"""Task objectives shared by the regularised meta-updates: gradients, frozen entries, composition."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dfml.meta import (
    MAML,
    DistillationConfig,
    DistillationMAML,
    GradientAlignment,
    GroupRegularization,
    ProtoNet,
    sequential_displacement,
)
from dfml.meta.objective import apply_meta_gradient, as_objective, task_gradient
from dfml.types import Task, TaskSource

F64 = torch.float64


def task(seed: int) -> Task:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 3, generator=g, dtype=F64)
    y = torch.arange(2).repeat(3)
    extra = {"teacher_support_logits": torch.randn(6, 2, generator=g, dtype=F64)}
    extra["teacher_query_logits"] = torch.randn(6, 2, generator=g, dtype=F64)
    return Task(x, y, x.flip(0), y, source=TaskSource(extra=extra))


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)


def test_frozen_entries_stay_fixed_and_get_no_displacement() -> None:
    maml = MAML(net(), inner_steps=1, inner_lr=0.3)
    params = {k: v if k.startswith("2.") else v.detach() for k, v in maml.params().items()}
    delta, _ = sequential_displacement(maml.task_loss, params, [task(0), task(1)], lr=0.1)
    assert set(delta) == {"2.weight", "2.bias"}
    _, _, grads = task_gradient(maml.task_loss, params, task(0))
    assert set(grads) == {"2.weight", "2.bias"}


def test_gradient_of_nothing_trainable_and_a_non_callable_objective_raise() -> None:
    maml = MAML(net(), inner_steps=0)
    frozen = {k: v.detach() for k, v in maml.params().items()}
    with pytest.raises(ValueError, match="no entry of params requires grad"):
        task_gradient(maml.task_loss, frozen, task(0))
    with pytest.raises(TypeError, match="expected a dfml Learner or a callable"):
        as_objective(3)  # type: ignore[arg-type]
    assert as_objective(maml) == maml.task_loss


def test_apply_meta_gradient_writes_grads_and_steps() -> None:
    p = {"w": nn.Parameter(torch.ones(2, dtype=F64))}
    apply_meta_gradient(p, {"w": torch.tensor([1.0, -2.0], dtype=F64)}, torch.optim.SGD(p.values(), lr=0.5))
    assert p["w"].detach().tolist() == [0.5, 2.0]


@pytest.mark.parametrize("update", [GradientAlignment, GroupRegularization])
def test_regularised_updates_compose_with_the_distillation_and_protonet_learners(update) -> None:
    for learner in (DistillationMAML(net(), DistillationConfig(temperature=2.0), inner_steps=1), ProtoNet(net())):
        before = [p.detach().clone() for p in learner.network.parameters()]
        metrics = update()(learner, [task(2), task(3)], torch.optim.SGD(learner.parameters(), lr=0.1))
        assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
        assert {"loss", "acc"} <= set(metrics)
        assert any(not torch.equal(a, b) for a, b in zip(before, learner.network.parameters()))

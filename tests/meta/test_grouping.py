"""Group regularisation: the averaged perturbed gradient equals, to O(beta^2), the exact gradient of
mean_i L_i + (beta/2) mean_i ||g_i - g_bar||^2 (autograd double backward), for plain and MAML losses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dfml.meta import MAML, GroupRegularization, GroupRegularizationConfig, group_regularized_gradient
from dfml.types import Task, TaskSource

F64 = torch.float64


def flat(d) -> torch.Tensor:
    return torch.cat([v.reshape(-1) for v in (d.values() if isinstance(d, dict) else d)])


def penalised_gradient(objective, params: dict, tasks: list[Task], beta: float) -> torch.Tensor:
    """Exact gradient of mean_i L_i + (beta/2) mean_i ||g_i - g_bar||^2 by double backward."""
    theta = {k: v.detach().requires_grad_() for k, v in params.items()}
    losses, grads = [], []
    for t in tasks:
        out = objective(theta, t)
        loss = out[0] if isinstance(out, tuple) else out
        losses.append(loss)
        grads.append(flat(torch.autograd.grad(loss, list(theta.values()), create_graph=True)))
    g = torch.stack(grads)
    penalty = (g - g.mean(0)).pow(2).sum(1).mean()
    return flat(torch.autograd.grad(torch.stack(losses).mean() + 0.5 * beta * penalty, list(theta.values())))


def mlp_tasks(n_tasks: int = 3) -> list[Task]:
    g = torch.Generator().manual_seed(5)
    out = []
    for _ in range(n_tasks):
        sx, qx = torch.randn(4, 3, generator=g, dtype=F64), torch.randn(6, 3, generator=g, dtype=F64)
        out.append(Task(sx, torch.arange(2).repeat(2), qx, torch.arange(2).repeat(3)))
    return out


def mlp_learner(inner_steps: int) -> MAML:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64)
    return MAML(net, inner_steps=inner_steps, inner_lr=0.4)


@pytest.mark.parametrize("inner_steps", [0, 2], ids=["plain-loss", "maml-query-loss"])
def test_the_averaged_perturbed_gradient_is_the_penalised_gradient_up_to_beta_squared(inner_steps: int) -> None:
    learner, tasks = mlp_learner(inner_steps), mlp_tasks()
    params = learner.params()
    mean_grad = penalised_gradient(learner.task_loss, params, tasks, 0.0)
    errors = []
    for beta in (0.02, 0.01):
        update, _ = group_regularized_gradient(learner.task_loss, params, tasks, beta=beta)
        u = flat(update)
        exact = penalised_gradient(learner.task_loss, params, tasks, beta)
        penalty_term = float((exact - mean_grad).norm())  # O(beta): what the regulariser adds
        errors.append(float((u - exact).norm()))
        assert errors[-1] < 0.05 * penalty_term
        # The opposite sign (rewarding disagreement) is off by twice the penalty term.
        wrong = penalised_gradient(learner.task_loss, params, tasks, -beta)
        assert float((u - wrong).norm()) > 1.5 * penalty_term
    assert 3.0 < errors[0] / errors[1] < 5.0  # O(beta^2)


def test_on_quadratics_the_update_is_the_penalised_gradient_exactly() -> None:
    g = torch.Generator().manual_seed(0)
    mats, centres = [], []
    for _ in range(3):
        m = torch.randn(3, 3, generator=g, dtype=F64)
        mats.append(m @ m.T + torch.eye(3, dtype=F64))
        centres.append(torch.randn(3, generator=g, dtype=F64))
    z, y = torch.zeros(1, 1, dtype=F64), torch.zeros(1, dtype=torch.long)
    tasks = [Task(z, y, z, y, source=TaskSource(model_id=i)) for i in range(3)]

    def objective(params, task):
        d = params["w"] - centres[task.source.model_id]
        return 0.5 * d @ mats[task.source.model_id] @ d

    w = torch.randn(3, generator=g, dtype=F64)
    beta = 0.3
    update, metrics = group_regularized_gradient(objective, {"w": w.requires_grad_()}, tasks, beta=beta)
    grads = torch.stack([a @ (w.detach() - c) for a, c in zip(mats, centres)])
    dev = grads - grads.mean(0)
    # Gradients are linear: u = g_bar + beta * mean_i A_i (g_i - g_bar), no remainder.
    expected = grads.mean(0) + beta * torch.stack([a @ d for a, d in zip(mats, dev)]).mean(0)
    torch.testing.assert_close(update["w"], expected, rtol=1e-12, atol=1e-14)
    exact = penalised_gradient(objective, {"w": w}, tasks, beta)
    torch.testing.assert_close(update["w"], exact, rtol=1e-12, atol=1e-13)
    assert metrics["grad_disagreement"] == pytest.approx(float(dev.pow(2).sum(1).mean()), rel=1e-12)
    assert metrics["group_penalty"] == pytest.approx(0.5 * beta * metrics["grad_disagreement"], rel=1e-12)
    assert "acc" not in metrics


def test_beta_zero_steps_with_the_plain_maml_meta_gradient() -> None:
    learner, tasks = mlp_learner(1), mlp_tasks(2)
    expected = torch.autograd.grad(learner.meta_loss(tasks)[0], list(learner.params().values()))
    loss, base = learner.meta_loss(tasks)
    update = GroupRegularization(GroupRegularizationConfig(beta=0.0))
    metrics = update(learner, tasks, torch.optim.SGD(learner.parameters(), lr=0.0))
    for p, e in zip(learner.params().values(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)
    assert metrics["loss"] == pytest.approx(base["loss"], rel=1e-12)
    assert metrics["acc"] == pytest.approx(base["acc"], rel=1e-12)
    assert metrics["group_penalty"] == 0.0 and metrics["grad_disagreement"] > 0


@pytest.mark.parametrize("beta", [-0.1, float("inf")])
def test_bad_beta_raises(beta: float) -> None:
    with pytest.raises(ValueError, match="grouping.beta must be a finite number >= 0"):
        GroupRegularizationConfig(beta=beta)
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        group_regularized_gradient(mlp_learner(0).task_loss, mlp_learner(0).params(), mlp_tasks(1), beta=beta)


def test_a_non_learner_or_a_wrong_config_raises() -> None:
    layer = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="learner must be a dfml.meta.Learner"):
        GroupRegularization()(layer, mlp_tasks(1), torch.optim.SGD(layer.parameters()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be a GroupRegularizationConfig, got float"):
        GroupRegularization(0.1)  # type: ignore[arg-type]

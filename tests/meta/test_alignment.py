"""Implicit gradient alignment: hand-derived displacements on quadratics, the second-order
expansion with its gradient-inner-product term, and the one-task reduction to SGD/Reptile."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.meta import MAML, AlignmentConfig, GradientAlignment, sequential_displacement
from dfml.types import Task, TaskSource

F64 = torch.float64


def quadratic_problem(n_tasks: int, dim: int = 3, seed: int = 0):
    """Tasks ``L_i(w) = 0.5 (w - c_i)^T A_i (w - c_i)`` with SPD ``A_i``; the objective looks tasks up by id."""
    g = torch.Generator().manual_seed(seed)
    mats, centres = [], []
    for _ in range(n_tasks):
        m = torch.randn(dim, dim, generator=g, dtype=F64)
        mats.append(m @ m.T + torch.eye(dim, dtype=F64))
        centres.append(torch.randn(dim, generator=g, dtype=F64))
    z = torch.zeros(1, 1, dtype=F64)
    y = torch.zeros(1, dtype=torch.long)
    tasks = [Task(z, y, z, y, source=TaskSource(model_id=i)) for i in range(n_tasks)]

    def objective(params, task):
        i = task.source.model_id
        d = params["w"] - centres[i]
        return 0.5 * d @ mats[i] @ d

    w = torch.randn(dim, generator=g, dtype=F64)
    return objective, tasks, mats, centres, w


def test_two_sequential_steps_on_quadratics_give_the_hand_derived_displacement() -> None:
    objective, tasks, (a1, a2), (c1, c2), w = quadratic_problem(2)
    lr = 0.07
    delta, metrics = sequential_displacement(objective, {"w": w.requires_grad_()}, tasks, lr=lr)
    g1, g2 = a1 @ (w.detach() - c1), a2 @ (w.detach() - c2)
    # phi1 = w - lr g1; phi2 = phi1 - lr A2 (phi1 - c2)  =>  w - phi2 = lr g1 + lr g2 - lr^2 A2 g1 (exact).
    expected = lr * g1 + lr * g2 - lr**2 * (a2 @ g1)
    torch.testing.assert_close(delta["w"], expected, rtol=1e-12, atol=1e-14)
    # grad_dot: task 1's gradient at w against task 2's gradient where the walk reached it.
    assert metrics["grad_dot"] == pytest.approx(float(g1 @ (g2 - lr * a2 @ g1)), rel=1e-12)
    assert metrics["loss"] == pytest.approx(
        0.5 * float(objective({"w": w.detach()}, tasks[0]) + objective({"w": w.detach() - lr * g1}, tasks[1])),
        rel=1e-12,
    )
    assert metrics["displacement_norm"] == pytest.approx(float(expected.norm()), rel=1e-12)


def mlp_objective():
    torch.manual_seed(0)
    maml = MAML(nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).to(F64), inner_steps=0)
    g = torch.Generator().manual_seed(1)
    tasks = []
    for _ in range(2):
        x = torch.randn(6, 3, generator=g, dtype=F64)
        y = torch.arange(2).repeat(3)
        tasks.append(Task(x, y, x, y))
    return maml, tasks


def flat_grad(loss, params, create_graph=False):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, create_graph=create_graph)])


def test_the_displacement_matches_its_second_order_expansion_with_the_gradient_inner_product_reward() -> None:
    maml, (t1, t2) = mlp_objective()
    theta = list(maml.params().values())
    l1 = F.cross_entropy(maml.network(t1.query_x), t1.query_y)
    l2 = F.cross_entropy(maml.network(t2.query_x), t2.query_y)
    g1, g2 = flat_grad(l1, theta, True), flat_grad(l2, theta, True)
    h2g1 = flat_grad(g2 @ g1.detach(), theta)  # H2 g1 (Hessian-vector product)
    h1g2 = flat_grad(g1 @ g2.detach(), theta)
    grad_dot = h2g1 + h1g2  # the gradient of <g1, g2>
    g1, g2 = g1.detach(), g2.detach()

    def walk(order, lr):
        delta, _ = sequential_displacement(maml.task_loss, maml.params(), order, lr=lr)
        return torch.cat([d.reshape(-1) for d in delta.values()])

    errors = []
    for lr in (0.02, 0.01):
        expansion = lr * (g1 + g2) - lr**2 * h2g1
        errors.append(float((walk([t1, t2], lr) - expansion).norm()))
        # Averaged over both orders the cross term is -(lr^2 / 2) grad <g1, g2>: alignment is rewarded.
        both = 0.5 * (walk([t1, t2], lr) + walk([t2, t1], lr))
        residual = both - (lr * (g1 + g2) - 0.5 * lr**2 * grad_dot)
        assert float(residual.norm()) < 1e-2 * lr**2 * float(grad_dot.norm())
    assert 6.0 < errors[0] / errors[1] < 10.0  # the remainder is O(lr^3)
    assert errors[1] < 1e-3 * 0.01**2 * float(h2g1.norm()) * 10


def test_one_task_one_step_is_plain_sgd_and_the_meta_step_is_reptile() -> None:
    maml, (t1, _) = mlp_objective()
    reference = copy.deepcopy(maml.network)
    lr, eps = 0.1, 0.5
    align = GradientAlignment(AlignmentConfig(task_lr=lr, task_steps=3))
    # Reptile by hand: three SGD steps on the task, then theta <- theta + eps (phi - theta).
    fast = copy.deepcopy(reference)
    opt_fast = torch.optim.SGD(fast.parameters(), lr=lr)
    for _ in range(3):
        opt_fast.zero_grad()
        F.cross_entropy(fast(t1.query_x), t1.query_y).backward()
        opt_fast.step()
    metrics = align(maml, [t1], torch.optim.SGD(maml.network.parameters(), lr=eps))
    for p, p0, phi in zip(maml.network.parameters(), reference.parameters(), fast.parameters()):
        torch.testing.assert_close(p.detach(), p0 + eps * (phi - p0), rtol=1e-12, atol=1e-14)
    assert set(metrics) == {"loss", "acc", "displacement_norm"}

    plain = MAML(copy.deepcopy(reference), inner_steps=0)
    delta, _ = GradientAlignment(AlignmentConfig(task_lr=lr)).displacement(plain, [t1])
    grads = torch.autograd.grad(F.cross_entropy(reference(t1.query_x), t1.query_y), list(reference.parameters()))
    for d, g in zip(delta.values(), grads):
        torch.testing.assert_close(d, lr * g, rtol=1e-12, atol=1e-14)


def test_normalize_hands_the_optimizer_the_displacement_over_lr_steps_and_tasks() -> None:
    maml, tasks = mlp_objective()
    align = GradientAlignment(AlignmentConfig(task_lr=0.05, task_steps=2, normalize=True))
    delta, _ = align.displacement(maml, tasks)
    opt = torch.optim.SGD(maml.parameters(), lr=0.0)
    align(maml, tasks, opt)
    for k, p in maml.params().items():
        torch.testing.assert_close(p.grad, delta[k] / (0.05 * 2 * 2), rtol=1e-12, atol=1e-14)


def test_the_walk_over_a_second_order_maml_objective_leaves_learnt_rates_without_gradient() -> None:
    maml, tasks = mlp_objective()
    learner = MAML(maml.network, inner_steps=1, inner_lr=0.3, learn_inner_lr=True)
    before = {k: v.detach().clone() for k, v in learner.params().items()}
    metrics = GradientAlignment()(learner, tasks, torch.optim.SGD(learner.parameters(), lr=1.0))
    assert learner.inner_lrs.grad is None
    assert any(not torch.equal(before[k], v) for k, v in learner.params().items())
    assert {"loss", "acc", "grad_dot", "displacement_norm"} <= set(metrics)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"task_lr": 0.0}, "alignment.task_lr must be a positive finite number, got 0.0"),
        ({"task_lr": float("nan")}, "alignment.task_lr must be a positive finite number"),
        ({"task_steps": 0}, "alignment.task_steps must be an integer >= 1, got 0"),
    ],
)
def test_bad_settings_raise(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AlignmentConfig(**kwargs)


def test_bad_inputs_raise() -> None:
    maml, _ = mlp_objective()
    opt = torch.optim.SGD(maml.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="learner must be a dfml.meta.Learner"):
        GradientAlignment()(maml.network, [], opt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="config must be an AlignmentConfig, got dict"):
        GradientAlignment({"task_lr": 0.1})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty meta-batch"):
        GradientAlignment()(maml, [], opt)

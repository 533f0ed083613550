"""MAML: exact meta-gradients (finite differences, a naive reference, FOMAML by hand) and learning."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.meta import MAML
from dfml.types import Task

F64 = torch.float64


def tiny_conv() -> nn.Module:
    """1x4x4 images -> conv(2) -> BatchNorm -> ReLU -> maxpool -> Linear head (2 classes)."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(8, 2),
    ).to(F64)


def mlp(d_in: int = 4, hidden: int = 5, n_way: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, hidden), nn.Tanh(), nn.Linear(hidden, n_way)).to(F64)


def random_task(shape: tuple[int, ...], n_way: int, seed: int, n_shot: int = 2, n_query: int = 3) -> Task:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(n_way * n_shot, *shape, generator=g, dtype=F64)
    qx = torch.randn(n_way * n_query, *shape, generator=g, dtype=F64)
    sy = torch.arange(n_way).repeat_interleave(n_shot)
    qy = torch.arange(n_way).repeat_interleave(n_query)
    return Task(sx, sy, qx, qy)


def finite_difference_grad(maml: MAML, tasks: list[Task], eps: float = 1e-6) -> list[torch.Tensor]:
    """Central differences of the meta-loss w.r.t. every parameter of ``maml`` (incl. learnt rates)."""
    grads = []
    for p in maml.parameters():
        g = torch.zeros_like(p)
        flat, gflat = p.data.view(-1), g.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            plus = float(maml.meta_loss(tasks)[0].detach())
            flat[i] = old - eps
            minus = float(maml.meta_loss(tasks)[0].detach())
            flat[i] = old
            gflat[i] = (plus - minus) / (2 * eps)
        grads.append(g)
    return grads


def autograd_grad(maml: MAML, tasks: list[Task]) -> list[torch.Tensor]:
    loss, _ = maml.meta_loss(tasks)
    return list(torch.autograd.grad(loss, list(maml.parameters())))


@pytest.mark.parametrize(
    ("build", "shape", "n_way"),
    [(tiny_conv, (1, 4, 4), 2), (mlp, (4,), 3)],
    ids=["conv-batchnorm", "mlp"],
)
@pytest.mark.parametrize("learn_inner_lr", [False, True], ids=["fixed-lr", "learnt-lr"])
def test_second_order_meta_gradient_matches_central_finite_differences(build, shape, n_way, learn_inner_lr) -> None:
    torch.manual_seed(0)
    maml = MAML(build(), inner_steps=2, inner_lr=0.3, learn_inner_lr=learn_inner_lr)
    tasks = [random_task(shape, n_way, seed) for seed in (1, 2)]
    for got, expected in zip(autograd_grad(maml, tasks), finite_difference_grad(maml, tasks)):
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-8)


def naive_mlp_forward(w: list[torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x @ w[0].T + w[1]) @ w[2].T + w[3]


def test_meta_loss_and_gradient_equal_a_naive_second_order_reference() -> None:
    torch.manual_seed(0)
    model = mlp()
    reference = copy.deepcopy(model)
    maml = MAML(model, inner_steps=3, inner_lr=0.4)
    tasks = [random_task((4,), 3, seed) for seed in (3, 4, 5)]
    loss, metrics = maml.meta_loss(tasks)
    grads = torch.autograd.grad(loss, list(maml.parameters()))

    meta = list(reference.parameters())
    losses = []
    for t in tasks:
        w = meta
        for _ in range(3):
            g = torch.autograd.grad(F.cross_entropy(naive_mlp_forward(w, t.support_x), t.support_y), w, create_graph=True)
            w = [wi - 0.4 * gi for wi, gi in zip(w, g)]
        losses.append(F.cross_entropy(naive_mlp_forward(w, t.query_x), t.query_y))
    ref_loss = sum(losses) / len(losses)
    ref_grads = torch.autograd.grad(ref_loss, meta)

    torch.testing.assert_close(loss, ref_loss, rtol=1e-12, atol=1e-12)
    assert metrics["loss"] == pytest.approx(float(ref_loss.detach()), rel=1e-12)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_first_order_gradient_is_the_query_gradient_at_the_adapted_weights_and_differs_from_second_order() -> None:
    torch.manual_seed(0)
    tasks = [random_task((1, 4, 4), 2, seed) for seed in (6, 7)]
    fo = MAML(tiny_conv(), inner_steps=2, inner_lr=0.3, first_order=True)
    so = MAML(copy.deepcopy(fo.network), inner_steps=2, inner_lr=0.3, first_order=False)

    # FOMAML by hand: adapt, cut the graph, take the query gradient there, average over tasks.
    expected = [torch.zeros_like(p) for p in fo.parameters()]
    for t in tasks:
        adapted = {k: v.detach().requires_grad_() for k, v in so.adapt(so.params(), t).items()}
        loss = F.cross_entropy(torch.func.functional_call(so.network, adapted, (t.query_x,)), t.query_y)
        for e, g in zip(expected, torch.autograd.grad(loss, list(adapted.values()))):
            e += g / len(tasks)

    first = autograd_grad(fo, tasks)
    second = autograd_grad(so, tasks)
    for a, b in zip(first, expected):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    gap = max(float((a - b).abs().max()) for a, b in zip(first, second))
    assert gap > 1e-3


def test_meta_step_accumulates_the_meta_loss_gradient_task_by_task() -> None:
    torch.manual_seed(0)
    maml = MAML(mlp(), inner_steps=2, inner_lr=0.3, learn_inner_lr=True)
    tasks = [random_task((4,), 3, seed) for seed in (8, 9, 10)]
    expected = autograd_grad(maml, tasks)
    loss, metrics = maml.meta_loss(tasks)
    opt = torch.optim.SGD(maml.parameters(), lr=0.0)
    out = maml.meta_step(tasks, opt)
    for p, e in zip(maml.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
    assert out["loss"] == pytest.approx(metrics["loss"], rel=1e-12)
    assert out["acc"] == pytest.approx(metrics["acc"], rel=1e-12)
    assert maml.inner_lrs is not None and maml.inner_lrs.grad is not None
    assert bool((maml.inner_lrs.grad != 0).all())


def test_learnt_rates_are_checkpointed_and_extended_beyond_the_trained_steps() -> None:
    maml = MAML(mlp(), inner_steps=2, inner_lr=0.3, learn_inner_lr=True)
    assert "inner_lrs" in maml.state_dict()
    with torch.no_grad():
        maml.inner_lrs.copy_(torch.tensor([0.1, 0.2]))
    assert maml._lrs(4).tolist() == pytest.approx([0.1, 0.2, 0.2, 0.2])
    assert maml._lrs(1).tolist() == pytest.approx([0.1])


def test_maml_switches_batchnorm_to_batch_statistics_and_leaves_weights_untouched() -> None:
    net = tiny_conv()
    before = {k: v.clone() for k, v in net.named_parameters()}
    maml = MAML(net)
    bn = maml.network[1]
    assert bn.running_mean is None and not bn.track_running_stats
    t = random_task((1, 4, 4), 2, 0)
    maml.meta_loss([t])
    for k, v in maml.network.named_parameters():
        assert torch.equal(v, before[k])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"inner_steps": -1}, ValueError, "inner_steps must be an integer >= 0, got -1"),
        ({"inner_lr": 0.0}, ValueError, "inner_lr must be a positive number, got 0.0"),
        ({"inner_steps": 0, "learn_inner_lr": True}, ValueError, "learn_inner_lr=True needs inner_steps >= 1"),
    ],
)
def test_bad_settings_raise(kwargs: dict, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        MAML(mlp(), **kwargs)


def test_an_empty_meta_batch_raises() -> None:
    with pytest.raises(ValueError, match="empty meta-batch"):
        MAML(mlp()).meta_loss([])


# --- learning -------------------------------------------------------------------------------


def blob_task(g: torch.Generator, n_query: int = 10, dim: int = 16, noise: float = 2.0) -> Task:
    """2-way 1-shot: class means in 2 signal dims, large nuisance noise in the other 14."""
    means = torch.zeros(2, dim)
    means[:, :2] = 3.0 * torch.randn(2, 2, generator=g)

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(2).repeat_interleave(k)
        x = means[y].clone()
        x[:, :2] += 0.5 * torch.randn(len(y), 2, generator=g)
        x[:, 2:] += noise * torch.randn(len(y), dim - 2, generator=g)
        return x, y

    (sx, sy), (qx, qy) = draw(1), draw(n_query)
    return Task(sx, sy, qx, qy)


def test_meta_training_improves_post_adaptation_query_accuracy() -> None:
    torch.manual_seed(0)
    maml = MAML(nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 2)), inner_steps=2, inner_lr=0.5)
    g = torch.Generator().manual_seed(123)
    held_out = [blob_task(g) for _ in range(50)]

    def accuracy() -> float:
        params = maml.params()
        return sum(float(maml.task_loss(params, t)[1]) for t in held_out) / len(held_out)

    before = accuracy()
    opt = torch.optim.Adam(maml.parameters(), lr=1e-2)
    g_train = torch.Generator().manual_seed(0)
    for _ in range(200):
        maml.meta_step([blob_task(g_train) for _ in range(4)], opt)
    after = accuracy()
    assert after > before + 0.07, (before, after)

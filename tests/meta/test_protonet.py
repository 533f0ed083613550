"""ProtoNet: hand-checked prototypes, logits and loss; learning on Gaussian blobs."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from dfml.meta import ProtoNet, prototype_logits, prototypes
from dfml.types import Task


def identity_encoder() -> nn.Module:
    enc = nn.Linear(2, 2)
    with torch.no_grad():
        enc.weight.copy_(torch.eye(2))
        enc.bias.zero_()
    return enc


def toy_task() -> Task:
    # class 0 at (0,0),(2,0) -> prototype (1,0); class 1 at (0,2),(0,4) -> prototype (0,3)
    sx = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0]])
    sy = torch.tensor([0, 1, 0, 1])
    qx = torch.tensor([[1.0, 1.0], [0.0, 4.0]])
    qy = torch.tensor([0, 1])
    return Task(sx, sy, qx, qy)


def test_prototypes_are_class_means_in_label_order() -> None:
    t = toy_task()
    assert prototypes(t.support_x, t.support_y).tolist() == [[1.0, 0.0], [0.0, 3.0]]


def test_logits_are_minus_squared_distances() -> None:
    logits = prototype_logits(toy_task().query_x, torch.tensor([[1.0, 0.0], [0.0, 3.0]]))
    # (1,1): d0 = 0 + 1 = 1, d1 = 1 + 4 = 5;  (0,4): d0 = 1 + 16 = 17, d1 = 0 + 1 = 1
    assert logits.tolist() == [[-1.0, -5.0], [-17.0, -1.0]]


def test_protonet_loss_and_predictions_on_a_two_way_toy_episode() -> None:
    net = ProtoNet(identity_encoder().double())
    t = toy_task().to("cpu", dtype=torch.float64)
    params = net.params()
    assert net.predict(params, t).tolist() == [0, 1]
    expected = (math.log1p(math.exp(-4.0)) + math.log1p(math.exp(-16.0))) / 2
    assert float(net.loss(params, t).detach()) == pytest.approx(expected, rel=1e-12)
    assert net.adapt(params, t) == params


def test_a_class_without_support_examples_raises() -> None:
    with pytest.raises(ValueError, match=r"support labels must cover 0..n_way-1.*got labels \[0, 2\]"):
        prototypes(torch.zeros(2, 3), torch.tensor([0, 2]))


def test_protonet_meta_step_matches_the_meta_loss_gradient() -> None:
    torch.manual_seed(0)
    net = ProtoNet(nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh()).double())
    t = toy_task().to("cpu", dtype=torch.float64)
    loss, _ = net.meta_loss([t, t])
    expected = torch.autograd.grad(loss, list(net.parameters()))
    net.meta_step([t, t], torch.optim.SGD(net.parameters(), lr=0.0))
    for p, e in zip(net.parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-12, atol=1e-14)


def blob_task(g: torch.Generator, n_way: int = 3, n_shot: int = 1, n_query: int = 10) -> Task:
    """Class means in 2 signal dims, large nuisance noise in 14 others."""
    means = torch.zeros(n_way, 16)
    means[:, :2] = 3.0 * torch.randn(n_way, 2, generator=g)

    def draw(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n_way).repeat_interleave(k)
        x = means[y] + torch.cat([0.5 * torch.randn(len(y), 2, generator=g), 2.0 * torch.randn(len(y), 14, generator=g)], 1)
        return x, y

    (sx, sy), (qx, qy) = draw(n_shot), draw(n_query)
    return Task(sx, sy, qx, qy)


def test_protonet_meta_training_learns_to_ignore_nuisance_dimensions() -> None:
    torch.manual_seed(0)
    net = ProtoNet(nn.Linear(16, 8))
    g = torch.Generator().manual_seed(123)
    held_out = [blob_task(g) for _ in range(50)]

    def accuracy() -> float:
        p = net.params()
        return sum(float(net.task_loss(p, t)[1]) for t in held_out) / len(held_out)

    before = accuracy()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    g_train = torch.Generator().manual_seed(0)
    for _ in range(150):
        net.meta_step([blob_task(g_train) for _ in range(4)], opt)
    assert accuracy() > before + 0.15

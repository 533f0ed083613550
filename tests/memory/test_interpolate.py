"""Task interpolation: values by hand, class pairing, lam=1 exactness, feature-level mixing through MAML.

No torch.optim and no torch.testing here: their first use imports torch._dynamo (~10 s on a busy
2-core machine); ``Learner.meta_loss(...).backward()`` is ``meta_step`` without the optimiser.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dfml.memory import MemoryConfig, MixedInputs, TaskMemory, interpolate, sample_lambda
from dfml.meta import MAML, ProtoNet, functional_forward
from dfml.models.conv4 import Conv4
from dfml.models.mlp import MLP
from dfml.types import Task, TaskSource

F64 = torch.float64


def constant_task(values: tuple[float, ...], n_shot: int = 2, n_query: int = 3, interleave: bool = False) -> Task:
    """Label ``k``'s rows are all ``values[k]`` (3 features); ``interleave`` orders rows 0,1,..,0,1,..."""
    n_way = len(values)

    def split(per_class: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.arange(n_way).repeat(per_class) if interleave else torch.arange(n_way).repeat_interleave(per_class)
        return torch.tensor(values)[y][:, None].expand(-1, 3).clone(), y

    (sx, sy), (qx, qy) = split(n_shot), split(n_query)
    return Task(sx, sy, qx, qy, TaskSource(model_id=0, classes=tuple(range(10, 10 + n_way)), step=4, kind="memory"))


def random_task(seed: int, n_way: int = 3, d: int = 4, n_shot: int = 2, n_query: int = 3, dtype=F64) -> Task:
    g = torch.Generator().manual_seed(seed)
    return Task(
        torch.randn(n_way * n_shot, d, generator=g, dtype=dtype),
        torch.arange(n_way).repeat_interleave(n_shot),
        torch.randn(n_way * n_query, d, generator=g, dtype=dtype),
        torch.arange(n_way).repeat_interleave(n_query),
        TaskSource(model_id=seed, classes=tuple(range(n_way)), step=0),
    )


def bn_mlp() -> MLP:
    torch.manual_seed(0)
    return MLP(4, num_classes=3, hidden=(6, 5), batch_norm=True).to(F64)  # encoder: 6 layers


def test_input_level_mix_by_hand_on_constant_tensors():
    a, b = constant_task((1.0, 2.0)), constant_task((5.0, 9.0))
    t = interpolate(a, b, 0.25)
    assert torch.equal(t.support_x, torch.tensor([4.0, 4.0, 7.25, 7.25])[:, None].expand(-1, 3))  # .25*1+.75*5
    assert torch.equal(t.query_x, torch.tensor([4.0] * 3 + [7.25] * 3)[:, None].expand(-1, 3))
    assert torch.equal(t.support_y, a.support_y) and torch.equal(t.query_y, a.query_y)
    src = t.source
    assert src.kind == "interpolated" and src.classes == a.source.classes and src.step == 4
    assert (src.extra["lam"], src.extra["level"], src.extra["layer"]) == (0.25, "input", None)
    assert src.extra["first"] is a.source and src.extra["partner"] is b.source


def test_classes_pair_by_label_whatever_the_row_order():
    a, b = constant_task((1.0, 2.0, 3.0)), constant_task((10.0, 20.0, 30.0), interleave=True)
    t = interpolate(a, b, 0.5)
    expected = 0.5 * torch.tensor([1.0, 2.0, 3.0]) + 0.5 * torch.tensor([10.0, 20.0, 30.0])
    assert torch.equal(t.support_x[:, 0], expected[t.support_y]) and torch.equal(t.query_x[:, 0], expected[t.query_y])


def test_lam_one_returns_the_first_task_and_lam_zero_the_partner():
    a, b = random_task(0), random_task(1)
    one, zero = interpolate(a, b, 1.0), interpolate(a, b, 0.0)
    assert torch.equal(one.support_x, a.support_x) and torch.equal(one.query_x, a.query_x)
    assert torch.equal(zero.support_x, b.support_x) and torch.equal(zero.query_x, b.query_x)


def test_feature_level_at_lam_one_gives_exactly_the_plain_maml_loss_and_gradient():
    maml = MAML(bn_mlp(), inner_steps=2, inner_lr=0.1)
    a, b = random_task(0), random_task(1)
    mixed = interpolate(a, b, 1.0, level="feature", layer=3)
    assert isinstance(mixed.support_x, MixedInputs) and isinstance(mixed.query_x, MixedInputs)
    params = maml.params()
    plain, mix = maml.loss(params, a), maml.loss(params, mixed)
    assert torch.equal(plain, mix)
    g_plain = torch.autograd.grad(plain, list(params.values()))
    g_mix = torch.autograd.grad(mix, list(params.values()))
    assert all(torch.equal(u, v) for u, v in zip(g_plain, g_mix))


def test_feature_level_matches_a_naive_forward_through_the_encoder():
    net = bn_mlp()
    a, b = random_task(0), random_task(1)
    x = interpolate(a, b, 0.3, level="feature", layer=2).query_x
    h = 0.3 * net.encoder[:2](a.query_x) + 0.7 * net.encoder[:2](b.query_x)  # train mode: batch statistics
    expected = net.head(net.encoder[2:](h))
    assert (functional_forward(net, dict(net.named_parameters()), x) - expected).abs().max() < 1e-12


def test_feature_level_at_layer_zero_equals_input_level():
    maml = MAML(bn_mlp(), inner_steps=1, inner_lr=0.1)
    a, b = random_task(0), random_task(1)
    feature, inputs = interpolate(a, b, 0.3, level="feature", layer=0), interpolate(a, b, 0.3)
    assert torch.equal(maml.loss(maml.params(), feature), maml.loss(maml.params(), inputs))


def test_meta_gradient_of_a_feature_mixed_task_matches_finite_differences():
    maml = MAML(bn_mlp(), inner_steps=2, inner_lr=0.1)
    task = interpolate(random_task(0), random_task(1), 0.4, level="feature", layer=3)
    params = maml.params()
    grads = torch.autograd.grad(maml.loss(params, task), list(params.values()))
    assert all(g.abs().sum() > 0 and torch.isfinite(g).all() for g in grads)  # reaches every layer
    g = torch.Generator().manual_seed(0)
    direction = {k: torch.randn(v.shape, generator=g, dtype=F64) for k, v in params.items()}
    eps = 1e-6
    with torch.no_grad():
        up = {k: v + eps * direction[k] for k, v in params.items()}
        down = {k: v - eps * direction[k] for k, v in params.items()}
    up = {k: v.requires_grad_() for k, v in up.items()}
    down = {k: v.requires_grad_() for k, v in down.items()}
    numeric = (maml.loss(up, task) - maml.loss(down, task)) / (2 * eps)
    analytic = sum((g * direction[k]).sum() for g, k in zip(grads, params))
    analytic, numeric = float(analytic), float(numeric.detach())
    assert abs(analytic - numeric) < 1e-6 * abs(numeric) + 1e-8


def test_maml_meta_gradient_flows_through_feature_mixed_conv4_tasks():
    torch.manual_seed(0)
    maml = MAML(Conv4(in_channels=1, num_classes=2, hidden=2, image_size=16), inner_steps=1, inner_lr=0.1)
    g = torch.Generator().manual_seed(0)

    def images() -> Task:
        sx, qx = torch.randn(2, 1, 16, 16, generator=g), torch.randn(4, 1, 16, 16, generator=g)
        return Task(sx, torch.arange(2), qx, torch.arange(2).repeat_interleave(2))

    a, b = images(), images()
    same = interpolate(a, b, 1.0, level="feature", layer=2)
    assert torch.equal(maml.loss(maml.params(), a), maml.loss(maml.params(), same))
    loss, metrics = maml.meta_loss([interpolate(a, b, 0.5, level="feature", layer=2), a])
    loss.backward()
    assert set(metrics) == {"loss", "acc"} and all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    grads = {k: v.grad for k, v in maml.params().items()}
    assert all(g is not None and torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads.values())
    assert grads["encoder.0.conv.weight"].abs().sum() > 0  # the meta-gradient crossed the mixing layer


def test_protonet_embeds_feature_mixed_support_and_query_together():
    proto = ProtoNet(bn_mlp().encoder)
    a, b = random_task(0), random_task(1)
    plain = proto.loss(proto.params(), a)
    assert torch.equal(plain, proto.loss(proto.params(), interpolate(a, b, 1.0, level="feature", layer=4)))
    assert not torch.equal(plain, proto.loss(proto.params(), interpolate(a, b, 0.5, level="feature", layer=4)))


def test_mixed_inputs_move_with_the_task_and_refuse_plain_tensor_use():
    a, b = random_task(0, dtype=torch.float32), random_task(1, dtype=torch.float32)
    t = interpolate(a, b, 0.5, level="feature", layer=1)
    moved = t.to("cpu", dtype=F64)
    assert isinstance(moved.query_x, MixedInputs) and moved.query_x.dtype == F64
    assert moved.query_x.inputs.dtype == F64 and moved.query_x.partner.dtype == F64 and moved.query_x.lam == 0.5
    with pytest.raises(TypeError, match="not defined on MixedInputs.*functional_forward"):
        F.relu(t.query_x)
    with pytest.raises(TypeError, match="same lam and layer"):
        torch.cat([t.query_x, interpolate(random_task(0), random_task(1), 0.2, level="feature", layer=1).query_x])


def test_feature_level_errors_name_the_model_and_the_layer():
    t = interpolate(random_task(0), random_task(1), 0.5, level="feature", layer=7)
    net = bn_mlp()
    with pytest.raises(ValueError, match="layer=7 is outside the encoder's 0..6 layers"):
        functional_forward(net, dict(net.named_parameters()), t.query_x)
    with pytest.raises(TypeError, match="nn.Sequential `encoder`.*got Linear.*level='input'"):
        functional_forward(torch.nn.Linear(4, 3).to(F64), {}, t.query_x)


def test_interpolate_rejects_bad_arguments():
    a, b = random_task(0), random_task(1)
    with pytest.raises(ValueError, match=r"lam must be a number in \[0, 1\], got 1.5"):
        interpolate(a, b, 1.5)
    with pytest.raises(ValueError, match="level must be one of .*'pixel'"):
        interpolate(a, b, 0.5, level="pixel")
    with pytest.raises(ValueError, match="level='feature' needs layer.*got None"):
        interpolate(a, b, 0.5, level="feature")
    with pytest.raises(ValueError, match="layer=2 only applies to level='feature'"):
        interpolate(a, b, 0.5, layer=2)
    with pytest.raises(ValueError, match=r"support inputs differ in shape: \(6, 4\) vs \(8, 4\)"):
        interpolate(a, random_task(1, n_way=4), 0.5)
    with pytest.raises(ValueError, match="support labels differ per class"):
        interpolate(a, random_task(1, n_way=2, n_shot=3, n_query=3), 0.5)


def test_sample_lambda_is_beta_distributed_and_deterministic():
    g = torch.Generator().manual_seed(0)
    lams = torch.tensor([sample_lambda(2.0, g) for _ in range(2000)], dtype=F64)
    assert lams.min() >= 0 and lams.max() <= 1
    assert abs(float(lams.mean()) - 0.5) < 0.02 and abs(float(lams.var()) - 1 / 20) < 0.01  # Beta(2,2): var 1/20
    assert sample_lambda(0.5, torch.Generator().manual_seed(1)) == sample_lambda(0.5, torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="alpha must be a positive number.*got 0"):
        sample_lambda(0, g)


def test_memory_samples_interpolated_tasks_deterministically():
    memory = TaskMemory(MemoryConfig(capacity_per_class=5))
    for m in range(3):
        memory.add(random_task(m, n_way=3, n_shot=2, n_query=3, dtype=torch.float32))
    other = random_task(9, dtype=torch.float32)
    memory.add(Task(other.support_x, other.support_y, other.query_x, other.query_y, TaskSource(9, (3, 4, 5), 1)))
    a = memory.sample_interpolated(3, 1, 2, torch.Generator().manual_seed(0), alpha=0.5)
    b = memory.sample_interpolated(3, 1, 2, torch.Generator().manual_seed(0), alpha=0.5)
    c = memory.sample_interpolated(3, 1, 2, torch.Generator().manual_seed(1), alpha=0.5)
    assert torch.equal(a.support_x, b.support_x) and a.source.extra["lam"] == b.source.extra["lam"]
    assert not torch.equal(a.support_x, c.support_x)
    assert a.source.kind == "interpolated" and a.source.extra["first"].kind == "memory"
    f = memory.sample_interpolated(3, 1, 2, torch.Generator().manual_seed(0), 0.5, "feature", layer=(1, 3))
    assert isinstance(f.query_x, MixedInputs) and f.query_x.layer in (1, 3) and f.source.extra["layer"] in (1, 3)

import pytest
import torch
from torch import nn

from dfml.inversion import BatchedGeneratorInverter, GeneratorInversionConfig, GeneratorInverter, model_generators
from dfml.inversion.losses import DiffAugment
from dfml.models import MLP, Conv4


def bn_conv_teachers(n=3, dtype=torch.float64):
    """Tiny Conv4 teachers (hidden 8, 16x16) with distinct BN running statistics."""
    torch.manual_seed(0)
    out = []
    for i in range(n):
        t = Conv4(3, 4, hidden=8, image_size=16).to(dtype)
        with torch.no_grad():
            for _ in range(2):
                t(torch.rand(8, 3, 16, 16, dtype=dtype) * 2 + i)
        out.append(t.eval().requires_grad_(False))
    return out


def sequential(teachers, cfg, shape, seed, n_shot=1, n_query=1):
    inv = GeneratorInverter(shape, cfg)
    rngs = model_generators(torch.Generator().manual_seed(seed), len(teachers))
    return [inv.invert(t, n_shot, n_query, r, model_id=i) for i, (t, r) in enumerate(zip(teachers, rngs))], inv.cost


def assert_same_tasks(batched, seq, tol):
    for a, b in zip(batched, seq):
        for name in ("support_x", "query_x"):
            torch.testing.assert_close(getattr(a, name), getattr(b, name), atol=tol, rtol=0)
        assert torch.equal(a.support_y, b.support_y) and torch.equal(a.query_y, b.query_y)
        assert a.source.extra["best_step"] == b.source.extra["best_step"]
        assert a.source.extra["best_loss"] == pytest.approx(b.source.extra["best_loss"], rel=1e-12)
        assert a.source.model_id == b.source.model_id


def test_batched_equals_one_by_one_in_float64_with_bn_prior_and_augmentation():
    teachers = bn_conv_teachers()
    aug = DiffAugment(pad=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cfg = GeneratorInversionConfig(steps=3, nz=8, width=4, l2_weight=0.1, tv_weight=0.1, augment=aug)
    inv = BatchedGeneratorInverter((3, 16, 16), cfg)
    batched = inv.invert_many(teachers, 1, 1, torch.Generator().manual_seed(0), model_ids=[0, 1, 2])
    seq, seq_cost = sequential(teachers, cfg, (3, 16, 16), 0)
    assert_same_tasks(batched, seq, 1e-12)
    # the BN prior is active and differs per teacher (each vmapped slice saw its own running stats)
    losses = [t.source.extra["best_loss"] for t in batched]
    assert len(set(losses)) == 3 and min(losses) > 1.0
    for k in ("teacher_queries", "steps", "images"):
        assert getattr(inv.cost, k) == getattr(seq_cost, k)
    assert inv.cost.teacher_queries == 3 * (2 + 3 * 8)


def test_batched_equals_one_by_one_for_conditional_vector_generators_and_sgd():
    torch.manual_seed(0)
    teachers = [MLP(6, 3, hidden=(8,), batch_norm=True).double().eval().requires_grad_(False) for _ in range(2)]
    for t in teachers:
        t.encoder[1].running_mean.uniform_(-1, 1)
    cfg = GeneratorInversionConfig(steps=4, nz=4, width=8, conditional=True, optimizer="sgd", lr=0.1, z_lr=0.1)
    batched = BatchedGeneratorInverter((6,), cfg).invert_many(teachers, 2, 1, torch.Generator().manual_seed(1),
                                                              model_ids=[0, 1])
    seq, _ = sequential(teachers, cfg, (6,), 1, n_shot=2, n_query=1)
    assert_same_tasks(batched, seq, 1e-12)


def test_batched_leaves_teachers_untouched():
    teachers = bn_conv_teachers(2, torch.float32)
    before = [{k: v.clone() for k, v in t.state_dict().items()} for t in teachers]
    cfg = GeneratorInversionConfig(steps=1, nz=8, width=4)
    tasks = BatchedGeneratorInverter((3, 16, 16), cfg).invert_many(teachers, 1, 2, torch.Generator(),
                                                                   classes=[(1, 2, 3, 4), (5, 6, 7, 8)])
    assert [t.source.classes for t in tasks] == [(1, 2, 3, 4), (5, 6, 7, 8)]
    assert tasks[0].query_x.shape == (8, 3, 16, 16)
    for t, b in zip(teachers, before):
        assert not t.training and all(not m._forward_hooks for m in t.modules())
        assert all(p.grad is None for p in t.parameters())
        assert all(torch.equal(v, b[k]) for k, v in t.state_dict().items())


def test_batched_inverter_refuses_heterogeneous_or_bad_input():
    inv = BatchedGeneratorInverter((6,), GeneratorInversionConfig(steps=1, nz=4, width=8))
    a = MLP(6, 3, hidden=(8,)).eval()
    with pytest.raises(ValueError, match="teacher 1 .* differs in architecture"):
        inv.invert_many([a, MLP(6, 3, hidden=(16,)).eval()], 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="teacher 1 .* group the models by"):
        inv.invert_many([a, nn.Sequential(nn.Linear(6, 3)).eval()], 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="at least one teacher"):
        inv.invert_many([], 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="one model id and one class tuple per teacher"):
        inv.invert_many([a, a], 1, 1, torch.Generator(), model_ids=[0])
    with pytest.raises(ValueError, match="n_shot >= 1"):
        inv.invert_many([a], 0, 1, torch.Generator())
    with pytest.raises(ValueError, match="eval mode"):
        inv.invert_many([MLP(6, 3, hidden=(8,))], 1, 1, torch.Generator())


@pytest.mark.parametrize("algorithm", ["reptile", "fomaml"])
def test_batched_meta_generator_equals_one_by_one_in_float64(algorithm):
    from dfml.inversion import MetaGeneratorConfig, MetaGeneratorInverter

    torch.manual_seed(0)
    teachers = [MLP(6, 3, hidden=(8,), batch_norm=True).double().eval().requires_grad_(False) for _ in range(3)]
    for t in teachers:
        t.encoder[1].running_var.uniform_(0.5, 2)
    inner = GeneratorInversionConfig(steps=3, nz=4, width=8, conditional=True, lr=1e-2, l2_weight=0.1)
    config = MetaGeneratorConfig(inner=inner, algorithm=algorithm, meta_lr=0.5, outer="sgd")
    batched, seq = MetaGeneratorInverter((6,), 3, config), MetaGeneratorInverter((6,), 3, config)
    tasks_b = batched.invert_many(teachers, 1, 2, torch.Generator().manual_seed(4), model_ids=[0, 1, 2])
    rngs = model_generators(torch.Generator().manual_seed(4), 3)
    tasks_s = [seq.invert(t, 1, 2, r, model_id=i) for i, (t, r) in enumerate(zip(teachers, rngs))]
    assert_same_tasks(tasks_b, tasks_s, 1e-12)
    assert all(t.source.extra["inverter"] == "metagen" for t in tasks_b)
    for k in ("teacher_queries", "steps", "images"):
        assert getattr(batched.cost, k) == getattr(seq.cost, k)
    assert batched.meta_update() == pytest.approx(seq.meta_update(), rel=1e-12)
    for p, q in zip(batched.meta_generator.parameters(), seq.meta_generator.parameters()):
        torch.testing.assert_close(p, q, atol=1e-10, rtol=0)  # vmapped matmuls sum in another order


def test_shares_of_one_draw_invert_as_the_whole_stack():
    """What ranks do under torchrun: each inverts its share with its models' generators."""
    teachers = bn_conv_teachers()
    cfg = GeneratorInversionConfig(steps=2, nz=8, width=4)
    whole = BatchedGeneratorInverter((3, 16, 16), cfg).invert_many(teachers, 1, 1, torch.Generator().manual_seed(0))
    rngs = model_generators(torch.Generator().manual_seed(0), 3)
    inv = BatchedGeneratorInverter((3, 16, 16), cfg)
    shares = inv.invert_many(teachers[::2], 1, 1, None, generators=rngs[::2])  # type: ignore[arg-type]
    shares += inv.invert_many(teachers[1:2], 1, 1, None, generators=rngs[1:2])  # type: ignore[arg-type]
    assert_same_tasks([whole[0], whole[2], whole[1]], shares, 1e-12)
    with pytest.raises(ValueError, match="got 2 generators for 3 teachers; pass one per teacher"):
        inv.invert_many(teachers, 1, 1, None, generators=rngs[:2])  # type: ignore[arg-type]

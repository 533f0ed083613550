import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.data.toy import make_toy_world
from dfml.inversion import GeneratorInversionConfig, GeneratorInverter
from dfml.inversion.losses import DiffAugment
from dfml.models import Conv4

FAST = dict(nz=16, width=32, lr=1e-2)


@pytest.fixture(scope="module")
def teacher():
    """A small MLP trained on 5 toy classes (a stand-in for a toy pool model)."""
    ds = make_toy_world()["train"].subset_classes([0, 1, 2, 3, 4])
    x, y = ds.get_batch(range(len(ds))), torch.as_tensor(ds.labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 5))
    opt = torch.optim.Adam(model.parameters(), 3e-2)
    for _ in range(60):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval().requires_grad_(False)


@pytest.fixture()
def bn_teacher():
    """A tiny Conv4 (hidden 8, 16x16 images) with non-trivial BN running statistics."""
    torch.manual_seed(0)
    model = Conv4(3, 4, hidden=8, image_size=16)
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(8, 3, 16, 16) * 2 + 1)
    return model.eval().requires_grad_(False)


def accuracy(teacher, task):
    x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
    return (teacher(x).argmax(1) == y).float().mean().item()


def test_recovered_inputs_are_classified_as_their_targets(teacher):
    inv = GeneratorInverter((32,), GeneratorInversionConfig(steps=40, **FAST))
    task = inv.invert(teacher, 1, 5, torch.Generator().manual_seed(0), model_id=7, classes=(10, 11, 12, 13, 14))
    assert task.support_x.shape == (5, 32) and task.query_x.shape == (25, 32)
    assert task.support_y.tolist() == [0, 1, 2, 3, 4] and task.query_y.tolist() == sum([[c] * 5 for c in range(5)], [])
    assert accuracy(teacher, task) >= 0.9
    assert task.source.model_id == 7 and task.source.classes == (10, 11, 12, 13, 14)
    assert task.source.kind == "synthetic" and task.source.extra["inverter"] == "generator"


def test_cost_accounting_counts_every_teacher_query_by_hand(teacher):
    inv = GeneratorInverter((32,), GeneratorInversionConfig(steps=3, **FAST))
    inv.invert(teacher, 1, 2, torch.Generator().manual_seed(0))
    # 2 probe queries for the output size, then 3 steps x 5 classes x (1 + 2) inputs
    assert inv.cost.teacher_queries == 2 + 3 * 15
    assert inv.cost.steps == 3 and inv.cost.images == 15 and inv.cost.seconds > 0
    inv.invert(teacher, 1, 2, torch.Generator().manual_seed(1))
    assert inv.cost.teacher_queries == 2 * (2 + 3 * 15) and inv.cost.steps == 6


def test_same_seed_same_inputs_other_seed_other_inputs(teacher):
    cfg = GeneratorInversionConfig(steps=2, **FAST)
    a, b, c = (GeneratorInverter((32,), cfg).invert(teacher, 1, 1, torch.Generator().manual_seed(s)) for s in (1, 1, 2))
    assert torch.equal(a.query_x, b.query_x) and not torch.equal(a.query_x, c.query_x)


def test_global_rng_is_left_alone(teacher):
    state = torch.random.get_rng_state()
    GeneratorInverter((32,), GeneratorInversionConfig(steps=1, **FAST)).invert(teacher, 1, 1, torch.Generator())
    assert torch.equal(state, torch.random.get_rng_state())


def test_the_lowest_loss_batch_is_kept(teacher):
    # a huge lr makes the loss jump around, so the best batch is not the last one
    cfg = GeneratorInversionConfig(steps=4, nz=16, width=32, lr=3.0, z_lr=3.0)
    task = GeneratorInverter((32,), cfg).invert(teacher, 1, 1, torch.Generator().manual_seed(0))
    best_step, best_loss = task.source.extra["best_step"], task.source.extra["best_loss"]
    assert best_step < cfg.steps - 1
    x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
    order = torch.argsort(y, stable=True)
    assert F.cross_entropy(teacher(x[order]), y[order]).item() == pytest.approx(best_loss, rel=1e-5)
    # the same run stopped right after the best step produced that batch last
    short = GeneratorInversionConfig(steps=best_step + 1, nz=16, width=32, lr=3.0, z_lr=3.0)
    again = GeneratorInverter((32,), short).invert(teacher, 1, 1, torch.Generator().manual_seed(0))
    assert again.source.extra["best_step"] == best_step and torch.equal(again.query_x, task.query_x)
    assert all(torch.equal(a, b) for a, b in ((again.support_x, task.support_x),))


def test_images_with_bn_prior_and_augmentation_leave_the_teacher_untouched(bn_teacher):
    before = {k: v.clone() for k, v in bn_teacher.state_dict().items()}
    aug = DiffAugment(pad=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    cfg = GeneratorInversionConfig(steps=2, nz=8, width=4, tv_weight=0.1, l2_weight=0.01, augment=aug)
    task = GeneratorInverter((3, 16, 16), cfg).invert(bn_teacher, 2, 1, torch.Generator().manual_seed(0))
    # sigmoid images in [0, 1], handed out normalised like real episodes: (x - 0.5) / 0.25 in [-2, 2]
    assert task.support_x.shape == (8, 3, 16, 16) and -2 <= task.support_x.min() and task.support_x.max() <= 2
    assert task.support_x.min() < 0
    assert not bn_teacher.training
    assert all(not m._forward_hooks for m in bn_teacher.modules())
    assert all(p.grad is None and not p.requires_grad for p in bn_teacher.parameters())
    for k, v in bn_teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_a_student_adds_the_boundary_term_without_touching_the_student(teacher):
    torch.manual_seed(1)
    student = nn.Sequential(nn.Linear(32, 8), nn.ReLU(), nn.Linear(8, 5))
    before = [p.clone() for p in student.parameters()]
    cfg = GeneratorInversionConfig(steps=2, boundary_weight=10.0, **FAST)
    plain = GeneratorInverter((32,), cfg).invert(teacher, 1, 1, torch.Generator().manual_seed(0))
    with_s = GeneratorInverter((32,), cfg).invert(teacher, 1, 1, torch.Generator().manual_seed(0), student=student)
    assert not torch.equal(plain.query_x, with_s.query_x)
    assert all(torch.equal(a, b) and b.grad is None for a, b in zip(before, student.parameters()))


def test_conditional_generator_inverts_too(teacher):
    cfg = GeneratorInversionConfig(steps=30, conditional=True, **FAST)
    task = GeneratorInverter((32,), cfg).invert(teacher, 1, 3, torch.Generator().manual_seed(0))
    assert accuracy(teacher, task) >= 0.9


def test_bad_requests_and_configs_are_refused(teacher):
    inv = GeneratorInverter((32,), GeneratorInversionConfig(steps=1, **FAST))
    with pytest.raises(ValueError, match="n_shot >= 1"):
        inv.invert(teacher, 0, 1, torch.Generator())
    with pytest.raises(ValueError, match=r"name 2 classes but the teacher has 5 outputs"):
        inv.invert(teacher, 1, 1, torch.Generator(), classes=(3, 4))
    with pytest.raises(TypeError, match="must be a torch.nn.Module"):
        inv.invert("teacher", 1, 1, torch.Generator())
    teacher.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            inv.invert(teacher, 1, 1, torch.Generator())
    finally:
        teacher.eval()
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        GeneratorInversionConfig(steps=0)
    with pytest.raises(ValueError, match="norm must be one of"):
        GeneratorInversionConfig(norm="group")


def test_generator_inverters_follow_the_inverter_protocol():
    from dfml.inversion import Inverter, MetaGeneratorInverter

    assert isinstance(GeneratorInverter((32,)), Inverter)
    assert isinstance(MetaGeneratorInverter((32,), 5), Inverter)

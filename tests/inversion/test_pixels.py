import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.data.toy import make_toy_world
from dfml.inversion import PixelInversionConfig, PixelInverter


@pytest.fixture(scope="module")
def teacher():
    """An MLP trained on 5 toy classes (a stand-in for a pool model)."""
    ds = make_toy_world()["train"].subset_classes([0, 1, 2, 3, 4])
    x, y = ds.get_batch(range(len(ds))), torch.as_tensor(ds.labels)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 5))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def bn_teacher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(16, 3, 8, 8) * 2 + 1)  # running stats of a shifted distribution
    return model.eval().requires_grad_(False)


def test_recovered_inputs_are_classified_as_their_targets(teacher):
    inv = PixelInverter((32,), PixelInversionConfig(steps=100))
    task = inv.invert(teacher, 2, 10, torch.Generator().manual_seed(0), model_id=3, classes=(0, 1, 2, 3, 4))
    assert task.support_x.shape == (10, 32) and task.query_x.shape == (50, 32)
    assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    acc = (teacher(torch.cat([task.support_x, task.query_x])).argmax(1)
           == torch.cat([task.support_y, task.query_y])).float().mean()
    assert acc >= 0.9
    assert task.source.model_id == 3 and task.source.kind == "synthetic"


def test_cost_accounting_counts_every_teacher_query(teacher):
    inv = PixelInverter((32,), PixelInversionConfig(steps=7))
    inv.synthesize(teacher, 4, torch.Generator().manual_seed(0))
    # 2 probe queries for the output size, 7 steps x 20 inputs, then nothing else
    assert inv.cost.teacher_queries == 2 + 7 * 20
    assert inv.cost.steps == 7 and inv.cost.images == 20 and inv.cost.seconds > 0


def test_same_seed_same_inputs_other_seed_other_inputs(teacher):
    cfg = PixelInversionConfig(steps=5)
    a, _ = PixelInverter((32,), cfg).synthesize(teacher, 2, torch.Generator().manual_seed(1))
    b, _ = PixelInverter((32,), cfg).synthesize(teacher, 2, torch.Generator().manual_seed(1))
    c, _ = PixelInverter((32,), cfg).synthesize(teacher, 2, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bn_prior_pulls_statistics_to_running_ones_and_leaves_teacher_untouched(bn_teacher):
    before = {k: v.clone() for k, v in bn_teacher.state_dict().items()}
    bn = bn_teacher[1]
    inputs = []
    h = bn.register_forward_hook(lambda m, i, o: inputs.append(i[0]))
    cfg0 = PixelInversionConfig(steps=60, bn_weight=0.0, l2_weight=0.0)
    cfg1 = PixelInversionConfig(steps=60, bn_weight=1.0, l2_weight=0.0)
    gaps = []
    for cfg in (cfg0, cfg1):
        x, _ = PixelInverter((3, 8, 8), cfg).synthesize(bn_teacher, 4, torch.Generator().manual_seed(0))
        inputs.clear()
        bn_teacher(x)
        gaps.append((inputs[0].mean((0, 2, 3)) - bn.running_mean).norm().item())
    h.remove()
    assert gaps[1] < 0.5 * gaps[0]
    assert len(bn._forward_hooks) == 0  # the inverter's hooks are gone
    for k, v in bn_teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in bn_teacher.parameters())


def test_teacher_in_training_mode_is_refused(teacher):
    teacher.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            PixelInverter((32,)).synthesize(teacher, 1, torch.Generator())
    finally:
        teacher.eval()


def test_bad_config_is_refused():
    with pytest.raises(ValueError, match="steps must be >= 1"):
        PixelInversionConfig(steps=0)

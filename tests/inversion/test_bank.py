"""PixelBankInverter: accuracy of recovered inputs, exact cost, determinism, teacher untouched, resume, errors."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.data.toy import make_toy_world
from dfml.inversion import Inverter, PixelBankInverter, PixelBankConfig


@pytest.fixture(scope="module")
def teacher():
    """An MLP trained on 5 toy classes (a stand-in for a pool model)."""
    ds = make_toy_world()["train"].subset_classes([0, 1, 2, 3, 4])
    keep = [i for i in range(len(ds)) if i % 100 < 40]  # 40 examples per class are plenty
    x, y = ds.get_batch(keep), torch.as_tensor(ds.labels[keep])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # module fixtures run before the one-thread autouse fixture
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 5))
    for _ in range(100):  # full-batch gradient descent (torch.optim's first step imports dynamo: ~10 s)
        grads = torch.autograd.grad(F.cross_entropy(model(x), y), list(model.parameters()))
        with torch.no_grad():
            for p, g in zip(model.parameters(), grads):
                p -= 0.5 * g
    torch.set_num_threads(threads)
    return model.eval().requires_grad_(False)


@pytest.fixture
def bn_teacher():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3))
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, 3, 8, 8) * 2 + 1)
    return model.eval()  # parameters still require grad: the bank must not write .grad


def _acc(teacher, task):
    x = torch.cat([task.support_x, task.query_x])
    y = torch.cat([task.support_y, task.query_y])
    return (teacher(x).argmax(1) == y).double().mean().item()


def test_bank_follows_the_inverter_protocol_and_recovers_classified_inputs(teacher):
    bank = PixelBankInverter((32,), PixelBankConfig(per_class=12, steps=25))
    assert isinstance(bank, Inverter)
    g = torch.Generator().manual_seed(0)
    accs = [_acc(teacher, bank.invert(teacher, 2, 4, g, model_id=7, classes=(10, 11, 12, 13, 14)))
            for _ in range(4)]
    task = bank.invert(teacher, 2, 4, g, model_id=7, classes=(10, 11, 12, 13, 14))
    assert task.support_x.shape == (10, 32) and task.query_x.shape == (20, 32)
    assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert task.source.model_id == 7 and task.source.classes == (10, 11, 12, 13, 14)
    assert task.source.kind == "synthetic" and task.source.extra == {"bank_step": 125, "hardened": False}
    assert _acc(teacher, task) >= 0.9
    # the whole bank (all 60 inputs), not just the sampled ones, is classified as its classes
    x = bank.images(7)
    assert x.shape == (5, 12, 32)
    assert (teacher(x.view(-1, 32)).argmax(1) == torch.arange(5).repeat_interleave(12)).double().mean() >= 0.9
    assert accs[-1] >= accs[0]  # the bank keeps improving across visits


def test_tasks_are_drawn_from_the_bank_entries(teacher):
    bank = PixelBankInverter((32,), PixelBankConfig(per_class=6, steps=1))
    task = bank.invert(teacher, 1, 2, torch.Generator().manual_seed(0), model_id=0)
    x = bank.images(0)
    for c in range(5):
        rows = torch.cat([task.support_x[task.support_y == c], task.query_x[task.query_y == c]])
        hits = [(x[c] == r).all(-1).nonzero().flatten().tolist() for r in rows]
        assert all(len(h) == 1 for h in hits) and len({h[0] for h in hits}) == 3  # distinct bank inputs of class c


def test_cost_accounting_is_exact(teacher):
    bank = PixelBankInverter((32,), PixelBankConfig(per_class=4, steps=3))
    g = torch.Generator().manual_seed(0)
    bank.invert(teacher, 1, 1, g, model_id=0)
    # 1 probe query, then 3 steps x 5 classes x 4 inputs; 20 inputs created
    assert bank.cost.teacher_queries == 1 + 3 * 20
    assert bank.cost.steps == 3 and bank.cost.images == 20 and bank.cost.seconds > 0
    bank.invert(teacher, 1, 1, g, model_id=0)  # a revisit: no probe, no new inputs
    assert bank.cost.teacher_queries == 1 + 6 * 20 and bank.cost.steps == 6 and bank.cost.images == 20
    bank.refine(teacher, 1, g, steps=2)
    assert bank.cost.teacher_queries == 2 + 8 * 20 and bank.cost.steps == 8 and bank.cost.images == 40


def test_same_seed_same_bank_other_seed_other_bank(bn_teacher):
    cfg = PixelBankConfig(per_class=2, steps=3, tv_weight=0.1)

    def run(seed):
        bank = PixelBankInverter((3, 8, 8), cfg)
        task = bank.invert(bn_teacher, 1, 1, torch.Generator().manual_seed(seed), model_id=0)
        return bank.images(0), task

    (a, ta), (b, tb), (c, _) = run(1), run(1), run(2)
    assert torch.equal(a, b) and torch.equal(ta.query_x, tb.query_x) and not torch.equal(a, c)


def test_teacher_is_left_exactly_as_it_was(bn_teacher):
    before = {k: v.clone() for k, v in bn_teacher.state_dict().items()}
    bank = PixelBankInverter((3, 8, 8), PixelBankConfig(per_class=2, steps=3))
    bank.invert(bn_teacher, 1, 1, torch.Generator().manual_seed(0), model_id=0)
    bank.refine_many([bn_teacher], [1], torch.Generator().manual_seed(0))
    assert not bn_teacher.training and not any(m.training for m in bn_teacher.modules())
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in bn_teacher.modules())
    assert all(p.grad is None for p in bn_teacher.parameters())
    for k, v in bn_teacher.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_bn_prior_pulls_bank_statistics_towards_the_running_ones(bn_teacher):
    gaps = []
    for w in (0.0, 1.0):
        bank = PixelBankInverter((3, 8, 8), PixelBankConfig(per_class=4, steps=40, bn_weight=w, l2_weight=0.0))
        bank.refine(bn_teacher, 0, torch.Generator().manual_seed(0))
        h = bn_teacher[0](bank.images(0).view(-1, 3, 8, 8))
        gaps.append((h.mean((0, 2, 3)) - bn_teacher[1].running_mean).norm().item())
    assert gaps[1] < 0.5 * gaps[0]


def test_state_dict_round_trip_resumes_exactly(teacher):
    cfg = PixelBankConfig(per_class=4, steps=2)
    a = PixelBankInverter((32,), cfg)
    ga = torch.Generator().manual_seed(0)
    a.invert(teacher, 1, 1, ga, model_id=3)
    a.feedback(3, 0.5)
    state = a.state_dict()
    b = PixelBankInverter((32,), cfg)
    b.load_state_dict(state)
    gb = torch.Generator()
    gb.set_state(ga.get_state())
    ta, tb = a.invert(teacher, 1, 2, ga, model_id=3), b.invert(teacher, 1, 2, gb, model_id=3)
    assert torch.equal(ta.query_x, tb.query_x) and torch.equal(a.images(3), b.images(3))
    assert a.cost.teacher_queries == b.cost.teacher_queries and b.easiness == {3: 0.5}
    with pytest.raises(ValueError, match="per_class=5"):
        PixelBankInverter((32,), PixelBankConfig(per_class=5)).load_state_dict(state)


def test_error_paths_name_the_value_and_the_fix(teacher):
    bank = PixelBankInverter((32,), PixelBankConfig(per_class=3))
    g = torch.Generator()
    with pytest.raises(ValueError, match="needs model_id="):
        bank.invert(teacher, 1, 1, g)
    with pytest.raises(ValueError, match="raise PixelBankConfig.per_class"):
        bank.invert(teacher, 2, 2, g, model_id=0)
    with pytest.raises(KeyError, match="no bank entry for model 9"):
        bank.images(9)
    with pytest.raises(ValueError, match="curriculum_threshold is a query accuracy"):
        PixelBankConfig(curriculum_threshold=1.5)
    with pytest.raises(ValueError, match="per_class must be >= 1, got 0"):
        PixelBankConfig(per_class=0)
    with pytest.raises(ValueError, match="positive sizes"):
        PixelBankInverter(())
    teacher.train()
    try:
        with pytest.raises(ValueError, match="eval mode"):
            bank.invert(teacher, 1, 1, g, model_id=0)
    finally:
        teacher.eval()

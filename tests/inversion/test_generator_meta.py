import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.data.toy import make_toy_world
from dfml.inversion import GeneratorInversionConfig, MetaGeneratorConfig, MetaGeneratorInverter
from dfml.inversion.generator import optimise_generator

INNER = GeneratorInversionConfig(steps=5, lr=1e-2, z_lr=1e-2, nz=16, width=32, conditional=True, bn_weight=0.1)


@pytest.fixture(scope="module")
def teachers():
    """Five BN-MLP teachers on random 5-class subsets of the toy world (the last one is held out)."""
    world = make_toy_world()["train"]
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(5):
        ds = world.subset_classes(torch.randperm(64, generator=g)[:5].tolist())
        x, y = ds.get_batch(range(len(ds))), torch.as_tensor(ds.labels)
        x, y = x[::4], y[::4]  # 25 examples a class are plenty for a toy teacher
        torch.manual_seed(i)
        model = nn.Sequential(nn.Linear(32, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 5))
        opt = torch.optim.Adam(model.parameters(), 3e-2)
        for _ in range(30):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
        out.append(model.eval().requires_grad_(False))
    return out


def accuracy(teacher, task):
    x, y = torch.cat([task.support_x, task.query_x]), torch.cat([task.support_y, task.query_y])
    return (teacher(x).argmax(1) == y).float().mean().item()


def test_meta_trained_generator_recovers_a_held_out_teacher_in_5_steps_better_than_a_fresh_one(teachers):
    config = MetaGeneratorConfig(inner=INNER, algorithm="reptile", meta_lr=1.0, outer="sgd")
    meta, fresh = MetaGeneratorInverter((32,), 5, config), MetaGeneratorInverter((32,), 5, config)
    g = torch.Generator().manual_seed(0)
    for _ in range(15):
        for t in teachers[:4]:
            meta.invert(t, 1, 3, g)
        meta.meta_update()
    held_out = teachers[4]
    m = [meta.invert(held_out, 1, 5, torch.Generator().manual_seed(s)) for s in (10, 11)]
    f = [fresh.invert(held_out, 1, 5, torch.Generator().manual_seed(s)) for s in (10, 11)]
    assert min(accuracy(held_out, t) for t in m) >= 0.9
    # the same 5 steps reach a clearly lower inversion objective (class + BN-statistics prior)
    assert max(t.source.extra["best_loss"] for t in m) < 0.7 * min(t.source.extra["best_loss"] for t in f)


def test_reptile_with_unit_sgd_step_lands_on_the_adapted_generator(teachers):
    config = MetaGeneratorConfig(inner=INNER, algorithm="reptile", meta_lr=1.0, outer="sgd")
    inv = MetaGeneratorInverter((32,), 5, config)
    start = copy.deepcopy(inv.meta_generator)
    inv.invert(teachers[0], 1, 1, torch.Generator().manual_seed(3))
    # redo the adaptation by hand: z is the first draw, nothing else is random for vectors
    g = torch.Generator().manual_seed(3)
    z = torch.randn((10, INNER.nz), generator=g).requires_grad_(True)
    y = torch.arange(5).repeat_interleave(2)
    optimise_generator(start, z, y, teachers[0], INNER, g)
    stats = inv.meta_update()
    assert stats["n_tasks"] == 1.0 and stats["meta_grad_norm"] > 0
    for a, b in zip(inv.meta_generator.parameters(), start.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_fomaml_pays_one_extra_forward_per_teacher_and_moves_the_meta_generator(teachers):
    config = MetaGeneratorConfig(inner=INNER, algorithm="fomaml", meta_lr=1e-2, outer="adam")
    inv = MetaGeneratorInverter((32,), 5, config)
    before = [p.clone() for p in inv.meta_generator.parameters()]
    inv.invert(teachers[0], 1, 2, torch.Generator().manual_seed(0))
    inv.invert(teachers[1], 1, 2, torch.Generator().manual_seed(1))
    assert inv.cost.teacher_queries == 2 * (2 + (5 + 1) * 15) and inv.cost.steps == 10
    assert inv.meta_update()["n_tasks"] == 2.0
    assert any(not torch.equal(a, b) for a, b in zip(before, inv.meta_generator.parameters()))


def test_state_dict_round_trip_resumes_identically(teachers):
    config = MetaGeneratorConfig(inner=INNER, algorithm="fomaml", meta_lr=1e-2, outer="adam")
    a = MetaGeneratorInverter((32,), 5, config)
    a.invert(teachers[0], 1, 1, torch.Generator().manual_seed(0))
    a.meta_update()
    b = MetaGeneratorInverter((32,), 5, MetaGeneratorConfig(inner=INNER, algorithm="fomaml", meta_lr=1e-2,
                                                            outer="adam", seed=9))
    b.load_state_dict(a.state_dict())
    assert b.updates == 1 and b.cost.teacher_queries == a.cost.teacher_queries
    for inv in (a, b):
        inv.invert(teachers[1], 1, 1, torch.Generator().manual_seed(5))
        inv.meta_update()
    for p, q in zip(a.meta_generator.parameters(), b.meta_generator.parameters()):
        assert torch.equal(p, q)


def test_meta_generator_errors_name_the_fix(teachers):
    inv = MetaGeneratorInverter((32,), 3, MetaGeneratorConfig(inner=INNER))
    with pytest.raises(RuntimeError, match=r"call invert\(\) first"):
        inv.meta_update()
    with pytest.raises(ValueError, match="built for n_way=3"):
        inv.invert(teachers[0], 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="algorithm must be one of"):
        MetaGeneratorConfig(algorithm="maml")
    with pytest.raises(ValueError, match="saved by a 'reptile'"):
        MetaGeneratorInverter((32,), 3, MetaGeneratorConfig(inner=INNER, algorithm="fomaml")).load_state_dict(
            inv.state_dict())


def test_discarded_adaptations_do_not_move_the_meta_generator(teachers):
    inv = MetaGeneratorInverter((32,), 5, MetaGeneratorConfig(inner=INNER))
    before = copy.deepcopy(inv.meta_generator.state_dict())
    inv.invert(teachers[4], 1, 3, torch.Generator().manual_seed(0))
    assert inv.discard_pending() == 1 and inv.discard_pending() == 0
    with pytest.raises(RuntimeError, match="call invert"):
        inv.meta_update()  # nothing left to learn from
    assert all(torch.equal(before[k], v) for k, v in inv.meta_generator.state_dict().items())

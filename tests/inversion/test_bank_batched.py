"""Batched refinement (vmap over stacked teachers) against the one-by-one path, in float64."""

import pytest
import torch
from torch import nn

from dfml.inversion import PixelBankInverter, PixelBankConfig
from dfml.models import MLP, Conv4


def _teachers(make, n, x_shape):
    out = []
    for i in range(n):
        torch.manual_seed(100 + i)
        m = make().double()
        with torch.no_grad():  # give every BN layer its own running statistics
            m.train()
            for _ in range(2):
                m(torch.randn(8, *x_shape, dtype=torch.float64) * (1 + i) + i)
        out.append(m.eval().requires_grad_(False))
    return out


def _compare(teachers, shape, cfg, steps=3):
    one, many = PixelBankInverter(shape, cfg), PixelBankInverter(shape, cfg)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ids = [4, 0, 9][: len(teachers)]
    seq = [one.refine(t, i, g1, steps) for t, i in zip(teachers, ids)]
    bat = many.refine_many(teachers, ids, g2, steps)
    for i, a, b in zip(ids, seq, bat):
        assert a.keys() == b.keys()
        for k in a:
            assert a[k] == pytest.approx(b[k], rel=1e-12, abs=1e-12), (i, k)
        assert torch.allclose(one.images(i), many.images(i), rtol=0, atol=1e-10)
        # the Adam moments are running averages of the gradients: equal moments, equal gradients
        for ma, mb in zip(one._adam[i][:2], many._adam[i][:2]):
            assert torch.allclose(ma, mb, rtol=1e-9, atol=1e-14)
        assert one._adam[i][2] == many._adam[i][2] == steps
    assert one.cost.teacher_queries == many.cost.teacher_queries
    assert one.cost.steps == many.cost.steps and one.cost.images == many.cost.images
    assert torch.equal(g1.get_state(), g2.get_state())  # the same draws from the caller's generator
    return one, many


def test_batched_equals_one_by_one_for_bn_mlps_in_float64():
    teachers = _teachers(lambda: MLP(6, num_classes=3, hidden=(8,), batch_norm=True), 3, (6,))
    one, _ = _compare(teachers, (6,), PixelBankConfig(per_class=4, steps=3))
    assert one.images(4).dtype == torch.float64


def test_batched_equals_one_by_one_for_conv4_images_with_augmentation_and_priors():
    teachers = _teachers(lambda: Conv4(in_channels=3, num_classes=2, hidden=8, image_size=16), 2, (3, 16, 16))
    cfg = PixelBankConfig(per_class=2, steps=2, tv_weight=0.5, augment_pad=2, augment_flip=True)
    one, many = _compare(teachers, (3, 16, 16), cfg, steps=2)
    assert not torch.equal(one.images(4), one.images(0))


def test_a_first_batched_step_gives_exactly_the_one_by_one_gradient():
    teachers = _teachers(lambda: MLP(6, num_classes=3, hidden=(8,), batch_norm=True), 2, (6,))
    one, many = _compare(teachers, (6,), PixelBankConfig(per_class=3), steps=1)
    # after one step m = (1 - beta1) * grad: the batched gradient is the one-by-one gradient
    g_one, g_many = one._adam[4][0] / 0.1, many._adam[4][0] / 0.1
    assert g_one.abs().max() > 0 and torch.allclose(g_one, g_many, rtol=1e-10, atol=1e-14)


def test_refine_many_refuses_mixed_architectures_repeated_ids_and_training_mode():
    a = MLP(6, num_classes=3, hidden=(8,)).eval()
    b = MLP(6, num_classes=3, hidden=(9,)).eval()
    bank = PixelBankInverter((6,))
    g = torch.Generator()
    with pytest.raises(ValueError, match="one architecture"):
        bank.refine_many([a, b], [0, 1], g)
    with pytest.raises(ValueError, match="repeated model ids"):
        bank.refine_many([a, a], [0, 0], g)
    with pytest.raises(ValueError, match="one model id per teacher"):
        bank.refine_many([a], [0, 1], g)
    with pytest.raises(ValueError, match="eval mode"):
        bank.refine_many([a, nn.Linear(6, 3)], [0, 1], g)

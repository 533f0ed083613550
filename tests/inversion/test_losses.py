import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.inversion.losses import (
    BNStatMatch,
    DiffAugment,
    boundary_loss,
    class_loss,
    kd_loss,
    kl_per_sample,
    l2_prior,
    total_variation,
)


def test_class_loss_is_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]], dtype=torch.float64)  # softmax = [1/4, 3/4]
    assert class_loss(logits, torch.tensor([1])).item() == pytest.approx(-math.log(0.75))
    with pytest.raises(ValueError, match=r"logits \[B, C\] and targets \[B\]"):
        class_loss(logits, torch.tensor([1, 0]))


def test_kd_loss_matches_a_hand_computed_kl_with_the_temperature_factor():
    s = torch.tensor([[0.0, 0.0], [0.0, 0.0]], dtype=torch.float64)  # student: [1/2, 1/2]
    t = torch.tensor([[0.0, 2 * math.log(3.0)], [0.0, 0.0]], dtype=torch.float64)  # at T=2: [1/4, 3/4]
    # row 0: KL([1/4,3/4] || [1/2,1/2]) = 1/4 ln(1/2) + 3/4 ln(3/2); row 1: 0
    kl0 = 0.25 * math.log(0.5) + 0.75 * math.log(1.5)
    assert kl_per_sample(s, t, 2.0).tolist() == pytest.approx([kl0, 0.0])
    assert kd_loss(s, t, 2.0).item() == pytest.approx(4 * kl0 / 2)
    ref = F.kl_div(F.log_softmax(s / 2, -1), F.log_softmax(t / 2, -1), log_target=True, reduction="batchmean") * 4
    assert kd_loss(s, t, 2.0).item() == pytest.approx(ref.item())


def test_kd_loss_is_zero_for_identical_logits_and_positive_otherwise():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(6, 5, generator=g), torch.randn(6, 5, generator=g)
    assert kd_loss(a, a.clone()).item() == pytest.approx(0.0, abs=1e-7)
    assert kd_loss(a, b).item() > 0


def test_kd_loss_rejects_mismatched_shapes_and_bad_temperature():
    with pytest.raises(ValueError, match="map the teacher's outputs"):
        kd_loss(torch.zeros(2, 5), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        kd_loss(torch.zeros(2, 5), torch.zeros(2, 5), temperature=0.0)


def test_boundary_loss_counts_only_agreeing_samples_negated():
    s = torch.tensor([[2.0, 0.0], [2.0, 0.0]], dtype=torch.float64)
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]], dtype=torch.float64)  # row 0 agrees, row 1 does not
    kl = kl_per_sample(s, t)
    assert boundary_loss(s, t).item() == pytest.approx(-kl[0].item() / 2)
    # nothing agrees: zero, and its gradient is zero
    s2 = torch.tensor([[0.0, 2.0]], requires_grad=True)
    out = boundary_loss(s2, torch.tensor([[1.0, 0.0]]))
    out.backward()
    assert out.item() == 0.0 and s2.grad.abs().sum() == 0


def test_boundary_loss_gradient_step_increases_disagreement():
    s = torch.tensor([[1.0, 0.0, 0.5]], requires_grad=True)
    t = torch.tensor([[3.0, 0.0, 0.0]])
    before = kl_per_sample(s, t).item()
    boundary_loss(s, t).backward()
    with torch.no_grad():
        s2 = s - 0.1 * s.grad
    assert kl_per_sample(s2, t).item() > before


def test_total_variation_by_hand():
    x = torch.tensor([[[[0.0, 1.0], [2.0, 4.0]]]])  # vertical diffs 2, 3; horizontal diffs 1, 2
    assert total_variation(x, p=1).item() == pytest.approx(2.5 + 1.5)
    assert total_variation(x, p=2).item() == pytest.approx((4 + 9) / 2 + (1 + 4) / 2)
    assert total_variation(torch.ones(2, 3, 5, 5)).item() == 0.0
    with pytest.raises(ValueError, match=r"images \[B, C, H, W\]"):
        total_variation(torch.zeros(3, 4))


def test_l2_prior_is_the_mean_square():
    assert l2_prior(torch.tensor([1.0, -2.0, 3.0, 0.0])).item() == pytest.approx(14 / 4)


def _bn_teacher() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 2))
    m[1].running_mean.copy_(torch.tensor([0.5, -0.5, 1.0, 0.0]))
    m[1].running_var.copy_(torch.tensor([1.0, 2.0, 0.5, 1.0]))
    return m.eval().requires_grad_(False)


def test_bn_statistics_loss_by_hand_and_hooks_removed():
    teacher = _bn_teacher()
    x = torch.randn(16, 3, dtype=torch.float32)
    h = teacher[0](x)
    want = (torch.linalg.vector_norm(h.mean(0) - teacher[1].running_mean)
            + torch.linalg.vector_norm(h.var(0, unbiased=False) - teacher[1].running_var))
    with BNStatMatch(teacher, layer_weights=[3.0]) as bn:
        teacher(x)
        got = bn.loss()
        assert bn.loss() is None  # cleared after reading
    assert got.item() == pytest.approx(3 * want.item(), rel=1e-5)
    assert not teacher[1]._forward_hooks
    assert not teacher.training and teacher[1].running_mean.tolist() == [0.5, -0.5, 1.0, 0.0]


def test_bn_statistics_hooks_are_removed_even_after_an_error():
    teacher = _bn_teacher()
    with pytest.raises(RuntimeError):
        with BNStatMatch(teacher):
            teacher(torch.zeros(2, 7))  # wrong width
    assert not teacher[1]._forward_hooks


def test_bn_statistics_refuses_train_mode_and_bad_weights():
    teacher = _bn_teacher()
    with pytest.raises(ValueError, match="one weight per layer"):
        BNStatMatch(teacher, layer_weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="eval mode"):
        BNStatMatch(teacher.train())


def test_bn_statistics_on_a_teacher_without_batchnorm_is_inactive():
    with BNStatMatch(nn.Linear(3, 2).eval()) as bn:
        assert not bn.active
        assert bn.loss() is None


def test_diff_augment_crops_flips_and_normalises_differentiably():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float64).view(2, 1, 4, 4).requires_grad_(True)
    aug = DiffAugment(pad=1, flip=True)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # every output window is a shifted (maybe flipped) view of the zero-padded input
    xp = F.pad(x.detach(), (1, 1, 1, 1))
    for b in range(2):
        windows = [xp[b, :, i:i + 4, j:j + 4] for i in range(3) for j in range(3)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[b].detach(), w) for w in windows)
    out.sum().backward()
    assert x.grad is not None and x.grad.sum() > 0
    same = aug(x, torch.Generator().manual_seed(0))
    assert torch.equal(same, out)


def test_diff_augment_without_crop_or_flip_only_normalises():
    x = torch.rand(3, 2, 5, 5)
    aug = DiffAugment(pad=0, flip=False, mean=(0.5, 0.25), std=(2.0, 0.5))
    out = aug(x, torch.Generator())
    assert torch.allclose(out[:, 0], (x[:, 0] - 0.5) / 2.0) and torch.allclose(out[:, 1], (x[:, 1] - 0.25) / 0.5)
    v = torch.rand(4, 2)
    assert torch.allclose(aug(v, torch.Generator()), (v - torch.tensor([0.5, 0.25])) / torch.tensor([2.0, 0.5]))
    with pytest.raises(ValueError, match="both mean and std"):
        DiffAugment(mean=(0.5,))

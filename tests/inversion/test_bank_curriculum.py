"""The bank's episode curriculum: harder query sets once the meta-model finds a model's tasks easy."""

import pytest
import torch
import torch.nn.functional as F

from dfml.inversion import AdaptedStudent, PixelBankInverter, PixelBankConfig
from dfml.meta import MAML
from dfml.models import MLP


@pytest.fixture
def teacher():
    """A random 4-class MLP teacher: the bank makes inputs it classifies, which is all this needs."""
    torch.manual_seed(3)
    return MLP(12, num_classes=4, hidden=(16,)).eval().requires_grad_(False)


@pytest.fixture
def maml():
    torch.manual_seed(4)
    return MAML(MLP(12, num_classes=4, hidden=(16,)), inner_steps=2, inner_lr=0.1)


def _cfg(**kw):
    return PixelBankConfig(per_class=6, steps=60, lr=0.1, l2_weight=1e-3, **kw)


def _task(teacher, cfg, student=None, seed=0):
    bank = PixelBankInverter((12,), cfg)
    task = bank.invert(teacher, 2, 3, torch.Generator().manual_seed(seed), model_id=1, student=student)
    return bank, task


def _student_loss(student, task):
    return F.cross_entropy(student(task.support_x, task.support_y, task.query_x), task.query_y).item()


def test_a_hard_step_raises_the_students_query_loss_and_keeps_the_teachers_classes(teacher, maml):
    student = AdaptedStudent(maml)
    before_bank, easy = _task(teacher, _cfg())
    bank, hard = _task(teacher, _cfg(curriculum=True, curriculum_threshold=0.0, hard_steps=3, hard_lr=0.2), student)
    assert torch.equal(easy.support_x, hard.support_x) and not torch.equal(easy.query_x, hard.query_x)
    assert _student_loss(student, hard) > _student_loss(student, easy) + 0.05
    assert (teacher(easy.query_x).argmax(1) == easy.query_y).double().mean() >= 0.9
    assert (teacher(hard.query_x).argmax(1) == hard.query_y).double().mean() >= 0.9
    assert hard.source.extra["hardened"] and bank.hard_steps_taken == 3
    assert bank.student_calls == 1 + 3  # one measurement, one call per hard step
    assert bank.cost.teacher_queries == before_bank.cost.teacher_queries + 3 * 12
    # the hardened inputs replace their originals in the bank; nothing else moved
    changed = (bank.images(1) != before_bank.images(1)).any(-1)
    assert changed.sum() == 12 and all(changed[c].sum() == 3 for c in range(4))
    moved = bank.images(1)[changed]
    assert all((moved == q).all(-1).any() for q in hard.query_x)
    assert all(p.grad is None for p in maml.parameters())  # the meta-model got no gradient


def test_with_the_curriculum_off_the_student_is_never_called(teacher):
    def student(*_):
        raise AssertionError("the student must not be called")

    bank, task = _task(teacher, _cfg(), student=student)
    assert bank.student_calls == 0 and not task.source.extra["hardened"]


def test_below_the_threshold_the_student_is_only_measured_and_nothing_changes(teacher):
    calls = []

    def always_wrong(sx, sy, qx):
        calls.append(qx.shape)
        return F.one_hot((torch.arange(len(qx)) // 3 + 1) % 4, 4).double()  # every query label is off by one

    ref, easy = _task(teacher, _cfg())
    bank, task = _task(teacher, _cfg(curriculum=True, curriculum_threshold=0.5), student=always_wrong)
    assert calls == [torch.Size([12, 12])] and bank.easiness == {1: 0.0}
    assert torch.equal(task.query_x, easy.query_x) and torch.equal(bank.images(1), ref.images(1))
    assert not task.source.extra["hardened"]


def test_the_switch_follows_a_moving_average_of_the_feedback(teacher, maml):
    bank = PixelBankInverter((12,), _cfg(curriculum=True, curriculum_threshold=0.75, curriculum_momentum=0.5))
    assert bank.feedback(0, 1.0) == 1.0
    assert bank.feedback(0, 0.0) == 0.5
    assert bank.feedback(0, 1.0) == 0.75
    assert bank.feedback(2, 0.25) == 0.25  # per model


def test_adapted_student_refuses_a_non_learner():
    with pytest.raises(TypeError, match=r"params\(\) and query_logits"):
        AdaptedStudent(torch.nn.Linear(2, 2))

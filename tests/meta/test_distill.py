"""Bi-level distillation learner: exact second-order meta-gradients, the loss against a naive
reference, the cross-entropy limit of confident teachers, and teacher logits travelling with tasks."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dfml.meta import MAML, DistillationConfig, DistillationMAML, attach_teacher_logits, teacher_logits
from dfml.types import Task, TaskSource

F64 = torch.float64


def mlp(n_way: int = 3) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, n_way)).to(F64)


def kd_task(seed: int, n_way: int = 3, n_shot: int = 2, n_query: int = 3, teacher_scale: float = 2.0) -> Task:
    g = torch.Generator().manual_seed(seed)
    sx = torch.randn(n_way * n_shot, 4, generator=g, dtype=F64)
    qx = torch.randn(n_way * n_query, 4, generator=g, dtype=F64)
    extra = {
        "teacher_support_logits": teacher_scale * torch.randn(n_way * n_shot, n_way, generator=g, dtype=F64),
        "teacher_query_logits": teacher_scale * torch.randn(n_way * n_query, n_way, generator=g, dtype=F64),
    }
    sy, qy = torch.arange(n_way).repeat_interleave(n_shot), torch.arange(n_way).repeat_interleave(n_query)
    return Task(sx, sy, qx, qy, source=TaskSource(model_id=0, extra=extra))


def reference_kd(s: torch.Tensor, t: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.kl_div(
        F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True, reduction="batchmean"
    ) * temperature**2


@pytest.mark.parametrize("learn_inner_lr", [False, True], ids=["fixed-lr", "learnt-lr"])
def test_second_order_meta_gradient_matches_central_finite_differences(learn_inner_lr: bool) -> None:
    torch.manual_seed(0)
    learner = DistillationMAML(mlp(), DistillationConfig(temperature=2.0), inner_steps=2, inner_lr=0.5,
                               learn_inner_lr=learn_inner_lr)
    tasks = [kd_task(1), kd_task(2)]
    loss, _ = learner.meta_loss(tasks)
    got = torch.autograd.grad(loss, list(learner.parameters()))
    eps = 1e-6
    for p, g in zip(learner.parameters(), got):
        fd = torch.zeros_like(p)
        flat, fflat = p.data.view(-1), fd.view(-1)
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + eps
            plus = float(learner.meta_loss(tasks)[0].detach())
            flat[i] = old - eps
            minus = float(learner.meta_loss(tasks)[0].detach())
            flat[i] = old
            fflat[i] = (plus - minus) / (2 * eps)
        torch.testing.assert_close(g, fd, rtol=1e-5, atol=1e-8)
    assert float(got[0].abs().max()) > 1e-4


def test_loss_equals_a_naive_inner_kd_then_outer_kd_reference() -> None:
    torch.manual_seed(0)
    net = mlp()
    reference = copy.deepcopy(net)
    learner = DistillationMAML(net, DistillationConfig(temperature=3.0), inner_steps=2, inner_lr=0.3)
    task = kd_task(3)
    loss, acc = learner.task_loss(learner.params(), task)

    w = dict(reference.named_parameters())
    extra = task.source.extra
    for _ in range(2):
        student = torch.func.functional_call(reference, w, (task.support_x,))
        inner = reference_kd(student, extra["teacher_support_logits"], 3.0)
        grads = torch.autograd.grad(inner, list(w.values()), create_graph=True)
        w = {k: v - 0.3 * g for (k, v), g in zip(w.items(), grads)}
    logits = torch.func.functional_call(reference, w, (task.query_x,))
    expected = reference_kd(logits, extra["teacher_query_logits"], 3.0)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)
    assert float(acc) == pytest.approx(float((logits.argmax(-1) == task.query_y).double().mean()))
    assert float(learner.loss(learner.params(), task).detach()) == pytest.approx(float(expected.detach()), rel=1e-12)


def test_very_confident_teachers_at_temperature_one_give_the_cross_entropy_meta_loss() -> None:
    torch.manual_seed(0)
    tasks = []
    for seed in (4, 5):
        t = kd_task(seed)
        # One-hot-like teacher: logit 60 on the task label, 0 elsewhere (tail mass ~1e-26).
        extra = {
            "teacher_support_logits": 60.0 * F.one_hot(t.support_y, 3).to(F64),
            "teacher_query_logits": 60.0 * F.one_hot(t.query_y, 3).to(F64),
        }
        tasks.append(Task(t.support_x, t.support_y, t.query_x, t.query_y, source=TaskSource(extra=extra)))
    kd = DistillationMAML(mlp(), DistillationConfig(temperature=1.0), inner_steps=2, inner_lr=0.4)
    ce = MAML(copy.deepcopy(kd.network), inner_steps=2, inner_lr=0.4)
    kd_loss, kd_metrics = kd.meta_loss(tasks)
    ce_loss, ce_metrics = ce.meta_loss(tasks)
    torch.testing.assert_close(kd_loss, ce_loss, rtol=1e-10, atol=1e-12)
    kd_grads = torch.autograd.grad(kd_loss, list(kd.parameters()))
    for a, b in zip(kd_grads, torch.autograd.grad(ce_loss, list(ce.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-12)
    assert kd_metrics["acc"] == ce_metrics["acc"]


def test_attach_teacher_logits_selects_the_task_classes_in_label_order_without_mutating_the_task() -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(4, 6).to(F64).eval()
    task = kd_task(6)
    source = TaskSource(model_id=7, extra={"a": 1})
    plain = Task(task.support_x, task.support_y, task.query_x, task.query_y, source=source)
    out = attach_teacher_logits(plain, teacher, columns=[4, 0, 2])
    with torch.no_grad():
        expected = teacher(plain.query_x)[:, [4, 0, 2]]
    torch.testing.assert_close(teacher_logits(out, "query"), expected)
    assert teacher_logits(out, "support").shape == (6, 3)
    assert out.source.model_id == 7 and out.source.extra["a"] == 1
    assert set(plain.source.extra) == {"a"}  # the input task is untouched
    assert not teacher_logits(out, "query").requires_grad
    assert teacher_logits(attach_teacher_logits(plain, nn.Linear(4, 3).to(F64)), "support").shape == (6, 3)
    with pytest.raises(ValueError, match=r"columns \[4, 0, 9\] fall outside the teacher's 6 outputs"):
        attach_teacher_logits(plain, teacher, columns=[4, 0, 9])


def test_missing_or_malformed_teacher_logits_raise_errors_that_name_the_fix() -> None:
    learner = DistillationMAML(mlp(), inner_steps=1)
    t = kd_task(7)
    bare = Task(t.support_x, t.support_y, t.query_x, t.query_y)
    with pytest.raises(ValueError, match=r"no teacher logits for its query set.*attach_teacher_logits\(task, teacher"):
        learner.meta_loss([bare])
    no_support = Task(t.support_x, t.support_y, t.query_x, t.query_y,
                      source=TaskSource(extra={"teacher_query_logits": t.source.extra["teacher_query_logits"]}))
    with pytest.raises(ValueError, match=r"support set \(task.source.extra\['teacher_support_logits'\] is missing\)"):
        learner.meta_loss([no_support])
    short = Task(t.support_x, t.support_y, t.query_x, t.query_y,
                 source=TaskSource(extra={**t.source.extra, "teacher_support_logits": torch.zeros(2, 3, dtype=F64)}))
    with pytest.raises(ValueError, match=r"has shape \(2, 3\), expected \[6, n_way\]"):
        learner.meta_loss([short])
    wrong_type = Task(t.support_x, t.support_y, t.query_x, t.query_y,
                      source=TaskSource(extra={**t.source.extra, "teacher_query_logits": [[0.0]]}))
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        learner.meta_loss([wrong_type])
    wide = Task(t.support_x, t.support_y, t.query_x, t.query_y,
                source=TaskSource(extra={**t.source.extra, "teacher_support_logits": torch.zeros(6, 5, dtype=F64)}))
    with pytest.raises(ValueError, match="map the teacher's outputs to the task's labels"):
        learner.meta_loss([wide])


def test_zero_inner_steps_is_plain_query_distillation_and_needs_no_support_logits() -> None:
    learner = DistillationMAML(mlp(), DistillationConfig(temperature=2.0), inner_steps=0)
    t = kd_task(8)
    query_only = Task(t.support_x, t.support_y, t.query_x, t.query_y,
                      source=TaskSource(extra={"teacher_query_logits": t.source.extra["teacher_query_logits"]}))
    loss, _ = learner.meta_loss([query_only])
    expected = reference_kd(learner.network(t.query_x), t.source.extra["teacher_query_logits"], 2.0)
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("inf")])
def test_a_bad_temperature_raises(temperature: float) -> None:
    with pytest.raises(ValueError, match="distillation.temperature must be a positive finite number"):
        DistillationConfig(temperature=temperature)


def test_meta_steps_reduce_the_distillation_loss() -> None:
    torch.manual_seed(0)
    learner = DistillationMAML(mlp(), DistillationConfig(temperature=2.0), inner_steps=1, inner_lr=0.3)
    tasks = [kd_task(s) for s in (10, 11)]
    opt = torch.optim.Adam(learner.parameters(), lr=0.05)
    first = learner.meta_step(tasks, opt)["loss"]
    for _ in range(20):
        last = learner.meta_step(tasks, opt)["loss"]
    assert last < 0.7 * first, (first, last)

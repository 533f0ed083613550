"""The regularised updates and the distillation learner inside MetaTrainer, through its hooks:
a task stream that attaches each task's teacher logits, and ``update=`` for the meta-update."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from dfml.meta import (
    AlignmentConfig,
    DistillationConfig,
    DistillationMAML,
    GradientAlignment,
    GroupRegularization,
    GroupRegularizationConfig,
    attach_teacher_logits,
)
from dfml.datafree import MetaTrainer, SyntheticBank, TrainConfig
from dfml.types import Task

CFG = TrainConfig(
    n_way=3, n_shot=1, n_query=2, meta_batch_size=2, steps=3, inner_steps=1, inner_lr=0.1,
    outer_lr=1e-2, val_every=3, val_episodes=2, checkpoint_every=3,
)


class TeacherStream:
    """Bank tasks with their pool model's logits attached (teacher column ``c`` = class id ``c`` here)."""

    def __init__(self, bank: SyntheticBank, teachers: list[nn.Module]) -> None:
        self.bank, self.teachers = bank, teachers

    def next_batch(self, step: int, generator: torch.Generator) -> list[Task]:
        out = []
        for _ in range(CFG.meta_batch_size):
            task = self.bank.sample_task(CFG.n_way, CFG.n_shot, CFG.n_query, generator, step)
            out.append(attach_teacher_logits(task, self.teachers[task.source.model_id], task.source.classes))
        return out

    def feedback(self, step: int, tasks: list[Task], metrics: dict[str, float], learner: Any) -> dict[str, float]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@pytest.mark.parametrize(
    ("update", "key"),
    [
        (GradientAlignment(AlignmentConfig(task_lr=0.05)), "grad_dot"),
        (GroupRegularization(GroupRegularizationConfig(beta=0.01)), "group_penalty"),
    ],
    ids=["alignment", "grouping"],
)
def test_updates_and_the_distillation_learner_plug_into_the_trainer(update, key: str) -> None:
    g = torch.Generator().manual_seed(0)
    bank = SyntheticBank([torch.randn(5, 4, 6, generator=g) for _ in range(2)], [tuple(range(5))] * 2, {})
    teachers = [nn.Linear(6, 5).eval() for _ in range(2)]
    val = [Task(torch.randn(3, 6), torch.arange(3), torch.randn(6, 6), torch.arange(3).repeat(2))]
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    learner = DistillationMAML(net, DistillationConfig(temperature=2.0), inner_steps=1, inner_lr=0.1)
    records: list[dict] = []
    trainer = MetaTrainer(
        net, TeacherStream(bank, teachers), lambda: val, CFG, learner=learner, update=update
    )
    trainer.fit(progress=lambda step, record: records.append(record))
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(key in r and "loss" in r and "acc" in r for r in records)
    assert "val_acc" in records[-1]

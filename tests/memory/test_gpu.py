"""TaskMemory and feature-level interpolation on CUDA (skipped without a GPU)."""

from __future__ import annotations

import pytest
import torch

from dfml.memory import MemoryConfig, MixedInputs, TaskMemory
from dfml.meta import MAML
from dfml.models.mlp import MLP

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_memory_keeps_examples_on_the_device_and_mixed_tasks_train_there(tagged_task):
    memory = TaskMemory(MemoryConfig(capacity_per_class=8), device="cuda")
    memory.add(tagged_task((1, 2, 3), model_id=0, step=0))  # a CPU task is moved in
    memory.add(tagged_task((4, 5, 6), model_id=1, step=1).to("cuda"))
    assert memory.state_dict()["slots"][0]["x"].device.type == "cuda"
    task = memory.sample_interpolated(3, 1, 2, torch.Generator().manual_seed(0), 0.5, "feature", layer=(1, 2))
    assert isinstance(task.support_x, MixedInputs) and task.support_x.partner.device.type == "cuda"
    cpu = task.to("cpu")
    assert cpu.support_x.inputs.device.type == "cpu" and cpu.support_x.partner.device.type == "cpu"
    maml = MAML(MLP(4, num_classes=3, hidden=(5,), batch_norm=True).to("cuda"), inner_steps=1, inner_lr=0.1)
    loss, _ = maml.meta_loss([task, memory.sample(3, 1, 2, torch.Generator().manual_seed(1))])
    loss.backward()
    assert all(p.grad is not None and p.grad.device.type == "cuda" for p in maml.parameters())

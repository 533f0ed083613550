"""The meta-batch mix: counts by hand, warm-up, order and determinism, errors, a MAML step on the mix."""

from __future__ import annotations

import pytest
import torch

from dfml.memory import MemoryConfig, MetaBatchMix, MixedInputs, TaskMemory, build_meta_batch, plan_meta_batch
from dfml.meta import MAML
from dfml.models.mlp import MLP


@pytest.fixture
def memory(tagged_task) -> TaskMemory:
    memory = TaskMemory(MemoryConfig(capacity_per_class=8))
    memory.add(tagged_task((1, 2, 3), model_id=0, step=0))
    memory.add(tagged_task((4, 5, 6), model_id=1, step=1))
    return memory


def test_counts_follow_the_ratio_with_largest_remainders(memory):
    mix = MetaBatchMix(new=2, memory=1, interpolated=1)
    assert plan_meta_batch(mix, 4, memory, 3, 1, 2) == (2, 1, 1)
    assert plan_meta_batch(mix, 5, memory, 3, 1, 2) == (3, 1, 1)  # 2.5, 1.25, 1.25
    assert plan_meta_batch(mix, 7, memory, 3, 1, 2) == (3, 2, 2)  # 3.5, 1.75, 1.75: the larger remainders
    assert plan_meta_batch(MetaBatchMix(1, 1, 1), 2, memory, 3, 1, 2) == (1, 1, 0)  # ties: new, then memory
    assert plan_meta_batch(MetaBatchMix(new=0, memory=1), 3, memory, 3, 1, 2) == (0, 3, 0)


def test_an_unready_memory_gives_an_all_new_meta_batch(memory):
    mix = MetaBatchMix(new=1, memory=1, interpolated=1)
    assert plan_meta_batch(mix, 4, TaskMemory(), 3, 1, 2) == (4, 0, 0)
    assert plan_meta_batch(mix, 4, memory, 7, 1, 2) == (4, 0, 0)  # only 6 classes stored


def test_meta_batch_holds_new_then_memory_then_interpolated_tasks_deterministically(memory, tagged_task):
    mix = MetaBatchMix(new=1, memory=1, interpolated=2, alpha=0.5)
    new = [tagged_task((7, 8, 9), model_id=2, step=3, n_shot=1, n_query=2)]
    kw = {"meta_batch_size": 4, "n_way": 3, "n_shot": 1, "n_query": 2}
    batch = build_meta_batch(new, memory, mix, generator=torch.Generator().manual_seed(0), **kw)
    again = build_meta_batch(new, memory, mix, generator=torch.Generator().manual_seed(0), **kw)
    other = build_meta_batch(new, memory, mix, generator=torch.Generator().manual_seed(1), **kw)
    assert [t.source.kind for t in batch] == ["synthetic", "memory", "interpolated", "interpolated"]
    assert batch[0] is new[0] and len(memory) == 30  # new tasks are not added here
    assert all(torch.equal(a.query_x, b.query_x) for a, b in zip(batch, again))
    assert not all(torch.equal(a.query_x, b.query_x) for a, b in zip(batch[1:], other[1:]))


def test_feature_level_meta_batch_takes_a_maml_step(memory, tagged_task):
    mix = MetaBatchMix(new=1, memory=1, interpolated=2, level="feature", layers=(1, 2))
    new = [tagged_task((7, 8, 9), model_id=2, step=3, n_shot=1, n_query=2)]
    kw = {"meta_batch_size": 4, "n_way": 3, "n_shot": 1, "n_query": 2}
    batch = build_meta_batch(new, memory, mix, generator=torch.Generator().manual_seed(0), **kw)
    assert all(isinstance(t.support_x, MixedInputs) and t.support_x.layer in (1, 2) for t in batch[2:])
    maml = MAML(MLP(4, num_classes=3, hidden=(5,)), inner_steps=1, inner_lr=0.1)
    loss, metrics = maml.meta_loss(batch)  # meta_step without the optimiser (torch.optim imports torch._dynamo)
    loss.backward()
    assert all(torch.isfinite(torch.tensor(v)) for v in metrics.values())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in maml.parameters())


def test_build_meta_batch_wants_exactly_the_planned_new_tasks(memory, tagged_task):
    mix = MetaBatchMix(new=1, memory=1)
    with pytest.raises(ValueError, match="got 0 new tasks but this meta-batch needs 2.*call plan_meta_batch"):
        build_meta_batch([], memory, mix, meta_batch_size=4, n_way=3, n_shot=1, n_query=2, generator=torch.Generator())


def test_mix_config_errors_name_the_value_and_the_fix(memory):
    with pytest.raises(ValueError, match=r"non-negative numbers, not all zero, got \(0, 0, 0\)"):
        MetaBatchMix(new=0, memory=0, interpolated=0)
    with pytest.raises(ValueError, match=r"got \(1.0, -1, 0.0\)"):
        MetaBatchMix(memory=-1)
    with pytest.raises(ValueError, match="mix.level='feature' needs mix.layers"):
        MetaBatchMix(interpolated=1, level="feature")
    with pytest.raises(ValueError, match=r"mix.layers=\(1,\) only applies to level='feature'"):
        MetaBatchMix(layers=(1,))
    with pytest.raises(ValueError, match="mix.alpha must be a positive number, got 0"):
        MetaBatchMix(alpha=0)
    with pytest.raises(ValueError, match="meta_batch_size must be an integer >= 1, got 0"):
        plan_meta_batch(MetaBatchMix(), 0, memory, 3, 1, 2)

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from dfml.data.base import ArrayDataset
from dfml.data.interop import LearnToLearnTasks, TaskSampler, from_learn2learn


class FakeTaskset:
    """Duck-types a learn2learn TaskDataset: sample() -> [data, labels], labels interleaved as l2l does."""

    def __init__(self, n_way: int = 3, per_class: int = 4) -> None:
        self.n_way, self.per_class, self.calls = n_way, per_class, 0

    def sample(self):
        self.calls += 1
        labels = torch.tensor([10, 30, 20] * self.per_class)[: self.n_way * self.per_class]
        data = torch.arange(len(labels), dtype=torch.float32).view(-1, 1).expand(-1, 2).clone()
        return [data, labels]


def test_from_learn2learn_splits_per_class_and_remaps_labels() -> None:
    task = from_learn2learn(FakeTaskset().sample(), n_way=3, n_shot=1, n_query=3)
    # example j has label [10, 30, 20][j % 3]; sorted labels 10, 20, 30 become 0, 1, 2
    assert task.support_x[:, 0].tolist() == [0.0, 2.0, 1.0]
    assert task.support_y.tolist() == [0, 1, 2]
    assert task.query_x[:, 0].tolist() == [3.0, 6.0, 9.0, 5.0, 8.0, 11.0, 4.0, 7.0, 10.0]
    assert task.query_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert task.source.classes == (10, 20, 30)


def test_from_learn2learn_rejects_tasks_of_the_wrong_shape() -> None:
    batch = FakeTaskset().sample()
    with pytest.raises(ValueError, match=r"expected a 5-way task, got 3 classes \[10, 20, 30\]"):
        from_learn2learn(batch, 5, 1, 3)
    msg = r"class 10 has 4 examples; expected n_shot \+ n_query = 6 .*KShots\(dataset, 6\)"
    with pytest.raises(ValueError, match=msg):
        from_learn2learn(batch, 3, 1, 5)
    with pytest.raises(TypeError, match="expected a learn2learn task"):
        from_learn2learn(torch.zeros(3), 3, 1, 3)


def test_learn2learn_wrapper_samples_tasks_from_the_taskset() -> None:
    taskset = FakeTaskset()
    tasks = list(LearnToLearnTasks(taskset, 3, 2, 2).take(4))
    assert len(tasks) == 4 and taskset.calls == 4
    assert all(t.support_x.shape == (6, 2) and t.query_x.shape == (6, 2) for t in tasks)
    with pytest.raises(TypeError, match="has no sample\\(\\) method"):
        LearnToLearnTasks(object(), 3, 1, 1)


def make_dataset() -> ArrayDataset:
    labels = np.repeat(np.arange(6), 8)
    data = np.arange(48, dtype=np.float32).reshape(48, 1)  # example i holds the value i
    return ArrayDataset(data, labels, [f"c{i}" for i in range(6)], name="six")


def test_task_sampler_with_a_dataloader_yields_easyfsl_episodes() -> None:
    ds = make_dataset()
    sampler = TaskSampler(ds, n_way=3, n_shot=2, n_query=4, n_tasks=5, seed=0)
    loader = DataLoader(ds, batch_sampler=sampler, collate_fn=sampler.episodic_collate_fn)
    episodes = list(loader)
    assert len(episodes) == len(sampler) == 5
    for sx, sy, qx, qy, class_ids in episodes:
        assert sx.shape == (6, 1) and qx.shape == (12, 1)
        assert sy.tolist() == [0, 0, 1, 1, 2, 2] and qy.tolist() == [0] * 4 + [1] * 4 + [2] * 4
        assert len(set(class_ids)) == 3
        s_idx, q_idx = sx[:, 0].long(), qx[:, 0].long()
        assert not set(s_idx.tolist()) & set(q_idx.tolist())
        assert ds.labels[s_idx.numpy()].tolist() == [class_ids[y] for y in sy.tolist()]
        assert ds.labels[q_idx.numpy()].tolist() == [class_ids[y] for y in qy.tolist()]


def test_task_sampler_repeats_its_episodes_and_depends_on_the_seed() -> None:
    ds = make_dataset()
    a = TaskSampler(ds, 3, 1, 1, n_tasks=4, seed=1)
    assert list(a) == list(a) == list(TaskSampler(ds, 3, 1, 1, n_tasks=4, seed=1))
    assert list(a) != list(TaskSampler(ds, 3, 1, 1, n_tasks=4, seed=2))


def test_task_sampler_reads_targets_and_checks_class_sizes() -> None:
    class Tv:
        targets = [7, 7, 9, 9, 7, 9]

        def __len__(self) -> int:
            return 6

        def __getitem__(self, i: int):
            return torch.tensor([float(i)]), self.targets[i]

    sampler = TaskSampler(Tv(), 2, 1, 2, n_tasks=1, seed=0)
    _, _, _, _, class_ids = sampler.episodic_collate_fn([Tv()[i] for i in next(iter(sampler))])
    assert sorted(class_ids) == [7, 9]
    with pytest.raises(ValueError, match=r"class 7 has only 3 examples .* = 4 per class"):
        TaskSampler(Tv(), 2, 2, 2, n_tasks=1)
    with pytest.raises(ValueError, match="n_tasks must be an integer >= 1, got 0"):
        TaskSampler(Tv(), 2, 1, 1, n_tasks=0)

"""TaskMemory: ring-buffer order by hand, sampling shapes/labels/provenance, determinism, exact resume, errors."""

from __future__ import annotations

import io

import pytest
import torch

from dfml.memory import MemoryConfig, TaskMemory
from dfml.types import Task, TaskSource


def stored(memory: TaskMemory, key_index: int = 0) -> dict:
    return memory.state_dict()["slots"][key_index]


def filled(tagged_task, capacity: int = 10) -> TaskMemory:
    """Two models, overlapping classes: model 0 has classes 1..4, model 1 has classes 3..6."""
    memory = TaskMemory(MemoryConfig(capacity_per_class=capacity))
    memory.add(tagged_task((1, 2, 3, 4), model_id=0, step=5))
    memory.add(tagged_task((3, 4, 5, 6), model_id=1, step=8))
    return memory


def test_ring_buffer_overwrites_the_oldest_examples_in_order(one_class_task):
    memory = TaskMemory(MemoryConfig(capacity_per_class=4))
    memory.add(one_class_task([1, 2, 3], model_id=0, step=0))
    s = stored(memory)
    assert s["x"][:3, 0].tolist() == [1, 2, 3] and (s["count"], s["next"]) == (3, 3)
    memory.add(one_class_task([4, 5, 6], model_id=1, step=1))  # slots 3, 0, 1
    s = stored(memory)
    assert s["x"][:, 0].tolist() == [5, 6, 3, 4] and (s["count"], s["next"]) == (4, 2)
    assert s["model_id"].tolist() == [1, 1, 0, 1] and s["step"].tolist() == [1, 1, 0, 1]
    memory.add(one_class_task([7, 8, 9, 10, 11], model_id=2, step=2))  # 5 > capacity: the last 4 survive
    s = stored(memory)
    assert s["x"][:, 0].tolist() == [9, 10, 11, 8] and (s["count"], s["next"]) == (4, 3)
    assert len(memory) == 4 and memory.num_classes == 1 and memory.classes() == [(None, 7)]


def test_add_files_support_and_query_under_the_source_classes(tagged_task):
    memory = filled(tagged_task)
    assert memory.classes() == [(None, c) for c in (1, 2, 3, 4, 5, 6)]
    assert [memory.count((None, c)) for c in (1, 2, 3, 4, 5, 6)] == [5, 5, 10, 10, 5, 5]
    assert len(memory) == 40 and memory.count((None, 99)) == 0
    s = stored(memory, memory.classes().index((None, 3)))
    assert s["x"][:10, 0].eq(3).all() and s["model_id"].tolist() == [0] * 5 + [1] * 5


def test_datasets_keep_equal_class_ids_apart(tagged_task):
    memory = TaskMemory()
    memory.add(tagged_task((3, 4), model_id=0, step=0, dataset="cifar_fs"))
    memory.add(tagged_task((3, 4), model_id=1, step=0, dataset="mini_imagenet"))
    assert memory.num_classes == 4
    assert memory.classes() == [("cifar_fs", 3), ("cifar_fs", 4), ("mini_imagenet", 3), ("mini_imagenet", 4)]


def test_a_task_drawn_from_two_datasets_files_back_under_its_own_classes(tagged_task):
    memory = TaskMemory()
    memory.add(tagged_task((3, 4), model_id=0, step=0, dataset="cifar_fs"))
    memory.add(tagged_task((3, 4), model_id=1, step=0, dataset="mini_imagenet"))
    mixed = memory.sample(4, 2, 3, torch.Generator().manual_seed(0))
    assert sorted(mixed.source.class_keys()) == memory.classes() == sorted(memory.classes())
    again = TaskMemory()
    again.add(mixed)  # e.g. a memory task kept elsewhere: each label keeps its dataset
    assert sorted(again.classes()) == sorted(memory.classes())
    lerp = memory.sample_interpolated(4, 2, 3, torch.Generator().manual_seed(1))
    assert lerp.source.class_keys() == lerp.source.extra["first"].class_keys()
    assert {k[0] for k in lerp.source.class_keys()} == {"cifar_fs", "mini_imagenet"}


def test_sample_has_the_task_shape_labels_and_provenance(tagged_task):
    memory = filled(tagged_task)
    task = memory.sample(3, 2, 3, torch.Generator().manual_seed(0))
    assert task.support_x.shape == (6, 4) and task.query_x.shape == (9, 4)
    assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2] and task.query_y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    src = task.source
    assert src.kind == "memory" and len(set(src.classes)) == 3 and set(src.classes) <= {1, 2, 3, 4, 5, 6}
    assert src.extra["class_keys"] == tuple((None, c) for c in src.classes)
    for split in ("support", "query"):
        x, y = getattr(task, f"{split}_x"), getattr(task, f"{split}_y")
        assert x[:, 0].tolist() == [float(src.classes[int(k)]) for k in y]  # label k is class classes[k]
        assert x[:, 1].long().tolist() == src.extra[f"{split}_model_ids"].tolist()
        assert x[:, 2].long().tolist() == src.extra[f"{split}_steps"].tolist()
    x = torch.cat([task.support_x, task.query_x])
    rows = x[:, 3] + 1000 * x[:, 1] + 10000 * x[:, 0]  # (row index, model, class) identify an example
    assert rows.unique().numel() == 15  # no example drawn twice


def test_sampled_tasks_combine_classes_of_different_models(tagged_task):
    memory = TaskMemory()
    memory.add(tagged_task((1, 2, 3), model_id=0, step=0))
    memory.add(tagged_task((4, 5, 6), model_id=1, step=0))
    g = torch.Generator().manual_seed(0)
    tasks = [memory.sample(3, 1, 1, g) for _ in range(10)]
    models = [torch.cat([t.source.extra["support_model_ids"], t.source.extra["query_model_ids"]]) for t in tasks]
    mixed = [m.unique().numel() == 2 for m in models]
    assert any(mixed) and not all(mixed)
    for t, m, is_mixed in zip(tasks, models, mixed):
        assert t.source.model_id == (None if is_mixed else int(m[0]))


def test_sampling_is_deterministic_in_the_generator_only(tagged_task):
    memory = filled(tagged_task)
    torch.manual_seed(123)
    a = memory.sample(3, 1, 2, torch.Generator().manual_seed(7))
    torch.manual_seed(456)  # the global RNG plays no part
    b = memory.sample(3, 1, 2, torch.Generator().manual_seed(7))
    c = memory.sample(3, 1, 2, torch.Generator().manual_seed(8))
    assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
    assert a.source.classes == b.source.classes
    assert not (torch.equal(a.support_x, c.support_x) and torch.equal(a.query_x, c.query_x))


def test_state_dict_round_trip_reproduces_later_adds_and_samples(tagged_task, one_class_task):
    memory = filled(tagged_task, capacity=6)  # classes 3 and 4 have wrapped around
    buffer = io.BytesIO()
    torch.save(memory.state_dict(), buffer)
    buffer.seek(0)
    resumed = TaskMemory(MemoryConfig(capacity_per_class=6))
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    assert resumed.classes() == memory.classes() and len(resumed) == len(memory)
    for m in (memory, resumed):  # the ring positions must survive: these overwrite specific slots
        m.add(tagged_task((3, 7, 1), model_id=2, step=9))
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        a, b = memory.sample(4, 2, 3, ga), resumed.sample(4, 2, 3, gb)
        assert torch.equal(a.support_x, b.support_x) and torch.equal(a.query_x, b.query_x)
        assert torch.equal(a.source.extra["query_steps"], b.source.extra["query_steps"])


def test_state_dict_is_a_copy(one_class_task):
    memory = TaskMemory(MemoryConfig(capacity_per_class=2))
    memory.add(one_class_task([1, 2]))
    state = memory.state_dict()
    memory.add(one_class_task([3, 4]))
    assert state["slots"][0]["x"][:, 0].tolist() == [1, 2]


def test_examples_are_stored_in_the_configured_float_dtype_on_the_device(one_class_task):
    memory = TaskMemory(MemoryConfig(dtype="float64"), device="cpu")
    memory.add(one_class_task([1, 2, 3]))
    assert stored(memory)["x"].dtype == torch.float64
    assert memory.sample(1, 1, 2, torch.Generator().manual_seed(0)).support_x.dtype == torch.float64


def test_add_rejects_tasks_without_source_classes(one_class_task):
    memory = TaskMemory()
    t = one_class_task([1, 2, 3])
    with pytest.raises(ValueError, match="no source classes.*TaskSource"):
        memory.add(Task(t.support_x, t.support_y, t.query_x, t.query_y))
    with pytest.raises(ValueError, match="no source classes"):
        memory.add(Task(t.support_x, t.support_y, t.query_x, t.query_y, TaskSource(model_id=0)))
    with pytest.raises(TypeError, match="dfml.Task"):
        memory.add(t.support_x)  # type: ignore[arg-type]


def test_add_rejects_labels_without_a_class_and_a_new_input_shape(one_class_task, tagged_task):
    memory = TaskMemory()
    t = tagged_task((1, 2), model_id=0, step=0)
    short = Task(t.support_x, t.support_y, t.query_x, t.query_y, TaskSource(classes=(1,)))
    with pytest.raises(ValueError, match="labels run to 1 but source.classes has 1"):
        memory.add(short)
    memory.add(t)
    with pytest.raises(ValueError, match=r"shape \(1,\) but this memory stores \(4,\)"):
        memory.add(one_class_task([1, 2, 3]))


def test_sample_explains_too_few_classes(tagged_task):
    memory = TaskMemory()
    memory.add(tagged_task((1, 2), model_id=0, step=0, n_shot=1, n_query=1))
    assert not memory.can_sample(3, 1, 1) and memory.can_sample(2, 1, 1) and not memory.can_sample(2, 1, 2)
    with pytest.raises(ValueError, match="only 2 classes hold n_shot \\+ n_query = 2 examples, fewer than n_way=3"):
        memory.sample(3, 1, 1, torch.Generator())
    with pytest.raises(ValueError, match="only 0 classes"):
        memory.sample(1, 1, 2, torch.Generator())
    with pytest.raises(ValueError, match="n_shot must be an integer >= 1, got 0"):
        memory.sample(1, 0, 1, torch.Generator())


def test_config_and_state_errors_name_the_value():
    with pytest.raises(ValueError, match="capacity_per_class must be an integer >= 1, got 0"):
        MemoryConfig(capacity_per_class=0)
    with pytest.raises(ValueError, match="dtype must be one of .*'int8'"):
        MemoryConfig(dtype="int8")
    with pytest.raises(ValueError, match="saved with .*capacity_per_class=3.*build the TaskMemory"):
        TaskMemory(MemoryConfig(capacity_per_class=4)).load_state_dict(
            TaskMemory(MemoryConfig(capacity_per_class=3)).state_dict()
        )


def test_forget_drops_a_models_examples_and_keeps_the_rest_in_ring_order(one_class_task, tagged_task):
    memory = TaskMemory(MemoryConfig(capacity_per_class=4))
    memory.add(one_class_task([1, 2, 3], model_id=0, step=0))
    memory.add(one_class_task([4, 5, 6], model_id=1, step=1))  # ring [5, 6, 3, 4], oldest at slot 2
    assert memory.forget([1]) == 3
    s = stored(memory)
    assert s["x"][:, 0].tolist() == [3, 0, 0, 0] and s["model_id"].tolist() == [0, -1, -1, -1]
    assert (s["count"], s["next"]) == (1, 1) and len(memory) == 1
    memory.add(one_class_task([7, 8], model_id=2, step=2))  # the ring goes on after the survivor
    assert stored(memory)["x"][:3, 0].tolist() == [3, 7, 8]
    assert memory.forget([]) == 0 and memory.forget([9]) == 0

    two = filled(tagged_task)  # model 0: classes 1..4, model 1: classes 3..6
    assert two.forget([0]) == 20
    assert two.classes() == [(None, c) for c in (3, 4, 5, 6)]  # classes only model 0 had are gone
    assert all((two.state_dict()["slots"][k]["model_id"][:5] == 1).all() for k in range(4))
    restored = TaskMemory(MemoryConfig(capacity_per_class=10))
    restored.load_state_dict(two.state_dict())
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    assert torch.equal(two.sample(3, 1, 2, g1).support_x, restored.sample(3, 1, 2, g2).support_x)

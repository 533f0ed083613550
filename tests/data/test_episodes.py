from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dfml.data.base import ArrayDataset
from dfml.data.episodes import Episode, EpisodeList, sample_episode
from dfml.types import TaskSource


def make_images(n_classes: int = 10, per_class: int = 20, name: str = "tiny/test") -> ArrayDataset:
    """Images whose first pixel encodes the example index, so every example is identifiable."""
    n = n_classes * per_class
    data = np.zeros((n, 4, 4, 3), np.uint8)
    data[:, 0, 0, 0] = np.arange(n) % 256
    data[:, 0, 0, 1] = np.arange(n) // 256
    labels = np.repeat(np.arange(n_classes), per_class)
    return ArrayDataset(data, labels, [f"c{i}" for i in range(n_classes)], name=name)


def example_ids(x: torch.Tensor) -> list[int]:
    raw = (x[:, :2, 0, 0] * 255).round().long()
    return (raw[:, 0] + 256 * raw[:, 1]).tolist()


def test_episode_has_the_requested_shapes_labels_and_source() -> None:
    ds = make_images()
    task = sample_episode(ds, 5, 2, 3, torch.Generator().manual_seed(0))
    assert task.support_x.shape == (10, 3, 4, 4) and task.query_x.shape == (15, 3, 4, 4)
    assert task.support_y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert task.query_y.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3, 4, 4, 4]
    assert task.support_y.dtype == torch.int64
    assert isinstance(task.source, TaskSource) and task.source.kind == "real"
    assert len(set(task.source.classes)) == 5


def test_episode_examples_belong_to_their_class_and_support_query_are_disjoint() -> None:
    ds = make_images()
    task = sample_episode(ds, 4, 3, 5, torch.Generator().manual_seed(1))
    s_ids, q_ids = example_ids(task.support_x), example_ids(task.query_x)
    assert not set(s_ids) & set(q_ids)
    assert len(set(s_ids)) == 12 and len(set(q_ids)) == 20
    classes = task.source.classes
    assert [classes[y] for y in task.support_y.tolist()] == ds.labels[s_ids].tolist()
    assert [classes[y] for y in task.query_y.tolist()] == ds.labels[q_ids].tolist()


def test_same_seed_same_episode_other_seed_other_episode() -> None:
    ds = make_images()
    a = sample_episode(ds, 5, 1, 2, torch.Generator().manual_seed(3))
    b = sample_episode(ds, 5, 1, 2, torch.Generator().manual_seed(3))
    c = sample_episode(ds, 5, 1, 2, torch.Generator().manual_seed(4))
    assert torch.equal(a.support_x, b.support_x) and a.source.classes == b.source.classes
    assert example_ids(a.query_x) != example_ids(c.query_x)


def test_sampling_leaves_the_global_rng_untouched() -> None:
    ds = make_images()
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    sample_episode(ds, 5, 1, 2, torch.Generator().manual_seed(0))
    EpisodeList.generate(ds, 3, 5, 1, 2, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert np.array_equal(np.random.get_state()[1], np_state)


def test_sample_episode_works_on_feature_datasets() -> None:
    ds = ArrayDataset(np.arange(40, dtype=np.float32).reshape(20, 2), np.repeat(np.arange(4), 5), list("abcd"))
    task = sample_episode(ds, 3, 2, 2, torch.Generator().manual_seed(0))
    assert task.support_x.shape == (6, 2) and task.support_x.dtype == torch.float32


def test_too_few_classes_or_examples_raise_naming_the_numbers() -> None:
    ds = make_images(n_classes=3, per_class=4)
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="5-way episode from a dataset with only 3 classes"):
        sample_episode(ds, 5, 1, 1, g)
    with pytest.raises(ValueError, match=r"only 4 examples .* n_shot \+ n_query = 2 \+ 3 = 5"):
        sample_episode(ds, 2, 2, 3, g)
    with pytest.raises(ValueError, match="n_shot must be an integer >= 1, got 0"):
        sample_episode(ds, 2, 0, 3, g)


def test_episode_list_is_deterministic_from_its_seed() -> None:
    ds = make_images()
    a = EpisodeList.generate(ds, 6, 5, 1, 3, seed=7)
    assert a == EpisodeList.generate(ds, 6, 5, 1, 3, seed=7)
    assert a != EpisodeList.generate(ds, 6, 5, 1, 3, seed=8)
    assert len(a) == 6 and isinstance(a[0], Episode) and len(a[0].support_idx) == 5
    assert len({e.classes for e in a}) > 1  # episodes differ from one another


def test_episode_list_tasks_match_the_stored_indices() -> None:
    ds = make_images()
    eps = EpisodeList.generate(ds, 3, 4, 2, 2, seed=0)
    tasks = list(eps.tasks(ds))
    assert len(tasks) == 3
    for ep, task in zip(eps, tasks):
        assert example_ids(task.support_x) == list(ep.support_idx)
        assert example_ids(task.query_x) == list(ep.query_idx)
        assert task.source.classes == ep.classes
    assert torch.equal(eps.task(1, ds).query_x, tasks[1].query_x)


def test_save_load_round_trip_keeps_everything(tmp_path) -> None:
    ds = make_images()
    eps = EpisodeList.generate(ds, 4, 5, 1, 2, seed=11)
    path = eps.save(tmp_path / "sub" / "episodes.json")
    loaded = EpisodeList.load(path)
    assert loaded == eps and loaded.seed == 11 and (loaded.n_way, loaded.n_shot, loaded.n_query) == (5, 1, 2)
    assert loaded.fingerprint == ds.fingerprint()
    raw = json.loads(path.read_text())
    assert set(raw) == {"format", "version", "n_way", "n_shot", "n_query", "seed", "fingerprint", "episodes"}
    assert [p.name for p in path.parent.iterdir()] == ["episodes.json"]  # no temp file left behind
    (tmp_path / "plain.txt").write_text("x")
    assert path.stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777  # usual permissions


def test_save_refuses_to_overwrite_unless_asked(tmp_path) -> None:
    ds = make_images()
    path = tmp_path / "episodes.json"
    EpisodeList.generate(ds, 2, 5, 1, 2, seed=0).save(path)
    other = EpisodeList.generate(ds, 2, 5, 1, 2, seed=1)
    with pytest.raises(FileExistsError, match="already exists; pass overwrite=True"):
        other.save(path)
    assert EpisodeList.load(path).seed == 0
    other.save(path, overwrite=True)
    assert EpisodeList.load(path).seed == 1


def test_episodes_refuse_another_dataset_naming_the_field() -> None:
    ds = make_images(name="tiny/test")
    eps = EpisodeList.generate(ds, 2, 5, 1, 2, seed=0)
    with pytest.raises(ValueError, match="another dataset/split: fingerprint field 'name' differs"):
        eps.check(make_images(name="tiny/val"))
    with pytest.raises(ValueError, match="field 'n_examples' differs"):
        eps.task(0, make_images(per_class=21))
    reordered = make_images()
    reordered.data = reordered.data.flip(0).clone()
    reordered._digest = None
    with pytest.raises(ValueError, match="field 'data_sha1' differs"):
        list(eps.tasks(reordered))
    eps.check(make_images())  # an identical reload passes


def test_load_rejects_missing_and_foreign_files(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.json not found"):
        EpisodeList.load(tmp_path / "nope.json")
    (tmp_path / "x.json").write_text('{"a": 1}')
    with pytest.raises(ValueError, match="not a dfml episode file"):
        EpisodeList.load(tmp_path / "x.json")
    (tmp_path / "y.json").write_text('{"format": "dfml.episodes", "version": 1, "n_way": 2}')
    with pytest.raises(ValueError, match="malformed episode file"):
        EpisodeList.load(tmp_path / "y.json")

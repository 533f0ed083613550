from __future__ import annotations

from pathlib import Path

import pytest

import dfml.data as data
from dfml.data import DATASETS, ArrayDataset, get_dataset


def test_registry_lists_the_built_in_datasets() -> None:
    assert DATASETS.names() == ["cifar_fs", "mini_imagenet", "toy"]


def test_toy_split_comes_from_the_toy_world() -> None:
    ds = get_dataset("toy", None, "val", seed=3)
    assert isinstance(ds, ArrayDataset) and ds.name == "toy/val" and ds.num_classes == 16
    assert ds.fingerprint() == data.make_toy_world(seed=3)["val"].fingerprint()


def test_real_datasets_by_name(shared_data: Path) -> None:
    ds = get_dataset("mini_imagenet", shared_data / "mini-imagenet-sample", "test")
    assert ds.name == "mini_imagenet/test" and ds.num_classes == 20
    assert get_dataset("CIFAR_FS", shared_data, "val").num_classes == 16


def test_unknown_names_and_splits_list_the_choices() -> None:
    with pytest.raises(KeyError, match="unknown dataset 'omniglot'; valid names: cifar_fs, mini_imagenet, toy"):
        get_dataset("omniglot", ".", "train")
    with pytest.raises(ValueError, match="unknown split 'meta-test'; expected one of train, val, test"):
        get_dataset("toy", None, "meta-test")
    with pytest.raises(ValueError, match="needs a root folder"):
        get_dataset("cifar_fs", None, "test")


def test_package_exports_are_explicit() -> None:
    assert sorted(data.__all__) == sorted(set(data.__all__))
    assert all(hasattr(data, name) for name in data.__all__)

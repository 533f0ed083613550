from __future__ import annotations

from pathlib import Path

import pytest

import dfml.data as data
from dfml.data import DATASETS, ArrayDataset, get_dataset


def test_registry_lists_the_built_in_datasets() -> None:
    assert DATASETS.names() == ["cifar_fs", "cub", "image_folder", "mini_imagenet", "omniglot", "toy"]


def test_toy_split_comes_from_the_toy_world() -> None:
    ds = get_dataset("toy", None, "val", seed=3)
    assert isinstance(ds, ArrayDataset) and ds.name == "toy/val" and ds.num_classes == 16
    assert ds.fingerprint() == data.make_toy_world(seed=3)["val"].fingerprint()


def test_real_datasets_by_name(shared_data: Path) -> None:
    ds = get_dataset("mini_imagenet", shared_data / "mini-imagenet-sample", "test")
    assert ds.name == "mini_imagenet/test" and ds.num_classes == 20
    assert get_dataset("CIFAR_FS", shared_data, "val").num_classes == 16


def test_unknown_names_and_splits_list_the_choices() -> None:
    with pytest.raises(KeyError, match="unknown dataset 'tiered_imagenet'; valid names: cifar_fs, cub, image_folder, "
                       "mini_imagenet, omniglot, toy"):
        get_dataset("tiered_imagenet", ".", "train")
    with pytest.raises(ValueError, match="unknown split 'meta-test'; expected one of train, val, test"):
        get_dataset("toy", None, "meta-test")
    with pytest.raises(ValueError, match="needs a root folder"):
        get_dataset("cifar_fs", None, "test")


def test_each_dataset_lists_its_options_and_refuses_others() -> None:
    assert data.dataset_options("omniglot") == ["image_size", "rotations", "layout", "num_workers"]
    assert data.dataset_options("cub") == ["image_size", "num_workers"]
    assert data.dataset_options("cifar_fs") == ["layout"]
    assert "seed" in data.dataset_options("toy") and "splits" in data.dataset_options("image_folder")
    with pytest.raises(ValueError, match=r"dataset 'cub' has no option 'image_sise' \(did you mean 'image_size'\? it "
                       r"takes image_size, num_workers\); set options with --image-size or --data-opt KEY=VALUE"):
        get_dataset("cub", ".", "train", image_sise=32)
    with pytest.raises(ValueError, match="dataset 'toy' has no option 'image_size'"):
        get_dataset("toy", None, "train", image_size=32)


def test_package_exports_are_explicit() -> None:
    assert sorted(data.__all__) == sorted(set(data.__all__))
    assert all(hasattr(data, name) for name in data.__all__)

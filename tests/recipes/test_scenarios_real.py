"""Real-data smokes of the heterogeneous scenarios (slow: they train real teachers on CIFAR-FS images).

A Conv4 + ResNet-10 CIFAR-FS pool (one epoch each) meta-trains a Conv4 for a few steps; a CIFAR-FS
(32x32) + miniImageNet-sample (84x84) pool does the same with its miniImageNet teacher inverted at
84x84.
"""

from __future__ import annotations

import pytest

from dfml.data import get_dataset
from dfml.experiment import experiment_config, run_experiment
from dfml.pool import PretrainConfig, merge_pools, pretrain_pool

pytestmark = pytest.mark.slow

RUN = {
    "dataset": "cifar_fs",
    "train": {"n_query": 2, "meta_batch_size": 2, "steps": 2, "inner_steps": 1, "first_order": True,
              "val_every": 2, "val_episodes": 2, "checkpoint_every": 2, "meta_arch": "conv4"},
    "eval": {"episodes": 4, "shots": [1], "n_query": 2},
    "datafree": {"generator": {"steps": 2, "width": 16, "nz": 16}, "reward": "heldout"},
}


def test_a_conv4_resnet10_cifar_fs_pool_meta_trains_a_conv4(shared_data, tmp_path):
    train = get_dataset("cifar_fs", shared_data, "train")
    cfg = PretrainConfig(n_models=2, n_way=5, arch=("conv4", {"name": "resnet10", "widths": [8, 16, 32, 64]}),
                         epochs=1, seed=0)
    pool = pretrain_pool(train, tmp_path / "pool", cfg)
    assert [e.arch for e in pool] == ["conv4", "resnet10"] and all(e.heldout_acc > 0.2 for e in pool)
    res = run_experiment(experiment_config("robust", RUN, {"pool": str(pool.root), "data_root": str(shared_data)}),
                         tmp_path / "robust")
    assert res["info"]["steps"] == 2 and res["info"]["meta_model"]["arch"] == "conv4"
    assert res["info"]["pool"]["architectures"] == ["conv4()", "resnet10(widths=[8, 16, 32, 64])"]
    avg = run_experiment(experiment_config("average", RUN, {"pool": str(pool.root), "data_root": str(shared_data)}),
                         tmp_path / "average")
    assert avg["info"]["average"]["models"] == [0]


def test_a_cifar_fs_and_mini_imagenet_pool_meta_trains_at_32_pixels(shared_data, tmp_path):
    cfg = PretrainConfig(n_models=1, n_way=5, arch="conv4", epochs=1, seed=0)
    cifar = pretrain_pool(get_dataset("cifar_fs", shared_data, "train"), tmp_path / "c", cfg)
    mini_train = get_dataset("mini_imagenet", shared_data / "mini-imagenet-sample", "train")
    mini = pretrain_pool(mini_train, tmp_path / "m", cfg)
    pool = merge_pools([cifar, mini], tmp_path / "cm")
    assert [e.input_shape for e in pool] == [[3, 32, 32], [3, 84, 84]]
    assert pool.entry(0).input_mean != pool.entry(1).input_mean  # CIFAR-100's and ImageNet's statistics
    train = {k: v for k, v in RUN["train"].items() if k != "meta_arch"}  # Conv4s of two sizes: one architecture
    res = run_experiment(experiment_config("robust", {**RUN, "train": train}, {"pool": str(pool.root),
                                                                               "data_root": str(shared_data)}),
                         tmp_path / "robust")
    assert res["info"]["pool"]["datasets"] == ["cifar_fs", "mini_imagenet"]
    assert res["info"]["meta_model"]["arch_kwargs"]["image_size"] == 32

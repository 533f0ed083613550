from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.data.base import ArrayDataset
from dfml.pool import ModelPool, PoolEntry, PoolManifest, PretrainConfig, pretrain_pool
from dfml.pool import pretrain as pretrain_module
from dfml.pool.training import evaluate_accuracy, split_holdout

from .conftest import fake_images

FAST = PretrainConfig(n_models=4, n_way=3, arch="mlp", arch_kwargs={"hidden": [16]}, epochs=3, batch_size=64,
                      lr=1e-2, weight_decay=0.0, augment=False, seed=0)


def shas(pool: ModelPool) -> list[str]:
    return [e.sha256 for e in pool]


def test_pool_entries_describe_their_models(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    ds = toy_world["train"]
    pool = pretrain_pool(ds, tmp_path, FAST)
    assert len(pool) == 4
    for e in pool:
        assert (e.arch, e.n_way, e.dataset, e.split, e.trust) == ("mlp", 3, "toy", "train", "trusted")
        assert e.arch_kwargs == {"num_classes": 3, "in_features": 32, "hidden": [16]}
        assert e.classes == [ds.classes[c] for c in e.class_ids]
        assert e.class_ids == sorted(e.class_ids) and len(set(e.class_ids)) == 3
        assert 1 <= e.best_epoch <= 3
    raw = json.loads((tmp_path / "pool.json").read_text())
    assert raw["build"]["config"]["epochs"] == 3 and raw["build"]["dataset"]["name"] == "toy/train"


def test_recorded_heldout_acc_is_that_of_the_saved_weights(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    ds = toy_world["train"]
    pool = pretrain_pool(ds, tmp_path, FAST)
    for e in pool:
        _, _, held, held_y = split_holdout(ds, e.class_ids, FAST.holdout_frac, e.seed)
        assert evaluate_accuracy(pool.load(e.index), ds, held, held_y) == e.heldout_acc


def test_same_seed_same_weights_other_seed_other_weights(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    ds = toy_world["train"]
    a = pretrain_pool(ds, tmp_path / "a", FAST)
    b = pretrain_pool(ds, tmp_path / "b", FAST)
    c = pretrain_pool(ds, tmp_path / "c", dataclasses.replace(FAST, seed=1))
    assert shas(a) == shas(b)
    assert [e.class_ids for e in a] == [e.class_ids for e in b]
    assert set(shas(a)).isdisjoint(shas(c))
    assert [e.class_ids for e in a] != [e.class_ids for e in c]


def test_an_interrupted_build_resumes_without_retraining(toy_world: dict[str, ArrayDataset], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ds = toy_world["train"]
    reference = pretrain_pool(ds, tmp_path / "ref", FAST)
    trained: list[str] = []
    real_fit = pretrain_module.fit_and_save

    def counting_fit(*args: object, **kwargs: object):  # noqa: ANN202
        trained.append(Path(args[5]).name)  # type: ignore[arg-type]
        return real_fit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pretrain_module, "fit_and_save", counting_fit)

    def stop_after_two(i: int, n: int, entry: PoolEntry) -> None:
        assert n == 4
        if i == 1:
            raise KeyboardInterrupt

    out = tmp_path / "pool"
    with pytest.raises(KeyboardInterrupt):
        pretrain_pool(ds, out, FAST, progress=stop_after_two)
    assert trained == ["model_0000.pt", "model_0001.pt"]
    assert len(ModelPool(out, allow_partial=True)) == 2
    mtimes = [(out / f"models/model_{i:04d}.pt").stat().st_mtime_ns for i in range(2)]

    seen: list[int] = []
    pool = pretrain_pool(ds, out, FAST, progress=lambda i, n, e: seen.append(i))
    assert trained == ["model_0000.pt", "model_0001.pt", "model_0002.pt", "model_0003.pt"]
    assert seen == [2, 3]
    assert [(out / f"models/model_{i:04d}.pt").stat().st_mtime_ns for i in range(2)] == mtimes
    assert shas(pool) == shas(reference)
    assert [e.to_dict() for e in pool] == [e.to_dict() for e in reference]

    pretrain_pool(ds, out, FAST)  # complete: nothing to do
    assert len(trained) == 4


def test_another_config_on_an_existing_pool_names_the_field(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    ds = toy_world["train"]
    pretrain_pool(ds, tmp_path, dataclasses.replace(FAST, n_models=1))
    with pytest.raises(ValueError, match=r"different config \(epochs: pool has 3, this call has 4\).*new out_dir"):
        pretrain_pool(ds, tmp_path, dataclasses.replace(FAST, n_models=1, epochs=4))
    with pytest.raises(ValueError, match=r"different dataset \(.*name: pool has 'toy/train', this call has 'toy/val'"):
        pretrain_pool(toy_world["val"], tmp_path, dataclasses.replace(FAST, n_models=1))


def test_resume_refuses_a_modified_model_file(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    cfg = dataclasses.replace(FAST, n_models=2)
    pretrain_pool(toy_world["train"], tmp_path, dataclasses.replace(cfg, n_models=2))
    (tmp_path / "models/model_0000.pt").write_bytes(b"junk")
    with pytest.raises(ValueError, match="model 0's file models/model_0000.pt is missing or was modified"):
        pretrain_pool(toy_world["train"], tmp_path, cfg)


def test_disjoint_mode_gives_disjoint_classes(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    pool = pretrain_pool(toy_world["train"], tmp_path, dataclasses.replace(FAST, class_mode="disjoint", epochs=1))
    ids = [c for e in pool for c in e.class_ids]
    assert len(ids) == len(set(ids)) == 12


def test_disjoint_mode_needs_enough_classes(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    cfg = dataclasses.replace(FAST, class_mode="disjoint", n_models=20, n_way=5)
    with pytest.raises(ValueError, match=r"needs n_models \* n_way = 20 \* 5 = 100 classes but the dataset has 64; "
                       r"use at most 12 models"):
        pretrain_pool(toy_world["train"], tmp_path, cfg)
    assert not (tmp_path / "pool.json").exists()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"class_mode": "overlap"}, r"class_mode must be one of \('random', 'disjoint'\), got 'overlap'"),
        ({"arch": "vgg"}, "unknown arch 'vgg'; valid names: conv4"),
        ({"holdout_frac": 0.0}, "holdout_frac must lie strictly between 0 and 1, got 0.0"),
        ({"n_way": 1}, "n_way must be >= 2"),
        ({"arch_kwargs": {"num_classes": 4}}, "num_classes=4 contradicts n_way=3"),
        ({"lr": 0.0}, r"PretrainConfig.lr must be a finite number > 0, got 0.0"),
        ({"weight_decay": -1e-4}, r"PretrainConfig.weight_decay must be a finite number >= 0"),
        ({"clip_grad_norm": float("nan")}, r"PretrainConfig.clip_grad_norm must be a finite number >= 0, got nan"),
    ],
)
def test_config_checks_its_fields(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(FAST, **changes)


def test_conv4_pool_on_images_with_augmentation(tmp_path: Path) -> None:
    ds = fake_images(n_classes=4, per_class=10, size=16)
    cfg = PretrainConfig(n_models=2, n_way=2, arch="conv4", arch_kwargs={"hidden": 4}, epochs=2, batch_size=8,
                         augment=True)
    pool = pretrain_pool(ds, tmp_path, cfg)
    e = pool.entry(0)
    assert e.arch_kwargs == {"in_channels": 3, "num_classes": 2, "image_size": 16, "hidden": 4}
    assert (e.dataset, e.split) == ("fake", "train")
    model = pool.load(0)
    assert model(ds.get_batch(np.arange(3))).shape == (3, 2)
    again = pretrain_pool(ds, tmp_path / "again", cfg)
    assert shas(again) == shas(pool)
    assert torch.equal(model.head.weight, again.load(0).head.weight)


def test_a_build_resumes_from_its_per_model_records_and_retrains_a_damaged_one(
    toy_world: dict[str, ArrayDataset], tmp_path: Path
) -> None:
    ds = toy_world["train"]
    reference = pretrain_pool(ds, tmp_path / "ref", FAST)

    def stop(i: int, n: int, entry: PoolEntry) -> None:
        if i == 2:
            raise KeyboardInterrupt

    out = tmp_path / "pool"
    with pytest.raises(KeyboardInterrupt):
        pretrain_pool(ds, out, FAST, progress=stop)
    assert sorted(p.name for p in (out / ".build").iterdir()) == [
        "build.json", "model_0000.json", "model_0001.json", "model_0002.json"]
    (out / "pool.json").unlink()  # as a sharded build leaves it: records, no manifest
    (out / "models/model_0001.pt").write_bytes(b"junk")
    seen: list[int] = []
    pool = pretrain_pool(ds, out, FAST, progress=lambda i, n, e: seen.append(i))
    assert seen == [1, 3]
    assert [e.to_dict() for e in pool] == [e.to_dict() for e in reference]
    assert (out / "pool.json").read_text() == (tmp_path / "ref" / "pool.json").read_text()
    assert not (out / ".build").exists()


def test_records_of_a_build_with_another_config_are_refused(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    def stop(i: int, n: int, entry: PoolEntry) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        pretrain_pool(toy_world["train"], tmp_path, FAST, progress=stop)
    (tmp_path / "pool.json").unlink()
    with pytest.raises(ValueError, match=r"different config \(epochs: pool has 3, this call has 5\)"):
        pretrain_pool(toy_world["train"], tmp_path, dataclasses.replace(FAST, epochs=5))


# ------------------------------------------------------------------ heterogeneous pools
MIXED = dataclasses.replace(FAST, n_models=5, arch_kwargs={},
                            arch=({"name": "mlp", "hidden": [16]}, {"name": "mlp", "hidden": [24, 24]}, "mlp"))


def test_equal_shares_deal_architectures_round_robin() -> None:
    assert pretrain_module.assign_architectures(MIXED) == [0, 1, 2, 0, 1]


def test_stated_shares_are_followed_and_a_longer_pool_extends_a_shorter_one() -> None:
    cfg = dataclasses.replace(MIXED, n_models=8, arch_shares=(2, 1, 1))
    order = pretrain_module.assign_architectures(cfg)
    assert [order.count(k) for k in range(3)] == [4, 2, 2]
    assert order == [0, 1, 2, 0, 0, 1, 2, 0]
    shorter = pretrain_module.assign_architectures(dataclasses.replace(cfg, n_models=5))
    assert order[:5] == shorter


def test_a_mixed_pool_records_each_model_s_architecture_and_inputs(toy_world: dict[str, ArrayDataset],
                                                                   tmp_path: Path) -> None:
    pool = pretrain_pool(toy_world["train"], tmp_path, MIXED)
    hidden = [e.arch_kwargs.get("hidden") for e in pool]
    assert hidden == [[16], [24, 24], None, [16], [24, 24]]
    assert len({e.architecture_key for e in pool}) == 3
    assert all(e.input_shape == [32] and e.input_mean is None for e in pool)
    for e in pool:  # every model loads with its own architecture
        assert pool.load(e.index)(torch.zeros(2, 32)).shape == (2, 3)
    again = pretrain_pool(toy_world["train"], tmp_path / "again", MIXED)
    assert shas(pool) == shas(again)


def test_image_pools_record_the_dataset_s_normalisation(tmp_path: Path) -> None:
    ds = fake_images(n_classes=4, per_class=6, size=16)
    cfg = PretrainConfig(n_models=2, n_way=2, arch=("conv4", {"name": "resnet10", "widths": [4, 4, 4, 4]}),
                         epochs=1, batch_size=8, seed=0)
    pool = pretrain_pool(ds, tmp_path, cfg)
    assert [e.arch for e in pool] == ["conv4", "resnet10"]
    assert pool.entry(0).arch_kwargs["image_size"] == 16 and "image_size" not in pool.entry(1).arch_kwargs
    d = pool.entry(1).input_domain()
    assert d is not None and d.shape == (3, 16, 16) and d.mean == (0.5, 0.5, 0.5) and d.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize(("changes", "message"), [
    ({"arch": ("mlp", "vgg")}, "unknown arch 'vgg'"),
    ({"arch": ("mlp", "mlp"), "arch_kwargs": {"hidden": [4]}}, "give each architecture its arguments in its own item"),
    ({"arch": ("mlp", {"hidden": [4]})}, r"a mapping \{name: ..., <arguments>\}"),
    ({"arch": ("mlp", "mlp"), "arch_shares": (1.0,)}, "one positive weight per architecture \\(2\\)"),
    ({"arch": ("mlp", "mlp"), "arch_shares": (1.0, 0.0)}, "one positive weight per architecture"),
    ({"arch": ()}, "arch is an empty list"),
])
def test_mixed_architecture_configs_are_checked(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(FAST, **{"arch_kwargs": {}, **changes})


def test_a_pool_built_before_new_config_fields_resumes(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    pretrain_pool(toy_world["train"], tmp_path, FAST)
    raw = json.loads((tmp_path / "pool.json").read_text())
    del raw["build"]["config"]["arch_shares"]  # as written by an older dfml, interrupted after 3 models
    raw["entries"] = raw["entries"][:3]
    for e in raw["entries"]:
        del e["input_shape"], e["input_mean"], e["input_std"]
    (tmp_path / "pool.json").write_text(json.dumps(raw))
    pool = pretrain_pool(toy_world["train"], tmp_path, FAST)
    assert len(pool) == 4 and all(e.input_shape == [32] for e in pool)


def test_a_pool_being_built_is_held_by_its_builder(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    from dfml.locks import LOCK_NAME, DirectoryInUseError, DirectoryLock

    seen = []

    def progress(i: int, n: int, entry: PoolEntry) -> None:  # while the build writes, a second one is refused
        seen.append((tmp_path / LOCK_NAME).is_file())
        with pytest.raises(DirectoryInUseError, match="pool directory .* is in use by another dfml process"):
            pretrain_pool(toy_world["train"], tmp_path, FAST)

    pretrain_pool(toy_world["train"], tmp_path, dataclasses.replace(FAST, n_models=1), progress=progress)
    assert seen == [True] and not (tmp_path / LOCK_NAME).exists()
    with DirectoryLock(tmp_path / "other"):
        with pytest.raises(DirectoryInUseError):
            pretrain_pool(toy_world["train"], tmp_path / "other", FAST)
    assert not (tmp_path / "other").exists()


UNFINISHED = r"pool '.*pool' is unfinished: {} of 4 models built; run the same `dfml pool build` command again to finish it"


def test_a_stopped_build_is_refused_as_a_pool_saying_how_many_models_are_missing_and_how_to_finish(
    toy_world: dict[str, ArrayDataset], tmp_path: Path
) -> None:
    def stop(i: int, n: int, entry: PoolEntry) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "pool"
    with pytest.raises(KeyboardInterrupt):
        pretrain_pool(toy_world["train"], out, FAST, progress=stop)
    with pytest.raises(ValueError, match="^" + UNFINISHED.format(1) + "$"):
        ModelPool(out)
    partial = ModelPool(out, allow_partial=True)
    assert len(partial) == 1 and partial.unfinished == (1, 4)
    with pytest.raises(ValueError, match=UNFINISHED.format(1) + r" \(the 1 built so far are intact\)$"):
        partial.verify()
    (out / "pool.json").unlink()  # as a sharded build leaves it: records, no manifest
    with pytest.raises(FileNotFoundError, match=UNFINISHED.format(1)):
        ModelPool(out)
    pool = pretrain_pool(toy_world["train"], out, FAST)
    assert len(pool) == 4 and pool.unfinished is None and len(ModelPool(out)) == 4
    pool.verify()


def test_a_manifest_that_lists_no_models_is_refused(toy_world: dict[str, ArrayDataset], tmp_path: Path) -> None:
    PoolManifest(entries=[], build={"kind": "import"}).save(tmp_path)
    with pytest.raises(ValueError, match=r"pool.json' lists no models"):
        ModelPool(tmp_path)


def test_the_papers_convention_is_their_code_s_training_and_flags_override_it() -> None:
    fields = pretrain_module.pretrain_training_fields("papers")
    assert fields == {"epochs": 60, "batch_size": 128, "lr": 0.01, "weight_decay": 0.0, "augment": False,
                      "clip_grad_norm": 50.0}
    assert pretrain_module.pretrain_training_fields("papers", {"epochs": 3, "lr": None})["epochs"] == 3
    assert pretrain_module.pretrain_training_fields("papers", {"lr": None})["lr"] == 0.01
    dfml_defaults = pretrain_module.pretrain_training_fields("dfml")
    assert PretrainConfig(**dfml_defaults) == PretrainConfig()  # "dfml" is PretrainConfig's own defaults
    with pytest.raises(ValueError, match=r"unknown pretraining convention 'paper'; use one of \['dfml', 'papers'\]"):
        pretrain_module.pretrain_training_fields("paper")


def test_clipping_changes_training_only_when_the_gradient_is_larger(toy_world: dict[str, ArrayDataset],
                                                                     tmp_path: Path) -> None:
    plain = pretrain_pool(toy_world["train"], tmp_path / "plain", FAST)
    loose = pretrain_pool(toy_world["train"], tmp_path / "loose", dataclasses.replace(FAST, clip_grad_norm=1e6))
    tight = pretrain_pool(toy_world["train"], tmp_path / "tight", dataclasses.replace(FAST, clip_grad_norm=1e-3))
    assert shas(loose) == shas(plain)
    assert all(a != b for a, b in zip(shas(tight), shas(plain)))
    assert json.loads((tmp_path / "tight" / "pool.json").read_text())["build"]["config"]["clip_grad_norm"] == 1e-3

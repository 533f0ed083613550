from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
from pathlib import Path

import pytest
import torch

from dfml.models import MLP, has_running_stats
from dfml.pool import ModelPool, PoolEntry, PoolManifest
from dfml.pool.pool import save_state_dict


def _model(seed: int, hidden: int = 8) -> MLP:
    torch.manual_seed(seed)
    model = MLP(6, num_classes=3, hidden=[hidden], batch_norm=True)
    bn = model.encoder[1]
    bn.running_mean.copy_(torch.randn(hidden))
    bn.running_var.copy_(torch.rand(hidden) + 0.5)
    return model


def _write_pool(root: Path, models: list[MLP], arch_kwargs: dict | None = None) -> None:
    entries = []
    for i, m in enumerate(models):
        file = f"models/model_{i:04d}.pt"
        sha = save_state_dict(m.state_dict(), root / file)
        entries.append(PoolEntry(
            index=i, file=file, arch="mlp",
            arch_kwargs=arch_kwargs or {"in_features": 6, "num_classes": 3, "hidden": [8], "batch_norm": True},
            n_way=3, classes=["a", "b", "c"], class_ids=[0, 1, 2], dataset="toy", split="train", seed=i,
            heldout_acc=0.5, best_epoch=1, sha256=sha, dfml_version="0.1.0",
        ))
    PoolManifest(entries=entries, build={"kind": "test"}).save(root)


@pytest.fixture
def models() -> list[MLP]:
    return [_model(1), _model(2)]


@pytest.fixture
def pool(tmp_path: Path, models: list[MLP]) -> ModelPool:
    _write_pool(tmp_path, models)
    return ModelPool(tmp_path)


def test_pool_lists_its_entries(pool: ModelPool, tmp_path: Path) -> None:
    assert len(pool) == 2
    assert [e.index for e in pool] == [0, 1]
    assert [e.index for e in pool.entries] == [0, 1]
    assert pool.entry(1).seed == 1
    assert pool.architectures() == ["mlp"]
    assert pool.build == {"kind": "test"}
    assert ModelPool(tmp_path / "pool.json").entries == pool.entries


def test_load_returns_a_frozen_eval_model_with_the_saved_weights(pool: ModelPool, models: list[MLP]) -> None:
    loaded = pool.load(1, device="cpu")
    assert not loaded.training
    assert all(not p.requires_grad for p in loaded.parameters())
    assert has_running_stats(loaded)
    x = torch.randn(4, 6)
    torch.testing.assert_close(loaded(x), models[1].eval()(x), rtol=0, atol=0)
    torch.testing.assert_close(loaded.encoder[1].running_mean, models[1].encoder[1].running_mean)


def test_load_leaves_the_global_rng_alone(pool: ModelPool) -> None:
    torch.manual_seed(5)
    before = torch.get_rng_state()
    pool.load(0)
    assert torch.equal(torch.get_rng_state(), before)


def test_entry_out_of_range(pool: ModelPool) -> None:
    with pytest.raises(IndexError, match=r"model index 2 out of range: this pool has models 0..1"):
        pool.entry(2)


def test_missing_pool_names_the_manifest_and_how_to_build_one(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"expected '.*nowhere/pool.json' \(directory does not exist\).*dfml pool build.*pretrain_pool"):
        ModelPool(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"pool.json' \(directory has no manifest\)"):
        ModelPool(tmp_path)


def test_a_changed_byte_is_a_checksum_mismatch(pool: ModelPool) -> None:
    path = pool.path_of(1)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    pool.load(0)  # the other model is fine
    with pytest.raises(ValueError, match=r"model 1: checksum mismatch for '.*model_0001.pt'.*modified or truncated"):
        pool.load(1)
    with pytest.raises(ValueError, match=r"^1 of 2 models in .* failed: model 1: checksum mismatch[^\n]*$"):
        pool.verify()


def test_a_truncated_file_is_a_checksum_mismatch(pool: ModelPool) -> None:
    path = pool.path_of(0)
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match=r"model 0: checksum mismatch for '.*model_0000.pt'"):
        pool.load(0)


def test_a_missing_weights_file_is_named(pool: ModelPool) -> None:
    pool.path_of(0).unlink()
    with pytest.raises(FileNotFoundError, match=r"model 0: weights file '.*model_0000.pt' listed in pool.json is missing"):
        pool.load(0)


def test_weights_of_the_wrong_shape_name_the_key_and_both_shapes(tmp_path: Path) -> None:
    wide = MLP(6, num_classes=3, hidden=[16], batch_norm=True)
    _write_pool(tmp_path, [wide], arch_kwargs={"in_features": 6, "num_classes": 3, "hidden": [8], "batch_norm": True})
    pool = ModelPool(tmp_path)
    with pytest.raises(ValueError, match=r"shape mismatch for 'encoder.0.weight': file has \(16, 6\), the architecture expects \(8, 6\)"):
        pool.load(0)


def test_missing_keys_are_named(tmp_path: Path) -> None:
    _write_pool(tmp_path, [MLP(6, num_classes=3, hidden=[8])])  # no BatchNorm, manifest says batch_norm=True
    with pytest.raises(ValueError, match=r"missing keys \['encoder.1.weight'"):
        ModelPool(tmp_path).load(0)


def test_verify_passes_on_a_good_pool(pool: ModelPool) -> None:
    pool.verify()


def test_equal_weights_give_equal_files_whatever_the_name(tmp_path: Path) -> None:
    state = _model(3).state_dict()
    assert save_state_dict(state, tmp_path / "a.pt") == save_state_dict(state, tmp_path / "sub" / "b.pt")


def test_weights_load_with_weights_only(pool: ModelPool) -> None:
    state = torch.load(pool.path_of(0), weights_only=True)
    assert set(state) == set(_model(0).state_dict())
    assert dataclasses.is_dataclass(pool.entry(0))


def _replace_file(pool: ModelPool, i: int, data: bytes) -> None:
    """Replace model ``i``'s file and record its checksum, as someone crafting a pool would."""
    pool.path_of(i).write_bytes(data)
    manifest = PoolManifest.load(pool.root)
    manifest.entries[i].sha256 = hashlib.sha256(data).hexdigest()
    manifest.save(pool.root)


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("kind", ["pickle", "random"])
def test_a_weights_file_with_a_matching_checksum_that_is_not_plain_tensors_is_refused_naming_the_model(
    pool: ModelPool, tmp_path: Path, kind: str
) -> None:
    marker = tmp_path / "code-ran"
    _replace_file(pool, 1, pickle.dumps(_RunsCode(marker)) if kind == "pickle" else os.urandom(500))
    pool = ModelPool(pool.root)
    with pytest.raises(ValueError) as info:
        pool.load(1)
    assert str(info.value) == (f"model 1: {pool.path_of(1)}: not a plain tensor file; refusing to load it "
                               "(rebuild or re-copy the pool)")
    with pytest.raises(ValueError, match=r"^1 of 2 models in .* failed: model 1: .*model_0001.pt: not a plain tensor "
                                         r"file; refusing to load it[^\n]*$") as info:
        pool.verify()
    assert "weights_only" not in str(info.value) and not marker.exists()


def test_a_weights_file_holding_something_else_than_a_state_dict_is_refused(pool: ModelPool) -> None:
    buf = io.BytesIO()
    torch.save([torch.ones(2)], buf)
    _replace_file(pool, 0, buf.getvalue())
    with pytest.raises(ValueError, match=r"model 0: .*model_0000.pt: holds a list, not a state dict"):
        ModelPool(pool.root).load(0)


@pytest.mark.parametrize(("arch", "kwargs", "reason"), [
    ("conv4", None, r"architecture 'conv4' got unexpected argument\(s\) \['batch_norm', 'in_features'\]"),
    ("vit", None, r"unknown architecture 'vit'"),
    ("mlp", {"in_features": 6, "num_classes": 3}, r"state dict does not match the architecture: missing keys"),
])
def test_verify_names_the_model_whose_architecture_does_not_fit(tmp_path: Path, models: list[MLP], arch: str,
                                                               kwargs: dict | None, reason: str) -> None:
    _write_pool(tmp_path, models)
    manifest = PoolManifest.load(tmp_path)
    manifest.entries[1].arch = arch
    if kwargs is not None:
        manifest.entries[1].arch_kwargs = kwargs
    manifest.save(tmp_path)
    pool = ModelPool(tmp_path)
    with pytest.raises(ValueError, match=r"^model 1 \(models/model_0001.pt\): " + reason):
        pool.load(1)
    with pytest.raises(ValueError, match=r"^1 of 2 models in .* failed: model 1 \(models/model_0001.pt\): " + reason):
        pool.verify()


def test_verify_lists_every_failed_model_on_one_line(pool: ModelPool) -> None:
    pool.path_of(0).unlink()
    pool.path_of(1).write_bytes(b"junk")
    with pytest.raises(ValueError, match=r"^2 of 2 models in .* failed: model 0: weights file .* is missing; "
                                         r"model 1: checksum mismatch[^\n]*$"):
        pool.verify()

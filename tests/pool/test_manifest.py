from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dfml.pool.manifest import FORMAT_VERSION, PoolEntry, PoolManifest, sha256_file, write_atomic


def make_entry(index: int = 0, **changes: object) -> PoolEntry:
    fields = dict(
        index=index, file=f"models/model_{index:04d}.pt", arch="mlp",
        arch_kwargs={"in_features": 32, "num_classes": 2, "hidden": [8]}, n_way=2, classes=["a", "b"],
        class_ids=[3, 7], dataset="toy", split="train", seed=11, heldout_acc=0.75, best_epoch=4,
        sha256="0" * 64, dfml_version="0.1.0",
    )
    fields.update(changes)
    return PoolEntry(**fields)  # type: ignore[arg-type]


def test_manifest_round_trips_through_pool_json(tmp_path: Path) -> None:
    manifest = PoolManifest(
        entries=[make_entry(0), make_entry(1, trust="deceptive", trust_detail={"trained_on": {"classes": ["x", "y"]}})],
        build={"kind": "pretrain", "config": {"epochs": 3}},
    )
    path = manifest.save(tmp_path)
    assert path == tmp_path / "pool.json"
    assert PoolManifest.load(tmp_path) == manifest
    raw = json.loads(path.read_text())
    assert raw["format_version"] == FORMAT_VERSION == 1
    assert list(raw["entries"][0]) == [
        "index", "file", "arch", "arch_kwargs", "n_way", "classes", "class_ids", "dataset", "split", "seed",
        "heldout_acc", "best_epoch", "sha256", "dfml_version", "trust", "trust_detail", "input_shape",
        "input_mean", "input_std",
    ]
    assert raw["entries"][0]["trust"] == "trusted"
    assert sorted(os.listdir(tmp_path)) == ["pool.json"]  # no temp file left behind


def test_a_manifest_written_before_inputs_were_recorded_still_loads(tmp_path: Path) -> None:
    raw = make_entry(0).to_dict()
    for key in ("input_shape", "input_mean", "input_std"):
        del raw[key]
    entry = PoolEntry.from_dict(raw)
    assert entry.input_shape is None and entry.input_domain() is None


def test_entry_records_its_input_domain() -> None:
    e = make_entry(0, arch="conv4", arch_kwargs={}, input_shape=[3, 32, 32], input_mean=[0.5] * 3,
                   input_std=[0.25] * 3)
    d = e.input_domain()
    assert d is not None and d.shape == (3, 32, 32) and d.mean == (0.5, 0.5, 0.5) and d.std == (0.25, 0.25, 0.25)


@pytest.mark.parametrize(("changes", "message"), [
    ({"input_mean": [0.5] * 3}, "input_mean/input_std are recorded without input_shape"),
    ({"input_shape": [3, 32, 32], "input_mean": [0.5] * 2, "input_std": [0.2] * 2}, "one value per channel"),
    ({"input_shape": [3, 32, 32], "input_mean": [0.5] * 3}, "give both mean and std"),
])
def test_entry_rejects_a_bad_input_domain(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_entry(0, **changes)


def test_entry_rejects_unknown_trust() -> None:
    with pytest.raises(ValueError, match=r"trust must be one of \('trusted', 'deceptive', 'poor'\), got 'bad'"):
        make_entry(trust="bad")


def test_entry_rejects_class_count_mismatch() -> None:
    with pytest.raises(ValueError, match="n_way=3 but 2 class names and 2 class ids"):
        make_entry(n_way=3)


def test_entry_from_dict_names_missing_and_unknown_fields() -> None:
    data = make_entry().to_dict()
    del data["sha256"]
    data["colour"] = "red"
    with pytest.raises(ValueError, match=r"missing field\(s\) \['sha256'\], unknown field\(s\) \['colour'\]"):
        PoolEntry.from_dict(data)


def test_manifest_rejects_other_format_versions_and_bad_indices(tmp_path: Path) -> None:
    data = PoolManifest(entries=[make_entry(0)]).to_dict()
    with pytest.raises(ValueError, match="format_version 99; this dfml reads version 1"):
        PoolManifest.from_dict({**data, "format_version": 99})
    data["entries"][0]["index"] = 5
    with pytest.raises(ValueError, match="entry at position 0 has index 5"):
        PoolManifest.from_dict(data)
    (tmp_path / "pool.json").write_text('{"format_version": 1, "entr')
    with pytest.raises(ValueError, match="not valid JSON.*truncated"):
        PoolManifest.load(tmp_path)


def test_write_atomic_keeps_the_old_file_when_the_replace_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "pool.json"
    write_atomic(target, b"old")

    def boom(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_atomic(target, b"new")
    assert target.read_bytes() == b"old"
    assert sorted(os.listdir(tmp_path)) == ["pool.json"]


def test_sha256_file_matches_hashlib(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    assert sha256_file(tmp_path / "f") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600)])
def test_a_pool_s_files_get_the_permissions_a_plain_open_gives(tmp_path: Path, mask: int, expected: int) -> None:
    import stat

    import torch

    from dfml.pool.pool import save_state_dict

    old = os.umask(mask)
    try:
        PoolManifest(entries=[make_entry(0)]).save(tmp_path)
        save_state_dict({"w": torch.ones(2)}, tmp_path / "models" / "model_0000.pt")
        write_atomic(tmp_path / ".build" / "model_0000.json", b"{}")
    finally:
        os.umask(old)
    for name in ("pool.json", "models/model_0000.pt", ".build/model_0000.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == expected, name


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("index", "0", "an integer"),
    ("file", "../../etc/passwd", "a path inside the pool directory"),
    ("file", "/etc/hostname", "a path inside the pool directory"),
    ("file", 3, "a path inside the pool directory"),
    ("arch", 4, "an architecture name"),
    ("arch_kwargs", [1, 2], "a mapping of architecture arguments"),
    ("n_way", "two", "an integer"),
    ("classes", 5, "a list of class names"),
    ("class_ids", ["a", "b"], "a list of integers"),
    ("dataset", None, "a string"),
    ("seed", "abc", "an integer or null"),
    ("heldout_acc", "abc", "a number in \\[0, 1\\] or null"),
    ("heldout_acc", 3.5, "a number in \\[0, 1\\] or null"),
    ("best_epoch", 1.5, "an integer or null"),
    ("sha256", "not-a-digest", "hexadecimal digits"),
    ("trust_detail", [], "a mapping"),
    ("input_shape", "3x32x32", "a list of integers or null"),
    ("input_mean", ["a"], "a list of numbers or null"),
])
def test_a_manifest_field_of_the_wrong_type_names_the_file_entry_field_and_fix(
    tmp_path: Path, field: str, value: object, expected: str
) -> None:
    data = PoolManifest(entries=[make_entry(0), make_entry(1)]).to_dict()
    data["entries"][1][field] = value
    (tmp_path / "pool.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=rf"^{tmp_path}/pool.json: entry (1|\?): field '{field}' must be {expected}"
                                         rf"( \(e.g. [^)]*\))?, got .*; rebuild or re-copy the pool$"):
        PoolManifest.load(tmp_path)


@pytest.mark.parametrize(("raw", "message"), [
    ('{"format_version": 1, "entries": "x"}', r"'entries' must be a list of model records, got a str"),
    ('{"format_version": 1, "entries": ["x"]}', r"entry at position 0 is a str, not a model record"),
    ('{"format_version": 1, "entries": [], "build": [1]}', r"'build' must be a mapping, got a list"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_the_file(tmp_path: Path, raw: str, message: str) -> None:
    (tmp_path / "pool.json").write_text(raw)
    with pytest.raises(ValueError, match=rf"^{tmp_path}/pool.json: {message}"):
        PoolManifest.load(tmp_path)


def test_a_manifest_that_is_not_text_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "pool.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"pool.json is not valid JSON .*Rebuild the pool"):
        PoolManifest.load(tmp_path)

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from dfml.pool import import_official_pool
from dfml.pool.importer import convert_official_conv4, infer_conv4_kwargs

NAMES = [f"class_{i}" for i in range(64)]


class OfficialConvBlock(nn.Module):
    """The papers' block: C and BN registered as attributes and again inside ``trunk``."""

    def __init__(self, indim: int, outdim: int) -> None:
        super().__init__()
        self.C = nn.Conv2d(indim, outdim, 3, padding=1)
        self.BN = nn.BatchNorm2d(outdim)
        self.relu = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2)
        self.trunk = nn.Sequential(self.C, self.BN, self.relu, self.pool)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


class OfficialConv4(nn.Module):
    def __init__(self, num_classes: int, hidden: int, image_size: int) -> None:
        super().__init__()
        spatial = image_size // 16
        blocks = [OfficialConvBlock(3 if i == 0 else hidden, hidden) for i in range(4)]
        self.trunk = nn.Sequential(*blocks, nn.Flatten(), nn.Linear(hidden * spatial * spatial, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(x)


def make_official(seed: int, hidden: int = 8, image_size: int = 32) -> OfficialConv4:
    torch.manual_seed(seed)
    net = OfficialConv4(5, hidden, image_size)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics and affine parameters
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_()
            m.num_batches_tracked.fill_(100)
    return net.eval()


def write_official(root: Path, nets: list[OfficialConv4], specific: list[list[int]], accs: list[float | None]) -> Path:
    src = root / "cifar_fs" / "conv4" / "meta_train" / "5way" / "model"
    src.mkdir(parents=True)
    for i, (net, ids, acc) in enumerate(zip(nets, specific, accs)):
        blob: dict = {"teacher": net.state_dict(), "specific": ids}
        if acc is not None:
            blob["acc"] = acc
        torch.save(blob, src / f"model_specific_{i}.pth")
    return root


def test_official_state_dicts_hold_shared_tensors_under_two_keys() -> None:
    state = make_official(0).state_dict()
    assert state["trunk.0.C.weight"].data_ptr() == state["trunk.0.trunk.0.weight"].data_ptr()
    assert state["trunk.2.BN.running_var"].data_ptr() == state["trunk.2.trunk.1.running_var"].data_ptr()
    assert "trunk.5.weight" in state


@pytest.mark.parametrize(("image_size", "spatial"), [(32, 2), (84, 5)])
def test_imported_models_compute_what_the_originals_compute(tmp_path: Path, image_size: int, spatial: int) -> None:
    nets = [make_official(s, image_size=image_size) for s in range(3)]
    specific = [[0, 5, 9, 12, 63], [1, 2, 3, 4, 5], [60, 61, 62, 63, 0]]
    src = write_official(tmp_path / "src", nets, specific, [87.5, 0.9, None])
    pool = import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="cifar_fs", split="train")
    assert len(pool) == 3
    x = torch.randn(4, 3, image_size, image_size)
    for i, net in enumerate(nets):
        model = pool.load(i)
        assert model.feature_dim == 8 * spatial * spatial
        torch.testing.assert_close(model(x), net(x), rtol=0, atol=0)
    e = pool.entry(0)
    assert e.arch == "conv4"
    assert e.arch_kwargs == {"in_channels": 3, "num_classes": 5, "hidden": 8, "image_size": image_size}
    assert e.classes == ["class_0", "class_5", "class_9", "class_12", "class_63"]
    assert e.class_ids == [0, 5, 9, 12, 63]
    assert (e.dataset, e.split, e.seed, e.best_epoch, e.trust) == ("cifar_fs", "train", None, None, "trusted")
    assert [p.heldout_acc for p in pool] == [0.875, 0.9, None]
    assert pool.build["kind"] == "import"
    pool.verify()


def test_models_are_ordered_by_their_file_index(tmp_path: Path) -> None:
    nets = [make_official(s) for s in range(11)]
    src = write_official(tmp_path / "src", nets, [[i, i + 1, i + 2, i + 3, i + 4] for i in range(11)], [None] * 11)
    pool = import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="cifar_fs", split="train")
    assert [e.class_ids[0] for e in pool] == list(range(11))  # 10 after 9, not after 1


def test_conversion_maps_every_key_once() -> None:
    state = convert_official_conv4(make_official(0).state_dict())
    assert sorted(state)[:3] == ["encoder.0.bn.bias", "encoder.0.bn.num_batches_tracked", "encoder.0.bn.running_mean"]
    assert len(state) == 4 * 7 + 2
    assert infer_conv4_kwargs(state) == {"in_channels": 3, "num_classes": 5, "hidden": 8, "image_size": 32}


def test_conversion_rejects_unknown_keys_and_disagreeing_copies() -> None:
    with pytest.raises(ValueError, match=r"unexpected key 'features.0.weight'"):
        convert_official_conv4({"features.0.weight": torch.zeros(1)})
    state = {k: v.clone() for k, v in make_official(0).state_dict().items()}
    state["trunk.1.trunk.0.bias"] += 1
    with pytest.raises(ValueError, match=r"the two copies of 'encoder.1.conv.bias' differ"):
        convert_official_conv4(state)


def test_class_ids_outside_the_names_are_rejected(tmp_path: Path) -> None:
    src = write_official(tmp_path / "src", [make_official(0)], [[0, 1, 2, 3, 70]], [None])
    with pytest.raises(ValueError, match=r"class ids \[70\] outside class_names \(0..63\)"):
        import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="cifar_fs", split="train")


def test_wrong_arch_kwargs_name_the_shape_mismatch(tmp_path: Path) -> None:
    src = write_official(tmp_path / "src", [make_official(0)], [[0, 1, 2, 3, 4]], [None])
    with pytest.raises(ValueError, match=r"shape mismatch for 'encoder.0.conv.weight': file has \(8, 3, 3, 3\), "
                       r"the architecture expects \(32, 3, 3, 3\)"):
        import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="cifar_fs", split="train",
                             arch_kwargs={"num_classes": 5})


def test_import_needs_files_and_a_fresh_out_dir(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no model_specific_<i>.pth files under"):
        import_official_pool(tmp_path / "empty", tmp_path / "pool", class_names=NAMES, dataset="d", split="s")
    src = write_official(tmp_path / "src", [make_official(0)], [[0, 1, 2, 3, 4]], [None])
    import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="d", split="s")
    with pytest.raises(ValueError, match="already holds a pool; import into a new out_dir"):
        import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="d", split="s")


def test_file_indices_must_run_from_zero(tmp_path: Path) -> None:
    src = write_official(tmp_path / "src", [make_official(0), make_official(1)], [[0, 1, 2, 3, 4]] * 2, [None] * 2)
    next(src.rglob("model_specific_0.pth")).unlink()
    with pytest.raises(ValueError, match=r"indices must run 0..n-1 once each, found \[1\]"):
        import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="d", split="s")


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_a_file_that_is_not_plain_tensors_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    import pickle

    src = write_official(tmp_path / "src", [make_official(0), make_official(1)], [[0, 1, 2, 3, 4]] * 2, [None] * 2)
    bad = next(src.rglob("model_specific_1.pth"))
    bad.write_bytes(pickle.dumps({"teacher": _RunsCode(tmp_path / "code-ran"), "specific": [0, 1, 2, 3, 4]}))
    with pytest.raises(ValueError) as info:
        import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="d", split="s")
    assert str(info.value).startswith(f"{bad}: not a plain tensor file; refusing to load it")
    assert "weights_only" not in str(info.value) and not (tmp_path / "code-ran").exists()
    assert not (tmp_path / "pool").exists(), "model 0 was written before model 1 was found bad"


@pytest.mark.parametrize(("blob", "message"), [
    ({"teacher": [torch.ones(1)], "specific": [0, 1, 2, 3, 4]}, r"'teacher' must be a state dict .*got a list"),
    ({"teacher": {"trunk.5.weight": 3}, "specific": [0, 1]}, r"'teacher' must be a state dict .*'trunk.5.weight' is an int"),
    ({"teacher": None, "specific": "abc"}, r"'teacher' must be a state dict"),
    ("TEACHER", r"'specific' must be a list of class ids, got 'abc'"),
    ("ACC", r"'acc' must be a number \(an accuracy\), got 'high'"),
])
def test_a_malformed_official_file_names_the_file_and_the_field(tmp_path: Path, blob: object, message: str) -> None:
    src = write_official(tmp_path / "src", [make_official(0)], [[0, 1, 2, 3, 4]], [None])
    path = next(src.rglob("model_specific_0.pth"))
    if blob == "TEACHER":
        blob = {"teacher": make_official(0).state_dict(), "specific": "abc"}
    elif blob == "ACC":
        blob = {"teacher": make_official(0).state_dict(), "specific": [0, 1, 2, 3, 4], "acc": "high"}
    torch.save(blob, path)
    with pytest.raises(ValueError, match=r"model_specific_0.pth: " + message):
        import_official_pool(src, tmp_path / "pool", class_names=NAMES, dataset="d", split="s")

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.data import ImageFolder
from dfml.data.folder import ratio_split
from dfml.data.imagefiles import decode_image, image_files

from .layouts import write_image_folder


def write_lists(folder: Path, train: list[str], val: list[str], test: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, names in (("train", train), ("val", val), ("test", test)):
        (folder / f"{split}.txt").write_text("".join(f"{n}\n" for n in names))
    return folder


@pytest.fixture()
def tree(tmp_path: Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    return tmp_path / "images", write_image_folder(tmp_path / "images")


def test_class_lists_set_the_labels_and_png_pixels_load_exactly(tree, tmp_path: Path) -> None:
    root, arrays = tree
    splits = write_lists(tmp_path / "s", ["class_c", "class_a", "class_b"], ["class_d", "class_e"],
                         ["# held out", "class_f", "class_g"])
    ds = ImageFolder(root, "train", splits=splits, image_size=16)
    assert ds.classes == ["class_c", "class_a", "class_b"] and ds.name == "image_folder[image_size=16]/train"
    assert ds.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4 and ds.input_shape == (3, 16, 16)
    png = image_files(root / "class_a")[0]
    assert png.suffix == ".png" and np.array_equal(ds.data[4].numpy(), arrays["class_a"][0])
    assert ImageFolder(root, "test", splits=splits, image_size=16).classes == ["class_f", "class_g"]


def test_normalisation_is_computed_from_meta_train_and_used_for_every_split(tree, tmp_path: Path) -> None:
    root, _ = tree
    splits = write_lists(tmp_path / "s", ["class_a", "class_b"], ["class_c", "class_d"], ["class_e", "class_f"])
    train = ImageFolder(root, "train", splits=splits)
    pixels = train.data.double().div(255).reshape(-1, 3)
    assert train.mean.flatten().tolist() == pytest.approx(pixels.mean(0).tolist(), abs=6e-5)
    assert train.std.flatten().tolist() == pytest.approx(pixels.std(0, unbiased=False).tolist(), abs=6e-5)
    val = ImageFolder(root, "val", splits=splits)
    assert torch.equal(val.mean, train.mean) and torch.equal(val.std, train.std) and val.name == "image_folder/val"
    given = ImageFolder(root, "val", splits=splits, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    assert given.mean.flatten().tolist() == [0.5] * 3 and given.name.startswith("image_folder[mean=(0.5,0.5,0.5)")


def test_a_ratio_and_seed_draw_the_split_once_and_write_it(tree, tmp_path: Path) -> None:
    root, _ = tree
    out = tmp_path / "pool" / "splits"
    ds = ImageFolder(root, "val", ratio=[0.34, 0.33, 0.33], seed=3, splits=out)
    written = {s: (out / f"{s}.txt").read_text().split() for s in ("train", "val", "test")}
    assert ds.classes == written["val"] and [len(v) for v in written.values()] == [3, 3, 3]
    assert sorted(sum(written.values(), [])) == [f"class_{c}" for c in "abcdefghi"]
    assert ratio_split([f"class_{c}" for c in "abcdefghi"], [0.34, 0.33, 0.33], 3) == written
    assert ratio_split([f"class_{c}" for c in "abcdefghi"], [0.34, 0.33, 0.33], 4) != written
    before = (out / "train.txt").stat().st_mtime_ns
    assert ImageFolder(root, "train", ratio=[0.34, 0.33, 0.33], seed=3, splits=out).classes == written["train"]
    assert (out / "train.txt").stat().st_mtime_ns == before  # an equal file is left as it is
    assert ImageFolder(root, "test", splits=out).classes == written["test"]  # and read back without the ratio
    assert ImageFolder(root, "test", ratio=[3, 3, 3], seed=3).classes == written["test"]  # weights, nothing written


def test_a_written_split_that_differs_is_refused_not_overwritten(tree, tmp_path: Path) -> None:
    root, _ = tree
    out = write_lists(tmp_path / "s", ["class_a"], ["class_b"], ["class_c"])
    with pytest.raises(ValueError, match=r"train.txt' exists and lists other classes than ratio=\[1, 1, 1\] seed=0 "
                       r"give; delete it to write the split again, or drop ratio"):
        ImageFolder(root, "train", ratio=[1, 1, 1], splits=out)
    assert (out / "train.txt").read_text() == "class_a\n"


def test_grayscale_keeps_one_channel(tree, tmp_path: Path) -> None:
    root, _ = tree
    splits = write_lists(tmp_path / "s", ["class_a", "class_b"], ["class_c"], ["class_d"])
    ds = ImageFolder(root, "train", splits=splits, channels=1, image_size=8)
    assert ds.input_shape == (1, 8, 8) and ds.mean.numel() == 1 and ds.name == "image_folder[image_size=8,channels=1]/train"
    png = image_files(root / "class_a")[0]
    assert np.array_equal(ds.data[0].numpy(), decode_image(png, 8, channels=1))


def test_wrong_trees_lists_and_options_are_named(tree, tmp_path: Path) -> None:
    root, _ = tree
    with pytest.raises(FileNotFoundError, match=r"image_folder: found no class folders: '.*/nowhere' does not exist"):
        ImageFolder(tmp_path / "nowhere", "train", ratio=[1, 1, 1])
    with pytest.raises(ValueError, match=r"no class split given\. image_folder expects root/<class>/<image>"):
        ImageFolder(root, "train")
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / "train.txt").write_text("class_a\n")
    with pytest.raises(FileNotFoundError, match=r"split folder lacks val.txt, test.txt \(.* holds train.txt\)"):
        ImageFolder(root, "train", splits=tmp_path / "partial")
    bad = write_lists(tmp_path / "bad", ["class_a", "class_zz"], ["class_b"], ["class_c"])
    with pytest.raises(ValueError, match=r"the train class list names \['class_zz'\], which are not class folders"):
        ImageFolder(root, "train", splits=bad)
    shared = write_lists(tmp_path / "shared", ["class_a"], ["class_a"], ["class_c"])
    with pytest.raises(ValueError, match=r"the classes \['class_a'\] are in more than one split"):
        ImageFolder(root, "train", splits=shared)
    with pytest.raises(ValueError, match=r"ratio=\[1, 0, 1\] over 9 classes gives .*'val': 0"):
        ImageFolder(root, "train", ratio=[1, 0, 1])
    with pytest.raises(ValueError, match="ratio must be three non-negative weights"):
        ImageFolder(root, "train", ratio=[0.5, 0.5])
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*, got 2"):
        ImageFolder(root, "train", ratio=[1, 1, 1], channels=2)
    with pytest.raises(ValueError, match="give both mean and std, or neither"):
        ImageFolder(root, "train", ratio=[1, 1, 1], mean=[0.5] * 3)
    with pytest.raises(ValueError, match=r"std must be 3 positive numbers \(one per channel\), got \[0, 1, 1\]"):
        ImageFolder(root, "train", ratio=[1, 1, 1], mean=[0.5] * 3, std=[0, 1, 1])


def test_an_empty_class_folder_or_an_unreadable_image_is_named(tree, tmp_path: Path) -> None:
    root, _ = tree
    splits = write_lists(tmp_path / "s", ["class_a", "class_b"], ["class_c"], ["class_d"])
    for f in image_files(root / "class_b"):
        f.unlink()
    with pytest.raises(FileNotFoundError, match=r"class folder .*class_b' holds no images \(.*is empty\)"):
        ImageFolder(root, "train", splits=splits)
    (root / "class_b" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(ValueError, match=r"cannot read image .*broken.jpg' \(UnidentifiedImageError"):
        ImageFolder(root, "train", splits=splits)

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.data import CUB
from dfml.data.cub import cub_split
from dfml.data.imagefiles import decode_image
from dfml.data.miniimagenet import IMAGENET_MEAN, IMAGENET_STD

from .layouts import write_cub


def test_the_split_rule_gives_100_50_50_of_200_sorted_classes() -> None:
    names = [f"{i:03d}.Bird" for i in range(200, 0, -1)]  # given out of order: the rule sorts
    train, val, test = (cub_split(names, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (100, 50, 50)
    assert train[:3] == ["001.Bird", "003.Bird", "005.Bird"] and val[:2] == ["002.Bird", "006.Bird"]
    assert test[:2] == ["004.Bird", "008.Bird"] and test[-1] == "200.Bird"
    assert not set(train) & set(val) and not set(val) & set(test) and len(set(train + val + test)) == 200


@pytest.mark.parametrize("level", ["parent", "CUB_200_2011"])
def test_splits_are_class_major_in_list_order_with_imagenet_normalisation(tmp_path: Path, level: str) -> None:
    classes = write_cub(tmp_path)
    root = tmp_path if level == "parent" else tmp_path / "CUB_200_2011"
    val = CUB(root, "val")
    assert val.classes == [classes[i] for i in (1, 5, 9)] and val.name == "cub/val"
    assert val.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    lines = (tmp_path / "CUB_200_2011" / "images.txt").read_text().split()[1::2]
    first = tmp_path / "CUB_200_2011" / "images" / next(p for p in lines if p.startswith(classes[1]))
    assert first.name.endswith("_0003.jpg")  # images.txt order (written in reverse), not sorted file order
    assert np.array_equal(val.data[0].numpy(), decode_image(first, 84))
    raw = val.data[0].permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.allclose(val.get_batch([0])[0], expected, atol=1e-6)
    assert CUB(root, "train").num_classes == 6 and CUB(root, "test").classes == [classes[i] for i in (3, 7, 11)]


def test_image_size_is_an_option_recorded_in_the_name(tmp_path: Path) -> None:
    write_cub(tmp_path)
    ds = CUB(tmp_path, "test", image_size=32)
    assert ds.input_shape == (3, 32, 32) and ds.name == "cub[image_size=32]/test"
    with pytest.raises(ValueError, match="cub: image_size must be an integer >= 1, got -3"):
        CUB(tmp_path, "test", image_size=-3)


def test_a_wrong_layout_names_what_is_expected_and_found(tmp_path: Path) -> None:
    (tmp_path / "birds").mkdir()
    with pytest.raises(FileNotFoundError, match=r"cub: no images.txt under .* holds birds/\)\. CUB expects root"):
        CUB(tmp_path, "train")
    write_cub(tmp_path / "x")
    (tmp_path / "x" / "CUB_200_2011" / "image_class_labels.txt").unlink()
    with pytest.raises(FileNotFoundError, match=r"CUB_200_2011' lacks image_class_labels.txt \(.* holds classes.txt"):
        CUB(tmp_path / "x", "train")


def test_inconsistent_or_malformed_lists_and_missing_images_are_named(tmp_path: Path) -> None:
    classes = write_cub(tmp_path)
    base = tmp_path / "CUB_200_2011"
    labels = (base / "image_class_labels.txt").read_text()
    (base / "image_class_labels.txt").write_text(labels + "999 13\n")
    with pytest.raises(ValueError, match=r"the lists in .* disagree: image_class_labels.txt names class ids \['13'\]"):
        CUB(tmp_path, "train")
    (base / "image_class_labels.txt").write_text(labels)
    (base / "classes.txt").write_text((base / "classes.txt").read_text() + "13 two words\n")
    with pytest.raises(ValueError, match=r"classes.txt' line 13 must be '<id> <value>', got '13 two words'"):
        CUB(tmp_path, "train")
    (base / "classes.txt").write_text("".join(f"{i} {c}\n" for i, c in enumerate(classes, start=1)))
    shutil.rmtree(base / "images" / classes[2])
    with pytest.raises(FileNotFoundError, match=r"4 of the 24 train images listed in images.txt are missing, e.g. "):
        CUB(tmp_path, "train")
    assert CUB(tmp_path, "val").num_classes == 3  # the other splits still load

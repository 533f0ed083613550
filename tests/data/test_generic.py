from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from dfml.data.generic import class_split


class FakeVision:
    """A torchvision-style dataset: uint8 ``.data [N, H, W, 3]``, ``.targets``, ``.classes``, PIL items."""

    def __init__(self, transform=None, with_arrays: bool = True) -> None:
        self.classes = ["apple", "bear", "cat", "dog"]
        self.targets = [i % 4 for i in range(20)]
        self._pixels = np.zeros((20, 5, 6, 3), np.uint8)
        self._pixels[:, 0, 0, 0] = np.arange(20)
        if with_arrays:
            self.data = self._pixels
        self.transform = transform
        self.reads = 0

    def __len__(self) -> int:
        return 20

    def __getitem__(self, i: int):
        self.reads += 1
        img = Image.fromarray(self._pixels[i])
        return (self.transform(img) if self.transform else img), self.targets[i]


class NoAttrs:
    """Only ``__getitem__``: uint8 CHW tensors and integer labels, no ``.targets``/``.classes``."""

    def __len__(self) -> int:
        return 9

    def __getitem__(self, i: int):
        return torch.full((1, 2, 2), i, dtype=torch.uint8), i % 3


def ids(ds) -> list[int]:
    return ds.data[:, 0, 0, 0].tolist()


def test_fast_path_reads_arrays_keeps_order_and_relabels_in_the_given_order() -> None:
    src = FakeVision()
    ds = class_split(src, ["dog", 1], name="fake/test")
    assert src.reads == 0  # no per-item decoding
    assert ds.classes == ["dog", "bear"] and ds.name == "fake/test"
    assert ids(ds) == [1, 3, 5, 7, 9, 11, 13, 15, 17, 19]
    assert ds.labels.tolist() == [1, 0] * 5
    assert ds.get_batch([0]).shape == (1, 3, 5, 6)


def test_item_path_gives_the_same_arrays_as_the_fast_path() -> None:
    slow = class_split(FakeVision(with_arrays=False), [2, 0])
    fast = class_split(FakeVision(), [2, 0])
    assert torch.equal(slow.data, fast.data) and slow.labels.tolist() == fast.labels.tolist()
    assert slow.labels.tolist() == [1, 0] * 5


def test_a_transform_is_honoured_through_getitem() -> None:
    src = FakeVision(transform=lambda img: torch.from_numpy(np.asarray(img, np.float32)).permute(2, 0, 1) * 2)
    ds = class_split(src, ["cat"])
    assert src.reads == 5 and ds.data.dtype == torch.float32 and tuple(ds.data.shape) == (5, 3, 5, 6)
    assert ds.data[:, 0, 0, 0].tolist() == [4.0, 12.0, 20.0, 28.0, 36.0]
    assert ds.get_batch([1]).shape == (1, 3, 5, 6)


def test_datasets_without_label_attributes_are_read_item_by_item() -> None:
    ds = class_split(NoAttrs(), [2])
    assert ds.classes == ["2"] and tuple(ds.data.shape) == (3, 2, 2, 1)
    assert ds.data[:, 0, 0, 0].tolist() == [2, 5, 8]


def test_mnist_like_data_gets_a_channel_axis_and_can_be_normalised() -> None:
    src = FakeVision()
    src.data = src._pixels[..., 0].copy()  # [N, H, W]
    ds = class_split(src, [0], mean=[0.5], std=[0.5])
    assert tuple(ds.data.shape) == (5, 5, 6, 1)
    assert ds.get_batch([1])[0, 0, 0, 0].item() == pytest.approx((4 / 255 - 0.5) / 0.5)


def test_unknown_or_repeated_classes_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match=r"unknown class name 'doggo'; did you mean \['dog'\]"):
        class_split(FakeVision(), ["doggo"])
    with pytest.raises(ValueError, match=r"class id 4 out of range 0..3"):
        class_split(FakeVision(), [4])
    with pytest.raises(ValueError, match=r"repeat the class ids \[1\]"):
        class_split(FakeVision(), ["bear", 1])
    with pytest.raises(ValueError, match="has no .classes list; pass class ids"):
        class_split(NoAttrs(), ["a"])
    with pytest.raises(TypeError, match="ints or names"):
        class_split(FakeVision(), [1.5])
    with pytest.raises(ValueError, match="classes is empty"):
        class_split(FakeVision(), [])


def test_a_class_without_examples_is_named() -> None:
    src = FakeVision()
    src.classes = src.classes + ["emu"]
    with pytest.raises(ValueError, match=r"classes \['emu'\] have no examples"):
        class_split(src, ["emu", "cat"])

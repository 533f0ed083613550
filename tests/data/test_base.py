from __future__ import annotations

import numpy as np
import pytest

from dfml.data.base import ArrayDataset, check_split


def make(data: np.ndarray, labels: list[int]) -> ArrayDataset:
    return ArrayDataset(data, labels, ["a", "b"], name="d")


def test_fingerprint_is_stable_and_sees_example_order() -> None:
    x = np.arange(4 * 2 * 2 * 3, dtype=np.uint8).reshape(4, 2, 2, 3)
    base = make(x, [0, 0, 1, 1]).fingerprint()
    assert base == make(x.copy(), [0, 0, 1, 1]).fingerprint()
    assert set(base) == {"name", "n_examples", "classes", "labels_sha1", "data_sha1"}
    swapped = make(x[[1, 0, 2, 3]], [0, 0, 1, 1]).fingerprint()  # same labels, order within class differs
    assert swapped["labels_sha1"] == base["labels_sha1"] and swapped["data_sha1"] != base["data_sha1"]
    assert make(x, [0, 1, 0, 1]).fingerprint()["labels_sha1"] != base["labels_sha1"]


def test_subset_keeps_normalisation_and_gets_its_own_fingerprint() -> None:
    x = np.zeros((4, 2, 2, 3), np.uint8)
    ds = ArrayDataset(x, [0, 0, 1, 1], ["a", "b"], mean=[0.5] * 3, std=[0.5] * 3, name="d")
    sub = ds.subset_classes([1])
    assert sub.classes == ["b"] and sub.get_batch([0]).flatten()[0].item() == -1.0
    assert sub.fingerprint()["n_examples"] == 2


def test_check_split_names_the_choices() -> None:
    assert check_split("val", "x") == "val"
    with pytest.raises(ValueError, match="x: unknown split 'dev'; expected one of train, val, test"):
        check_split("dev", "x")

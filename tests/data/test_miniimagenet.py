from __future__ import annotations

import pickle
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfml.data.imagefiles import decode_all, decode_image, fill_images
from dfml.data.miniimagenet import IMAGENET_MEAN, IMAGENET_STD, MiniImageNet, _decode, read_split_csv

SIZES = {"train": 64, "val": 16, "test": 20}


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> dict[str, MiniImageNet]:
    out = {}
    for split in SIZES:
        start = time.perf_counter()
        out[split] = MiniImageNet(shared_data / "mini-imagenet-sample", split)
        print(f"miniImageNet sample {split}: {len(out[split])} images in {time.perf_counter() - start:.2f}s")
    return out


def test_sample_splits_have_the_ravi_classes_in_csv_order(sample: dict[str, MiniImageNet], shared_data: Path) -> None:
    for split, size in SIZES.items():
        ds = sample[split]
        _, full_wnids = read_split_csv(shared_data / "splits" / "miniimagenet_ravi" / f"{split}.csv")
        assert ds.classes == list(dict.fromkeys(full_wnids)) and len(ds.classes) == size
        assert tuple(ds.data.shape) == (6 * size, 84, 84, 3) and ds.data.dtype == torch.uint8
        assert np.bincount(ds.labels).tolist() == [6] * size
        assert ds.name == f"mini_imagenet/{split}"
    assert not set(sample["train"].classes) & set(sample["test"].classes)


def test_sample_pixels_are_the_decoded_jpegs(sample: dict[str, MiniImageNet], shared_data: Path) -> None:
    root = shared_data / "mini-imagenet-sample"
    files, _ = read_split_csv(root / "val.csv")
    ds = sample["val"]
    expected = np.asarray(Image.open(root / "images" / files[-1]).convert("RGB"))
    assert np.array_equal(ds.data[-1].numpy(), expected)
    batch = ds.get_batch([len(ds) - 1])
    raw = torch.from_numpy(expected.copy()).permute(2, 0, 1).float() / 255
    norm = (raw - torch.tensor(IMAGENET_MEAN).view(3, 1, 1)) / torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert batch.shape == (1, 3, 84, 84) and torch.allclose(batch[0], norm, atol=1e-6)


def write_csv_layout(root: Path, split: str = "train", size: int = 10) -> list[np.ndarray]:
    """Three classes (listed out of alphabetical order) with two PNG images each."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    lines, arrays = ["filename,label"], []
    for wnid in ("n02", "n01", "n03"):
        for j in range(2):
            arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / "images" / f"{wnid}_{j}.png")
            lines.append(f"{wnid}_{j}.png,{wnid}")
            arrays.append(arr)
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return arrays


def test_csv_layout_labels_classes_by_first_appearance(tmp_path: Path) -> None:
    arrays = write_csv_layout(tmp_path, size=84)
    ds = MiniImageNet(tmp_path, "train", num_workers=2)
    assert ds.classes == ["n02", "n01", "n03"]
    assert ds.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert all(np.array_equal(ds.data[i].numpy(), a) for i, a in enumerate(arrays))


def test_images_of_another_size_are_resized_once(tmp_path: Path) -> None:
    arrays = write_csv_layout(tmp_path, size=10)
    ds = MiniImageNet(tmp_path, "train", image_size=6)
    assert tuple(ds.data.shape) == (6, 6, 6, 3)
    expected = np.asarray(Image.fromarray(arrays[0]).resize((6, 6), Image.Resampling.BILINEAR))
    assert np.array_equal(ds.data[0].numpy(), expected)


def test_pickle_cache_is_detected_and_follows_class_dict(tmp_path: Path) -> None:
    images = np.arange(5 * 84 * 84 * 3, dtype=np.int64).reshape(5, 84, 84, 3).astype(np.uint8)
    cache = {"image_data": images, "class_dict": {"n09": [3, 4], "n01": [0, 1, 2]}}
    with open(tmp_path / "mini-imagenet-cache-test.pkl", "wb") as f:
        pickle.dump(cache, f, protocol=4)
    ds = MiniImageNet(tmp_path, "test")
    assert ds.classes == ["n09", "n01"] and ds.labels.tolist() == [0, 0, 1, 1, 1]
    assert torch.equal(ds.data, torch.from_numpy(images[[3, 4, 0, 1, 2]]))
    small = MiniImageNet(tmp_path, "test", image_size=42)
    assert tuple(small.data.shape) == (5, 42, 42, 3)


def test_a_cache_in_class_order_loads_as_stored(tmp_path: Path) -> None:
    images = np.arange(5 * 84 * 84 * 3, dtype=np.int64).reshape(5, 84, 84, 3).astype(np.uint8)
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": images, "class_dict": {"n01": [0, 1, 2], "n09": [3, 4]}}, f, protocol=4)
    ds = MiniImageNet(tmp_path, "val")  # kept without a reordering copy
    assert ds.labels.tolist() == [0, 0, 0, 1, 1] and torch.equal(ds.data, torch.from_numpy(images))


def test_decoding_into_one_array_equals_stacking_the_decoded_images(shared_data: Path) -> None:
    root = shared_data / "mini-imagenet-sample"
    files, _ = read_split_csv(root / "val.csv")
    paths = [root / "images" / f for f in files[:12]]
    stacked = np.stack([_decode(p, 84) for p in paths])
    got = fill_images(paths, (84, 84, 3), lambda p: _decode(p, 84), workers=3)
    assert got.dtype == np.uint8 and np.array_equal(got, stacked)
    assert np.array_equal(decode_all(paths, 40), np.stack([decode_image(p, 40) for p in paths]))
    assert fill_images([], (4, 4, 3), lambda p: _decode(p, 4)).shape == (0, 4, 4, 3)
    with pytest.raises(ValueError, match="cannot read image"):
        decode_all([root / "val.csv"], 40)


def test_malformed_cache_raises(tmp_path: Path) -> None:
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"image_data": np.zeros((2, 84, 84, 3), np.uint8), "class_dict": {"a": [0, 5]}}, f)
    with pytest.raises(ValueError, match=r"'class_dict' indexes images outside 0..1"):
        MiniImageNet(tmp_path, "val")
    with open(tmp_path / "mini-imagenet-cache-val.pkl", "wb") as f:
        pickle.dump({"images": []}, f)
    with pytest.raises(ValueError, match="not a miniImageNet cache"):
        MiniImageNet(tmp_path, "val")


def test_missing_files_name_the_csv_or_image_and_where_to_get_data(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"neither .*val.csv nor .*mini-imagenet-cache-val.pkl.*image-net"):
        MiniImageNet(tmp_path, "val")
    write_csv_layout(tmp_path)
    (tmp_path / "images" / "n01_1.png").unlink()
    msg = r"1 of the 6 images listed in .*train.csv are missing, e.g. .*n01_1.png"
    with pytest.raises(FileNotFoundError, match=msg):
        MiniImageNet(tmp_path, "train")


def test_malformed_csv_and_bad_arguments_raise(tmp_path: Path) -> None:
    (tmp_path / "test.csv").write_text("file,wnid\na.jpg,n01\n")
    with pytest.raises(ValueError, match="must start with the header 'filename,label'"):
        MiniImageNet(tmp_path, "test")
    (tmp_path / "test.csv").write_text("filename,label\na.jpg\n")
    with pytest.raises(ValueError, match="line 2: expected two columns"):
        MiniImageNet(tmp_path, "test")
    with pytest.raises(ValueError, match="unknown split 'training'"):
        MiniImageNet(tmp_path, "training")
    with pytest.raises(ValueError, match="image_size must be a positive integer, got 0"):
        MiniImageNet(tmp_path, "test", image_size=0)

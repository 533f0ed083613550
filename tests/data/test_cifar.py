from __future__ import annotations

import pickle
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dfml.data.cifar import CIFAR100_MEAN, CIFAR100_STD, CIFARFS, cifar_fs_classes

SIZES = {"train": 64, "val": 16, "test": 20}


@pytest.fixture(scope="module")
def cifar_fs(shared_data: Path) -> dict[str, CIFARFS]:
    out = {}
    for split in SIZES:
        start = time.perf_counter()
        out[split] = CIFARFS(shared_data, split)
        print(f"CIFAR-FS {split}: {len(out[split])} images in {time.perf_counter() - start:.2f}s")
    return out


def test_packaged_class_lists_match_the_published_split(shared_data: Path) -> None:
    for split, size in SIZES.items():
        names = cifar_fs_classes(split)
        ref = (shared_data / "splits" / "cifar_fs_bertinetto" / f"{split}.txt").read_text().split()
        assert names == ref and len(names) == size
    all_names = sum((cifar_fs_classes(s) for s in SIZES), [])
    assert len(set(all_names)) == 100


def test_splits_have_64_16_20_classes_of_600_images(cifar_fs: dict[str, CIFARFS]) -> None:
    for split, size in SIZES.items():
        ds = cifar_fs[split]
        assert ds.classes == cifar_fs_classes(split)
        assert ds.name == f"cifar_fs/{split}"
        assert tuple(ds.data.shape) == (size * 600, 32, 32, 3) and ds.data.dtype == torch.uint8
        assert np.bincount(ds.labels).tolist() == [600] * size
        assert ds.input_shape == (3, 32, 32)
    assert cifar_fs["train"].classes[:3] == ["dolphin", "seal", "aquarium_fish"]
    assert cifar_fs["test"].classes[:3] == ["whale", "poppy", "rose"]


def test_pixels_match_the_raw_cifar100_pickles(cifar_fs: dict[str, CIFARFS], shared_data: Path) -> None:
    folder = shared_data / "cifar-100-python"
    with open(folder / "meta", "rb") as f:
        names = pickle.load(f, encoding="latin1")["fine_label_names"]
    with open(folder / "test", "rb") as f:
        raw = pickle.load(f, encoding="latin1")
    # The last image of class "rose" (test label 2) is the last "rose" row of the CIFAR-100 test pickle.
    rows = np.flatnonzero(np.asarray(raw["fine_labels"]) == names.index("rose"))
    expected = raw["data"][rows[-1]].reshape(3, 32, 32).transpose(1, 2, 0)
    ds = cifar_fs["test"]
    last_rose = ds.indices_by_class()[2][-1]
    assert np.array_equal(ds.data[last_rose].numpy(), expected)


def test_all_splits_together_have_the_published_cifar100_statistics(cifar_fs: dict[str, CIFARFS]) -> None:
    # Exact integer per-channel sums over the 60,000 images (a float copy of all of them is 700 MB).
    n, s1, s2 = 0, np.zeros(3, np.int64), np.zeros(3, np.int64)
    for ds in cifar_fs.values():
        x = ds.data.numpy().reshape(-1, 3)
        n += x.shape[0]
        s1 += np.einsum("ij->j", x, dtype=np.int64, casting="unsafe")
        s2 += np.einsum("ij,ij->j", x, x, dtype=np.int64, casting="unsafe")
    assert n == 60000 * 32 * 32
    mean = torch.from_numpy(s1 / n / 255)
    std = torch.from_numpy(s2 / n / 255**2) - mean**2
    std = std.sqrt()
    assert torch.allclose(mean, torch.tensor(CIFAR100_MEAN, dtype=torch.float64), atol=3e-3)
    assert torch.allclose(std, torch.tensor(CIFAR100_STD, dtype=torch.float64), atol=3e-3)


def test_get_batch_normalises_with_cifar100_mean_and_std(cifar_fs: dict[str, CIFARFS]) -> None:
    ds = cifar_fs["val"]
    batch = ds.get_batch([0, 599, 600])
    assert batch.shape == (3, 3, 32, 32)
    raw = ds.data[0].permute(2, 0, 1).float() / 255
    expected = (raw - torch.tensor(CIFAR100_MEAN).view(3, 1, 1)) / torch.tensor(CIFAR100_STD).view(3, 1, 1)
    assert torch.allclose(batch[0], expected, atol=1e-6)


def test_root_may_be_the_cifar_100_python_folder_itself(shared_data: Path) -> None:
    ds = CIFARFS(shared_data / "cifar-100-python", "val", layout="pickle")
    assert len(ds) == 9600


def write_folder_layout(root: Path, split: str, per_class: int = 2) -> None:
    rng = np.random.default_rng(0)
    for name in cifar_fs_classes(split):
        (root / split / name).mkdir(parents=True)
        for j in range(per_class):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / split / name / f"{j}.png")


def test_image_folder_layout_reads_pngs_in_class_list_order(tmp_path: Path) -> None:
    write_folder_layout(tmp_path, "test")
    ds = CIFARFS(tmp_path, "test", transform=lambda x: x * 0)
    assert len(ds) == 40 and ds.labels.tolist() == np.repeat(np.arange(20), 2).tolist()
    first = np.asarray(Image.open(tmp_path / "test" / "whale" / "0.png"))
    assert np.array_equal(ds.data[0].numpy(), first)
    x, y = ds[3]
    assert y == 1 and x.shape == (3, 32, 32) and float(x.abs().sum()) == 0.0  # transform applied per item


def test_folder_layout_errors_name_the_missing_class_and_bad_image(tmp_path: Path) -> None:
    write_folder_layout(tmp_path, "val", per_class=1)
    shutil.rmtree(tmp_path / "val" / "otter")
    with pytest.raises(FileNotFoundError, match=r"lacks the class folders \['otter'\]"):
        CIFARFS(tmp_path, "val")
    (tmp_path / "val" / "otter").mkdir()
    Image.new("RGB", (33, 32)).save(tmp_path / "val" / "otter" / "a.png")
    with pytest.raises(ValueError, match="a.png is 33x32; CIFAR-FS images must be 32x32"):
        CIFARFS(tmp_path, "val", layout="folder")


def test_missing_data_says_what_was_expected_and_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"cifar-100-python.*https://www.cs.toronto.edu/~kriz/cifar.html"):
        CIFARFS(tmp_path, "train")
    (tmp_path / "cifar-100-python").mkdir()
    (tmp_path / "cifar-100-python" / "meta").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"pickle .*cifar-100-python/train is missing"):
        CIFARFS(tmp_path, "train")


def test_malformed_pickles_and_bad_arguments_raise_value_errors(tmp_path: Path) -> None:
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name in ("meta", "train", "test"):
        (folder / name).write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="meta is not a readable dataset pickle"):
        CIFARFS(tmp_path, "train")
    with open(folder / "meta", "wb") as f:
        pickle.dump({"label_names": ["airplane"]}, f)
    with pytest.raises(ValueError, match="no 'fine_label_names'.*CIFAR-10"):
        CIFARFS(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown split 'valid'; expected one of train, val, test"):
        CIFARFS(tmp_path, "valid")
    with pytest.raises(ValueError, match="unknown layout 'zip'"):
        CIFARFS(tmp_path, "val", layout="zip")


def test_fixed_episodes_on_cifar_fs_test_are_checked_against_the_split(
    cifar_fs: dict[str, CIFARFS], tmp_path: Path
) -> None:
    from dfml.data.episodes import EpisodeList

    eps = EpisodeList.generate(cifar_fs["test"], 10, 5, 1, 15, seed=0)
    path = eps.save(tmp_path / "cifar_fs_test_5w1s.json")
    loaded = EpisodeList.load(path)
    task = loaded.task(0, cifar_fs["test"])
    assert task.support_x.shape == (5, 3, 32, 32) and task.query_x.shape == (75, 3, 32, 32)
    with pytest.raises(ValueError, match="fingerprint field 'name' differs"):
        loaded.check(cifar_fs["val"])

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dfml.data import EpisodeList, Omniglot
from dfml.data.omniglot import background_alphabet_sizes, val_alphabets

from .layouts import NPZ_BACKGROUND_LABELS, write_omniglot_folders, write_omniglot_npz


def lanczos(drawing: np.ndarray, size: int) -> np.ndarray:
    """A bool drawing (white ``True``) as the loader should decode it: 0/255 grayscale, Lanczos-resized."""
    img = Image.fromarray(drawing.astype(np.uint8) * 255)
    return np.asarray(img.resize((size, size), Image.Resampling.LANCZOS)) if img.size != (size, size) else np.asarray(img)


def test_the_shipped_alphabet_sizes_give_meta_datasets_883_81_split() -> None:
    sizes = background_alphabet_sizes()
    assert len(sizes) == 30 and sum(n for n, _ in sizes) == 964
    val = val_alphabets({name: n for n, name in sizes})
    assert sum(n for n, name in sizes if name in val) == 81
    assert {"Tagalog", "Alphabet of the Magi"} <= val


def test_the_smallest_background_alphabets_are_meta_val_ties_by_order() -> None:
    assert val_alphabets({"a": 3, "b": 1, "c": 1, "d": 2, "e": 1, "f": 5, "g": 1}) == {"b", "c", "e", "g", "d"}
    assert val_alphabets({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1}) == {"a", "b", "c", "d", "e"}
    with pytest.raises(ValueError, match="holds 5 alphabets, but meta-validation takes the 5 smallest"):
        val_alphabets({"a": 1, "b": 1, "c": 1, "d": 1, "e": 1})


@pytest.mark.parametrize("top", ["omniglot-py", ""])
def test_folders_split_background_by_alphabet_size_and_test_is_evaluation(tmp_path: Path, top: str) -> None:
    drawings = write_omniglot_folders(tmp_path, top=top)
    train, val, test = (Omniglot(tmp_path, s) for s in ("train", "val", "test"))
    assert train.classes == [f"{a}/character{c:02d}" for a in ("Alpha", "Beta") for c in (1, 2, 3)]
    assert val.classes == [f"{a}/character01" for a in ("Delta", "Epsilon", "Eta", "Gamma", "Zeta")]
    assert test.classes == [f"{a}/character{c:02d}" for a in ("Omega", "Psi") for c in (1, 2, 3)]
    assert train.name == "omniglot/train" and train.input_shape == (1, 28, 28) and train.mean is None
    assert train.labels.tolist() == np.repeat(np.arange(6), 4).tolist()
    for ds in (train, val, test):
        for i in (0, len(ds) - 1):
            name, drawing = ds.classes[ds.labels[i]], i % 4
            assert np.array_equal(ds.data[i, ..., 0].numpy(), lanczos(drawings[name][drawing], 28))
    assert float(test.get_batch([0]).max()) == 1.0 and float(test.get_batch([0]).min()) >= 0.0


@pytest.mark.parametrize("encoding", ["bool", "uint8_01", "uint8_255"])
def test_npz_arrays_of_either_dtype_give_the_same_images(tmp_path: Path, encoding: str) -> None:
    images = write_omniglot_npz(tmp_path, encoding=encoding)
    test = Omniglot(tmp_path, "test", image_size=20)
    assert test.classes == ["character0965", "character0966", "character0967", "character0968"]
    expected = images["images_evaluation"].reshape(-1, 20, 20).astype(np.uint8) * 255
    assert np.array_equal(test.data[..., 0].numpy(), expected)


def test_npz_background_characters_are_placed_by_lakes_numbering(tmp_path: Path) -> None:
    images = write_omniglot_npz(tmp_path)
    train, val = Omniglot(tmp_path, "train"), Omniglot(tmp_path, "val")
    assert train.classes == [f"character{n:04d}" for n in (1, 2, 3, 4, 5, 6, 177)]
    assert val.classes == [f"character{n:04d}" for n in (178, 540, 709, 837, 893)]
    first_val = NPZ_BACKGROUND_LABELS.index(177)
    assert np.array_equal(val.data[0, ..., 0].numpy(), lanczos(images["images_background"][first_val, 0], 28))


def test_npz_and_folders_decode_the_same_pixels(tmp_path: Path) -> None:
    drawings = write_omniglot_folders(tmp_path / "f")
    test_names = [f"{a}/character{c:02d}" for a in ("Omega", "Psi") for c in (1, 2, 3)]
    stack = np.stack([drawings[n] for n in test_names])
    (tmp_path / "n").mkdir()
    np.savez(tmp_path / "n" / "images_evaluation.npz", images=stack, labels=np.arange(964, 970))
    folder, npz = Omniglot(tmp_path / "f", "test"), Omniglot(tmp_path / "n", "test")
    assert np.array_equal(folder.data.numpy(), npz.data.numpy()) and folder.labels.tolist() == npz.labels.tolist()
    assert folder.fingerprint()["data_sha1"] == npz.fingerprint()["data_sha1"]
    assert folder.fingerprint()["classes"] != npz.fingerprint()["classes"]  # names: alphabet/character vs number


def test_rotations_add_three_rotated_classes_per_character_and_are_named(tmp_path: Path) -> None:
    write_omniglot_folders(tmp_path)
    plain, rotated = Omniglot(tmp_path, "test"), Omniglot(tmp_path, "test", rotations=True)
    assert rotated.num_classes == 24 and rotated.classes[:6] == plain.classes
    assert rotated.classes[6] == "Omega/character01/rot90" and rotated.classes[-1] == "Psi/character03/rot270"
    for r in (1, 2, 3):
        rows = rotated.indices_by_class()[6 * r]
        assert np.array_equal(rotated.data[rows].numpy(), np.rot90(plain.data[:4].numpy(), r, axes=(1, 2)))
    assert rotated.name == "omniglot[rotations=true]/test"


def test_another_size_is_another_dataset_for_episode_files(tmp_path: Path) -> None:
    write_omniglot_folders(tmp_path)
    big = Omniglot(tmp_path, "test", image_size=32)
    assert big.input_shape == (1, 32, 32) and big.name == "omniglot[image_size=32]/test"
    episodes = EpisodeList.generate(Omniglot(tmp_path, "test"), 2, 2, 1, 1, seed=0)
    with pytest.raises(ValueError, match=r"fingerprint field 'name' differs .*'omniglot\[image_size=32\]/test'"):
        episodes.check(big)


def test_a_missing_layout_names_what_is_expected_and_what_was_found(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match=r"found no images_background/ or images_background.npz for the "
                       r"train split .* holds images/\). Omniglot accepts two layouts"):
        Omniglot(tmp_path, "train")
    write_omniglot_npz(tmp_path)
    with pytest.raises(FileNotFoundError, match="found no images_evaluation/ for the test split"):
        Omniglot(tmp_path, "test", layout="folder")


def test_bad_arrays_and_folders_are_named(tmp_path: Path) -> None:
    np.savez(tmp_path / "images_evaluation.npz", images=np.zeros((2, 3, 4, 4), bool))
    with pytest.raises(ValueError, match=r"holds the arrays \['images'\], not 'images' and 'labels'"):
        Omniglot(tmp_path, "test")
    np.savez(tmp_path / "images_evaluation.npz", images=np.zeros((2, 3, 4, 4), np.float32), labels=np.arange(2))
    with pytest.raises(ValueError, match=r"'images' .* must be bool or uint8 \[characters, drawings, H, W\], got float32"):
        Omniglot(tmp_path, "test")
    np.savez(tmp_path / "images_evaluation.npz", images=np.zeros((2, 3, 4, 4), bool), labels=np.arange(3))
    with pytest.raises(ValueError, match="'labels' .* one per character or per drawing"):
        Omniglot(tmp_path, "test")
    np.savez(tmp_path / "images_background.npz", images=np.zeros((1, 3, 4, 4), bool), labels=np.array([970]))
    with pytest.raises(ValueError, match=r"labels characters 971..971 .* numbered 1..964"):
        Omniglot(tmp_path, "train")
    (tmp_path / "images_evaluation.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match=r"is not an .npz file \(not a zip archive\)"):
        Omniglot(tmp_path, "test")
    (tmp_path / "f" / "images_evaluation" / "Omega" / "character01").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="character01' holds no images"):
        Omniglot(tmp_path / "f", "test")


def test_options_are_checked(tmp_path: Path) -> None:
    write_omniglot_npz(tmp_path)
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        Omniglot(tmp_path, "test", image_size=0)
    with pytest.raises(ValueError, match="rotations must be true or false, got 'yes'"):
        Omniglot(tmp_path, "test", rotations="yes")
    with pytest.raises(ValueError, match="layout must be one of auto, folder, npz, got 'zip'"):
        Omniglot(tmp_path, "test", layout="zip")

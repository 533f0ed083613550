"""Safe tensor files and atomic writes (dfml.files)."""

from __future__ import annotations

import io
import os
import pickle
import stat
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from dfml.files import load_tensors, read_state_dict, write_atomic


@pytest.fixture
def umask() -> Iterator[object]:
    """``umask(value)`` sets the process umask for the test; the old one is restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda value: os.umask(value)
    os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_an_atomic_write_gets_the_permissions_a_plain_open_gives(tmp_path: Path, umask, mask: int,
                                                                expected: int) -> None:
    umask(mask)
    write_atomic(tmp_path / "a.bin", b"data")
    with open(tmp_path / "plain.bin", "wb") as f:
        f.write(b"data")
    assert mode(tmp_path / "a.bin") == mode(tmp_path / "plain.bin") == expected
    assert (tmp_path / "a.bin").read_bytes() == b"data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "plain.bin"]  # no temp file left


def test_rewriting_a_file_keeps_its_permissions_as_open_does(tmp_path: Path, umask) -> None:
    umask(0o022)
    target = tmp_path / "a.bin"
    write_atomic(target, b"one")
    target.chmod(0o640)
    write_atomic(target, b"two")
    assert mode(target) == 0o640 and target.read_bytes() == b"two"


def test_an_unwritable_folder_is_one_line_naming_the_folder_and_the_fix(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def refuse(path: object, *args: object, **kwargs: object) -> int:  # root ignores chmod 0555: simulate it
        if str(path).startswith(str(tmp_path / "ro")):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)  # type: ignore[arg-type]

    (tmp_path / "ro").mkdir()
    monkeypatch.setattr(os, "open", refuse)
    with pytest.raises(PermissionError, match=r"^cannot write to folder '.*ro': permission denied; choose an output "
                                              r"folder you can write to \(--out\) or make it writable") as info:
        write_atomic(tmp_path / "ro" / "a.bin", b"data")
    assert "\n" not in str(info.value) and list((tmp_path / "ro").iterdir()) == []


def test_a_folder_under_a_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"cannot write to folder '.*file/sub/deeper': '.*file' is a file, "
                                                 r"not a folder; choose another output folder \(--out\)"):
        write_atomic(tmp_path / "file" / "sub" / "deeper" / "a.bin", b"data")


# --------------------------------------------------------------------------- loading
class _RunsCode:
    """Unpickling this would create ``marker`` (the way a malicious checkpoint runs code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def _torch_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def bad_files(tmp_path: Path) -> dict[str, bytes]:
    marker = tmp_path / "code-ran"
    good = _torch_bytes({"w": torch.ones(3)})
    return {
        "random bytes": os.urandom(2048),
        "empty": b"",
        "text": b"hello\n",
        "truncated": good[: len(good) // 2],
        "a pickle that runs code": pickle.dumps(_RunsCode(marker)),
        "a torch file that runs code": _torch_bytes({"w": _RunsCode(marker)}),
    }


@pytest.mark.parametrize("kind", ["random bytes", "empty", "text", "truncated", "a pickle that runs code",
                                  "a torch file that runs code"])
def test_anything_but_a_plain_tensor_file_is_refused_without_running_code_or_advising_weights_only_false(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(bad_files(tmp_path)[kind])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's pickle-protocol warning would be a second stderr line
        with pytest.raises(ValueError) as info:
            load_tensors(path, fix="rebuild the pool")
    msg = str(info.value)
    assert msg == f"{path}: not a plain tensor file; refusing to load it (rebuild the pool)"
    assert "weights_only" not in msg and info.value.__cause__ is None and info.value.__context__ is None
    assert not (tmp_path / "code-ran").exists()


def test_a_plain_tensor_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "ok.pt"
    path.write_bytes(_torch_bytes({"w": torch.arange(3.0), "step": 4, "nested": {"x": [torch.ones(1)]}}))
    got = load_tensors(path)
    assert torch.equal(got["w"], torch.arange(3.0)) and got["step"] == 4


def test_a_state_dict_file_must_map_names_to_tensors(tmp_path: Path) -> None:
    path = tmp_path / "m.pt"
    path.write_bytes(_torch_bytes({"w": torch.ones(2)}))
    assert torch.equal(read_state_dict(path)["w"], torch.ones(2))
    path.write_bytes(_torch_bytes([torch.ones(2)]))
    with pytest.raises(ValueError, match=r"m.pt: holds a list, not a state dict \(names -> tensors\); refusing"):
        read_state_dict(path, fix="rebuild the pool")
    path.write_bytes(_torch_bytes({"w": 3}))
    with pytest.raises(ValueError, match=r"holds a dict whose entry 'w' is an? int, not a tensor"):
        read_state_dict(path)


def test_a_missing_file_is_still_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        load_tensors(tmp_path / "nope.pt")

"""The files dfml reads and writes: tensor files loaded without running pickled code, atomic writes.

Every ``.pt`` file dfml reads (pool models, checkpoints, banks, a run's ``model.pt``, the papers'
pools on import) goes through :func:`load_tensors`: ``torch.load(..., weights_only=True)``, which
refuses pickled Python objects other than tensors and plain containers. Anything else is one
``ValueError`` naming the file, and never advice to load it with ``weights_only=False`` (that would
run whatever code the file embeds).

Every file dfml writes whole goes through :func:`write_atomic`: a temporary file in the same folder,
flushed, then renamed over the target, so a kill leaves the old file or the new one, never a part.
The file gets the permissions a plain ``open()`` would give it (``0666 & ~umask`` for a new file,
the old file's mode when it replaces one), so a colleague can read a pool on a shared machine.
"""

from __future__ import annotations

import io
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor


def load_tensors(path: str | Path, fix: str = "") -> Any:
    """``torch.load`` a file of tensors (in dicts, lists, numbers, strings) onto the CPU, never running code.

    Args:
        path: the file.
        fix: what the user should do about a refused file (appended in parentheses), e.g.
            ``"rebuild or re-copy the pool"``.

    Raises:
        ValueError: ``"<path>: not a plain tensor file; refusing to load it"``: the file is damaged,
            truncated, not a torch file, or holds pickled objects that are not tensors.
        FileNotFoundError, PermissionError: the file is missing or unreadable.
    """
    path = Path(path)
    with open(path, "rb") as f, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol of a foreign file
        try:
            return torch.load(f, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError, KeyError...
            pass  # raised below, outside the handler: torch's message advises weights_only=False
    raise ValueError(f"{path}: not a plain tensor file; refusing to load it" + (f" ({fix})" if fix else ""))


def read_state_dict(path: str | Path, fix: str = "") -> dict[str, Tensor]:
    """:func:`load_tensors` of a state dict: a dict of parameter names to tensors.

    Raises:
        ValueError: the file is not a plain tensor file, or holds something else than a state dict.
    """
    state = load_tensors(path, fix)
    suffix = f"; refusing to load it ({fix})" if fix else "; refusing to load it"
    if not isinstance(state, dict):
        raise ValueError(f"{path}: holds a {type(state).__name__}, not a state dict (names -> tensors){suffix}")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, Tensor):
            raise ValueError(f"{path}: holds a dict whose entry {key!r} is {_a(type(value).__name__)}, not a tensor{suffix}")
    return state


def _a(name: str) -> str:
    return f"an {name}" if name[:1] in "aeiou" else f"a {name}"


def write_atomic(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see the old file or the new one, never a part.

    The folder is created if missing. The file gets the permissions ``open(path, "wb")`` would give it.

    Raises:
        PermissionError, NotADirectoryError, OSError: the folder cannot be created or written to (one
            line naming the folder and what to do).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(path)
    except OSError as err:
        raise unwritable(path.parent, err) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def torch_bytes(obj: Any) -> bytes:
    """What ``torch.save(obj, file)`` writes, as bytes (for :func:`write_atomic`)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _create_temp(path: Path) -> tuple[int, Path]:
    """A new hidden file beside ``path``, created as ``open()`` creates one (mode ``0666 & ~umask``,
    which ``tempfile.mkstemp``'s 0600 is not); it takes the mode of the ``path`` it will replace."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            old = os.stat(path)
        except OSError:
            return fd, tmp
        try:
            os.chmod(tmp, stat.S_IMODE(old.st_mode))
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return fd, tmp
    raise FileExistsError(f"could not create a temporary file beside {str(path)!r}")


def unwritable(folder: Path, err: OSError) -> OSError:
    """One line for a folder dfml cannot write to: which folder, why, and what to do."""
    if isinstance(err, (NotADirectoryError, FileExistsError)):
        blocker = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            return NotADirectoryError(f"cannot write to folder {str(folder)!r}: {str(blocker)!r} is a file, not a "
                                      "folder; choose another output folder (--out)")
    if isinstance(err, PermissionError):
        return PermissionError(f"cannot write to folder {str(folder)!r}: permission denied; choose an output folder "
                               "you can write to (--out) or make it writable (chmod u+w)")
    reason = err.strerror or str(err)
    return type(err)(f"cannot write to folder {str(folder)!r}: {reason}; choose another output folder (--out)")

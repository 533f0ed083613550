"""One writer per directory: an exclusive lock on a run directory or a pool being built.

Two identical commands started at once in one directory would both write it (interleaved
metrics, checkpoints replaced under each other's feet). While a process writes a directory it
holds ``fcntl.flock`` on ``<dir>/.lock``, a file recording who holds it (pid, host, since when);
a second process is refused with one line naming the holder. The kernel drops the lock when its
process ends, however it ends, so a lock file left behind by a killed process blocks nobody; the
holder removes the file when it lets go (also on an exception or Ctrl-C).

Under ``torchrun`` rank 0 alone holds the lock (it is the only writer of a run directory; the
ranks building a pool share one launch), and a refusal is raised on every rank.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from . import distributed as dist

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class DirectoryInUseError(RuntimeError):
    """Another process holds the directory's lock (the message names it)."""


class DirectoryLock:
    """An exclusive, non-blocking lock on ``path`` (created if missing; removed again on release if
    the lock made it and nothing else was written there).

    Args:
        path: the directory.
        what: what the directory is, for messages (``"run directory"``, ``"pool directory"``).
        fix: the alternative a refused user has, e.g. ``"use another --out"``.

    Raises (on :meth:`acquire`):
        DirectoryInUseError: another process (or another lock in this one) holds it.
        NotADirectoryError: ``path`` is a file.
    """

    def __init__(self, path: str | Path, what: str = "directory", fix: str = "use another directory") -> None:
        self.path, self.what, self.fix = Path(path), what, fix
        self._fd: int | None = None
        self._made: Path | None = None

    @property
    def file(self) -> Path:
        return self.path / LOCK_NAME

    def acquire(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"{self.what} {str(self.path)!r} exists and is not a directory; {self.fix}")
        if not self.path.exists():
            missing = self.path
            while not missing.parent.exists():
                missing = missing.parent
            if not missing.parent.is_dir():
                raise NotADirectoryError(
                    f"{self.what} {str(self.path)!r} cannot be made: {str(missing.parent)!r} is a file; {self.fix}"
                )
            self.path.mkdir(parents=True, exist_ok=True)
            self._made = missing
        if fcntl is None:
            return
        while True:
            fd = os.open(self.file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                self._forget_made_folder()
                raise DirectoryInUseError(self._refusal()) from None
            # the holder before us may have removed the file between our open and our flock
            try:
                now, ours = os.stat(self.file), os.fstat(fd)
                if (now.st_dev, now.st_ino) == (ours.st_dev, ours.st_ino):
                    break
            except FileNotFoundError:
                pass
            os.close(fd)
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            self.file.unlink(missing_ok=True)  # while still held, so nobody locks a file about to vanish
            os.close(self._fd)
            self._fd = None
        self._forget_made_folder()

    def _forget_made_folder(self) -> None:
        """Remove the folders :meth:`acquire` made if nothing was written in them."""
        if self._made is None:
            return
        folder = self.path
        try:
            while True:
                folder.rmdir()  # only an empty folder goes
                if folder == self._made:
                    break
                folder = folder.parent
        except OSError:
            pass
        self._made = None

    def _refusal(self) -> str:
        try:
            holder: dict[str, Any] = json.loads(self.file.read_text() or "{}")
        except (OSError, ValueError):
            holder = {}
        who = (f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"
               if holder else "it is just starting")
        return (f"{self.what} {str(self.path)!r} is in use by another dfml process ({who}); wait for it to finish "
                f"or stop it, or {self.fix}")

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.release()


@contextmanager
def hold_directory(path: str | Path, what: str, fix: str) -> Iterator[None]:
    """Hold ``path``'s lock on rank 0 for the block; every rank raises if rank 0 could not take it.

    Every rank of a launch must enter it at the same point (the outcome is broadcast).
    """
    lock = DirectoryLock(path, what, fix)
    error: BaseException | None = None
    if dist.is_main():
        try:
            lock.acquire()
        except (DirectoryInUseError, OSError) as err:
            error = err
    error = dist.broadcast_object(error)
    if error is not None:
        raise error
    try:
        yield
    finally:
        lock.release()

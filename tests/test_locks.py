"""One writer per directory: the lock a run or a pool build holds while it writes."""

import json
import os
import signal
import socket
import subprocess
import sys

import pytest

from dfml import locks
from dfml.locks import LOCK_NAME, DirectoryInUseError, DirectoryLock, hold_directory

HOLDER = (
    "import sys; from dfml.locks import DirectoryLock; DirectoryLock(sys.argv[1]).acquire(); "
    "print('held', flush=True); sys.stdin.read()"
)


def test_a_second_process_is_refused_with_who_holds_the_lock_and_a_dead_holder_blocks_nobody(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path / "run")], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUseError) as err:
            DirectoryLock(tmp_path / "run", "run directory", "use another --out").acquire()
        msg = str(err.value)
        assert "\n" not in msg
        assert f"run directory {str(tmp_path / 'run')!r} is in use by another dfml process (pid {holder.pid} on " \
               f"{socket.gethostname()}, since 20" in msg
        assert msg.endswith("or use another --out")
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up: the lock file stays behind
        holder.wait()
    assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == holder.pid
    with DirectoryLock(tmp_path / "run"):  # the kernel released the dead process's lock
        assert json.loads((tmp_path / "run" / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / "run" / LOCK_NAME).exists()


def test_the_lock_is_released_on_an_exception_and_an_interrupt_and_leaves_no_empty_folder(tmp_path):
    for exc in (ValueError("bad"), KeyboardInterrupt()):
        with pytest.raises(type(exc)):
            with DirectoryLock(tmp_path / "new" / "run"):
                assert (tmp_path / "new" / "run" / LOCK_NAME).is_file()
                raise exc
        assert not (tmp_path / "new" / "run").exists()  # it made the folder, nothing else was written
    (tmp_path / "kept").mkdir()
    with DirectoryLock(tmp_path / "kept"):
        (tmp_path / "kept" / "config.yaml").write_text("a: 1\n")
    assert sorted(p.name for p in (tmp_path / "kept").iterdir()) == ["config.yaml"]


def test_one_process_cannot_hold_a_directory_twice(tmp_path):
    with DirectoryLock(tmp_path):
        with pytest.raises(DirectoryInUseError, match=f"pid {os.getpid()}"):
            DirectoryLock(tmp_path).acquire()


def test_a_path_that_is_a_file_or_inside_one_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError, match="run directory '.*f' exists and is not a directory; use another --out"):
        DirectoryLock(tmp_path / "f", "run directory", "use another --out").acquire()
    with pytest.raises(NotADirectoryError, match=r"run directory '.*f/r/random' cannot be made: '.*f' is a file; "
                                                 r"use another --out"):
        DirectoryLock(tmp_path / "f" / "r" / "random", "run directory", "use another --out").acquire()


def test_under_torchrun_only_rank_0_takes_the_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(locks.dist, "is_main", lambda: False)
    with DirectoryLock(tmp_path):  # someone else holds it: a rank other than 0 does not care
        with hold_directory(tmp_path / "run", "run directory", "use another --out"):
            assert not (tmp_path / "run").exists()
    monkeypatch.setattr(locks.dist, "is_main", lambda: True)
    with DirectoryLock(tmp_path):
        with pytest.raises(DirectoryInUseError):
            with hold_directory(tmp_path, "run directory", "use another --out"):
                pass

"""The process world of a ``torchrun`` launch: rank, world size, collectives, sharding.

dfml scales out on PyTorch's own engine (``torch.distributed``). ``torchrun`` starts the
processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init` joins the process group they describe. Without a launcher (or with
``WORLD_SIZE=1``) nothing is initialised and every function here is a no-op that behaves as a
world of one process, so single-process code paths are the same code.

Backends: CPU tensors go through gloo; when CUDA is available the group is
``"cpu:gloo,cuda:nccl"``, so CUDA tensors go through NCCL and object collectives (pickled Python
objects) stay on CPU. :func:`device_for` places a ``cuda`` device on ``cuda:LOCAL_RANK``.

Example (what every rank runs)::

    from dfml import distributed as dist
    with dist.launched():                      # init from torchrun's env, destroy at exit
        mine = dist.shard(range(n_models))     # models rank, rank + K, rank + 2K, ...
        done = dist.gather_shards([build(i) for i in mine], n_models)   # all results, in order
"""

from __future__ import annotations

import datetime
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import torch

log = logging.getLogger(__name__)

__all__ = [
    "all_gather_object",
    "all_reduce_sum",
    "backend",
    "barrier",
    "broadcast_object",
    "destroy",
    "device_for",
    "free_port",
    "gather_shards",
    "init",
    "is_distributed",
    "is_main",
    "launched",
    "local_rank",
    "main_first",
    "rank",
    "run_local",
    "shard",
    "world_size",
]

T = TypeVar("T")
ENV_KEYS = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError as err:
        raise ValueError(f"environment variable {name}={value!r} is not an integer; launch with torchrun") from err


def is_distributed() -> bool:
    """Whether a process group of more than one process is initialised."""
    return (
        torch.distributed.is_available() and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


def rank() -> int:
    """This process's global rank (``0`` without a process group)."""
    return torch.distributed.get_rank() if is_distributed() else 0


def world_size() -> int:
    """Number of processes (``1`` without a process group)."""
    return torch.distributed.get_world_size() if is_distributed() else 1


def local_rank() -> int:
    """This process's rank on its node, from ``LOCAL_RANK`` (``0`` if unset)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """Whether this is rank 0, the process that writes files and prints."""
    return rank() == 0


def backend() -> str | None:
    """The process group's backend (``None`` without one)."""
    return str(torch.distributed.get_backend()) if is_distributed() else None


def init(timeout_s: float = 1800.0) -> bool:
    """Join the process group described by torchrun's environment, if there is one.

    Does nothing (and returns ``False``) when ``WORLD_SIZE`` is unset or ``1``, or when a group
    is already initialised (returns whether it spans several processes).

    Args:
        timeout_s: how long a collective may wait for the other ranks before failing.

    Raises:
        RuntimeError: ``WORLD_SIZE > 1`` but ``torch.distributed`` is unavailable, or
            ``RANK``/``MASTER_ADDR``/``MASTER_PORT`` are missing (the message says to use torchrun).
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return is_distributed()
    if _env_int("WORLD_SIZE", 1) <= 1:
        return False
    if not torch.distributed.is_available():
        raise RuntimeError(
            "WORLD_SIZE > 1 but this PyTorch build has no torch.distributed; install a build with "
            "distributed support or run a single process (unset WORLD_SIZE)"
        )
    missing = [k for k in ENV_KEYS if not os.environ.get(k)]
    if missing:
        raise RuntimeError(
            f"WORLD_SIZE={os.environ['WORLD_SIZE']} but {', '.join(missing)} not set; launch with "
            "`torchrun --nproc_per_node K -m dfml ...`, which sets them"
        )
    cuda = torch.cuda.is_available() and torch.cuda.device_count() > 0
    name = "cpu:gloo,cuda:nccl" if cuda and torch.distributed.is_nccl_available() else "gloo"
    if cuda:
        torch.cuda.set_device(local_rank() % torch.cuda.device_count())
    torch.distributed.init_process_group(backend=name, timeout=datetime.timedelta(seconds=timeout_s))
    log.info("rank %d of %d joined the process group (backend %s)", rank(), world_size(), name)
    return is_distributed()


def destroy() -> None:
    """Leave and destroy the process group (no-op without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextmanager
def launched(timeout_s: float = 1800.0) -> Iterator[bool]:
    """``init()`` on entry (yields whether distributed), ``destroy()`` on exit (a no-op alone)."""
    was_initialised = torch.distributed.is_available() and torch.distributed.is_initialized()
    try:
        yield init(timeout_s)
    finally:
        if not was_initialised:
            destroy()


def device_for(device: torch.device | str | None) -> torch.device:
    """The device this rank should use: a bare ``cuda`` becomes ``cuda:LOCAL_RANK`` under a launch.

    An explicit index (``cuda:1``) is kept; CPU is CPU.
    """
    device = torch.device(device if device is not None else "cpu")
    if device.type == "cuda" and device.index is None and _env_int("WORLD_SIZE", 1) > 1:
        return torch.device("cuda", local_rank() % max(torch.cuda.device_count(), 1))
    return device


def barrier() -> None:
    """Wait until every rank gets here (no-op alone)."""
    if is_distributed():
        torch.distributed.barrier()


@contextmanager
def main_first() -> Iterator[None]:
    """Rank 0 runs the block first (e.g. creates a directory); the others run it after it is done."""
    if not is_main():
        barrier()
    try:
        yield
    finally:
        if is_main():
            barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``src``'s ``obj`` on every rank (picklable; tensors should be on CPU). Alone: ``obj``."""
    if not is_distributed():
        return obj
    box = [obj]
    torch.distributed.broadcast_object_list(box, src=src)
    return box[0]


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, indexed by rank (picklable; tensors should be on CPU). Alone: ``[obj]``."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    torch.distributed.all_gather_object(out, obj)
    return out


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` over ranks, in place (gloo for CPU tensors, NCCL for CUDA); returns it."""
    if is_distributed():
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
    return tensor


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: ``items[rank::world_size]`` (all of them alone).

    Positions are dealt round-robin, so shares differ in size by at most one and the work of a
    list sorted by cost is spread evenly.
    """
    return list(items)[rank() :: world_size()]


def gather_shards(local: Sequence[T], n: int) -> list[T]:
    """Undo :func:`shard`: every rank's results put back in the order of the ``n`` original items.

    Args:
        local: this rank's results, one per item of ``shard(range(n))``, in that order.
        n: number of items that were sharded.

    Raises:
        ValueError: ``local`` does not hold one result per item of this rank's share.
    """
    local = list(local)
    want = len(range(rank(), n, world_size()))
    if len(local) != want:
        raise ValueError(f"rank {rank()} has {len(local)} results for a share of {want} of {n} items")
    if not is_distributed():
        return local
    parts = all_gather_object(local)
    out: list[Any] = [None] * n
    for r, part in enumerate(parts):
        out[r::world_size()] = part
    return out


def free_port() -> int:
    """A TCP port on localhost that nobody listens on now (bound to port 0, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run_local(
    nproc: int, args: Sequence[str], *, timeout: float | None = None, env: dict[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m torch.distributed.run --nproc-per-node nproc ARGS`` on this machine (tests, benchmarks).

    The rendezvous is on ``127.0.0.1`` at a free port; each process gets ``OMP_NUM_THREADS=1``
    unless ``env`` sets it. The whole process group is killed at ``timeout``.

    Returns:
        The completed process (``stdout`` holds stdout and stderr; ``returncode`` is not checked).

    Raises:
        subprocess.TimeoutExpired: past ``timeout`` (with the output so far).
    """
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--nnodes=1",
           "--master-addr=127.0.0.1", f"--master-port={free_port()}", "--monitor-interval=0.1", *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    proc = subprocess.Popen(cmd, env=full_env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as err:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        raise subprocess.TimeoutExpired(cmd, err.timeout, output=out) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, out, None)

"""Launching real multi-process runs from a test: torchrun on localhost, gloo, a free port, a time limit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from dfml.distributed import run_local

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("this PyTorch build has no torch.distributed with gloo", allow_module_level=True)


# Every process that builds a pool a test compares runs with this environment: the one torchrun gives
# its workers. Bit-identical pools are promised only between processes with the same intra-op thread
# count (docs/distributed.md), and the shell running pytest may set OMP_NUM_THREADS to anything or
# nothing (and pytest sets up session fixtures before the autouse fixture that sets one thread).
WORKER_ENV = {"OMP_NUM_THREADS": "1"}


def _pythonpath() -> str:
    return os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])


def run_alone(jobs: list[dict[str, Any]], *, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
    """Run the worker's ``jobs`` in one fresh process without torchrun, in the workers' environment."""
    cmd = [sys.executable, str(WORKER), json.dumps(jobs)]
    env = {**os.environ, **WORKER_ENV, "PYTHONPATH": _pythonpath()}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    try:
        result = subprocess.run(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(cmd)} ran past {timeout} s:\n{str(err.output)[-4000:]}")
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} exited with {result.returncode}:\n{result.stdout[-4000:]}")
    return result


def torchrun(nproc: int, args: list[str], *, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
    """``dfml.distributed.run_local`` with this checkout on ``PYTHONPATH``; past ``timeout`` (or, with
    ``check``, on a non-zero exit) the test fails with the output."""
    try:
        result = run_local(nproc, args, timeout=timeout, env={**WORKER_ENV, "PYTHONPATH": _pythonpath()}, cwd=REPO)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(err.cmd)} ran past {timeout} s:\n{str(err.output)[-4000:]}")
    if check and result.returncode != 0:
        pytest.fail(f"{' '.join(result.args)} exited with {result.returncode}:\n{result.stdout[-4000:]}")
    return result


def run_jobs(nproc: int, jobs: list[dict[str, Any]], **kwargs: Any) -> subprocess.CompletedProcess:
    """Run the worker's ``jobs`` (see worker.py) on ``nproc`` processes."""
    return torchrun(nproc, [str(WORKER), json.dumps(jobs)], **kwargs)


@pytest.fixture(scope="session")
def reference_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The worker's toy pool built by one process without torchrun, in the environment torchrun gives its
    workers: the reference, and the pool meta-training uses."""
    out = tmp_path_factory.mktemp("reference_pool") / "pool"
    run_alone([{"kind": "build", "out": str(out)}])
    return out

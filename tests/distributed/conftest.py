"""Launching real multi-process runs from a test: torchrun on localhost, gloo, a free port, a time limit."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch

from dfml.distributed import run_local

REPO = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("worker.py")

if not (torch.distributed.is_available() and torch.distributed.is_gloo_available()):
    pytest.skip("this PyTorch build has no torch.distributed with gloo", allow_module_level=True)


def torchrun(nproc: int, args: list[str], *, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess:
    """``dfml.distributed.run_local`` with this checkout on ``PYTHONPATH``; past ``timeout`` (or, with
    ``check``, on a non-zero exit) the test fails with the output."""
    path = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    try:
        result = run_local(nproc, args, timeout=timeout, env={"PYTHONPATH": path}, cwd=REPO)
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
    """The worker's toy pool built by this (single) process: the reference, and the pool meta-training uses."""
    from .worker import build

    out = tmp_path_factory.mktemp("reference_pool")
    build(out)
    return out

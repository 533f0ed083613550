"""``pretrain_pool`` under torchrun: 2 gloo processes build the pool one process builds, and resume either way.

Every pool here is built in a fresh process with the environment torchrun gives its workers
(``OMP_NUM_THREADS=1``), whatever the shell running pytest exports: the promise is bit-identical pools
for the same intra-op thread count per process (docs/distributed.md).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from .conftest import run_alone, run_jobs
from .worker import POOL_MODELS, threads_file


def assert_same_pool(a: Path, b: Path) -> None:
    assert (a / "pool.json").read_text() == (b / "pool.json").read_text()
    for i in range(POOL_MODELS):
        wa = torch.load(a / f"models/model_{i:04d}.pt", weights_only=True)
        wb = torch.load(b / f"models/model_{i:04d}.pt", weights_only=True)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), f"model {i} differs"
    assert not (b / ".build").exists(), "the per-model records outlive a finished build"


def threads(out: Path) -> list[int]:
    """The intra-op thread counts the processes that built ``out`` ran with, by rank."""
    found = []
    while threads_file(out, len(found)).is_file():
        found.append(int(threads_file(out, len(found)).read_text()))
    return found


def mtimes(out: Path, indices: list[int]) -> list[int]:
    return [(out / f"models/model_{i:04d}.pt").stat().st_mtime_ns for i in indices]


@pytest.fixture(scope="module")
def two_process_builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One launch of 2 processes: a fresh build, and the rest of a build one process stopped after 2 models."""
    root = tmp_path_factory.mktemp("builds")
    stopped = run_alone([{"kind": "build", "out": str(root / "partial"), "kill": {"model": 1}}], check=False)
    assert "Stop: stopped at model 1" in stopped.stdout, stopped.stdout[-2000:]
    before = mtimes(root / "partial", [0, 1])
    run_jobs(2, [{"kind": "build", "out": str(root / "fresh")}, {"kind": "build", "out": str(root / "partial")}])
    return {"fresh": root / "fresh", "partial": root / "partial", "partial_mtimes": before}


def test_two_processes_build_the_pool_one_process_builds(reference_pool: Path, two_process_builds: dict) -> None:
    assert_same_pool(reference_pool, two_process_builds["fresh"])


def test_every_compared_pool_is_built_with_one_thread_per_process(reference_pool: Path,
                                                                  two_process_builds: dict) -> None:
    assert threads(reference_pool) == [1]
    assert threads(two_process_builds["fresh"]) == [1, 1]


def test_two_processes_finish_a_build_one_process_started(reference_pool: Path, two_process_builds: dict) -> None:
    out = two_process_builds["partial"]
    assert_same_pool(reference_pool, out)
    assert mtimes(out, [0, 1]) == two_process_builds["partial_mtimes"], "finished models were trained again"


def test_a_killed_two_process_build_resumes_on_one_process(reference_pool: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    result = run_jobs(2, [{"kind": "build", "out": str(out), "kill": {"model": 1, "rank": 1}}], check=False)
    assert result.returncode != 0, result.stdout[-2000:]
    assert not (out / "pool.json").exists(), "a sharded build wrote its manifest before every model was done"
    recorded = sorted(int(p.stem.split("_")[1]) for p in (out / ".build").glob("model_*.json"))
    assert 1 in recorded, "rank 1 was killed after recording model 1"
    before = mtimes(out, recorded)
    run_alone([{"kind": "build", "out": str(out)}])
    assert_same_pool(reference_pool, out)
    assert mtimes(out, recorded) == before, "models recorded by the killed build were trained again"

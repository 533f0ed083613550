"""benchmarks/loading.py, pool_scale.py and generator_speed.py in this process: one small cell each and their tables
(the scripts run every cell in a fresh process; that is the same function)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dfml.pool import PretrainConfig, pretrain_pool

from .scripts import load_script

loading = load_script("loading")
pool_scale = load_script("pool_scale")

CELL = {"size": 16, "malloc": "system", "threads": 1, "classes": 5, "per_class": 20, "models": 1, "epochs": 1,
        "batch_size": 8, "n_batches": 2, "episodes": 1}


@pytest.mark.parametrize("workload", loading.WORKLOADS)
def test_a_loading_cell_counts_its_units_and_its_cost(workload: str) -> None:
    row = loading.run_cell({**CELL, "workload": workload})
    assert row["units"] == {"batches": 16, "pool": 100, "metatest": 1, "decode": 100}[workload]  # pool: 5 classes x 20, one epoch
    assert row["user_s"] > 0 and row["minflt"] >= 0 and row["per_cpu_s"] > 0 and row["allocator"] == {}
    line = loading.table([row]).splitlines()[-1]
    assert line.startswith(f"| {workload} | 16x16 | system | {row['units']} ")


def test_pool_copies_keep_checksums_and_each_operation_runs(tmp_path: Path) -> None:
    base = pretrain_pool(pool_scale.images(size=32), tmp_path / "base",
                         PretrainConfig(n_models=2, n_way=5, arch="conv4", arch_kwargs={"hidden": 4}, epochs=0))
    pool = pool_scale.copies(base, 5, tmp_path / "five")
    assert len(pool) == 5 and [e.sha256 for e in pool][2:4] == [e.sha256 for e in base]
    pool.verify()
    rows = [pool_scale.run_cell({"op": op, "n": 5, "pool": str(pool.root)}) for op in ("open", "average", "group")]
    assert all(r["cpu_s"] >= 0 and r["peak_mib"] >= 0 for r in rows)
    table = pool_scale.table(rows + [{**rows[1], "n": 50, "cpu_s": rows[1]["cpu_s"] * 10}], [5, 50])
    assert table.splitlines()[3].startswith("| average | ") and table.splitlines()[3].endswith(" | 10.0x |")


generator_speed = load_script("generator_speed")


@pytest.mark.parametrize("part", generator_speed.PARTS)
def test_a_generator_speed_cell_times_one_part(part: str) -> None:
    row = generator_speed.run_cell({"part": part, "size": 16, "malloc": "system", "batch": 10, "iters": 2})
    assert row["cpu_s"] >= 0 and 0 <= row["sys_share"] <= 1
    assert generator_speed.table([row]).splitlines()[-1].startswith(f"| {part} | 16x16 | system | ")

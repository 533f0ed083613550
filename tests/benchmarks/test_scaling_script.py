"""benchmarks/scaling.py without launching: its argument checks and its table (the launches are what
tests/distributed exercises)."""

from __future__ import annotations

import pytest

from .scripts import load_script


scaling = load_script("scaling")


def test_process_counts_must_include_one_and_each_must_get_a_task(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        scaling.parse_args(["--procs", "2", "4"])
    assert "must be positive and include 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        scaling.parse_args(["--procs", "1", "8", "--meta-batch", "4"])
    assert "--meta-batch 4 leaves some of 8 processes without a task" in capsys.readouterr().err


def test_the_table_gives_throughput_efficiency_and_the_parameter_check() -> None:
    row = {"processes": 2, "param_diff": 3e-8}
    row.update({w: {"per_s": 10.0, "efficiency": 0.9, "cpu_efficiency": 0.95} for w in scaling.WORKLOADS})
    lines = scaling.table([row]).splitlines()
    assert lines[0].startswith("| processes | pool build models/s | eff. | CPU eff. |")
    assert lines[1].count("---") == lines[0].count("|") - 1
    assert lines[2] == "| 2 | 10.00 | 90% | 95% | 10.00 | 90% | 95% | 10.00 | 90% | 95% | 3.0e-08 |"

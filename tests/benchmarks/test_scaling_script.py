"""benchmarks/scaling.py without launching: its argument checks and its table (the launches are what
tests/distributed exercises)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scaling.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("dfml_benchmarks_scaling", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


scaling = _load_script()


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

"""Smoke tests of benchmarks/speed.py at tiny sizes: the gradient check, skipping, timing, the table."""

from __future__ import annotations

import dataclasses
import json
import sys

import pytest
import torch

from .scripts import BENCH, load_script


speed = load_script("speed")
TINY = dataclasses.replace(speed.CHECK, hidden=2, n_query=1, warmup=1, iters=2, task_sets=2)
CPU = torch.device("cpu")


def test_higher_meta_gradients_equal_dfmls_in_float64_for_both_orders():
    pytest.importorskip("higher")
    checks = speed.check_gradients(["dfml", "higher"], CPU, ("second", "first"), cfg=TINY)
    assert checks["higher"]["ok"], checks["higher"]["message"]
    assert all(e <= speed.GRAD_TOL for e in checks["higher"]["errors"].values())


def test_an_implementation_with_other_meta_gradients_is_reported_and_not_trusted():
    wrong = {"dfml": speed.dfml_step, "wrong": lambda m, c, fo: speed.dfml_step(m, c, not fo)}
    checks = speed.check_gradients(["dfml", "wrong"], CPU, ("second", "first"), builders=wrong, cfg=TINY)
    assert not checks["wrong"]["ok"]
    assert "second order: relative error" in checks["wrong"]["message"]
    assert "first order: relative error" in checks["wrong"]["message"]


def test_an_implementation_that_raises_is_reported_and_not_trusted():
    def broken(model, cfg, first_order):
        raise RuntimeError("incompatible with this torch")

    checks = speed.check_gradients(["dfml", "broken"], CPU, ("first",), builders={"dfml": speed.dfml_step,
                                                                                  "broken": broken}, cfg=TINY)
    assert not checks["broken"]["ok"]
    assert "raised RuntimeError: incompatible with this torch" in checks["broken"]["message"]


def test_second_and_first_order_meta_gradients_differ_so_the_check_can_tell_them_apart():
    tasks = speed.make_tasks(TINY, 2, 2, torch.float64, CPU, seed=1)
    second = speed.meta_gradient(speed.dfml_step, TINY, tasks, False, CPU)
    first = speed.meta_gradient(speed.dfml_step, TINY, tasks, True, CPU)
    assert speed.gradient_error(first, second)[0] > 1e-4


def test_a_zero_reference_gradient_is_refused():
    zeros = {"w": torch.zeros(3, dtype=torch.float64)}
    with pytest.raises(ValueError, match="non-zero"):
        speed.gradient_error(zeros, zeros)


def test_a_missing_package_is_skipped_with_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "learn2learn", None)  # import now raises ImportError
    names, skipped = speed.available(["dfml", "learn2learn"])
    assert names == ["dfml"]
    assert "pip install learn2learn" in skipped["learn2learn"]


def test_benchmark_reports_throughput_memory_and_a_ratio_table():
    cfg = dataclasses.replace(TINY, orders=("first",))
    rows = speed.benchmark(cfg, ["dfml", "dfml"], CPU, log=lambda s: None)
    assert len(rows) == 2
    for r in rows:
        assert r["tasks_per_s"] > 0 and r["median_step_s"] > 0 and r["peak_mib"] >= 0
        assert r["memory_method"]
    table = speed.markdown_table(rows, ["dfml"])
    assert "dfml/higher" in table and "dfml/learn2learn" in table
    assert table.count("\n") == 2  # header, rule, one cell


def test_quick_run_writes_json_with_the_gradient_check(tmp_path, monkeypatch):
    monkeypatch.setattr(speed, "QUICK", dataclasses.replace(TINY, orders=("first",)))
    out = tmp_path / "r.json"
    speed.main(["--quick", "--impl", "dfml", "--threads", "1", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["gradient_check"]["results"]["dfml"]["ok"]
    assert [r["impl"] for r in result["rows"]] == ["dfml"]
    assert result["environment"]["threads"] == 1


def test_cuda_without_a_gpu_is_refused_with_the_fix(capsys):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(SystemExit):
        speed.parse_args(["--device", "cuda"])
    assert "--device cpu" in capsys.readouterr().err


@pytest.mark.gpu
def test_higher_meta_gradients_equal_dfmls_on_cuda():
    pytest.importorskip("higher")
    checks = speed.check_gradients(["dfml", "higher"], torch.device("cuda"), ("second", "first"), cfg=TINY)
    assert checks["higher"]["ok"], checks["higher"]["message"]


def test_the_default_preset_is_the_default_config():
    from dfml.config import from_dict, load_yaml

    preset = BENCH / "presets" / "speed.yaml"
    assert from_dict(speed.SpeedConfig, load_yaml(preset)) == speed.SpeedConfig()
    gpu = from_dict(speed.SpeedConfig, load_yaml(BENCH / "presets" / "speed_gpu.yaml"))
    assert dataclasses.replace(gpu, warmup=3, iters=10, task_sets=2) == speed.SpeedConfig()

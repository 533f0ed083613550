"""benchmarks/toy_table.py trains each recipe on one toy pool, pairs it against the better baseline and resumes."""

import json
from pathlib import Path

import pytest

from .scripts import load_script


def test_toy_table_pairs_each_recipe_with_the_better_baseline_and_resumes(tmp_path: Path,
                                                                          capsys: pytest.CaptureFixture) -> None:
    argv = ["--out", str(tmp_path), "--steps", "2", "--episodes", "4", "--recipes", "free"]
    assert load_script("toy_table").main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    rows = {r["recipe"]: r for r in result["rows"]}
    assert list(rows) == ["random", "average", "free"]  # the baselines always run
    better = {k: max(("random", "average"), key=lambda b: rows[b][f"{k}shot"]["mean"]) for k in (1, 5)}
    for k in (1, 5):
        d = rows["free"][f"vs_{better[k]}_{k}shot"]
        assert d["n"] == 4
        assert d["mean_diff"] == pytest.approx(rows["free"][f"{k}shot"]["mean"] - rows[better[k]][f"{k}shot"]["mean"])
    assert "| free |" in (tmp_path / "results.md").read_text()
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/results.json")}
    assert len(written) == 3
    assert load_script("toy_table").main(argv) == 0  # finished runs are reused, nothing retrained
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/results.json")} == written


def test_toy_table_refuses_zero_steps_before_building_anything(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        load_script("toy_table").main(["--out", str(tmp_path / "t"), "--steps", "0"])
    assert "--steps and --episodes must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "t").exists()

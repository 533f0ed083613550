"""benchmarks/toy_corruption.py runs every arm, writes its table and reuses finished runs."""

import json
from pathlib import Path

import pytest

from .scripts import load_script


def test_toy_corruption_script_writes_every_arm_and_resumes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--out", str(tmp_path), "--seeds", "1", "--steps", "3", "--episodes", "6"]
    assert load_script("toy_corruption").main(argv) == 0
    result = json.loads((tmp_path / "results.json").read_text())
    assert [r["arm"] for r in result["rows"]] == ["uniform", "weigher", "robust"]
    assert result["trust"].count("trusted") == 6
    assert result["rows"][0]["weight_on_trusted"] is None and 0 < result["rows"][2]["weight_on_trusted"] < 1
    for row in result["rows"]:
        assert row["loss_1shot"]["n"] == 6 and 0 <= row["bad_5shot"] <= 100
    first = capsys.readouterr().out
    assert "| robust |" in first
    written = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/results.json")}
    assert len(written) == 8  # 3 arms x (corrupted, trusted) + 2 arms on the clean pool
    assert load_script("toy_corruption").main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/results.json")} == written
    assert capsys.readouterr().out.split("| arm |")[1] == first.split("| arm |")[1]


@pytest.mark.parametrize("ratio", ["0", "1"])
def test_toy_corruption_script_refuses_a_ratio_without_both_kinds_of_models(ratio: str, tmp_path: Path,
                                                                           capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit):
        load_script("toy_corruption").main(["--out", str(tmp_path), "--ratio", ratio])
    assert "strictly between 0 and 1" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before anything is built

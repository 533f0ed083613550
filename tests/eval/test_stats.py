"""95% intervals and paired comparisons against hand-derived values."""

from __future__ import annotations

import math

import pytest
from scipy import stats as sps

from dfml.eval import EvalResult, mean_ci95, paired


def test_mean_ci95_uses_the_sample_std_and_1_96() -> None:
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0])
    # std(ddof=1) = sqrt(5/3); half-width = 1.96 * sqrt(5/3) / sqrt(4)
    assert mean == 2.5
    assert half == pytest.approx(0.98 * math.sqrt(5 / 3), rel=1e-15)


def test_mean_ci95_of_constant_values_has_zero_width() -> None:
    assert mean_ci95([70.0, 70.0, 70.0]) == (70.0, 0.0)


@pytest.mark.parametrize(("values", "match"), [([1.0], "at least 2 values, got 1"), ([1.0, float("nan")], "finite, got nan at index 1")])
def test_mean_ci95_rejects_bad_input(values: list[float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        mean_ci95(values)


def test_paired_on_known_arrays() -> None:
    out = paired([3.0, 5.0, 7.0, 9.0], [1.0, 2.0, 3.0, 4.0])  # differences 2, 3, 4, 5
    assert out["n"] == 4 and (out["wins"], out["losses"], out["ties"]) == (4, 0, 0)
    assert out["mean_diff"] == 3.5
    assert out["ci95"] == pytest.approx(0.98 * math.sqrt(5 / 3), rel=1e-15)
    t = 3.5 / (math.sqrt(5 / 3) / 2)
    assert out["t_pvalue"] == pytest.approx(2 * sps.t.sf(t, df=3), rel=1e-10)
    assert out["sign_pvalue"] == pytest.approx(2 / 16, rel=1e-12)  # 4 wins of 4, two-sided


def test_paired_with_identical_scores_is_a_tie_everywhere() -> None:
    out = paired([60.0, 70.0, 80.0], [60.0, 70.0, 80.0])
    assert (out["mean_diff"], out["ci95"], out["ties"]) == (0.0, 0.0, 3)
    assert out["t_pvalue"] == 1.0 and out["sign_pvalue"] == 1.0


def test_paired_with_a_constant_nonzero_gap_has_t_pvalue_zero() -> None:
    out = paired([61.0, 71.0, 81.0], [60.0, 70.0, 80.0])
    assert (out["mean_diff"], out["ci95"], out["t_pvalue"]) == (1.0, 0.0, 0.0)
    assert out["sign_pvalue"] == pytest.approx(0.25, rel=1e-12)


def test_paired_rejects_different_episode_counts() -> None:
    with pytest.raises(ValueError, match="a has 3 values, b has 2"):
        paired([1.0, 2.0, 3.0], [1.0, 2.0])


def test_eval_result_prints_mean_and_interval_in_percent() -> None:
    r = EvalResult(mean=63.4127, ci95=0.7091, n=600, per_episode=[60.0, 66.8], seconds=1.5)
    assert str(r) == "63.41 ± 0.71 %"
    d = r.as_dict()
    assert d["mean"] == 63.4127 and d["n"] == 600 and d["per_episode"] == [60.0, 66.8] and d["seconds"] == 1.5

"""Confidence intervals and paired comparisons for per-episode meta-test scores."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

__all__ = ["EvalResult", "mean_ci95", "paired"]

Z95 = 1.96
"""The normal quantile used by the few-shot literature for "95% confidence intervals"."""


def _as_array(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ValueError(f"{name} must be finite, got {arr[bad[0]]} at index {int(bad[0])}")
    return arr


def mean_ci95(values: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """Mean and 95% half-width ``1.96 * std / sqrt(n)`` (sample std, ``ddof=1``).

    This is the few-shot convention (e.g. 600 or 2000 meta-test episodes reported as
    ``mean ± 1.96 * std / sqrt(n)``): a normal approximation, not a Student-t interval.

    Args:
        values: per-episode scores (e.g. accuracies in percent), at least two.

    Returns:
        ``(mean, half_width)``.

    Raises:
        ValueError: fewer than two values, or a non-finite value.
    """
    arr = _as_array(values, "values")
    if arr.size < 2:
        raise ValueError(f"a confidence interval needs at least 2 values, got {arr.size}; score more episodes")
    return float(arr.mean()), float(Z95 * arr.std(ddof=1) / math.sqrt(arr.size))


def paired(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> dict[str, float]:
    """Compare two methods scored on the SAME episodes, episode by episode (``a - b``).

    Pairing removes the episode-difficulty variance that two independent intervals carry, so a
    small but consistent gain can be significant although the two intervals overlap.

    Args:
        a: per-episode scores of method A ``[n]``.
        b: per-episode scores of method B on the same episodes, in the same order ``[n]``.

    Returns:
        ``{"n", "mean_diff", "ci95"}`` (mean of ``a - b`` and its 1.96-sigma half-width),
        ``{"wins", "losses", "ties"}`` (episodes where A beats / loses to / ties B),
        ``"t_pvalue"`` (two-sided paired t-test) and ``"sign_pvalue"`` (two-sided exact sign test
        on the non-tied episodes; 1.0 when all tie). When all differences are equal the t-test is
        undefined; its p-value is then 1.0 if they are all zero and 0.0 otherwise.

    Raises:
        ValueError: different lengths, fewer than two episodes or non-finite scores.
    """
    x, y = _as_array(a, "a"), _as_array(b, "b")
    if x.shape != y.shape:
        raise ValueError(
            f"paired scores need the same episodes: a has {x.size} values, b has {y.size}; score both "
            "methods on the same fixed episodes"
        )
    d = x - y
    mean, ci = mean_ci95(d)
    wins, losses = int((d > 0).sum()), int((d < 0).sum())
    if np.all(d == d[0]):
        t_p = 1.0 if d[0] == 0 else 0.0
    else:
        t_p = float(sps.ttest_rel(x, y).pvalue)
    sign_p = float(sps.binomtest(wins, wins + losses, 0.5).pvalue) if wins + losses else 1.0
    return {
        "n": int(d.size),
        "mean_diff": mean,
        "ci95": ci,
        "wins": wins,
        "losses": losses,
        "ties": int(d.size - wins - losses),
        "t_pvalue": t_p,
        "sign_pvalue": sign_p,
    }


@dataclass
class EvalResult:
    """The outcome of a meta-test run.

    Attributes:
        mean: mean query accuracy in percent.
        ci95: 95% half-width in percent (``nan`` for a single episode).
        n: number of episodes.
        per_episode: query accuracy of each episode in percent, in episode order (for ``paired``).
        seconds: wall-clock time of the run.
        info: settings of the run (method, steps, lr).
    """

    mean: float
    ci95: float
    n: int
    per_episode: list[float] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict of all fields."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.mean:.2f} ± {self.ci95:.2f} %"

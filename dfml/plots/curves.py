"""Meta-validation accuracy over meta-training steps or CPU minutes, one line per run."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .figure import RunSource, load_records, new_figure, png_target, save_png, step_axis


def plot_val_curves(
    runs: Mapping[str, RunSource],
    out_png: str | Path,
    *,
    overwrite: bool = False,
    title: str | None = None,
    size: tuple[float, float] = (6.0, 4.0),
    dpi: int = 100,
    x: str = "step",
) -> Path:
    """Meta-validation accuracy over meta-training steps (or CPU minutes), one line per run (its best
    point marked).

    Args:
        runs: legend label -> run (directory, ``metrics.jsonl`` or records); the records with a
            ``val_acc`` (percent) give the points, ``step`` the x position.
        out_png: the PNG to write (``size * dpi`` pixels).
        overwrite: replace ``out_png`` if it exists.
        x: ``"step"`` or ``"cpu"``: the CPU minutes of meta-training at each point (``cpu_s`` of
            the records, written since train.budget_minutes existed; a run without it is refused).

    Returns:
        The path written.

    Raises:
        ValueError: ``runs`` is empty, or a run has no ``val_acc`` record (it has not validated yet).
        FileExistsError: ``out_png`` exists and ``overwrite`` is False.
        ImportError: matplotlib is not installed.
    """
    path = png_target(out_png, overwrite)
    if not runs:
        raise ValueError("runs is empty; pass {label: run directory} for at least one run")
    if x not in ("step", "cpu"):
        raise ValueError(f"x must be 'step' or 'cpu', got {x!r}")
    curves = {}
    for label, source in runs.items():
        records = load_records(source)
        if x == "cpu":
            points = _cpu_points(label, records)
        else:
            points = [(r.get("step", i + 1), r["val_acc"]) for i, r in enumerate(records) if "val_acc" in r]
        if not points:
            raise ValueError(
                f"run {label!r} has no val_acc record: it has not validated yet (meta-validation runs every "
                "train.val_every steps and at the last step); let it train longer or lower train.val_every"
            )
        curves[label] = points
    fig = new_figure(size, dpi)
    ax = fig.add_subplot()
    for label, points in curves.items():
        steps, accs = zip(*points)
        (line,) = ax.plot(steps, accs, marker="o", markersize=3, label=label)
        best = int(np.argmax(accs))
        ax.plot([steps[best]], [accs[best]], marker="*", markersize=10, color=line.get_color(), linestyle="none")
    if x == "cpu":
        ax.set_xlabel("CPU minutes of meta-training (inversion + meta-updates)")
    else:
        step_axis(ax)
    ax.set_ylabel("meta-validation accuracy (%)")
    ax.set_title(title or "meta-validation accuracy (star: best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_png(fig, path)


def _cpu_points(label: str, records: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """``(CPU minutes, val_acc)`` of each validated record; the CPU time is the last ``cpu_s`` seen."""
    points, cpu = [], None
    for r in records:
        cpu = r.get("cpu_s", cpu)
        if "val_acc" in r:
            if cpu is None:
                raise ValueError(f"run {label!r} records no cpu_s (it predates CPU accounting); plot it against steps")
            points.append((cpu / 60.0, r["val_acc"]))
    return points

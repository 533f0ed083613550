"""Figures a researcher looks at after a run, written as PNG files.

* :func:`plot_val_curves`: meta-validation accuracy over training steps, one line per run.
* :func:`plot_reliability`: the reliability weigher's weight on every pool model over time,
  trusted models in blues and corrupted ones (deceptive, poor) in reds.
* :func:`plot_dissimilarity`: a dissimilarity matrix (e.g. ``GroupSelector.dissimilarity``) as a
  heat map with the models reordered by group and the group boundaries drawn.

matplotlib is optional (``pip install "dfml[plots]"``); figures are drawn on matplotlib's Agg
canvas directly, so no display is needed and the pyplot backend of the caller is left alone.
Image grids of recovered images are :func:`dfml.inversion.grid.image_grid` (Pillow only), not
repeated here. No function overwrites an existing file unless given ``overwrite=True``; files are
written atomically (temp file, then rename).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..files import load_tensors
from .curves import plot_val_curves as plot_val_curves
from .figure import load_records as load_records
from .models import plot_dissimilarity as plot_dissimilarity
from .models import plot_reliability as plot_reliability
from .models import run_trust as run_trust

__all__ = ["load_records", "plot_dissimilarity", "plot_reliability", "plot_runs", "plot_val_curves", "run_trust"]


def plot_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, overwrite: bool = False) -> list[Path]:
    """Every plot the given run directories support, written to ``out_dir``.

    * ``val_acc.png``: meta-validation accuracy of all runs that have validated;
    * ``val_acc_cpu.png``: the same against CPU minutes, for the runs that record them (``cpu_s``);
    * ``<run>-reliability.png``: reliability weights over time (runs with a reliability weigher),
      coloured by the pool's trust marks when the pool can still be found;
    * ``<run>-groups.png``: the TGR dissimilarity matrix and its groups (runs with a group selector,
      read from the last checkpoint).

    Returns:
        The PNG files written.

    Raises:
        FileNotFoundError: a run directory without ``metrics.jsonl``.
        ValueError: none of the runs has anything to plot.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = {Path(d).name: Path(d) for d in run_dirs}
    records = {name: load_records(d) for name, d in runs.items()}
    written: list[Path] = []
    validated = {n: r for n, r in records.items() if any("val_acc" in x for x in r)}
    if validated:
        written.append(plot_val_curves(validated, out / "val_acc.png", overwrite=overwrite))
        timed = {n: r for n, r in validated.items() if any("cpu_s" in x for x in r)}
        if timed:
            written.append(plot_val_curves(timed, out / "val_acc_cpu.png", overwrite=overwrite, x="cpu",
                                           title="meta-validation accuracy against CPU time (star: best)"))
    for name, d in runs.items():
        if any(k.startswith("selector/w/") for x in records[name] for k in x):
            try:
                trust: list[str] | None = run_trust(d)
            except (FileNotFoundError, ValueError):
                trust = None
            written.append(plot_reliability(records[name], out / f"{name}-reliability.png", trust,
                                            overwrite=overwrite, title=f"{name}: reliability weights"))
        ckpt = d / "checkpoints" / "last.pt"
        if ckpt.is_file():
            state = load_tensors(ckpt, fix="plot without it, or move it away")
            selector = state.get("stream", {}).get("selector", {})
            if "dissimilarity" in selector:
                written.append(plot_dissimilarity(selector["dissimilarity"], selector["labels"],
                                                  out / f"{name}-groups.png", overwrite=overwrite,
                                                  title=f"{name}: model dissimilarity and groups"))
    if not written:
        raise ValueError(
            f"nothing to plot in {[str(d) for d in runs.values()]}: no run has validated yet (lower "
            "train.val_every), has a reliability weigher or a group selector"
        )
    return written

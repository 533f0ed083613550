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

import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from torch import Tensor

from .config import load_yaml
from .files import load_tensors
from .pool.manifest import MANIFEST_NAME, TRUST_LEVELS, PoolManifest
from .runs import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["load_records", "run_trust", "plot_dissimilarity", "plot_reliability", "plot_val_curves"]

log = logging.getLogger(__name__)

#: A run: its directory, its ``metrics.jsonl``, or the records themselves.
RunSource = Union[str, Path, Sequence[Mapping[str, Any]]]

WEIGHT_PREFIX = "selector/w/"
INSTALL_HINT = 'pip install "dfml[plots]"'


# ---------------------------------------------------------------------- common
def _figure(size: tuple[float, float], dpi: int) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError(
            f"dfml plots need matplotlib, an optional dependency; install it with: {INSTALL_HINT}"
        ) from err
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)  # draw with Agg, never through pyplot (no display, caller's backend untouched)
    return fig


def _target(out_png: str | Path, overwrite: bool) -> Path:
    path = Path(out_png)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plots are written as PNG; got {str(path)!r}, give a file name ending in .png")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; nothing was written. Pass overwrite=True to replace it, "
            "or choose another file name."
        )
    return path


def _save(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    log.info("wrote %s", path)
    return path


def _step_axis(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel("meta-training step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def load_records(source: RunSource) -> list[dict[str, Any]]:
    """The metrics records of a run.

    Args:
        source: a run directory (its ``metrics.jsonl`` is read), a ``metrics.jsonl`` file, or the
            records themselves (returned as a list). A torn last line from a kill is skipped.

    Raises:
        FileNotFoundError: there is no such directory or file, or the directory has no ``metrics.jsonl``.
    """
    if not isinstance(source, (str, Path)):
        return [dict(r) for r in source]
    path = Path(source)
    file = path / "metrics.jsonl" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(
            f"no metrics at {str(file)!r}; pass a run directory written by `dfml train` (it holds "
            "metrics.jsonl) or the metrics.jsonl file itself"
        )
    out = []
    for line in file.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            log.warning("skipping a torn line in %s", file)
    return out


# ------------------------------------------------------------- val accuracy
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
    path = _target(out_png, overwrite)
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
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    for label, points in curves.items():
        steps, accs = zip(*points)
        (line,) = ax.plot(steps, accs, marker="o", markersize=3, label=label)
        best = int(np.argmax(accs))
        ax.plot([steps[best]], [accs[best]], marker="*", markersize=10, color=line.get_color(), linestyle="none")
    if x == "cpu":
        ax.set_xlabel("CPU minutes of meta-training (inversion + meta-updates)")
    else:
        _step_axis(ax)
    ax.set_ylabel("meta-validation accuracy (%)")
    ax.set_title(title or "meta-validation accuracy (star: best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return _save(fig, path)


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


# ------------------------------------------------------------- reliability
def _weight_series(records: list[dict[str, Any]]) -> dict[int, tuple[list[float], list[float]]]:
    series: dict[int, tuple[list[float], list[float]]] = {}
    for i, r in enumerate(records):
        for key, value in r.items():
            if key.startswith(WEIGHT_PREFIX):
                suffix = key[len(WEIGHT_PREFIX):]
                if not suffix.isdigit():
                    raise ValueError(f"metrics key {key!r} is not {WEIGHT_PREFIX}<model id>")
                steps, ws = series.setdefault(int(suffix), ([], []))
                steps.append(r.get("step", i + 1))
                ws.append(float(value))
    return dict(sorted(series.items()))


def run_trust(run_dir: str | Path) -> list[str]:
    """The trust level of every model in the pool a run was trained on (for :func:`plot_reliability`).

    Reads ``pool`` from the run's ``config.yaml`` and the ``trust`` field of that pool's manifest.
    Trust is ground truth for evaluation and plots only; learners never read it.

    Raises:
        FileNotFoundError: the run has no ``config.yaml``, it names no pool, or the pool has no manifest
            (the message says to pass ``trust`` explicitly instead).
    """
    cfg_file = Path(run_dir) / "config.yaml"
    if not cfg_file.is_file():
        raise FileNotFoundError(f"{str(cfg_file)!r} not found; pass a run directory written by `dfml train`")
    pool = load_yaml(cfg_file, what="run configuration").get("pool")
    if not pool or not (Path(pool) / MANIFEST_NAME).is_file():
        raise FileNotFoundError(
            f"the pool of run {str(run_dir)!r} ({pool!r}, from its config.yaml) has no {MANIFEST_NAME}; "
            "pass trust=[...] (one level per model) or plot without trust colouring"
        )
    return [e.trust for e in PoolManifest.load(pool).entries]


def _check_trust(trust: Sequence[str], n_models: int) -> list[str]:
    trust = list(trust)
    if len(trust) != n_models:
        raise ValueError(
            f"trust has {len(trust)} entries but the run logs weights for {n_models} models; pass one "
            "trust level per pool model, e.g. [e.trust for e in PoolManifest.load(pool_dir).entries]"
        )
    bad = sorted({t for t in trust if t not in TRUST_LEVELS})
    if bad:
        raise ValueError(f"unknown trust levels {bad}; each must be one of {TRUST_LEVELS}")
    return trust


def _model_styles(trust: list[str] | None, n_models: int) -> list[dict[str, Any]]:
    from matplotlib import colormaps

    if trust is None:
        cmap = colormaps["tab10" if n_models <= 10 else "viridis"]
        return [{"color": cmap(i if n_models <= 10 else i / max(n_models - 1, 1))} for i in range(n_models)]
    families = {"trusted": colormaps["Blues"], "deceptive": colormaps["Reds"], "poor": colormaps["Reds"]}
    dashes = {"trusted": "-", "deceptive": "-", "poor": "--"}
    styles = []
    for i, t in enumerate(trust):
        same = [j for j, u in enumerate(trust) if families[u] is families[t]]
        shade = 0.45 + 0.5 * same.index(i) / max(len(same) - 1, 1)
        styles.append({"color": families[t](shade), "linestyle": dashes[t]})
    return styles


def plot_reliability(
    source: RunSource,
    out_png: str | Path,
    trust: Sequence[str] | None = None,
    *,
    overwrite: bool = False,
    title: str | None = None,
    size: tuple[float, float] = (7.0, 4.0),
    dpi: int = 100,
) -> Path:
    """The reliability weigher's weight on every pool model over time (``selector/w/<id>`` records).

    With ``trust``, trusted models are drawn in blues and corrupted ones in reds (``poor`` dashed),
    and the title gives the total weight on corrupted models at the first and last logged step, so
    one sees whether the weigher moves weight off them. A grey line marks the uniform ``1 / n``.

    Args:
        source: a run directory, its ``metrics.jsonl``, or the records.
        out_png: the PNG to write (``size * dpi`` pixels).
        trust: the trust level of every pool model (``"trusted"``, ``"deceptive"``, ``"poor"``),
            e.g. ``[e.trust for e in PoolManifest.load(pool_dir).entries]``; ``None``: no colouring
            by trust.
        overwrite: replace ``out_png`` if it exists.

    Returns:
        The path written.

    Raises:
        ValueError: no ``selector/w/<id>`` record (the recipe has no reliability weigher), or
            ``trust`` does not match the models.
        FileExistsError: ``out_png`` exists and ``overwrite`` is False.
        ImportError: matplotlib is not installed.
    """
    path = _target(out_png, overwrite)
    series = _weight_series(load_records(source))
    if not series:
        raise ValueError(
            f"no {WEIGHT_PREFIX}<id> records in this run: its recipe has no reliability weigher (only the "
            "'reliability' selector with log_weights=True logs them); plot a run that uses selector 'reliability'"
        )
    n_models = max(series) + 1
    trust = None if trust is None else _check_trust(trust, n_models)
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    styles = _model_styles(trust, n_models)
    for i, (steps, ws) in series.items():
        label = f"model {i}" + (f" ({trust[i]})" if trust is not None else "")
        ax.plot(steps, ws, linewidth=1.2, label=label, **styles[i])
    ax.axhline(1.0 / n_models, color="grey", linestyle=":", linewidth=1, label=f"uniform 1/{n_models}")
    _step_axis(ax)
    ax.set_ylabel("selection weight")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.3)
    if title is None:
        title = "reliability weights"
        corrupted = [i for i in series if trust is not None and trust[i] != "trusted"]
        if corrupted:
            first = sum(series[i][1][0] for i in corrupted)
            last = sum(series[i][1][-1] for i in corrupted)
            title += f" (weight on corrupted models: {first:.2f} -> {last:.2f})"
    ax.set_title(title, fontsize="medium")
    ncol = max(1, math.ceil((n_models + 1) / 12))
    ax.legend(fontsize="x-small", ncol=ncol, loc="center left", bbox_to_anchor=(1, 0.5))
    return _save(fig, path)


# ----------------------------------------------------------- dissimilarity
def _as_numpy(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().cpu().double()
    return np.asarray(x, dtype=np.float64)


def _group_order(groups: Any, n_models: int) -> list[list[int]]:
    """Groups as lists of model ids from labels ``[n_models]`` or from a list of id lists."""
    is_lists = isinstance(groups, Sequence) and len(groups) > 0 and all(
        isinstance(g, (Sequence, Tensor, np.ndarray)) and not isinstance(g, str) for g in groups
    )
    if is_lists:
        out = [sorted(int(i) for i in (g.tolist() if isinstance(g, (Tensor, np.ndarray)) else g)) for g in groups]
    else:
        labels = _as_numpy(groups)
        if labels.shape != (n_models,) or not np.all(labels == np.round(labels)):
            raise ValueError(
                f"groups must be integer labels of shape [{n_models}] or a list of model-id lists (e.g. "
                f"GroupSelector.labels or .groups), got shape {labels.shape}"
            )
        out = [np.flatnonzero(labels == g).tolist() for g in np.unique(labels)]
    flat = sorted(i for g in out for i in g)
    if flat != list(range(n_models)):
        raise ValueError(
            f"groups must hold every model id 0..{n_models - 1} exactly once, got {out}; pass "
            "GroupSelector.groups for the same pool as the matrix"
        )
    return [g for g in out if g]


def plot_dissimilarity(
    matrix: Tensor | np.ndarray,
    groups: Tensor | Sequence[int] | Sequence[Sequence[int]],
    out_png: str | Path,
    *,
    trust: Sequence[str] | None = None,
    overwrite: bool = False,
    title: str | None = None,
    size: tuple[float, float] = (5.5, 4.5),
    dpi: int = 100,
) -> Path:
    """A model dissimilarity matrix as a heat map, models reordered by group, group boundaries drawn.

    Args:
        matrix: ``[n_models, n_models]`` (e.g. ``GroupSelector.dissimilarity``).
        groups: the group label of every model ``[n_models]`` (``GroupSelector.labels``) or the
            model ids of every group (``GroupSelector.groups``).
        out_png: the PNG to write (``size * dpi`` pixels).
        trust: optional trust level per model; corrupted models get red tick labels.
        overwrite: replace ``out_png`` if it exists.

    Returns:
        The path written.

    Raises:
        ValueError: ``matrix`` is not square and finite, or ``groups`` is not a partition of its models.
        FileExistsError: ``out_png`` exists and ``overwrite`` is False.
        ImportError: matplotlib is not installed.
    """
    path = _target(out_png, overwrite)
    d = _as_numpy(matrix)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(f"matrix must be square [n_models, n_models], got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("matrix has NaN or infinite entries; check the embeddings it was computed from")
    n = d.shape[0]
    trust = None if trust is None else _check_trust(trust, n)
    ordered = _group_order(groups, n)
    order = [i for g in ordered for i in g]
    fig = _figure(size, dpi)
    ax = fig.add_subplot()
    image = ax.imshow(d[np.ix_(order, order)], cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="dissimilarity")
    edge = -0.5
    for g in ordered[:-1]:
        edge += len(g)
        ax.axhline(edge, color="white", linewidth=1.5)
        ax.axvline(edge, color="white", linewidth=1.5)
    if n <= 40:
        ax.set_xticks(range(n), [str(i) for i in order], fontsize="x-small", rotation=90)
        ax.set_yticks(range(n), [str(i) for i in order], fontsize="x-small")
        if trust is not None:
            for ticks in (ax.get_xticklabels(), ax.get_yticklabels()):
                for tick, i in zip(ticks, order):
                    tick.set_color("tab:red" if trust[i] != "trusted" else "black")
    ax.set_xlabel("model (ordered by group)" + ("; red: corrupted" if trust is not None else ""))
    ax.set_ylabel("model (ordered by group)")
    ax.set_title(title or f"model dissimilarity, {len(ordered)} groups", fontsize="medium")
    return _save(fig, path)


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

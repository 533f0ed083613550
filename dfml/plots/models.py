"""Figures of a run's pool models: the reliability weigher's weights over time (coloured by the
models' trust) and the TGR dissimilarity matrix with its groups."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from ..config import load_yaml
from ..pool.manifest import MANIFEST_NAME, TRUST_LEVELS, PoolManifest
from .figure import WEIGHT_PREFIX, RunSource, load_records, new_figure, png_target, save_png, step_axis


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
    path = png_target(out_png, overwrite)
    series = _weight_series(load_records(source))
    if not series:
        raise ValueError(
            f"no {WEIGHT_PREFIX}<id> records in this run: its recipe has no reliability weigher (only the "
            "'reliability' selector with log_weights=True logs them); plot a run that uses selector 'reliability'"
        )
    n_models = max(series) + 1
    trust = None if trust is None else _check_trust(trust, n_models)
    fig = new_figure(size, dpi)
    ax = fig.add_subplot()
    styles = _model_styles(trust, n_models)
    for i, (steps, ws) in series.items():
        label = f"model {i}" + (f" ({trust[i]})" if trust is not None else "")
        ax.plot(steps, ws, linewidth=1.2, label=label, **styles[i])
    ax.axhline(1.0 / n_models, color="grey", linestyle=":", linewidth=1, label=f"uniform 1/{n_models}")
    step_axis(ax)
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
    return save_png(fig, path)


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
    path = png_target(out_png, overwrite)
    d = _as_numpy(matrix)
    if d.ndim != 2 or d.shape[0] != d.shape[1] or d.shape[0] == 0:
        raise ValueError(f"matrix must be square [n_models, n_models], got shape {d.shape}")
    if not np.isfinite(d).all():
        raise ValueError("matrix has NaN or infinite entries; check the embeddings it was computed from")
    n = d.shape[0]
    trust = None if trust is None else _check_trust(trust, n)
    ordered = _group_order(groups, n)
    order = [i for g in ordered for i in g]
    fig = new_figure(size, dpi)
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
    return save_png(fig, path)

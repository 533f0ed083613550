"""What every figure shares: a matplotlib figure drawn without pyplot, a PNG target that is never
silently overwritten, an atomic save, and a run's metrics records."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union


from ..runs import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

#: A run: its directory, its ``metrics.jsonl``, or the records themselves.
RunSource = Union[str, Path, Sequence[Mapping[str, Any]]]

WEIGHT_PREFIX = "selector/w/"
INSTALL_HINT = 'pip install "dfml[plots]"'


def new_figure(size: tuple[float, float], dpi: int) -> Figure:
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


def png_target(out_png: str | Path, overwrite: bool) -> Path:
    path = Path(out_png)
    if path.suffix.lower() != ".png":
        raise ValueError(f"plots are written as PNG; got {str(path)!r}, give a file name ending in .png")
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"{str(path)!r} already exists; nothing was written. Pass overwrite=True to replace it, "
            "or choose another file name."
        )
    return path


def save_png(fig: Figure, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    atomic_write_bytes(path, buf.getvalue())
    log.info("wrote %s", path)
    return path


def step_axis(ax: Any) -> None:
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



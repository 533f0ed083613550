"""TensorBoard event files that mirror a run's ``metrics.jsonl`` (``--set log.tensorboard=true``).

Every number of every ``metrics.jsonl`` record (the meta-update's ``loss`` and ``acc`` and its
regulariser terms, ``val_acc``, ``cpu_s``, ``selector/w/<id>`` reliability weights, ``inversion/*``
costs, ...) becomes a scalar of the same name at the record's ``step``; a text value (e.g.
``stopped_early``) becomes a text entry. The files go to ``<run>/tb/``:
``tensorboard --logdir runs`` shows every run below ``runs/``.

``metrics.jsonl`` stays the record; ``tb/`` is a copy of it. Whenever a run starts or resumes,
the first record it logs rebuilds ``tb/`` from ``metrics.jsonl`` (the records a resume drops, logged
after its last checkpoint, are dropped from ``tb/`` too), so that a killed and resumed run shows
each step once, a run that logged without TensorBoard gets the steps it logged before, and events a
kill kept from reaching the disk come back. A TensorBoard left open across a resume may keep showing
the dropped steps until it is restarted (the new files also ask it to purge them, which its classic
loader honours). Each record is flushed to disk as it is logged.

TensorBoard is optional: ``pip install 'dfml[tensorboard]'``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'dfml[tensorboard]'"
EVENTS_GLOB = "events.out.tfevents.*"


@dataclass(frozen=True)
class LogConfig:
    """Where a run's metrics go besides ``metrics.jsonl``.

    These settings change no number a run computes, so a resume may change them (the run's
    ``config.yaml`` then records the new ones).

    Attributes:
        tensorboard: mirror ``metrics.jsonl`` to TensorBoard event files in ``<run>/tb/`` (needs the
            ``tensorboard`` package: ``pip install 'dfml[tensorboard]'``).
    """

    tensorboard: bool = False


def require_tensorboard() -> Any:
    """``torch.utils.tensorboard.SummaryWriter``, or one ``ImportError`` line naming the pip command."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ImportError(f"log.tensorboard=true needs the tensorboard package, an optional dependency; install it "
                          f"with: {INSTALL_HINT} (or drop log.tensorboard)") from None
    return SummaryWriter


class TensorBoardMirror:
    """Writes metrics records as TensorBoard events in ``folder`` (see the module docstring).

    Args:
        folder: the event files' folder (``<run>/tb``), created on the first write.

    Raises:
        ImportError: tensorboard is not installed (names the pip command).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self._writer_class = require_tensorboard()
        self._writer: Any = None

    def rebuild(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the folder's event files by ``records`` (the whole ``metrics.jsonl``), then go on appending."""
        self.close()
        for old in sorted(self.folder.glob(EVENTS_GLOB)):
            old.unlink()
        for record in records:
            self._add(record)
        if self._writer is not None:
            self._writer.flush()

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and flush it to disk."""
        self._add(record)
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        """Flush and close the open event file (a later :meth:`rebuild` opens a new one)."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _add(self, record: dict[str, Any]) -> None:
        step = record.get("step")
        if isinstance(step, bool) or not isinstance(step, int):
            log.warning("a metrics record without an integer step is not mirrored to TensorBoard: %s", record)
            return
        if self._writer is None:  # opened at the first record: a run that logs nothing gets no event file
            # purge_step=0: a TensorBoard still reading replaced files drops what it loaded from them
            self._writer = self._writer_class(log_dir=str(self.folder), purge_step=0)
        for key, value in record.items():
            if key == "step":
                continue
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                if math.isfinite(value):
                    self._writer.add_scalar(key, value, global_step=step)
            elif isinstance(value, str):
                self._writer.add_text(key, value, global_step=step)

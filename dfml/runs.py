"""Run directories: resolved config, metrics, checkpoints that survive a kill, results.

Layout of a run directory::

    config.yaml        the resolved configuration (what was asked for, every default filled in)
    run.json           dfml version, git revision, command line, start time
    metrics.jsonl      one JSON object per logged step
    checkpoints/       last.pt (+ last.prev.pt, the one before) and best.pt (best on meta-validation)
    results.json       final figures

Nothing is ever silently overwritten: starting a run in a directory that holds a run with a
different configuration is refused; the same configuration resumes from the last checkpoint.
Every file is written to a temporary name, flushed and then renamed over the old one, so a
kill at any moment leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .config import config_changes

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def git_revision() -> str | None:
    """The git revision of the dfml source tree, or ``None`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


class RunDir:
    """A run directory (see the module docstring for its layout).

    Args:
        path: the directory; created if missing.
        config: the resolved configuration as a plain dict (written as ``config.yaml``).
        defaults: the configuration's defaults as a plain dict. A run saved by an older dfml lacks
            the fields added since; such a field is accepted when ``config`` holds it at its default
            (the behaviour the old run had), so finished and interrupted runs survive upgrades.

    Raises:
        ValueError: ``path`` holds a run whose ``config.yaml`` differs from ``config`` (the message
            lists the differing keys and says to pick another directory).
        NotADirectoryError: ``path`` exists and is a file.
    """

    def __init__(self, path: str | Path, config: dict[str, Any], defaults: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run directory {str(self.path)!r} exists and is not a directory")
        self.config = config
        cfg_file = self.path / "config.yaml"
        if cfg_file.exists():
            old = yaml.safe_load(cfg_file.read_text()) or {}
            plain_new = yaml.safe_load(yaml.safe_dump(config))
            plain_defaults = None if defaults is None else yaml.safe_load(yaml.safe_dump(defaults))
            diff = config_changes(old, plain_new, plain_defaults)
            if diff:
                raise ValueError(
                    f"{str(self.path)!r} already holds a run with another configuration (differs in: "
                    f"{', '.join(diff)}); nothing was changed. Use a new --out directory, or re-run "
                    "the original command to resume that run."
                )
            self.resumed = True
        else:
            self.resumed = False
            self.path.mkdir(parents=True, exist_ok=True)
            atomic_write_text(cfg_file, yaml.safe_dump(config, sort_keys=False))
            info = {
                "dfml_version": __version__,
                "git_revision": git_revision(),
                "command": sys.argv,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "torch": torch.__version__,
            }
            atomic_write_text(self.path / "run.json", json.dumps(info, indent=2))

    # ----------------------------------------------------------------- metrics
    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed at once)."""
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()

    def read_metrics(self) -> list[dict[str, Any]]:
        """All metrics records (a torn last line from a kill is skipped)."""
        if not self.metrics_file.exists():
            return []
        out = []
        for line in self.metrics_file.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping a torn line in %s", self.metrics_file)
        return out

    def truncate_metrics(self, after_step: int) -> None:
        """Drop records with ``step > after_step`` (logged after the checkpoint a resume starts from)."""
        keep = [r for r in self.read_metrics() if r.get("step", -1) <= after_step]
        atomic_write_text(self.metrics_file, "".join(json.dumps(r) + "\n" for r in keep))

    # ------------------------------------------------------------- checkpoints
    @property
    def checkpoint_dir(self) -> Path:
        return self.path / "checkpoints"

    def save_checkpoint(self, state: dict[str, Any], name: str = "last") -> Path:
        """Save ``state`` as ``checkpoints/<name>.pt`` atomically; the previous ``last`` is kept as
        ``last.prev.pt`` so that one damaged file never loses the run."""
        target = self.checkpoint_dir / f"{name}.pt"
        if name == "last" and target.exists():
            os.replace(target, self.checkpoint_dir / "last.prev.pt")
        atomic_torch_save(state, target)
        return target

    def load_checkpoint(self, name: str = "last") -> dict[str, Any] | None:
        """Load ``checkpoints/<name>.pt``; ``None`` if there is none.

        A damaged ``last.pt`` falls back to ``last.prev.pt`` with a warning; if both are damaged
        a ``RuntimeError`` names the files and says how to restart.
        """
        candidates = [self.checkpoint_dir / f"{name}.pt"]
        if name == "last":
            candidates.append(self.checkpoint_dir / "last.prev.pt")
        existing = [p for p in candidates if p.exists()]
        if not existing:
            return None
        errors = []
        for p in existing:
            try:
                return torch.load(p, map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any unpickling failure means a damaged file
                log.warning("checkpoint %s is unreadable (%s); trying the previous one", p, exc)
                errors.append(f"{p}: {exc}")
        raise RuntimeError(
            "no readable checkpoint: " + "; ".join(errors) + ". Move the damaged files away to restart "
            "the run from scratch in a new --out directory."
        )

    # ----------------------------------------------------------------- results
    def write_results(self, results: dict[str, Any]) -> Path:
        """Write ``results.json`` atomically."""
        target = self.path / "results.json"
        atomic_write_text(target, json.dumps(results, indent=2))
        return target

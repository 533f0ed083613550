"""Run directories: resolved config, metrics, checkpoints that survive a kill, results.

Layout of a run directory::

    config.yaml        the resolved configuration (what was asked for, every default filled in)
    run.json           dfml version, git revision, command line, start time; ``inputs``: what
                       identifies the pool and data the run was made on; ``episodes``: the SHA-256
                       of each meta-test episode file it used
    metrics.jsonl      one JSON object per logged step
    tb/                TensorBoard event files mirroring metrics.jsonl (``log.tensorboard``, see
                       :mod:`dfml.tensorboard`)
    checkpoints/       last.pt (+ last.prev.pt, the one before) and best.pt (best on meta-validation)
    episodes/          meta-validation episode lists (and meta-test ones, unless eval.episodes_dir)
    results.json       final figures
    extended/<n>/      what a run had before its n-th extension to a larger budget (``dfml train
                       --extend``): its config.yaml, results.json and model.pt
    .lock              while a process writes the run (see :mod:`dfml.locks`)

Nothing is ever silently overwritten: starting a run in a directory that holds a run with a
different configuration is refused (unless that run stopped before saving any work); the same
configuration resumes from the last checkpoint, on the inputs it was made on only, and one that
only raises ``train.budget_minutes`` or ``train.steps`` goes on from it when asked to (``extend``),
keeping the results it had. The ``log``
section says where metrics are mirrored, nothing a run computes: a resume may change it.
Every file is written to a temporary name, flushed and then renamed over the old one, so a
kill at any moment leaves either the old or the new file, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import yaml

from . import __version__
from .config import config_changes, load_yaml, lookup
from .extension import EXTENDABLE as EXTENDABLE
from .extension import extend_run, grown_budget
from .files import load_tensors, torch_bytes, write_atomic
from .tensorboard import EVENTS_GLOB

EPISODES_KEY = "eval.episodes_dir"
LOG_SECTION = "log"
"""The configuration section a resume may change (where metrics are mirrored, see :mod:`dfml.tensorboard`)."""
_SETUP_FILES = {"config.yaml", "run.json", "metrics.jsonl", "episodes", ".lock", "tb"}

log = logging.getLogger(__name__)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the permissions ``open()`` gives (:func:`dfml.files.write_atomic`)."""
    write_atomic(path, data)


def atomic_write_text(path: Path, text: str) -> None:
    """Text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode())


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to ``path`` atomically (see :func:`atomic_write_bytes`)."""
    write_atomic(path, torch_bytes(obj))


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _short(value: Any) -> str:
    return f"{value[:12]}..." if isinstance(value, str) and len(value) > 16 else repr(value)


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
        upgrade: maps a saved configuration's moved fields to their places now
            (:func:`dfml.upgrade.upgrade_config`) before it is compared with ``config``.

    A run that stopped before saving any work (see :meth:`has_work`; e.g. a typo in the dataset
    name) gives way to another configuration: its ``config.yaml`` and ``run.json`` are replaced,
    its metrics and its own episode lists removed. A configuration that differs only in
    ``eval.episodes_dir`` (a copied run whose episode lists live elsewhere now) resumes when every
    meta-test episode file the run recorded (:meth:`record_episodes`) is there, byte for byte.
    With ``extend``, a configuration that only raises ``train.budget_minutes`` or ``train.steps``
    (:data:`EXTENDABLE`) goes on from the last checkpoint of a run that ended on them (see
    :func:`~dfml.extension.extend_run`); training goes on as the longer run would have, but for one extra validation
    where the first ended.

    Raises:
        ValueError: ``path`` holds a run that saved work and whose ``config.yaml`` differs from
            ``config`` (the message lists the differing keys and says to pick another directory;
            for a larger budget it names ``--extend``), or ``extend`` asks for a larger budget of a
            run that ended on something else.
        NotADirectoryError: ``path`` exists and is a file.
    """

    def __init__(self, path: str | Path, config: dict[str, Any], defaults: dict[str, Any] | None = None,
                 extend: bool = False, upgrade: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise NotADirectoryError(f"run directory {str(self.path)!r} exists and is not a directory")
        self.config = config
        self.resumed = False
        self.extended: dict[str, list[Any]] = {}  # {key: [was, now]} when this opening extended the run
        self._mirrors: list[Any] = []
        self._mirrors_stale = True
        cfg_file = self.path / "config.yaml"
        if cfg_file.exists():
            old = load_yaml(cfg_file, what="run configuration")
            if upgrade is not None:  # a run saved before some fields moved (see dfml.upgrade)
                old = upgrade(old)
            plain_new = yaml.safe_load(yaml.safe_dump(config))
            plain_defaults = None if defaults is None else yaml.safe_load(yaml.safe_dump(defaults))
            changes = config_changes(old, plain_new, plain_defaults)
            diff = [k for k in changes if k.split(".")[0] != LOG_SECTION]
            missing = self._missing_episodes(plain_new) if diff == [EPISODES_KEY] else None
            if not diff or missing == []:
                if diff:
                    log.info("%s: the run's episode files are the same in eval.episodes_dir=%r; resuming", self.path,
                             lookup(plain_new, EPISODES_KEY))
                if len(diff) < len(changes):  # config.yaml records the log settings the run goes on with
                    updated = {k: v for k, v in old.items() if k != LOG_SECTION}
                    if LOG_SECTION in plain_new:
                        updated[LOG_SECTION] = plain_new[LOG_SECTION]
                    atomic_write_text(cfg_file, yaml.safe_dump(updated, sort_keys=False))
                self.resumed = True
                return
            grown = grown_budget(old, plain_new, diff)
            if grown and self.has_work():
                extend_run(self, old, config, grown, extend)
                return
            if self.has_work():
                where = f" (its episode files {', '.join(missing)} are missing or differ there)" if missing else ""
                raise ValueError(
                    f"{str(self.path)!r} already holds a run with another configuration (differs in: "
                    f"{', '.join(diff)}){where}; nothing was changed. Use a new --out directory, or re-run "
                    "the original command to resume that run."
                )
            log.warning("%s held a run that stopped before saving any work (it differs in: %s); starting this "
                        "configuration in its place", self.path, ", ".join(diff))
            self._clear_failed_start()
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

    # ---------------------------------------------------------- what it holds
    def has_work(self) -> bool:
        """Whether the run saved anything a restart would lose: a checkpoint, a bank, a model, results...

        Anything but ``config.yaml``, ``run.json``, metrics and their TensorBoard copy in ``tb/`` (a run
        without a checkpoint restarts from step 0 and drops them) and episode lists (drawn again from
        their seed) counts.
        """
        for p in self.path.iterdir():
            if p.name in _SETUP_FILES or (p.name.startswith(".") and p.name.endswith(".tmp")):
                continue
            if p.is_dir() and not any(q.is_file() for q in p.rglob("*")):
                continue
            return True
        return False

    def _clear_failed_start(self) -> None:
        self.metrics_file.unlink(missing_ok=True)
        for f in sorted((self.path / "tb").glob(EVENTS_GLOB)):  # the metrics' copy
            f.unlink()
        for f in sorted((self.path / "episodes").glob("*.json")):  # drawn for the configuration given up
            f.unlink()

    @property
    def info(self) -> dict[str, Any]:
        """``run.json`` (empty if missing or unreadable)."""
        try:
            out = json.loads((self.path / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return out if isinstance(out, dict) else {}

    def update_info(self, **fields: Any) -> None:
        """Rewrite ``run.json`` with ``fields`` added or replaced."""
        atomic_write_text(self.path / "run.json", json.dumps({**self.info, **fields}, indent=2))

    def check_inputs(self, inputs: dict[str, dict[str, Any]], *, record: bool = True) -> None:
        """Refuse to go on with other inputs than the run was made on; record them in ``run.json``.

        Args:
            inputs: what identifies each input, e.g. ``{"pool": {"manifest_sha256": ...},
                "data": {"dataset": "toy", "val_sha256": ...}}``. A field the run has not recorded
                (a run saved by an older dfml) counts as unknown and is recorded now.
            record: write ``run.json`` (``False`` on the ranks of a launch other than 0).

        A run that saved no work (:meth:`has_work`) gives way to other inputs, as it does to another
        configuration.

        Raises:
            ValueError: a recorded field differs (the message names it, both values and the fix).
        """
        saved = self.info.get("inputs") or {}
        changed = [(f"{name}.{key}", saved[name][key], value) for name, fields in inputs.items()
                   for key, value in fields.items()
                   if isinstance(saved.get(name), dict) and key in saved[name] and saved[name][key] != value]
        if changed and not self.has_work():
            log.warning("%s held a run that stopped before saving any work, on other inputs (%s); starting again on "
                        "these", self.path, ", ".join(key for key, _, _ in changed))
            if record:
                self._clear_failed_start()
            saved, changed = {}, []
        if changed:
            details = "; ".join(f"{key}: {_short(was)} when it started, {_short(now)} now" for key, was, now in changed)
            names = " and ".join(sorted({key.split(".")[0] for key, _, _ in changed}))
            raise ValueError(
                f"{str(self.path)!r} holds a run made on other inputs ({details}); nothing was changed. Use a new "
                f"--out directory for these inputs, or restore the {names} the run was made on to resume it."
            )
        merged = {**saved, **{name: {**(saved.get(name) or {}), **fields} for name, fields in inputs.items()}}
        if record and merged != saved:
            self.update_info(inputs=merged)

    def record_episodes(self, files: list[Path]) -> dict[str, str]:
        """Record the SHA-256 of meta-test episode ``files`` in ``run.json``; returns ``{file name: sha256}``."""
        hashes = {f.name: sha256_file(f) for f in files}
        known = self.info.get("episodes") or {}
        if any(known.get(k) != v for k, v in hashes.items()):
            self.update_info(episodes={**known, **hashes})
        return hashes

    def _missing_episodes(self, config: dict[str, Any]) -> list[str] | None:
        """The recorded episode files not found byte for byte in ``config``'s episodes folder (``None``:
        nothing recorded, so nothing shows the folders hold the same episodes)."""
        known = self.info.get("episodes") or {}
        if not known:
            return None
        new = lookup(config, EPISODES_KEY)
        folder = Path(new) if new else self.path / "episodes"
        return [name for name, sha in sorted(known.items())
                if not (folder / name).is_file() or sha256_file(folder / name) != sha]

    # ----------------------------------------------------------------- metrics
    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.jsonl"

    def log_metrics(self, record: dict[str, Any]) -> None:
        """Append one JSON line to ``metrics.jsonl`` (flushed at once), and pass it on to the mirrors."""
        with open(self.metrics_file, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self._mirrors_stale:
            self._rebuild_mirrors()
        else:
            for mirror in self._mirrors:
                mirror.append(record)

    def mirror_metrics(self, mirror: Any) -> None:
        """Also write every metrics record to ``mirror`` (e.g. a :class:`~dfml.tensorboard.TensorBoardMirror`).

        ``mirror.rebuild(records)`` is called with the whole of ``metrics.jsonl`` at the first record
        logged after this call or after :meth:`truncate_metrics` (or at :meth:`close_mirrors`, when
        nothing was logged), ``mirror.append(record)`` for each record after it; ``mirror.close()``
        by :meth:`close_mirrors`.
        """
        self._mirrors.append(mirror)
        self._mirrors_stale = True

    def close_mirrors(self) -> None:
        """Bring the mirrors up to ``metrics.jsonl`` and close them (they are then dropped)."""
        if self._mirrors_stale:
            self._rebuild_mirrors()
        for mirror in self._mirrors:
            mirror.close()
        self._mirrors = []

    def _rebuild_mirrors(self) -> None:
        if self._mirrors:
            records = self.read_metrics()
            for mirror in self._mirrors:
                mirror.rebuild(records)
        self._mirrors_stale = False

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
        self._mirrors_stale = True  # the mirrors drop the records too at the next one logged

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
        errors: list[str] = []
        for p in existing:
            try:
                state = load_tensors(p)
            except ValueError as exc:  # damaged, truncated, or not plain tensors
                errors.append(str(exc))
                continue
            if errors:  # only a fallback that works is a warning; a failure is the error's one line
                log.warning("%s; resuming from %s, the checkpoint before it", errors[-1], p)
            return state
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

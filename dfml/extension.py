"""A finished run goes on to a larger budget (``dfml train --extend``).

A run whose configuration differs from the saved one only by a larger ``train.budget_minutes`` or
``train.steps`` (:data:`EXTENDABLE`) goes on from its last checkpoint, when what ended it is what
grew; its results so far move to ``extended/<n>/`` and ``run.json`` records the extension.
:class:`~dfml.runs.RunDir` decides when to ask (:func:`grown_budget`) and calls :func:`extend_run`.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .config import lookup
from .files import write_atomic

if TYPE_CHECKING:
    from .runs import RunDir

__all__ = ["EXTENDABLE", "budget_stop", "extend_run", "grown_budget"]

log = logging.getLogger(__name__)


EXTENDABLE = ("train.budget_minutes", "train.steps")
"""The settings a run may grow when it goes on (``dfml train --extend``, see :func:`extend_run`)."""


def grown_budget(old: dict[str, Any], new: dict[str, Any], diff: list[str]) -> dict[str, list[Any]]:
    """``{key: [was, now]}`` when every change of ``diff`` raises an :data:`EXTENDABLE` setting (a
    budget of ``None`` is no limit), else ``{}``."""
    if not diff or not set(diff) <= set(EXTENDABLE):
        return {}
    grown = {k: [lookup(old, k), lookup(new, k)] for k in diff}
    for was, now in grown.values():
        if was is None or not (now is None or (isinstance(now, (int, float)) and isinstance(was, (int, float))
                                               and now > was)):
            return {}
    return grown


def budget_stop(stopped: dict[str, Any]) -> bool:
    """Whether a recorded stop (``{"step", "reason", "kind"}``, see
    :class:`~dfml.datafree.MetaTrainer`) was the CPU budget's; stops recorded before they had a
    ``kind`` name the setting in their reason."""
    default = "budget" if "(train.budget_minutes)" in str(stopped.get("reason")) else "stream"
    return stopped.get("kind", default) == "budget"


def what_ended(results: Path) -> str | None:
    """What ended a finished run: ``"budget"``, ``"steps"`` or the reason its stream gave; ``None``
    when it has not finished (or its results do not say)."""
    try:
        info = json.loads(results.read_text()).get("info") or {}
    except (OSError, ValueError, AttributeError):
        return None
    stop = info.get("stopped_early")
    if isinstance(stop, dict):
        return "budget" if budget_stop(stop) else str(stop.get("reason"))
    return "steps" if "steps" in info else None


def _fmt(value: Any) -> str:
    return "null" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def extend_run(run: RunDir, old: dict[str, Any], config: dict[str, Any], grown: dict[str, list[Any]], extend: bool) -> None:
    """Go on with ``run``, whose configuration only raises ``train.budget_minutes``/``train.steps``.

    Refused without ``extend`` (the message names ``--extend``), and when what ended the run is
    not lifted by what grew. The run's results so far (``results.json``, ``model.pt``) and its
    configuration move to ``extended/<n>/``; ``run.json`` records the extension.
    """
    change = ", ".join(f"{k} {_fmt(was)} -> {_fmt(now)}" for k, (was, now) in grown.items())
    n = len(run.info.get("extensions") or []) + 1
    keep = f"extended/{n}"
    if not extend:
        raise ValueError(
            f"{str(run.path)!r} holds this run with a smaller budget ({change}); nothing was changed. Add "
            f"--extend to go on from its last checkpoint to the new budget (its results so far move to {keep}/), "
            "or use a new --out directory to start again."
        )
    why = what_ended(run.path / "results.json")
    if why == "budget" and "train.budget_minutes" not in grown:
        raise ValueError(f"{str(run.path)!r}: the run stopped on its CPU budget (train.budget_minutes="
                         f"{_fmt(lookup(old, 'train.budget_minutes'))}), which {change} does not lift; raise "
                         "train.budget_minutes too")
    if why == "steps" and "train.steps" not in grown:
        raise ValueError(f"{str(run.path)!r}: the run took all its train.steps={lookup(old, 'train.steps')}, "
                         f"which {change} does not lift; raise train.steps too")
    if why not in (None, "budget", "steps"):
        raise ValueError(f"{str(run.path)!r}: the run stopped early ({why}), which a larger {change} does not "
                         "lift; use a new --out directory")
    archive = run.path / keep
    archive.mkdir(parents=True, exist_ok=True)
    write_atomic(archive / "config.yaml", yaml.safe_dump(old, sort_keys=False).encode())
    for name in ("results.json", "model.pt"):
        if (run.path / name).exists():
            os.replace(run.path / name, archive / name)
    extensions = [*(run.info.get("extensions") or []),
                  {"changed": grown, "kept": keep, "command": sys.argv,
                   "at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}]
    run.update_info(extensions=extensions)
    write_atomic(run.path / "config.yaml", yaml.safe_dump(config, sort_keys=False).encode())
    log.info("%s: extending the run (%s); its results so far are in %s/", run.path, change, keep)
    run.resumed = True
    run.extended = grown

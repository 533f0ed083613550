"""Every bad input ends with exit status 2 and one line naming the fix, nothing saved is lost, and
the corrected command is then accepted (issue 12: "nothing silent").

Each :class:`Case` makes its bad input under a fresh ``tmp`` folder (from a shared toy pool that it
must never modify: copy it first with :func:`copy_pool`), runs ``dfml`` with it and expects:

* exit status 2;
* exactly one line on stderr, ``dfml: error: ...``, matching ``match`` (no traceback);
* every file that existed under ``tmp`` before the bad command is byte-identical after it;
* ``fixed`` (when given): the corrected command, run next in the same ``tmp``, exits 0.

The cases are grouped in tables by where the bad input lives (pools, data, configuration, runs,
budgets); add a case to its table.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from dfml.cli import main

Argv = list[str]


@dataclass(frozen=True)
class Case:
    """One bad input.

    Attributes:
        id: a short name (the test id).
        bad: ``(tmp, pool) -> argv``: writes what the case needs under ``tmp`` and returns the bad command.
        match: a regular expression the single error line must match (``re.search``).
        fixed: ``(tmp, pool) -> argv``: the corrected command, expected to exit 0 afterwards; ``None``
            when there is nothing to correct from the command line (e.g. a tampered file).
    """

    id: str
    bad: Callable[[Path, Path], Argv]
    match: str
    fixed: Callable[[Path, Path], Argv] | None = None


def copy_pool(pool: Path, tmp: Path, name: str = "pool") -> Path:
    """A private copy of the shared toy pool (cases that damage a pool damage their copy)."""
    dst = tmp / name
    shutil.copytree(pool, dst)
    return dst


def toy_eval(pool: Path, out: Path, *extra: str) -> Argv:
    """``dfml eval --recipe random`` on the toy pool: the cheapest complete command."""
    return ["eval", "--recipe", "random", "--pool", str(pool), "--dataset", "toy", "--episodes", "5",
            "--shots", "1", "--out", str(out), *extra]


def toy_train(pool: Path, out: Path, *extra: str, recipe: str = "maml") -> Argv:
    """A few steps of ``dfml train`` on the toy pool.

    The bank settings (``train.bank_per_class``, ``train.inversion``) are given to ``maml`` only:
    a recipe refuses ``--set`` values it does not read (the data-free recipes invert with their
    ``datafree.*`` parts, ``random``/``average`` do not meta-train).
    """
    bank = ["--set", "train.bank_per_class=8", "--set", "train.inversion.steps=5"] if recipe == "maml" else []
    meta = ["--set", "train.steps=2", "--set", "train.val_every=1", "--set", "train.val_episodes=3"]
    return ["train", "--recipe", recipe, "--pool", str(pool), "--dataset", "toy", "--episodes", "5",
            "--shots", "1", "--out", str(out), *(meta if recipe not in ("random", "average") else []), *bank, *extra]


# --- pools: missing, truncated, tampered, mismatched or unreadable pool files -------------------------
POOL_CASES: list[Case] = [
]

# --- data: missing or wrong datasets, class sizes, episodes -----------------------------------------
DATA_CASES: list[Case] = [
]

# --- configuration: --set / YAML values, types, ranges, sections a recipe does not read ------------------
CONFIG_CASES: list[Case] = [
]

# --- runs: run directories, resume on other inputs, locks, diverged fine-tunes ---------------------------
RUN_CASES: list[Case] = [
]

# --- budgets and black-box access ------------------------------------------------------------------
BUDGET_CASES: list[Case] = [
]

CASES = POOL_CASES + DATA_CASES + CONFIG_CASES + RUN_CASES + BUDGET_CASES


@pytest.fixture(scope="module")
def toy_pool(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bad") / "pool"
    assert main(["pool", "build", "--dataset", "toy", "--arch", "mlp", "--out", str(out),
                 "--n-models", "3", "--epochs", "5", "--lr", "0.01"]) == 0
    return out


def _snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_the_table_covers_at_least_forty_bad_inputs() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    assert len(CASES) >= 40, len(CASES)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_a_bad_input_is_one_line_exit_2_nothing_lost_and_the_fix_is_accepted(
    case: Case, toy_pool: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pool_before = _snapshot(toy_pool)
    argv = case.bad(tmp_path, toy_pool)
    before = _snapshot(tmp_path)
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("dfml: error"), err
    assert "Traceback" not in err
    assert re.search(case.match, lines[0]), (case.match, lines[0])
    after = _snapshot(tmp_path)
    lost = {k for k, v in before.items() if after.get(k) != v}
    assert not lost, f"the bad command changed or removed {sorted(lost)}"
    if case.fixed is not None:
        assert main(case.fixed(tmp_path, toy_pool)) == 0, capsys.readouterr().err
    assert _snapshot(toy_pool) == pool_before, "a case modified the shared toy pool: copy it with copy_pool"

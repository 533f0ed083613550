"""The evaluation section of a run's configuration: the meta-test protocol and meta-validation's fine-tuning."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from ..config import check_ranges
from .calibration import CalibrationConfig
from .protocols import DEFAULT_PROTOCOL, get_protocol

__all__ = ["META_TEST_FIELDS", "VALIDATION_FIELDS", "EvalConfig", "meta_test_protocol"]


@dataclass(frozen=True)
class EvalConfig:
    """The meta-test protocol (the DFML papers': 600 episodes, 15 queries, 10 steps at lr 0.01), and how
    meta-validation fine-tunes.

    Attributes:
        n_way: classes per episode.
        shots: support examples per class; one score per value.
        n_query: query examples per class.
        episodes: number of fixed meta-test episodes.
        steps, lr: fine-tuning on each episode's support set.
        seed: seed of the episode lists (same seed, same episodes, for every recipe).
        episodes_dir: where meta-test episode lists are kept and reused, e.g. shared by several runs
            (default: inside the run directory). Meta-validation lists always live in the run
            directory. Runs are compared by the content of these files (``episodes_sha256`` in
            ``results.json``), not by this path.
        calibration: inversion calibration after the inner loop (PURER's ICFIL; off by default,
            e.g. ``--set eval.calibration.enabled=true``); when on, each score also carries the
            uncalibrated score of the same episodes and the paired difference.
        protocol: the named protocol (:mod:`dfml.eval.protocols`): ``standard`` (default, the DFML
            papers' code: their Conv4 initialisation, the ``random`` baseline's head bias zeroed) or
            ``dfml-2025`` (dfml's earlier one, PyTorch's default initialisation). A run saved
            without this field was scored under ``dfml-2025``; ``dfml compare`` and a resume say so.
        val_steps, val_lr: fine-tuning on each meta-validation episode's support set, which selects
            the meta-model of a meta-training run (``train.val_every``, ``train.val_episodes``);
            ``None`` (default): meta-test's, ``steps`` and ``lr``. Not part of the meta-test protocol
            (:data:`VALIDATION_FIELDS`): runs that differ in them are still compared. Earlier dfml
            called them ``train.test_inner_steps``/``test_inner_lr``.
    """

    n_way: int = 5
    shots: tuple[int, ...] = (1, 5)
    n_query: int = 15
    episodes: int = 600
    steps: int = 10
    lr: float = 0.01
    seed: int = 0
    episodes_dir: str | None = None
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    protocol: str = DEFAULT_PROTOCOL
    val_steps: int | None = None
    val_lr: float | None = None

    def __post_init__(self) -> None:
        get_protocol(self.protocol)  # an unknown name raises, naming the valid ones
        if isinstance(self.n_way, bool) or not isinstance(self.n_way, int) or self.n_way < 2:
            raise ValueError(f"eval.n_way must be an integer >= 2 (a classification task), got {self.n_way!r}")
        check_ranges(self, "eval.", counts=("n_query", "episodes"), naturals=("steps",), positive=("lr",))
        check_ranges(self, "eval.", naturals=("val_steps",) if self.val_steps is not None else (),
                     positive=("val_lr",) if self.val_lr is not None else ())
        object.__setattr__(self, "shots", tuple(self.shots))
        if not self.shots:
            raise ValueError("eval.shots must list at least one shot, e.g. eval.shots=[1, 5] (or --shots 1 5)")
        if any(isinstance(s, bool) or not isinstance(s, int) or s < 1 for s in self.shots):
            raise ValueError(f"eval.shots must be integers >= 1, got {list(self.shots)}; e.g. eval.shots=[1, 5]")

    def validation(self) -> tuple[int, float]:
        """Meta-validation's fine-tuning ``(steps, lr)``: ``val_steps``/``val_lr``, each defaulting to meta-test's."""
        return (self.steps if self.val_steps is None else self.val_steps,
                self.lr if self.val_lr is None else self.val_lr)


VALIDATION_FIELDS = ("val_steps", "val_lr")
"""The fields of ``eval`` that meta-validation reads: only recipes that meta-train read them, and they
are no part of the meta-test protocol that paired runs must share."""
META_TEST_FIELDS = tuple(f.name for f in fields(EvalConfig) if f.name not in VALIDATION_FIELDS)
"""The fields of ``eval`` that make up the meta-test protocol (every scored run reads them)."""


def meta_test_protocol(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The meta-test protocol's part of an ``eval`` section given as a plain mapping (a saved run's, an
    export's, ``to_dict(cfg.eval)``): :data:`META_TEST_FIELDS`, without meta-validation's ``eval.val_*``."""
    return {k: v for k, v in settings.items() if k in META_TEST_FIELDS}

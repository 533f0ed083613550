"""What a data-free recipe reads of the configuration, and the recipe-side entry to the loop.

A paper recipe (``purer``, ``bidf_mkd``, ``robust``, ``free``, ``tgr``) is a preset of
:class:`~dfml.datafree.DataFreeConfig` (``dfml/recipes/presets/<name>.yaml``) plus a registration
that calls :func:`train_datafree`; the loop itself (configuration to parts, the stream, the
trainer) is :mod:`dfml.datafree`. ``DataFreeConfig`` and the builders are re-exported here for the
imports that name this module.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ..datafree.build import run_datafree
from ..meta import MAML
from ..meta.learner import LEARNERS
from ..datafree.config import BlackBoxAccessConfig as BlackBoxAccessConfig
from ..datafree.config import DataFreeConfig as DataFreeConfig
from ..datafree.build import build_inverter as build_inverter
from ..datafree.build import build_learner as build_learner
from ..datafree.build import build_selector as build_selector
from ..datafree.build import build_update as build_update
from .base import INNER_LOOP_READS, META_TRAINING_READS, RecipeContext, RecipeSpec
from .baselines import initial_meta_model

__all__ = ["DATAFREE_RECIPE", "PART_SETTINGS", "BlackBoxAccessConfig", "DataFreeConfig", "datafree_reads",
           "train_datafree"]


PART_SETTINGS = {
    "pixel": ("inverter", "pixel"), "bank": ("inverter", "bank"), "generator": ("inverter", "generator"),
    "metagen": ("inverter", "metagen"), "blackbox": ("inverter", "blackbox"), "access": ("inverter", "blackbox"),
    "reliability": ("selector", "reliability"), "reward": ("selector", "reliability"),
    "n_groups": ("selector", "group"), "distill": ("learner", "distill"), "alignment": ("update", "alignment"),
    "grouping": ("update", "grouping"), "memory_config": ("memory", True),
}
"""The ``datafree`` settings of one part: read only when ``datafree.<choice>`` is ``value``."""

NOT_THE_LOOP = ("synthetic",)
"""``datafree`` settings the data-free loop never reads (``synthetic``: the ``maml`` recipe's bank)."""


def datafree_reads(cfg: Any) -> tuple[str, ...]:
    """The keys a data-free recipe reads under the resolved ``cfg``: the loop's ``train`` fields, the
    inner loop's when the learner has one (a :class:`~dfml.meta.MAML`: ``maml`` and ``distill``), and
    the ``datafree`` settings of the chosen parts."""
    df = cfg.datafree
    parts = tuple(f"datafree.{f.name}" for f in dataclasses.fields(df) if f.name not in NOT_THE_LOOP and (
        f.name not in PART_SETTINGS or getattr(df, PART_SETTINGS[f.name][0]) == PART_SETTINGS[f.name][1]))
    return META_TRAINING_READS + (INNER_LOOP_READS if _inner_loop(df.learner) else ()) + parts


def _inner_loop(learner: str) -> bool:
    """Whether learner ``learner`` runs ``train``'s inner loop (it is a MAML)."""
    return issubclass(LEARNERS.get(learner), MAML)


def _explain_unread(cfg: Any, key: str) -> str:
    df = cfg.datafree
    if key in INNER_LOOP_READS:
        return f" (datafree.learner is {df.learner}, which has no inner loop)"
    name = key.split(".")[1] if key.startswith("datafree.") else ""
    if name in NOT_THE_LOOP:
        return " (it is the maml recipe's bank)"
    if name in PART_SETTINGS:
        choice, value = PART_SETTINGS[name]
        shown = str(value).lower() if isinstance(value, bool) else value
        return f" (read only with datafree.{choice}={shown}; it is {str(getattr(df, choice)).lower()})"
    return ""


DATAFREE_RECIPE = RecipeSpec(reads=datafree_reads, pool_classes="at_least", explain=_explain_unread)
"""What every data-free recipe (``train_datafree``) reads and needs: ``datafree.synthetic`` is maml's
bank, never read here."""


def train_datafree(ctx: RecipeContext, cfg: DataFreeConfig) -> nn.Module:
    """Run the data-free loop described by ``cfg`` from the meta-model ``train.meta_init`` names
    (see :func:`dfml.datafree.run_datafree`); returns the selected meta-model."""
    return run_datafree(ctx, cfg, initial_meta_model(ctx, ctx.train.seed))

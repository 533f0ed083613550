"""Configuration fields that moved, and the old configurations that name them.

Each field lives in one section, the section of the part that reads it (issue 14). A field that
moved keeps working where configurations are read: a run directory's saved ``config.yaml`` (so an
old run still resumes, and compares equal to the same command today), a preset or ``--config``
file, and a ``--set key=value``. Building a config in Python with one (``TrainConfig(bank_per_class=20)``)
raises a ``TypeError`` that names its new place (:func:`dfml.config.refuse_moved`), and an unknown key
of a mapping that is one says where it went (:func:`moved_hint`).

=======================  ================================  =========================================
earlier                  now                               read by
=======================  ================================  =========================================
``train.bank_per_class``  ``datafree.synthetic.per_class``  ``maml``'s bank, inverted once
``train.inversion``       ``datafree.pixel``                ``maml``'s bank (the pixel inverter's own)
=======================  ================================  =========================================

Before the move, ``maml`` was the only recipe that read them, while every configuration carried
them (at their defaults, or set for every recipe of a benchmark table). So a configuration of
another recipe drops them (they changed nothing), and one of ``maml`` moves them, replacing what
the new place held (``maml`` never read ``datafree``).
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["MOVED", "moved_hint", "upgrade_config", "upgrade_overrides"]

MOVED = {"train.bank_per_class": "datafree.synthetic.per_class", "train.inversion": "datafree.pixel"}
"""Earlier dotted key -> where it lives now."""
READER = "maml"
"""The only recipe that read the moved fields before they moved."""


def moved_hint(dotted: str) -> str:
    """``" (train.inversion moved to datafree.pixel; ...)"`` for an earlier key of :data:`MOVED` (else ``""``)."""
    new = MOVED.get(dotted)
    return "" if new is None else f" ({dotted} moved to {new}; dfml/upgrade.py lists the fields that moved)"


def upgrade_config(mapping: dict[str, Any], recipe: str | None = None) -> dict[str, Any]:
    """``mapping`` (a saved ``config.yaml``, a preset, a layer of settings) with its moved fields in their place.

    Args:
        recipe: the recipe the configuration is for (default: ``mapping["recipe"]``); ``None`` when it
            names none: the fields then move, for a setting someone gave is never dropped unseen.

    Returns:
        A new mapping; ``mapping`` is not changed.
    """
    recipe = mapping.get("recipe", recipe) if isinstance(mapping, dict) else recipe
    out = copy.deepcopy(mapping)
    for old, new in MOVED.items():
        section, name = old.split(".")
        held = out.get(section)
        if not isinstance(held, dict) or name not in held:
            continue
        value = held.pop(name)
        if not held:
            del out[section]
        if recipe is None or recipe == READER:
            _put(out, new, value)
    return out


def upgrade_overrides(items: list[str] | None) -> list[str]:
    """``--set`` items with a moved key rewritten to its new place (``train.inversion.steps=5`` ->
    ``datafree.pixel.steps=5``); what a recipe does not read is then refused as usual."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        for old, new in MOVED.items():
            if key.strip() == old or key.strip().startswith(old + "."):
                key = new + key.strip()[len(old):]
                break
        out.append(f"{key}{sep}{value}")
    return out


def _put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    *sections, leaf = dotted.split(".")
    node = tree
    for part in sections:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if isinstance(value, dict) and isinstance(node.get(leaf), dict):
        node[leaf] = {**node[leaf], **value}  # a layer's own datafree.pixel settings and its old train.inversion
    else:
        node[leaf] = value

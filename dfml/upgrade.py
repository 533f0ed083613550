"""Configuration fields that moved, and the old configurations that name them.

Each field lives in one section, the section of the part that reads it (issue 14). A field that
moved keeps working where configurations are read: a run directory's saved ``config.yaml`` (so an
old run still resumes, and compares equal to the same command today), a preset or ``--config``
file, and a ``--set key=value``. Building a config in Python with one (``TrainConfig(test_inner_steps=5)``)
raises a ``TypeError`` that names its new place (:func:`dfml.config.refuse_moved`), and an unknown key
of a mapping that is one says where it went (:func:`moved_hint`).

==================================  ================================  ===================================
earlier                             now                               carried over when
==================================  ================================  ===================================
``train.bank_per_class``            ``datafree.synthetic.per_class``  the recipe is ``maml``
``train.inversion``                 ``datafree.pixel``                the recipe is ``maml``
``datafree.distill.inner_steps``    ``train.inner_steps``             the learner was ``distill``
``datafree.distill.inner_lr``       ``train.inner_lr``                the learner was ``distill``
``datafree.distill.first_order``    ``train.first_order``             the learner was ``distill``
``datafree.distill.learn_inner_lr`` ``train.learn_inner_lr``          the learner was ``distill``
``train.test_inner_steps``          ``eval.val_steps``                it differs from ``eval.steps``
``train.test_inner_lr``             ``eval.val_lr``                   it differs from ``eval.lr``
==================================  ================================  ===================================

An old field is carried over when it was what ran, and dropped when it changed nothing:

* ``maml`` was the only recipe that read its bank's settings, while every configuration carried
  them; another recipe's configuration drops them, ``maml``'s replaces what the new place held
  (``maml`` never read ``datafree``).
* The inner loop had two copies: ``train`` for the MAML learner (``maml``, ``maml_data`` and the
  data-free recipes with ``datafree.learner: maml``), ``datafree.distill`` for the distilling
  learner (``datafree.learner: distill``), which ignored ``train``'s. Where the distilling learner
  ran, its copy replaces ``train``'s; elsewhere it is dropped.
* Meta-validation fine-tuned with ``train.test_inner_*``, meta-test with ``eval.steps``/``lr``;
  now validation fine-tunes as meta-test unless ``eval.val_*`` say otherwise, so an old value equal
  to meta-test's is dropped and one that differs becomes ``eval.val_*``.

What decides (the recipe, ``datafree.learner``, ``eval.steps``/``lr``) is read from the mapping, else
from ``under``, the configuration it is applied over. Where it is not known, a field moves (a
setting someone gave is never dropped unseen); an inner-loop value that would then replace a
different one in ``train`` is refused.
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["MOVED", "moved_hint", "upgrade_config", "upgrade_overrides"]

MOVED = {
    "train.bank_per_class": "datafree.synthetic.per_class",
    "train.inversion": "datafree.pixel",
    "datafree.distill.inner_steps": "train.inner_steps",
    "datafree.distill.inner_lr": "train.inner_lr",
    "datafree.distill.first_order": "train.first_order",
    "datafree.distill.learn_inner_lr": "train.learn_inner_lr",
    "train.test_inner_steps": "eval.val_steps",
    "train.test_inner_lr": "eval.val_lr",
}
"""Earlier dotted key -> where it lives now."""
BANK_READER = "maml"
"""The only recipe that read its bank's settings (``train.bank_per_class``, ``train.inversion``)."""
LEARNER_IGNORED = ("random", "average", "maml", "maml_data")
"""The recipes that never read ``datafree.learner`` (their learner, if any, was MAML from ``train``)."""
META_TEST = {"train.test_inner_steps": "eval.steps", "train.test_inner_lr": "eval.lr"}
"""Meta-test's fine-tuning setting that each earlier meta-validation one now defaults to."""
_ABSENT = object()


def moved_hint(dotted: str) -> str:
    """``" (train.inversion moved to datafree.pixel; ...)"`` for an earlier key of :data:`MOVED` (else ``""``)."""
    new = MOVED.get(dotted)
    return "" if new is None else f" ({dotted} moved to {new}; dfml/upgrade.py lists the fields that moved)"


def upgrade_config(mapping: dict[str, Any], recipe: str | None = None, under: dict[str, Any] | None = None,
                   unread: list[str] | None = None) -> dict[str, Any]:
    """``mapping`` (a saved ``config.yaml``, a preset, a layer of settings) with its moved fields in their place.

    Args:
        recipe: the recipe the configuration is for (default: ``mapping["recipe"]``, else ``under``'s).
        under: the resolved configuration (a plain dict) that ``mapping`` is applied over, for what
            ``mapping`` does not set itself (its learner, its meta-test fine-tuning); ``None``: unknown.
        unread: if given, the earlier keys dropped because the recipe never read them are appended
            (a user's file that sets one is refused, as it was before the move).

    Returns:
        A new mapping; ``mapping`` is not changed.

    Raises:
        ValueError: the learner is not known and ``mapping`` sets one inner-loop value twice, differently.
    """
    if not isinstance(mapping, dict):
        return mapping
    recipe = mapping.get("recipe", recipe if recipe is not None else _get(under, "recipe", None))
    learner = _get(mapping, "datafree.learner", _get(under, "datafree.learner", None))
    out = copy.deepcopy(mapping)
    for old, new in MOVED.items():
        value = _pop(out, old)
        if value is _ABSENT:
            continue
        if old in META_TEST:
            if value != _get(out, META_TEST[old], _get(under, META_TEST[old], _ABSENT)):
                _put(out, new, value)
        elif _ran(out, old, new, value, recipe, learner):
            _put(out, new, value)
        elif unread is not None:
            unread.append(old)
    return out


def _ran(out: dict[str, Any], old: str, new: str, value: Any, recipe: str | None, learner: str | None) -> bool:
    """Whether the earlier ``old`` (a bank or inner-loop setting) was what ran: it then takes the place of ``new``."""
    if not old.startswith("datafree.distill."):
        return recipe is None or recipe == BANK_READER
    if (learner is not None and learner != "distill") or recipe in LEARNER_IGNORED:
        return False  # the MAML learner ran, with train's settings
    if learner is None or recipe is None:
        held = _get(out, new, _ABSENT)
        if held is not _ABSENT and held != value:
            raise ValueError(
                f"{old}={value!r} and {new}={held!r}: the inner loop now has one place, {new}, read by every "
                "learner, and which learner this configuration is for is not known here; keep the value of the "
                "learner that runs (datafree.distill's for datafree.learner=distill)"
            )
    return True


def upgrade_overrides(items: list[str] | None) -> list[str]:
    """``--set`` items with a moved key rewritten to its new place (``train.inversion.steps=5`` ->
    ``datafree.pixel.steps=5``, ``datafree.distill.inner_lr=0.1`` -> ``train.inner_lr=0.1``, the inner
    loop of every learner); what a recipe does not read is then refused as usual."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        for old, new in MOVED.items():
            if key.strip() == old or key.strip().startswith(old + "."):
                key = new + key.strip()[len(old):]
                break
        out.append(f"{key}{sep}{value}")
    return out


def _get(tree: Any, dotted: str, default: Any) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def _pop(tree: dict[str, Any], dotted: str) -> Any:
    """Remove and return the value at ``dotted`` (or ``_ABSENT``); a section it leaves empty goes too."""
    *sections, leaf = dotted.split(".")
    path, node = [], tree
    for part in sections:
        if not isinstance(node.get(part), dict):
            return _ABSENT
        path.append((node, part))
        node = node[part]
    if leaf not in node:
        return _ABSENT
    value = node.pop(leaf)
    for parent, part in reversed(path):
        if parent[part]:
            break
        del parent[part]
    return value


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

"""Dataclass configs <-> dict / YAML, with dotted overrides checked against the fields."""

from __future__ import annotations

import dataclasses
import functools
import math
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .coerce import (
    ABSENT,
    CommandLineText,
    build_dataclass,
    checked,
    coerce,
    field_default,
    join_key,
    load_text,
    show_value,
)
from .upgrade import moved_hint

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A (nested) dataclass as a plain dict, tuples as lists (YAML-friendly)."""
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"expected a dataclass instance, got {type(cfg).__name__}")

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(cfg)


def from_dict(cls: type[C], data: dict[str, Any]) -> C:
    """Build dataclass ``cls`` from ``data`` (e.g. a saved ``config.yaml``), every value checked like an override.

    Raises:
        ValueError: an unknown key (the message names the valid ones), or a value that does not fit
            its field's type annotation (see :func:`apply_mapping`).
    """
    return build_dataclass(cls, data, "")


def refuse_moved(section: str, how: str = "") -> Callable[[type[C]], type[C]]:
    """Class decorator of the config dataclass of ``section`` (``"train"``) some of whose fields moved
    (:data:`dfml.upgrade.MOVED`): building it with one (``TrainConfig(test_inner_steps=5)``) raises a
    ``TypeError`` that names the new place in one line, instead of Python's "unexpected keyword
    argument". ``how``: what a Python caller does instead, appended to the message."""

    def decorate(cls: type[C]) -> type[C]:
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            try:
                init(self, *args, **kwargs)
            except TypeError:
                gone = [k for k in kwargs if moved_hint(f"{section}.{k}")]
                if not gone:
                    raise
                raise TypeError(f"{cls.__name__}({gone[0]}=...) is not a field any more"
                                f"{moved_hint(f'{section}.{gone[0]}')}{how}") from None

        cls.__init__ = __init__  # type: ignore[method-assign]
        return cls

    return decorate


def positive_number(value: Any) -> bool:
    """Whether ``value`` is a finite int or float > 0 (a bool is not a number here)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


_RULES = {
    "counts": ("an integer >= 1", lambda v: v >= 1),
    "naturals": ("an integer >= 0", lambda v: v >= 0),
    "positive": ("a finite number > 0", positive_number),
    "nonnegative": ("a finite number >= 0", lambda v: math.isfinite(v) and v >= 0),
}


def check_ranges(cfg: Any, prefix: str = "", **groups: tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first field of dataclass ``cfg`` out of its range.

    Called from a config's ``__post_init__``; ``groups`` name the fields of each kind: ``counts``
    (integers >= 1), ``naturals`` (integers >= 0), ``positive`` (finite numbers > 0: learning rates,
    temperatures) and ``nonnegative`` (finite numbers >= 0: loss weights).

    Example:
        >>> check_ranges(cfg, "eval.", counts=("episodes",), positive=("lr",))
    """
    defaults = {f.name: field_default(f) for f in dataclasses.fields(cfg)}
    for kind, names in groups.items():
        what, ok = _RULES[kind]
        for name in names:
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ValueError(f"{prefix}{name} must be {what}, got {value!r} (default {show_value(defaults[name])})")


def _parse_value(text: str) -> Any:
    """``text`` as typed on the command line; :func:`apply_mapping` reads it in its field's type."""
    return CommandLineText(text)


def apply_overrides(cfg: C, overrides: list[str] | None) -> C:
    """Apply ``["train.inner_lr=0.01", ...]`` to a (nested, frozen) dataclass; returns a new one.

    The overrides are applied together (a later one wins on the same key), so fields that are
    checked against each other can be changed in any order. Each value is read in the type of its
    field (see :func:`apply_mapping`): ``1e-3`` is a number for a ``float``, ``1.5`` is refused by
    an ``int``, a ``bool`` takes ``true`` or ``false`` only.

    Raises:
        ValueError: a malformed override, a field that does not exist (the message lists valid
            fields) or a value that does not fit the field (the message names key, value and type).
    """
    mapping: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. train.inner_lr=0.01)")
        key, text = item.split("=", 1)
        *sections, leaf = key.strip().split(".")
        node, section = mapping, cfg
        for part in sections:
            names = [f.name for f in dataclasses.fields(section)]
            if part not in names:
                raise ValueError(f"unknown config key {key!r}: {type(section).__name__} has fields {names}"
                                 f"{moved_hint(key.strip())}")
            section = getattr(section, part)
            if not dataclasses.is_dataclass(section):
                raise ValueError(f"config key {key!r}: {part!r} is not a section")
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[leaf] = _parse_value(text)
    return apply_mapping(cfg, mapping)


def apply_mapping(cfg: C, mapping: dict[str, Any], where: str = "") -> C:
    """Apply a nested mapping of field values (as read from a YAML preset) to a dataclass.

    Sections are merged field by field, so a preset names only what it changes. All the fields of
    a section change at once, so checks between fields (run when the dataclass is built) see the
    new values together, whatever their order in the mapping.

    Every value is checked against its field's type annotation: ``int`` (whole numbers only: ``7``,
    ``1e4``; not ``1.5`` or ``abc``), ``float`` (any number, including the ``1e-3`` that YAML 1.1
    reads as a string), ``bool`` (``true``/``false``), ``str``, tuples and lists (of checked
    items), mappings, nested sections and ``X | None`` (``null``). Text from the command line
    (:func:`apply_overrides`) is read in the field's type.

    Raises:
        ValueError: a key that is not a field (the message lists the valid fields), a value that
            does not fit its field (the message names the dotted key, the value, the expected type
            and an example), or a section given something other than a mapping.
    """
    if not isinstance(mapping, dict):
        raise ValueError(f"config section {where or '<top>'!r} must be a mapping, got {type(mapping).__name__}")
    names = [f.name for f in dataclasses.fields(cfg)]
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    for key, value in mapping.items():
        full = join_key(where, key)
        if key not in names:
            raise ValueError(f"unknown config key {full!r}: {type(cfg).__name__} has fields {names}{moved_hint(full)}")
        child = getattr(cfg, key)
        if dataclasses.is_dataclass(child) and not isinstance(value, type(child)):
            value = load_text(value) if isinstance(value, CommandLineText) else value
            if not isinstance(value, dict):
                first = dataclasses.fields(child)[0].name
                raise ValueError(f"config key {full!r} is a section ({type(child).__name__}); set its fields, "
                                 f"e.g. {full}.{first}={show_value(getattr(child, first))}")
            changes[key] = apply_mapping(child, value, full)
        else:
            changes[key] = coerce(hints[key], value, full, child)
    return checked(lambda: dataclasses.replace(cfg, **changes), where) if changes else cfg


def load_yaml(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """Read a YAML mapping (``safe_load``: plain values only, no Python objects).

    Args:
        path: the file.
        what: what the file is, for the messages (``"config file"``, ``"preset"``...).

    Raises:
        FileNotFoundError: no such file.
        ValueError: one line naming the file: not UTF-8 text, a YAML syntax error (with its line and
            column), or a top level that is not a mapping.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} {str(p)!r} does not exist")
    try:
        text = p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{what} {str(p)!r} is not UTF-8 text (byte {err.start}); give a YAML file") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ValueError(f"{what} {str(p)!r}{_yaml_error(err)}; fix the file there") from None
    if not isinstance(data, dict):
        raise ValueError(f"{what} {str(p)!r} must hold a mapping at top level, got {type(data).__name__}")
    return data


def _yaml_error(err: yaml.YAMLError) -> str:
    """``", line L, column C: not valid YAML: <problem> (<context> from line L')"``, on one line."""
    mark = getattr(err, "problem_mark", None)
    where = "" if mark is None else f", line {mark.line + 1}, column {mark.column + 1}"
    problem = " ".join(str(getattr(err, "problem", None) or err).split())
    context, context_mark = getattr(err, "context", None), getattr(err, "context_mark", None)
    if context and context_mark is not None and (mark is None or context_mark.line != mark.line):
        problem += f" ({' '.join(context.split())} from line {context_mark.line + 1})"
    elif context:
        problem += f" ({' '.join(context.split())})"
    return f"{where}: not valid YAML: {problem}"


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write a dataclass (or dict) as YAML."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


def lookup(tree: Any, dotted: str, default: Any = None) -> Any:
    """The value at ``"a.b.c"`` of nested dicts, or ``default`` when a part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


def dotted_keys(tree: dict[str, Any], prefix: str = "") -> list[str]:
    """The dotted keys of the leaves of nested dicts, in order.

    Example:
        >>> dotted_keys({"train": {"steps": 5}, "datafree": {"pixel": {"lr": 0.1}}, "pool": "p"})
        ['train.steps', 'datafree.pixel.lr', 'pool']
    """
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, dict):
            out += dotted_keys(value, f"{prefix}{key}.")  # an empty section sets nothing
        else:
            out.append(f"{prefix}{key}")
    return out


def override_keys(overrides: list[str] | None) -> dict[str, str]:
    """The dotted keys that ``["key=value", ...]`` set, each mapped to its override (for messages).

    A mapping value (``datafree={pixel: {steps: 3}}``) sets each of its leaves.

    Example:
        >>> override_keys(["train.steps=5", "datafree={pixel: {steps: 3}}"])
        {'train.steps': 'train.steps=5', 'datafree.pixel.steps': 'datafree={pixel: {steps: 3}}'}
    """
    out: dict[str, str] = {}
    for item in overrides or []:
        key, _, text = item.partition("=")
        value = load_text(CommandLineText(text))
        leaves = dotted_keys(value, f"{key.strip()}.") if isinstance(value, dict) and value else [key.strip()]
        out.update({leaf: item for leaf in leaves})
    return out


def config_changes(saved: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any] | None = None) -> list[str]:
    """The dotted keys at which ``now`` differs from ``saved`` (plain dicts), sorted.

    A key that ``saved`` lacks (a field added to dfml after it was written) is not a change when
    ``now`` holds it at its value in ``defaults``: that is the behaviour the saved run or pool had.
    Used wherever a resume must refuse a different configuration (run directories, pool builds).

    Example:
        >>> config_changes({"a": 1}, {"a": 1, "b": 2}, defaults={"a": 0, "b": 2})
        []
    """
    keys = sorted(_diff_keys(saved, now))
    if defaults is None:
        return keys
    return [k for k in keys
            if not (lookup(saved, k, ABSENT) is ABSENT and lookup(now, k, ABSENT) == lookup(defaults, k, ABSENT))]


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k, ABSENT), b.get(k, ABSENT), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".") or "<root>"}

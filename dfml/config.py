"""Dataclass configs <-> dict / YAML, with dotted overrides checked against the fields."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

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
    """Build dataclass ``cls`` from ``data``; unknown keys raise ``ValueError`` naming the valid ones."""
    if not isinstance(data, dict):
        raise TypeError(f"config for {cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(names)}")
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        hint = hints.get(key)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
            value = from_dict(hint, value)
        elif typing.get_origin(hint) is tuple and isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def _parse_value(text: str) -> Any:
    return yaml.safe_load(text)


def apply_overrides(cfg: C, overrides: list[str] | None) -> C:
    """Apply ``["meta.inner_lr=0.01", ...]`` to a (nested, frozen) dataclass; returns a new one.

    The overrides are applied together (a later one wins on the same key), so fields that are
    checked against each other can be changed in any order.

    Raises:
        ValueError: a malformed override or a field that does not exist (the message lists valid fields).
    """
    mapping: dict[str, Any] = {}
    for item in overrides or []:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value (e.g. meta.inner_lr=0.01)")
        key, text = item.split("=", 1)
        *sections, leaf = key.strip().split(".")
        node, section = mapping, cfg
        for part in sections:
            names = [f.name for f in dataclasses.fields(section)]
            if part not in names:
                raise ValueError(f"unknown config key {key!r}: {type(section).__name__} has fields {names}")
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

    Raises:
        ValueError: a key that is not a field (the message lists the valid fields), or a value a
            section is given that is not a mapping.
    """
    if not isinstance(mapping, dict):
        raise ValueError(f"config section {where or '<top>'!r} must be a mapping, got {type(mapping).__name__}")
    names = [f.name for f in dataclasses.fields(cfg)]
    changes: dict[str, Any] = {}
    for key, value in mapping.items():
        full = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ValueError(f"unknown config key {full!r}: {type(cfg).__name__} has fields {names}")
        child = getattr(cfg, key)
        if isinstance(value, dict) and dataclasses.is_dataclass(child):
            changes[key] = apply_mapping(child, value, full)
        else:
            changes[key] = _coerce(child, value)
    return dataclasses.replace(cfg, **changes) if changes else cfg


def _coerce(current: Any, value: Any) -> Any:
    """``value`` in the type of the field's ``current`` value where YAML cannot say it (tuples, floats)."""
    if isinstance(current, tuple) and isinstance(value, list):
        return tuple(value)
    if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing file or a non-mapping raises with the path."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file {str(p)!r} does not exist")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"config file {str(p)!r} must hold a mapping at top level, got {type(data).__name__}")
    return data


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write a dataclass (or dict) as YAML."""
    data = to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg
    Path(path).write_text(yaml.safe_dump(data, sort_keys=False))


_ABSENT = object()


def lookup(tree: Any, dotted: str, default: Any = None) -> Any:
    """The value at ``"a.b.c"`` of nested dicts, or ``default`` when a part is missing."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return default
        tree = tree[part]
    return tree


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
            if not (lookup(saved, k, _ABSENT) is _ABSENT and lookup(now, k, _ABSENT) == lookup(defaults, k, _ABSENT))]


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".") or "<root>"}

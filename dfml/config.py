"""Dataclass configs <-> dict / YAML, with dotted overrides checked against the fields."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
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
    """Build dataclass ``cls`` from ``data`` (e.g. a saved ``config.yaml``), every value checked like an override.

    Raises:
        ValueError: an unknown key (the message names the valid ones), or a value that does not fit
            its field's type annotation (see :func:`apply_mapping`).
    """
    return _build(cls, data, "")


def _build(cls: type[C], data: Any, where: str) -> C:
    if not isinstance(data, dict):
        raise TypeError(f"config for {cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(fields)}")
    kwargs = {key: _coerce(hints[key], value, _join(where, key), _default(fields[key]))
              for key, value in data.items()}
    return _checked(lambda: cls(**kwargs), where)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _ABSENT


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)


def _checked(build: Callable[[], C], where: str) -> C:
    """``build()``, with the dotted section prefixed to a check that fails in a nested section."""
    try:
        return build()
    except (ValueError, TypeError) as exc:
        if type(exc) in (ValueError, TypeError) and where and not str(exc).startswith(where):
            raise type(exc)(f"{where}: {exc}") from exc
        raise


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
    defaults = {f.name: _default(f) for f in dataclasses.fields(cfg)}
    for kind, names in groups.items():
        what, ok = _RULES[kind]
        for name in names:
            value = getattr(cfg, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
                raise ValueError(f"{prefix}{name} must be {what}, got {value!r} (default {_show(defaults[name])})")


class _Text(str):
    """A value as typed after ``=`` on the command line: read in its field's type, not YAML's guess."""


def _parse_value(text: str) -> Any:
    """``text`` as typed on the command line; :func:`apply_mapping` reads it in its field's type."""
    return _Text(text)


def apply_overrides(cfg: C, overrides: list[str] | None) -> C:
    """Apply ``["meta.inner_lr=0.01", ...]`` to a (nested, frozen) dataclass; returns a new one.

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
        full = _join(where, key)
        if key not in names:
            raise ValueError(f"unknown config key {full!r}: {type(cfg).__name__} has fields {names}")
        child = getattr(cfg, key)
        if dataclasses.is_dataclass(child) and not isinstance(value, type(child)):
            value = _load(value) if isinstance(value, _Text) else value
            if not isinstance(value, dict):
                first = dataclasses.fields(child)[0].name
                raise ValueError(f"config key {full!r} is a section ({type(child).__name__}); set its fields, "
                                 f"e.g. {full}.{first}={_show(getattr(child, first))}")
            changes[key] = apply_mapping(child, value, full)
        else:
            changes[key] = _coerce(hints[key], value, full, child)
    return _checked(lambda: dataclasses.replace(cfg, **changes), where) if changes else cfg


class _Mismatch(Exception):
    """A value that does not fit a type (turned into one ValueError naming the key by :func:`_coerce`)."""


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")
_UNREADABLE = object()


def _coerce(hint: Any, value: Any, key: str, current: Any = None) -> Any:
    """``value`` (as read from YAML, or command-line :class:`_Text`) in the type ``hint`` of field ``key``.

    Raises:
        ValueError: ``value`` does not fit ``hint``; names ``key``, the value, the type and an example
            (``current``, the field's value or default, when there is one).
    """
    try:
        return _convert(hint, value, key)
    except _Mismatch:
        raise ValueError(f"{key}={_shown(value)} is not {_describe(hint)}; write e.g. {key}={_example(hint, current)}") from None


def _shown(value: Any) -> str:
    """A bad value in an error message: numbers and YAML values as written, text quoted."""
    if isinstance(value, _Text):
        if _is_number(value):
            return str(value).strip()
        value = _load(value)
    return repr(value) if isinstance(value, str) else _show(value)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return _load(value) if isinstance(value, _Text) else value
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and _is_null(value):
            return None
        for option in (a for a in args if a is not type(None)):
            try:
                return _convert(option, value, key)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is typing.Literal:
        loaded = _load(value) if isinstance(value, _Text) else value
        if loaded in args:
            return loaded
        raise _Mismatch
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        loaded = _load(value) if isinstance(value, _Text) else value
        if isinstance(loaded, hint):
            return loaded
        if not isinstance(loaded, dict):
            raise _Mismatch
        return _build(hint, loaded, key)
    if hint in (bool, int, float, str):
        return _scalar(hint, value)
    if origin in (tuple, list) or hint in (tuple, list):
        return _sequence(hint, origin or hint, args, value, key)
    if origin is dict or hint is dict:
        loaded = _load(value) if isinstance(value, _Text) else value
        if not isinstance(loaded, dict):
            raise _Mismatch
        return dict(loaded)
    return _load(value) if isinstance(value, _Text) else value  # a type dfml does not check (left as given)


def _scalar(hint: type, value: Any) -> Any:
    text = str(value).strip() if isinstance(value, (_Text, str)) else None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise _Mismatch
    if hint is str:
        if isinstance(value, _Text):
            loaded = _load(value)
            if isinstance(loaded, (list, dict)):
                raise _Mismatch
            return loaded if isinstance(loaded, str) else str(value).strip()
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(value, bool):
        raise _Mismatch
    number = value
    if text is not None:
        if not _is_number(text):
            raise _Mismatch
        number = int(text) if re.fullmatch(r"[-+]?\d+", text) else float(text)
    if not isinstance(number, (int, float)):
        raise _Mismatch
    if hint is float:
        return float(number)
    if isinstance(number, float):
        if not (math.isfinite(number) and number.is_integer()):
            raise _Mismatch
        return int(number)
    return number


def _sequence(hint: Any, origin: Any, args: tuple[Any, ...], value: Any, key: str) -> Any:
    loaded = _load(value) if isinstance(value, _Text) else value
    if not isinstance(loaded, (list, tuple)):
        raise _Mismatch
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(loaded) != len(args):
            raise _Mismatch
        items = [_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, loaded))]
    else:
        item = args[0] if args else Any
        items = [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(loaded)]
    return tuple(items) if origin is tuple else items


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip()) is not None


def _is_null(value: Any) -> bool:
    if isinstance(value, _Text):
        return value.strip().lower() in ("null", "none", "~", "")
    return value is None


def _load(value: Any) -> Any:
    """Command-line text as YAML (``[1, 5]``, ``{steps: 3}``, ``null``); text YAML cannot read stays text."""
    if not isinstance(value, _Text):
        return value
    try:
        return yaml.safe_load(str(value))
    except yaml.YAMLError:
        return str(value)


def _describe(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in args)
    if origin is typing.Literal:
        return f"one of {', '.join(map(repr, args))}"
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return f"a mapping of {hint.__name__} fields"
    if origin in (tuple, list):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            kinds = {_PLURAL.get(a, "values") for a in args}
            return f"a list of {len(args)} {kinds.pop() if len(kinds) == 1 else 'values'}"
        return f"a list of {_PLURAL.get(args[0], 'values') if args else 'values'}"
    return _SINGULAR.get(hint, "a mapping" if origin is dict or hint is dict else f"a {getattr(hint, '__name__', hint)}")


_SINGULAR = {int: "an integer", float: "a number", bool: "true or false", str: "a string", type(None): "null"}
_PLURAL = {int: "integers", float: "numbers", bool: "booleans", str: "strings"}
_EXAMPLES = {int: 10, float: 0.01, bool: True, str: "name", dict: {}}


def _example(hint: Any, current: Any) -> str:
    if current is not None and current is not _ABSENT and not dataclasses.is_dataclass(current):
        return _show(current)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _example(options[0], None) if options else "null"
    if origin in (tuple, list):
        return "[1, 5]" if not args or args[0] is int else f"[{_example(args[0], None)}]"
    if origin is typing.Literal:
        return _show(args[0])
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        first = dataclasses.fields(hint)[0]
        return f"{{{first.name}: {_show(_default(first))}}}"
    return _show(_EXAMPLES.get(origin or hint, "..."))


def _show(value: Any) -> str:
    """``value`` as one would write it after ``key=`` (YAML flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_show(v) if not isinstance(v, str) else repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_show(v)}" for k, v in value.items()) + "}"
    return str(value) if not isinstance(value, str) else value


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


_ABSENT = object()


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
        >>> dotted_keys({"train": {"steps": 5, "inversion": {"lr": 0.1}}, "pool": "p"})
        ['train.steps', 'train.inversion.lr', 'pool']
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
        value = _load(_Text(text))
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
            if not (lookup(saved, k, _ABSENT) is _ABSENT and lookup(now, k, _ABSENT) == lookup(defaults, k, _ABSENT))]


def _diff_keys(a: Any, b: Any, prefix: str = "") -> set[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        out: set[str] = set()
        for k in set(a) | set(b):
            out |= _diff_keys(a.get(k, _ABSENT), b.get(k, _ABSENT), f"{prefix}{k}.")
        return out
    return set() if a == b else {prefix.rstrip(".") or "<root>"}

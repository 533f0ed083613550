"""A value read in the type of its dataclass field, and a dataclass built from a mapping of such values.

What a YAML file or a ``--set key=value`` gives is checked against the field's annotation (``int``,
``float``, ``bool``, ``str``, tuples and lists, mappings, nested dataclasses, ``X | None``,
``Literal``); a value that does not fit raises one ``ValueError`` naming the dotted key, the
value, the expected type and an example. :mod:`dfml.config` applies presets and overrides with it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable
from typing import Any, TypeVar

import yaml

from .upgrade import moved_hint

C = TypeVar("C")
ABSENT = object()
"""A field without a default (and, in lookups, a key that is not there)."""


def build_dataclass(cls: type[C], data: Any, where: str) -> C:
    """Dataclass ``cls`` from mapping ``data``, every value read by :func:`coerce` (``where``: the dotted section)."""
    if not isinstance(data, dict):
        raise TypeError(f"config for {cls.__name__} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        moved = "".join(moved_hint(join_key(where, key)) for key in unknown)
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; valid fields: {sorted(fields)}{moved}")
    kwargs = {key: coerce(hints[key], value, join_key(where, key), field_default(fields[key]))
              for key, value in data.items()}
    return checked(lambda: cls(**kwargs), where)


def field_default(f: dataclasses.Field) -> Any:
    """The default of field ``f`` (its factory's value), or :data:`ABSENT`."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return ABSENT


def join_key(where: str, key: Any) -> str:
    """``"train" + "steps"`` -> ``"train.steps"``."""
    return f"{where}.{key}" if where else str(key)


def checked(build: Callable[[], C], where: str) -> C:
    """``build()``, with the dotted section prefixed to a check that fails in a nested section."""
    try:
        return build()
    except (ValueError, TypeError) as exc:
        if type(exc) in (ValueError, TypeError) and where and not str(exc).startswith(where):
            raise type(exc)(f"{where}: {exc}") from exc
        raise


class CommandLineText(str):
    """A value as typed after ``=`` on the command line: read in its field's type, not YAML's guess."""


class _Mismatch(Exception):
    """A value that does not fit a type (turned into one ValueError naming the key by :func:`coerce`)."""


_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def coerce(hint: Any, value: Any, key: str, current: Any = None) -> Any:
    """``value`` (as read from YAML, or command-line :class:`CommandLineText`) in the type ``hint`` of field ``key``.

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
    if isinstance(value, CommandLineText):
        if _is_number(value):
            return str(value).strip()
        value = load_text(value)
    return repr(value) if isinstance(value, str) else show_value(value)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is object:
        return load_text(value) if isinstance(value, CommandLineText) else value
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
        loaded = load_text(value) if isinstance(value, CommandLineText) else value
        if loaded in args:
            return loaded
        raise _Mismatch
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        loaded = load_text(value) if isinstance(value, CommandLineText) else value
        if isinstance(loaded, hint):
            return loaded
        if not isinstance(loaded, dict):
            raise _Mismatch
        return build_dataclass(hint, loaded, key)
    if hint in (bool, int, float, str):
        return _scalar(hint, value)
    if origin in (tuple, list) or hint in (tuple, list):
        return _sequence(hint, origin or hint, args, value, key)
    if origin is dict or hint is dict:
        loaded = load_text(value) if isinstance(value, CommandLineText) else value
        if not isinstance(loaded, dict):
            raise _Mismatch
        return dict(loaded)
    return load_text(value) if isinstance(value, CommandLineText) else value  # a type dfml does not check (left as given)


def _scalar(hint: type, value: Any) -> Any:
    text = str(value).strip() if isinstance(value, (CommandLineText, str)) else None
    if hint is bool:
        if isinstance(value, bool):
            return value
        if text is not None and text.lower() in ("true", "false"):
            return text.lower() == "true"
        raise _Mismatch
    if hint is str:
        if isinstance(value, CommandLineText):
            loaded = load_text(value)
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
    loaded = load_text(value) if isinstance(value, CommandLineText) else value
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
    if isinstance(value, CommandLineText):
        return value.strip().lower() in ("null", "none", "~", "")
    return value is None


def load_text(value: Any) -> Any:
    """Command-line text as YAML (``[1, 5]``, ``{steps: 3}``, ``null``); text YAML cannot read stays text."""
    if not isinstance(value, CommandLineText):
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
    if current is not None and current is not ABSENT and not dataclasses.is_dataclass(current):
        return show_value(current)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        return _example(options[0], None) if options else "null"
    if origin in (tuple, list):
        return "[1, 5]" if not args or args[0] is int else f"[{_example(args[0], None)}]"
    if origin is typing.Literal:
        return show_value(args[0])
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        first = dataclasses.fields(hint)[0]
        return f"{{{first.name}: {show_value(field_default(first))}}}"
    return show_value(_EXAMPLES.get(origin or hint, "..."))


def show_value(value: Any) -> str:
    """``value`` as one would write it after ``key=`` (YAML flow style)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(show_value(v) if not isinstance(v, str) else repr(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {show_value(v)}" for k, v in value.items()) + "}"
    return str(value) if not isinstance(value, str) else value


"""Values against type annotations: the type half of config validation
(:mod:`vixml_lib.validation` holds the ranges and choices, and builds the dataclasses).

:func:`check_value` converts a value to an annotation -- ``str``, ``int``, ``float``,
``bool``, ``X | None``, ``list[X]`` / ``tuple``, ``dict[K, V]``, ``Literal[...]``, a nested
config dataclass (built by :func:`vixml_lib.validation.build_config`) -- or raises a
:class:`~vixml_lib.errors.ConfigError` naming the source, the key, the value and the type
expected. Unambiguous conversions only:

- numbers written as text (YAML 1.1 reads ``5e-4`` as a string; ``"3"``) become numbers;
- an integral float (``3.0``) is an integer; an integer is a float where a float is expected;
- ``"true"`` / ``"false"`` are booleans; ``"null"`` / ``"none"`` are None where None is allowed
  (unless a string is allowed too);
- a bool is never a number; non-finite numbers are refused.
"""
from __future__ import annotations

import dataclasses
import math
import os
import re
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

from .errors import ConfigError

__all__ = ["check_value", "describe"]


class _Mismatch(Exception):
    """Internal: a value does not fit a type (:func:`check_value` turns it into a ConfigError)."""


_NONE_WORDS = ("none", "null", "~")


def describe(tp) -> str:
    """What values of annotation ``tp`` look like, in words (``an integer``, ``a number or null``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is type(None):
        return "null"
    if origin in (Union, types.UnionType):
        return " or ".join(describe(a) for a in args)
    if origin is Literal:
        return "one of " + ", ".join(map(repr, args))
    if tp is bool:
        return "true or false"
    if tp is int:
        return "an integer"
    if tp is float:
        return "a number"
    if tp is str:
        return "a string"
    if tp in (list, tuple) or origin in (list, tuple):
        return f"a list (each {describe(args[0])})" if args and args[0] not in (Any, Ellipsis) else "a list"
    if tp is dict or origin in (dict, Mapping):
        return "a mapping"
    if dataclasses.is_dataclass(tp):
        return f"a mapping of {tp.__name__} settings"
    return getattr(tp, "__name__", str(tp))


def _number(text: str) -> float:
    try:
        return float(text.strip().replace("_", ""))
    except ValueError:
        raise _Mismatch from None


def _to_int(value):
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        t = value.strip()
        if re.fullmatch(r"[+-]?\d+", t):
            return int(t)
        value = _number(t)
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        return int(value)
    raise _Mismatch


def _to_float(value):
    if isinstance(value, bool):
        raise _Mismatch
    if isinstance(value, str):
        value = _number(value)
    if isinstance(value, (int, float)) and math.isfinite(float(value)):
        return float(value)
    raise _Mismatch


def _to_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise _Mismatch


def _exact(value, tp) -> bool:
    """True when ``value`` already is of type ``tp`` (no conversion needed)."""
    origin = typing.get_origin(tp) or tp
    if tp is type(None):
        return value is None
    if tp is float:
        return isinstance(value, float)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    return isinstance(origin, type) and isinstance(value, origin)


def _union(value, args, convert):
    if value is None and type(None) in args:
        return None
    for a in args:  # an exact match wins (a dict for `str | dict | None` stays a dict)
        if a is not type(None) and _exact(value, a):
            return _coerce(value, a, convert)
    for a in args:
        if a is not type(None):
            try:
                return _coerce(value, a, convert)
            except _Mismatch:
                continue
    if type(None) in args and str not in args and isinstance(value, str) and value.strip().lower() in _NONE_WORDS:
        return None
    raise _Mismatch


def _coerce(value, tp, convert: Callable):
    """``value`` as type ``tp`` (see the module docstring), or :class:`_Mismatch`.

    ``convert(value, tp, suffix)`` checks an element or builds a nested dataclass, its key
    extended by ``suffix`` (``[0]``, ``.name``)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any or tp is object or isinstance(tp, (str, typing.TypeVar)):
        return value
    if origin in (Union, types.UnionType):
        return _union(value, args, convert)
    if origin is Literal:
        for a in args:
            if value == a and type(value) is type(a):
                return value
        raise _Mismatch
    if tp is type(None):
        if value is None:
            return None
        raise _Mismatch
    simple = {bool: _to_bool, int: _to_int, float: _to_float}
    if tp in simple:
        return simple[tp](value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if tp in (list, tuple) or origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        item = args[0] if args and (len(args) == 1 or args[-1] is Ellipsis) else Any
        out = [convert(v, item, f"[{i}]") for i, v in enumerate(value)]
        return tuple(out) if (tp is tuple or origin is tuple) else out
    if tp is dict or origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _Mismatch
        key_tp, val_tp = (args + (Any, Any))[:2] if args else (Any, Any)
        out = {}
        for k, v in value.items():
            if key_tp is str and not isinstance(k, str):
                raise _Mismatch
            out[k] = convert(v, val_tp, f".{k}")
        return out
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _Mismatch
        return convert(value, tp, "")
    if tp is Path:
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _Mismatch
    return value  # another class (an enum, a torch type, ...): the dataclass itself decides


def check_value(value: Any, tp, source: str, key: str) -> Any:
    """``value`` converted to the annotation ``tp``, or :class:`ConfigError` naming ``source``
    and ``key`` (an element's key is extended: ``recall_k[1]``, ``compare.minilm-text``)."""

    def convert(v, t, suffix):
        if dataclasses.is_dataclass(t) and isinstance(v, Mapping):
            from .validation import build_config

            return build_config(t, v, source, prefix=key + suffix)
        return check_value(v, t, source, key + suffix)

    try:
        return _coerce(value, tp, convert)
    except _Mismatch:
        raise ConfigError(source, "has the wrong type", key=key, value=value, allowed=describe(tp)) from None

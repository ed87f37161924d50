"""Types of constructor parameters given in YAML, checked against the constructor's annotations at load.

A detector takes its ``params`` as keyword arguments. Without a check, ``threshold: three`` fails deep inside
the constructor with a raw ``TypeError`` (``'<=' not supported between 'str' and 'int'``), and
``max_count: 5.5`` or ``max_count: '5'`` may even be accepted. :func:`check_param_types` compares every value
with the annotation of its parameter and fails naming the parameter, the value and the type it needs.

Only what can be judged is judged: ``int`` (not ``bool``, not ``5.5``, not ``'5'``), ``float`` (an ``int`` is
fine), ``bool``, ``str``, ``None``, unions of them, and lists / tuples / sequences / mappings of them.
A parameter annotated with any other class (a forecaster object, a callable) is left to the constructor.

Examples:
    >>> class D:
    ...     def __init__(self, max_count: int = 5, threshold: float = 3.0, window: str | int = "60s") -> None: ...
    >>> check_param_types(D, {"max_count": 5, "threshold": 2, "window": "10s"})
    >>> check_param_types(D, {"max_count": "5"})
    Traceback (most recent call last):
    ...
    vigil.errors.ConfigError: `params.max_count` must be an integer; got '5' (hint: write it without quotes: 5)
    >>> check_param_types(D, {"threshold": "three"}, step="z")
    Traceback (most recent call last):
    ...
    vigil.errors.ConfigError: step `z`: `params.threshold` must be a number; got 'three'
"""

from __future__ import annotations

import collections.abc
import re
import types
import typing
from typing import Any

from vigil.errors import ConfigError

_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable, collections.abc.Collection)
_MAPPINGS = (dict, collections.abc.Mapping)


def _conforms(value: Any, t: Any) -> bool | None:
    """Whether ``value`` fits annotation ``t``: True, False, or None (can't tell)."""
    if t is Any or t is object:
        return True
    if t is None or t is type(None):
        return value is None
    if t is bool:
        return isinstance(value, bool)
    if t is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if t is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if t is str:
        return isinstance(value, str)
    origin = typing.get_origin(t)
    if origin is typing.Union or origin is types.UnionType:
        verdicts = [_conforms(value, a) for a in typing.get_args(t)]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is typing.Literal:
        return value in typing.get_args(t)
    if origin in _SEQUENCES or t in _SEQUENCES:
        if not isinstance(value, list | tuple):
            return False
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        if len(args) != 1:
            return None if args else True
        verdicts = [_conforms(v, args[0]) for v in value]
        return False if False in verdicts else (None if None in verdicts else True)
    if origin in _MAPPINGS or t in _MAPPINGS:
        return isinstance(value, dict)
    return None


def _describe(t: Any) -> str:
    """The type an annotation asks for, in words."""
    names = {bool: "true or false", int: "an integer", float: "a number", str: "text", type(None): "null"}
    if t in names:
        return names[t]
    origin = typing.get_origin(t)
    if origin is typing.Union or origin is types.UnionType:
        return " or ".join(dict.fromkeys(_describe(a) for a in typing.get_args(t)))
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(t))
    if origin in _SEQUENCES or t in _SEQUENCES:
        args = [a for a in typing.get_args(t) if a is not Ellipsis]
        return f"a list of {_plural(_describe(args[0]))}" if len(args) == 1 else "a list"
    if origin in _MAPPINGS or t in _MAPPINGS:
        return "a mapping"
    return getattr(t, "__name__", str(t))


def _plural(text: str) -> str:
    return {"an integer": "integers", "a number": "numbers", "true or false": "true/false values"}.get(text, text)


def _hint(value: Any, t: Any) -> str | None:
    if isinstance(value, str):
        for parse in (int, float):
            try:
                number = parse(value)
            except ValueError:
                continue
            if _conforms(number, t):
                return f"write it without quotes: {number}"
    if isinstance(value, float) and value.is_integer() and _conforms(int(value), t):
        return f"write it as a whole number: {int(value)}"
    return None


def check_param_types(cls: type[Any], params: dict[str, Any], *, step: str | None = None,
                      prefix: str = "params.", origin: str | None = None) -> None:  # fmt: skip
    """Fail on the first param whose value doesn't fit its constructor annotation (see the module docstring)."""
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - annotations that can't be resolved: leave the values to the constructor
        return
    for name, value in params.items():
        t = hints.get(name)
        if t is None or _conforms(value, t) is not False:
            continue
        where = f" (in {origin})" if origin else ""
        raise ConfigError(f"must be {_describe(t)}{where}", step=step, field=f"{prefix}{name}", value=value,
                          hint=_hint(value, t))  # fmt: skip


_FIELD_IN_MSG = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def constructor_error(exc: Exception, params: dict[str, Any], *, step: str | None = None, prefix: str = "params.",
                      origin: str | None = None) -> ConfigError:  # fmt: skip
    """A constructor's ``ValueError`` / ``TypeError`` as a ConfigError naming the param its message names.

    Examples:
        >>> str(constructor_error(ValueError("`min_count` must be >= 2; got 1"), {"min_count": 1}, origin="d.yaml"))
        '`params.min_count` must be >= 2 (in d.yaml); got 1'
    """
    text = str(exc)
    m = _FIELD_IN_MSG.search(text)
    field = m.group(1) if m else None
    body = _FIELD_IN_MSG.sub("", text, count=1).strip() if m else text
    body = body.split("; got")[0].strip().rstrip(".")
    value = params.get(field) if field else None
    hint = "use a duration such as '60s', '500ms' or '1m'" if field in ("window", "size", "slide", "gap") else None
    where = f" (in {origin})" if origin else ""
    return ConfigError(body + where, step=step, field=f"{prefix}{field}" if field else prefix.rstrip("."),
                       value=value, hint=hint)  # fmt: skip

"""Detector config files: one detector plus how to read its columns, for ``vigil score`` and ``vigil bench nab``.

A ``DETECTOR.yaml`` has one of two shapes. The short one is just the detector::

    kind: calibrated
    params:
      inner: {kind: ew_zscore, params: {field: value, halflife: 200}}
      long_window: 1000

The full one adds how input files are read (every key but ``detector`` is optional; defaults shown)::

    detector:                 # the short shape, nested
      kind: sliding_zscore
      params: {field: cpu, window: 10m}
    time_column: timestamp    # event time: epoch ms, epoch s or ISO 8601 text
    time_unit: auto           # auto | ms | s | iso8601 (auto: text -> ISO 8601; numbers -> ms if >= 1e11, else s)
    value_columns: [cpu]      # columns given to the detector; default: the detector's own fields.
                              # Globs are expanded against the file's columns: "*" is every numeric column
                              # but the time and key columns, [cpu_*, mem] every numeric cpu_* column and mem
    key_column: null          # a column naming the series (many series in one file); null: one series
    threshold: null           # flag rows whose *calibrated* score is >= this, instead of the detector's own flag

Everything is checked when the file is loaded, never mid-stream. Errors are
:class:`~vigil.errors.ConfigError` naming the field and the value, and suggest a close name for an
unknown ``kind`` (looked up in :func:`vigil.detectors.registry`) or parameter::

    `detector.kind` is not a known detector (in nab.yaml); got 'ew_zscor' (hint: did you mean 'ew_zscore'?)

Detector specs nested in ``params`` (``{kind, params}`` mappings, e.g. ``Calibrated``'s ``inner``) are
checked the same way.

Offline-trained detectors: if the detector class has a classmethod
``fit_from_frame(columns: dict[str, np.ndarray]) -> dict`` (constructor params), ``vigil score --train`` calls it
with the training file's columns and builds the detector with the config's params updated by the fitted ones
(see :meth:`DetectorFactory.fit`).
"""

from __future__ import annotations

import difflib
import inspect
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vigil.config.params import check_param_types, constructor_error
from vigil.errors import ConfigError


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DetectorSpec(_Model):
    """One registered detector: its ``kind`` and constructor ``params``."""

    kind: str
    params: dict[str, Any] = Field(default_factory=dict)


class DetectorFileSpec(_Model):
    """The full shape of a detector config file (see the module docstring)."""

    detector: DetectorSpec
    time_column: str = "timestamp"
    time_unit: Literal["auto", "ms", "s", "iso8601"] = "auto"
    value_columns: list[str] | str | None = None
    key_column: str | None = None
    threshold: float | None = None


def is_column_pattern(name: str) -> bool:
    """A value column given as a glob (``*``, ``cpu_*``, ``disk_?``, ``[ab]``) rather than a name."""
    return any(c in name for c in "*?[")


@dataclass(frozen=True)
class ColumnsConfig:
    """How rows of an input file become detector input.

    Attributes:
        time_column: the event-time column.
        time_unit: ``auto``, ``ms``, ``s`` or ``iso8601``.
        value_columns: the float columns handed to ``process_many`` (by name); entries may be globs
            (:func:`is_column_pattern`), expanded against the input file's columns when it is read.
        key_column: the series key column, or ``None`` for a single series.
        threshold: when set, ``flag = ready & (calibrated >= threshold)`` replaces the detector's flag.
        required: the detector's own fields, checked once globs are expanded (empty when there are no globs).
    """

    time_column: str = "timestamp"
    time_unit: str = "auto"
    value_columns: tuple[str, ...] = ("value",)
    key_column: str | None = None
    threshold: float | None = None
    required: tuple[str, ...] = ()

    @property
    def has_patterns(self) -> bool:
        """Some value columns are globs, to expand against a file's columns."""
        return any(is_column_pattern(c) for c in self.value_columns)


@dataclass
class DetectorFactory:
    """Builds fresh detectors of one validated config: ``factory()`` gives a new detector with empty state.

    Attributes:
        kind: the registered kind.
        cls: the detector class.
        params: validated constructor params.
        fitted: params learned by :meth:`fit`, applied over ``params``.
    """

    kind: str
    cls: type[Any]
    params: dict[str, Any]
    fitted: dict[str, Any] = field(default_factory=dict)

    def __call__(self, **overrides: Any) -> Any:
        """A new detector: config params, then fitted params, then ``overrides``."""
        return self.cls(**{**self.params, **self.fitted, **overrides})

    @property
    def trainable(self) -> bool:
        """The class can be fitted offline (has a ``fit_from_frame`` classmethod)."""
        return callable(getattr(self.cls, "fit_from_frame", None))

    def fit(self, columns: dict[str, Any]) -> dict[str, Any]:
        """Fit offline: ``cls.fit_from_frame(columns)`` returns constructor params, kept for later calls.

        Args:
            columns: the training rows' value columns (the features), float64, in event-time order.
        """
        if not self.trainable:
            raise ConfigError("can't be fitted offline (no `fit_from_frame` classmethod)", field="kind",
                              value=self.kind)  # fmt: skip
        fitted = self.cls.fit_from_frame(columns)
        if not isinstance(fitted, dict):
            raise ConfigError("`fit_from_frame` must return a dict of constructor params", field="kind",
                              value=self.kind)  # fmt: skip
        self.fitted = dict(fitted)
        return self.fitted


def _needs_training(cls: type[Any], params: dict[str, Any]) -> bool:
    """The class has required constructor params that the config leaves to training (e.g. ``model``)."""
    sig = inspect.signature(cls.__init__)
    required = [n for n, p in sig.parameters.items()
                if n != "self" and p.default is inspect.Parameter.empty and p.kind is not p.VAR_KEYWORD]
    return any(n not in params for n in required)


def parse_detector_config(raw: Any, origin: str = "detector config") -> tuple[DetectorFactory, ColumnsConfig]:
    """Validate a detector config given as plain data (either shape); see :func:`load_detector_config`.

    Examples:
        >>> factory, cols = parse_detector_config({"kind": "ew_zscore", "params": {"field": "cpu"}})
        >>> factory().kind, cols.value_columns, cols.key_column
        ('ew_zscore', ('cpu',), None)
        >>> parse_detector_config({"kind": "ew_zscor"})
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `kind` is not a known detector (in detector config); got 'ew_zscor' (hint: ...)
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"must be a mapping with `kind` or `detector` (in {origin})", field="detector config",
                          value=type(raw).__name__)  # fmt: skip
    full = "detector" in raw
    prefix = "detector." if full else ""
    try:
        spec = DetectorFileSpec.model_validate(raw if full else {"detector": raw})
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        if not full and loc[:1] == ["detector"]:
            loc = loc[1:]
        name = ".".join(loc) or "detector config"
        hint = None
        if err["type"] == "extra_forbidden":
            model = DetectorSpec if (not full or loc[:1] == ["detector"]) else DetectorFileSpec
            close = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1)
            hint = f"did you mean `{close[0]}`?" if close else f"known fields: {', '.join(model.model_fields)}"
        elif err["type"] == "missing":
            hint = "this field is required"
        elif err["type"] == "literal_error":
            hint = "allowed: " + str(err.get("ctx", {}).get("expected", ""))
        value = err.get("input") if err["type"] != "missing" and not isinstance(err.get("input"), dict) else None
        msg = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"{msg} (in {origin})", field=name, value=value, hint=hint) from None
    cls = _check_detector(spec.detector.kind, spec.detector.params, prefix, origin)
    factory = DetectorFactory(spec.detector.kind, cls, dict(spec.detector.params))
    given = [spec.value_columns] if isinstance(spec.value_columns, str) else spec.value_columns  # "*" = ["*"]
    if factory.trainable and _needs_training(cls, factory.params):
        # an offline-trained detector is built after `--train`; its features are the value columns
        if not given:
            raise ConfigError(f"must name the features of a detector trained with --train (in {origin})",
                              field="value_columns", value=None, hint="e.g. value_columns: [cpu, mem]")  # fmt: skip
        fields: tuple[str, ...] = tuple(given)
    else:
        try:
            det = factory()
        except (ValueError, TypeError) as exc:
            raise constructor_error(exc, factory.params, prefix=f"{prefix}params.", origin=origin) from None
        fields = tuple(det.fields)
    values = tuple(given) if given is not None else fields
    patterns = any(is_column_pattern(c) for c in values)
    missing = [f for f in fields if f not in values]
    if missing and not patterns:  # with globs, checked once they are expanded against the file's columns
        raise ConfigError(f"must include the detector's fields {list(fields)} (in {origin})", field="value_columns",
                          value=list(values), hint=f"add {missing} or set the detector's `field` param")  # fmt: skip
    if not values:
        raise ConfigError(f"is empty (in {origin})", field="value_columns", value=[],
                          hint="name at least one column")  # fmt: skip
    if spec.time_column in values or (spec.key_column is not None and spec.key_column in (spec.time_column, *values)):
        raise ConfigError(f"time, key and value columns must differ (in {origin})", field="key_column",
                          value=spec.key_column)  # fmt: skip
    if spec.threshold is not None and not 0.0 <= spec.threshold <= 1.0:
        raise ConfigError(f"is a calibrated score and must be in [0, 1] (in {origin})", field="threshold",
                          value=spec.threshold, hint="e.g. 0.9999")  # fmt: skip
    required = tuple(f for f in fields if f not in values) if patterns else ()
    cols = ColumnsConfig(spec.time_column, spec.time_unit, values, spec.key_column, spec.threshold, required)
    return factory, cols


def load_detector_config(path: str | os.PathLike[str]) -> tuple[DetectorFactory, ColumnsConfig]:
    """Read and validate a detector config file (see the module docstring for its shape).

    Returns:
        ``(factory, columns)``: ``factory()`` builds a fresh detector; ``columns`` says how to read input files.

    Raises:
        ConfigError: the file is missing, not YAML, or invalid (the message names the field and value).
    """
    from vigil.yamlfile import read_yaml

    path = os.fspath(path)
    return parse_detector_config(read_yaml(path, "detector config"), origin=os.path.basename(path))


def bundled_config(name: str) -> Path | None:
    """A detector config shipped with Vigil (``vigil/detectors/configs/<name>.yaml``), or ``None``.

    Examples:
        >>> bundled_config("nab").name
        'nab.yaml'
    """
    base = Path(str(resources.files("vigil.detectors"))) / "configs"
    path = base / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    return path if path.is_file() else None


def resolve_config(path_or_name: str | os.PathLike[str]) -> Path:
    """The config file as given if it exists, else the bundled config of that name (e.g. ``nab``)."""
    p = Path(path_or_name)
    if p.is_file():
        return p
    if p.is_dir():
        raise ConfigError("is a folder, not a file", field="detector config", value=os.fspath(path_or_name))
    bundled = bundled_config(os.fspath(path_or_name))
    if bundled is not None:
        return bundled
    base = Path(str(resources.files("vigil.detectors"))) / "configs"
    known = sorted(q.stem for q in base.glob("*.yaml")) if base.is_dir() else []
    raise ConfigError(
        "does not exist",
        field="detector config",
        value=os.fspath(path_or_name),
        hint=f"give a YAML file, or a bundled config name: {', '.join(known) or 'none'}",
    )


def _check_detector(kind: str, params: dict[str, Any], prefix: str, origin: str) -> type[Any]:
    """The class of ``kind``, after checking its param names and any nested ``{kind, params}`` specs."""
    from vigil.detectors import registry

    kinds = registry()
    cls = kinds.get(kind)
    if cls is None:
        close = difflib.get_close_matches(kind, list(kinds), n=1)
        raise ConfigError(
            f"is not a known detector (in {origin})",
            field=f"{prefix}kind",
            value=kind,
            hint=f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(kinds))}",
        )
    sig = inspect.signature(cls.__init__)
    known = [n for n, p in sig.parameters.items() if n != "self" and p.kind is not p.VAR_KEYWORD]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    for name, value in params.items():
        if name not in known and not takes_any:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(
                f"is not a parameter of `{kind}` (in {origin})",
                field=f"{prefix}params.{name}",
                value=value,
                hint=f"did you mean `{close[0]}`?" if close else f"parameters: {', '.join(known)}",
            )
        for sub, spec in _nested_specs(value, f"{prefix}params.{name}"):
            if not isinstance(spec.get("kind"), str) or spec["kind"] not in kinds:
                _check_detector(str(spec.get("kind")), {}, f"{sub}.", origin)
            _check_detector(spec["kind"], spec.get("params") or {}, f"{sub}.", origin)
    check_param_types(cls, params, prefix=f"{prefix}params.", origin=origin)
    return cls


def _nested_specs(value: Any, where: str) -> list[tuple[str, dict[str, Any]]]:
    """Detector specs inside a param value: mappings with a ``kind`` and at most ``params`` besides."""
    from vigil.detectors import registry

    if isinstance(value, dict) and "kind" in value and set(value) <= {"kind", "params"}:
        # forecaster specs have the same shape; only treat registered-detector-looking ones as detectors
        kind = value.get("kind")
        if isinstance(kind, str) and (kind in registry() or where.endswith(("inner", "]"))):
            return [(where, value)]
        return []
    if isinstance(value, list):
        out: list[tuple[str, dict[str, Any]]] = []
        for i, v in enumerate(value):
            out += _nested_specs(v, f"{where}[{i}]")
        return out
    return []

"""The data that flows through Vigil: columnar micro-batches.

A :class:`Batch` is a struct of numpy arrays of equal length: integer key slots (see
:class:`vigil.state.KeyIndex`), event times as int64 epoch milliseconds, and one array per
numeric field. Optional columns carry event ids, labels or the wall-clock time at which the
producer emitted each event (for latency measurement). There is no Python object per event.

Single events (:class:`Event`) exist only at the edges: a demo print, an API call, a test.

Alerts are few (the point of the system), so unlike events they are plain Python objects
(:class:`Alert`, with the per-feature evidence behind it as :class:`Contribution`). They are built in
one place, :mod:`vigil.dataflow.outputs`, whichever runtime runs the pipeline.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MS_PER_S = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """One event, for the edges of the system (tests, demos, single-event APIs)."""

    key: str
    ts: int
    fields: Mapping[str, float]
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """A columnar micro-batch.

    Attributes:
        slots: int32 key slot per row (index into the pipeline's :class:`~vigil.state.KeyIndex`).
        ts_ms: int64 event time per row, epoch milliseconds.
        cols: numeric fields, one float64 array per name.
        extra: other per-row arrays (event ids as strings or ints, labels, ``emit_ns`` ...).

    Examples:
        >>> import numpy as np
        >>> b = Batch(np.array([0, 1, 0], np.int32), np.array([10, 20, 30]), {"amount": np.array([1.0, 2.0, 3.0])})
        >>> len(b), b.take(np.array([True, False, True])).cols["amount"].tolist()
        (3, [1.0, 3.0])
    """

    slots: Int32Array
    ts_ms: Int64Array
    cols: dict[str, Float64Array]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def take(self, index: np.ndarray) -> Batch:
        """Rows selected by a boolean mask or an integer index array."""
        return Batch(
            self.slots[index],
            self.ts_ms[index],
            {k: v[index] for k, v in self.cols.items()},
            {k: v[index] for k, v in self.extra.items()},
        )

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """One batch holding the rows of ``batches`` in order (all must have the same columns)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        return Batch(
            np.concatenate([b.slots for b in batches]),
            np.concatenate([b.ts_ms for b in batches]),
            {k: np.concatenate([b.cols[k] for b in batches]) for k in first.cols},
            {k: np.concatenate([b.extra[k] for b in batches]) for k in first.extra},
        )

    @staticmethod
    def empty(cols: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Batch:
        """A batch with no rows."""
        return Batch(
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            {k: np.empty(0, np.float64) for k in cols},
            {k: np.empty(0, object) for k in extra},
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(value: str | int | float) -> int:
    """Parse a duration such as ``"2s"``, ``"500ms"``, ``"1m"`` or a number of seconds into milliseconds.

    Examples:
        >>> parse_duration_ms("2s"), parse_duration_ms("500ms"), parse_duration_ms("1m"), parse_duration_ms(1.5)
        (2000, 500, 60000, 1500)

    Raises:
        ValueError: if the text is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        return int(round(float(value) * 1000))
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. '500ms', '2s', '1m', '1h')")
    return int(round(float(m.group(1)) * _UNIT_MS[m.group(2)]))


def alert_id(pipeline: str, step: str, key: str, event_id: str) -> str:
    """Deterministic alert id: 16 hex chars of a BLAKE2b hash of pipeline, step, key and event.

    Re-running the same input gives the same ids (downstream de-duplication); two pipelines, or two steps
    of one pipeline, never share one.

    Examples:
        >>> alert_id("fraud", "amount_z", "u1", "t42") == alert_id("fraud", "amount_z", "u1", "t42")
        True
        >>> alert_id("fraud", "amount_z", "u1", "t42") == alert_id("fraud2", "amount_z", "u1", "t42")
        False
        >>> len(alert_id("fraud", "amount_z", "u1", "t42"))
        16
    """
    h = hashlib.blake2b(f"{pipeline}\x1f{step}\x1f{key}\x1f{event_id}".encode(), digest_size=8)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Contribution:
    """One feature's part in an alert: evidence that a console, a notifier or RCA reads without knowing the detector.

    Attributes:
        feature: the feature (field, metric, ensemble member).
        score: how anomalous this feature is, signed where a direction means something (a z-score, an
            attribution share); features are ranked by ``abs(score)``.
        value: the observed value, if there is one.
        expected: what the detector expected (a mean, a forecast), if it has a notion of it.
        flag: whether this feature alone crossed its bar (multi-feature detectors), if known.
    """

    feature: str
    score: float
    value: float | None = None
    expected: float | None = None
    flag: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready)."""
        return {"feature": self.feature, "score": self.score, "value": self.value, "expected": self.expected,
                "flag": self.flag}

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Contribution:
        """The inverse of :meth:`to_dict`."""
        return Contribution(str(d["feature"]), float(d["score"]), d.get("value"), d.get("expected"), d.get("flag"))


@dataclass(slots=True)
class Alert:
    """One alert.

    Attributes:
        id: deterministic id (see :func:`alert_id`).
        key: the entity (user, host, service).
        event_id: the event that fired the alert.
        detector: name of the detector step that fired (the alert's ``alertname``).
        score: the detector's raw score (e.g. a z-score, or a count for a velocity rule).
        threshold: the threshold the score crossed.
        event_ts_ms: event time of the firing event (epoch ms).
        detect_ts_ms: wall-clock time at which the alert was made (epoch ms).
        latency_ms: wall-clock latency from the producer emitting the event to the alert, if known.
        stats: the detector's evidence behind the score (count, mean, std, window, baseline ...).
        event_ids: every event the alert covers (a velocity alert covers the whole burst).
        severity: ``critical`` / ``warning`` / ``info``.
        message: one readable sentence.
        labels: extra identifying labels (string values), beside the core ones the alert manager adds
            (``alertname``, ``key``, ``severity``, ``pipeline``).
        contributions: the features behind the alert, most anomalous first (empty when the detector
            can't attribute).
    """

    id: str
    key: str
    event_id: str
    detector: str
    score: float
    threshold: float
    event_ts_ms: int
    detect_ts_ms: int
    latency_ms: float | None = None
    stats: dict[str, Any] = field(default_factory=dict)
    event_ids: list[str] = field(default_factory=list)
    severity: str = "warning"
    message: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    contributions: list[Contribution] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready)."""
        # field by field: dataclasses.asdict deep-copies recursively and is ~10x slower
        out = {name: _plain(getattr(self, name)) for name in _ALERT_FIELDS}
        out["contributions"] = [c.to_dict() for c in self.contributions]
        return out

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Alert:
        """The inverse of :meth:`to_dict` (unknown keys are ignored; missing optional ones take defaults)."""
        kw = {k: d[k] for k in _ALERT_FIELDS if k in d}
        kw["contributions"] = [Contribution.from_dict(c) for c in d.get("contributions") or []]
        kw["labels"] = {str(k): str(v) for k, v in (d.get("labels") or {}).items()}
        return Alert(**kw)


_ALERT_FIELDS = tuple(f.name for f in fields(Alert))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value

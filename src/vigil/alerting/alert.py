"""The alert record and its deterministic id.

Alerts are few (the point of the system), so unlike events they are plain Python objects.
An alert's id is a hash of what identifies it — pipeline step, detector, key and the event that
fired it — so that re-running the same input gives the same ids (downstream de-duplication).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from typing import Any


def alert_id(step: str, detector: str, key: str, event_id: str) -> str:
    """Deterministic alert id: 16 hex chars of a BLAKE2b hash.

    Examples:
        >>> alert_id("fraud", "amount_z", "u1", "t42") == alert_id("fraud", "amount_z", "u1", "t42")
        True
        >>> len(alert_id("fraud", "amount_z", "u1", "t42"))
        16
    """
    h = hashlib.blake2b(f"{step}\x1f{detector}\x1f{key}\x1f{event_id}".encode(), digest_size=8)
    return h.hexdigest()


@dataclass(slots=True)
class Alert:
    """One alert.

    Attributes:
        id: deterministic id (see :func:`alert_id`).
        key: the entity (user, host, service).
        event_id: the event that fired the alert.
        detector: name of the detector step that fired.
        score: the detector's raw score (e.g. a z-score, or a count for a velocity rule).
        threshold: the threshold the score crossed.
        event_ts_ms: event time of the firing event (epoch ms).
        detect_ts_ms: wall-clock time at which the alert was made (epoch ms).
        latency_ms: wall-clock latency from the producer emitting the event to the alert, if known.
        stats: the window statistics behind the score (count, mean, std, window, baseline ...).
        event_ids: every event the alert covers (a velocity alert covers the whole burst).
        severity: ``critical`` / ``warning`` / ``info``.
        message: one readable sentence.
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

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready)."""
        # field by field: dataclasses.asdict deep-copies recursively and is ~10x slower
        return {name: _plain(getattr(self, name)) for name in _FIELDS}


_FIELDS = tuple(f.name for f in fields(Alert))


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, list):
        return list(value)
    return value

"""The alert manager's data model: an alert's labels and idempotency key, and its logical-alert records.

- :func:`labels_of` and :func:`idempotency_key`: how an alert is identified, and a notification de-duplicated.
- :class:`AlertState`: a logical alert as the console and CLI see it.
- ``_Entry`` and ``_Group``: the :class:`~vigil.alerting.manager.AlertManager`'s internal, mutable records of a
  logical alert and of an aggregation group (snapshotted by the manager as plain data).

Everything here is re-exported by :mod:`vigil.alerting.manager`, the import path to use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from vigil.types import Alert


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def labels_of(alert: Alert, pipeline: str = "") -> dict[str, str]:
    """An alert's identifying labels (string values only; the core labels win over detector labels).

    Examples:
        >>> a = Alert("a1", "u1", "e1", "amount_z", 5.0, 3.0, 0, 0, labels={"region": "eu"})
        >>> labels_of(a, "fraud")
        {'region': 'eu', 'alertname': 'amount_z', 'key': 'u1', 'severity': 'warning', 'pipeline': 'fraud'}
    """
    labels = {str(k): str(v) for k, v in alert.labels.items()}
    labels.update(alertname=alert.detector, key=alert.key, severity=alert.severity)
    if pipeline:
        labels["pipeline"] = pipeline
    return labels


def idempotency_key(group_key: str, reason: str, alerts: Iterable[tuple[str, str, int, int]], seq: int = 0) -> str:
    """32 hex chars from group key, reason, sorted (fingerprint, status, revision, starts_at_ms) and repeat number.

    Examples:
        >>> idempotency_key("g", "new", [("b", "firing", 1, 5), ("a", "firing", 1, 3)]) == idempotency_key(
        ...     "g", "new", [("a", "firing", 1, 3), ("b", "firing", 1, 5)])
        True
    """
    h = hashlib.blake2b(f"{group_key}\x1e{reason}\x1e{seq}".encode(), digest_size=16)
    for fp, status, revision, starts in sorted(alerts):
        h.update(f"\x1e{fp}\x1f{status}\x1f{revision}\x1f{starts}".encode())
    return h.hexdigest()


def _told_current(told: list[Any], state: list[Any]) -> bool:
    """Whether what a group last told about an alert is still true.

    A resolved alert is resolved whichever episode: a flap, or an unseen re-fire that ended again, is nothing new
    to a receiver.
    """
    return told == state if state[0] == "firing" else told[0] == state[0] and told[1] == state[1]


@dataclass
class _Entry:
    """One logical alert (internal, mutable)."""

    fingerprint: str
    labels: dict[str, str]
    status: str
    revision: int
    starts_at_ms: int
    ends_at_ms: int | None
    observations: int
    last: Alert
    last_event_ts_ms: int
    group_keys: list[str]
    receivers: list[str]
    history: list[dict[str, Any]] = field(default_factory=list)
    flips: list[int] = field(default_factory=list)
    flapping: bool = False
    note: str = ""
    sent: dict[str, list[Any]] = field(default_factory=dict)  # group key -> [status, revision, start] last told

    def state(self) -> list[Any]:
        return [self.status, self.revision, self.starts_at_ms]


@dataclass
class _Group:
    """One aggregation group of one route (internal, mutable)."""

    key: str
    receiver: str
    labels: dict[str, str]
    wait_ms: int
    interval_ms: int
    repeat_ms: int
    next_flush_ms: int
    members: set[str] = field(default_factory=set)
    has_sent: bool = False
    last_sent_ms: int | None = None
    repeat_seq: int = 0


@dataclass
class AlertState:
    """A logical alert as the console and CLI see it.

    ``history`` items are ``{revision, status, alert, reason, at_ms}`` (plus ``note`` for a retraction);
    ``at_ms`` is event time for fired/resolved, the given time for retracted, processing time for revised.
    """

    fingerprint: str
    labels: dict[str, str]
    status: str
    revision: int
    starts_at_ms: int
    ends_at_ms: int | None
    observations: int
    last: dict[str, Any]
    silenced_by: list[str]
    inhibited_by: list[str]
    acked: dict[str, Any] | None
    flapping: bool
    history: list[dict[str, Any]]
    group_key: str
    receivers: list[str]

    def to_dict(self) -> dict[str, Any]:
        """Plain data."""
        return asdict(self)


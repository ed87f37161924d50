"""The alert manager's data model: an alert's labels and idempotency key, and its logical-alert records.

- :func:`labels_of` and :func:`idempotency_key`: how an alert is identified, and a notification de-duplicated.
- :class:`AlertState`: a logical alert as the console and CLI see it.
- ``_Entry`` and ``_Group``: the :class:`~vigil.alerting.manager.AlertManager`'s internal, mutable records of a
  logical alert and of an aggregation group, with their plain-data forms (:func:`entry_data`, :func:`group_data`
  and back), which both the manager's snapshot and its rows in the alert store use.

Records use ``__slots__`` and an entry's history holds the :class:`~vigil.types.Alert` objects themselves (turned
into dicts only when someone reads them): in an alert storm the manager holds one entry per card holder, and
every byte and every object the garbage collector has to walk counts.

Everything here is re-exported by :mod:`vigil.alerting.manager`, the import path to use.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson

from vigil.types import Alert

#: one history item: (revision, status, alert, reason, at_ms, note)
HistoryItem = tuple[int, str, Alert, str, int, str]
_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


def body_of(alert: Alert) -> tuple[str, str]:
    """An alert's body as the store keeps it: ``(content hash, JSON)``; equal content, equal hash.

    Examples:
        >>> a = Alert("a1", "u1", "e1", "z", 5.0, 3.0, 5, 0)
        >>> body_of(a)[0] == body_of(Alert("a1", "u1", "e1", "z", 5.0, 3.0, 5, 0))[0] != body_of(Alert(
        ...     "a1", "u1", "e1", "z", 6.0, 3.0, 5, 0))[0]
        True
    """
    text = alert_json(alert)
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest(), text


def alert_json(alert: Alert) -> str:
    """An alert as compact JSON text (what the store keeps): ``Alert.to_dict()``, NaN and infinities as ``null``.

    Examples:
        >>> import json
        >>> a = Alert("a1", "u1", "e1", "z", float("nan"), 3.0, 5, 0, stats={"n": 2})
        >>> json.loads(alert_json(a)) == {**a.to_dict(), "score": None}
        True
    """
    return orjson.dumps(alert, option=_JSON_OPTS, default=str).decode()


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


def labels_and_fingerprint(alert: Alert, pipeline: str) -> tuple[dict[str, str], str]:
    """:func:`labels_of` and the fingerprint of those labels, in one go (the ingest hot path).

    An alert without labels of its own (the common case) hashes its four core labels without sorting a dict.

    Examples:
        >>> from vigil.alerting.notification import fingerprint
        >>> a = Alert("a1", "u1", "e1", "amount_z", 5.0, 3.0, 0, 0)
        >>> labels_and_fingerprint(a, "fraud")[1] == fingerprint(labels_of(a, "fraud"))
        True
    """
    if alert.labels:
        labels = labels_of(alert, pipeline)
        text = "".join(f"{k}\x1f{labels[k]}\x1e" for k in sorted(labels))
    else:
        labels = {"alertname": alert.detector, "key": alert.key, "severity": alert.severity}
        if pipeline:
            labels["pipeline"] = pipeline
            text = (f"alertname\x1f{alert.detector}\x1ekey\x1f{alert.key}\x1epipeline\x1f{pipeline}\x1e"
                    f"severity\x1f{alert.severity}\x1e")  # fmt: skip
        else:
            text = f"alertname\x1f{alert.detector}\x1ekey\x1f{alert.key}\x1eseverity\x1f{alert.severity}\x1e"
    return labels, hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


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


@dataclass(slots=True)
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
    history: list[HistoryItem] = field(default_factory=list)
    flips: list[int] = field(default_factory=list)
    flapping: bool = False
    note: str = ""
    sent: dict[str, list[Any]] = field(default_factory=dict)  # group key -> [status, revision, start] last told
    last_body: str | None = None  # the store's hash of ``last`` once its body is written (``None``: not yet)
    route_gen: int = 0  # the policy ``group_keys`` were made under
    saved: bool = False  # in a saved state version (forgetting it then needs a tombstone)

    def state(self) -> list[Any]:
        return [self.status, self.revision, self.starts_at_ms]


@dataclass(slots=True)
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
    overflow: int = 0  # alerts left out because the group was full, since its last notification
    saved: bool = False  # in a saved state version (ending it then needs a tombstone)


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


def history_dict(item: HistoryItem) -> dict[str, Any]:
    """A history item as the ``{revision, status, alert, reason, at_ms[, note]}`` dict readers see."""
    revision, status, alert, reason, at_ms, note = item
    out = {"revision": revision, "status": status, "alert": alert.to_dict(), "reason": reason, "at_ms": at_ms}
    if note:
        out["note"] = note
    return out


# -- plain data, for snapshots and the store's rows ------------------------------------------------------------

_ENTRY_FIELDS = ("labels", "status", "revision", "starts_at_ms", "ends_at_ms", "observations", "last_event_ts_ms",
                 "group_keys", "receivers", "flips", "flapping", "note", "sent")  # fmt: skip


def entry_data(e: _Entry, *, with_history: bool) -> dict[str, Any]:
    """An entry as plain data without its latest alert (kept apart: the store already has it as JSON text)."""
    d = {k: getattr(e, k) for k in _ENTRY_FIELDS}
    d["fingerprint"] = e.fingerprint
    if with_history:
        d["history"] = [history_dict(h) for h in e.history]
    return d


def entry_row(e: _Entry) -> list[Any]:
    """An entry as the compact list the store's state rows keep.

    Without its labels (they never change; the ``alerts`` row has them), its latest alert (a body hash beside
    it) and its routes (made again from the policy when loaded).
    """
    return [e.status, e.revision, e.starts_at_ms, e.ends_at_ms, e.observations, e.last_event_ts_ms, e.flips,
            e.flapping, e.note, e.sent]


def entry_from_row(fp: str, row: list[Any], labels: dict[str, str], last: Alert, body: str) -> _Entry:
    """The inverse of :func:`entry_row` (its routes are for the manager to make: ``route_gen`` -1)."""
    status, revision, starts, ends, observations, last_ts, flips, flapping, note, sent = row
    return _Entry(fp, labels, status, revision, starts, ends, observations, last, last_ts, [], [], [], flips, flapping,
                  note, sent, body, route_gen=-1, saved=True)


def entry_from(d: dict[str, Any], last: Alert) -> _Entry:
    """The inverse of :func:`entry_data`, given the latest alert (history items may be dicts or absent)."""
    history = [(h["revision"], h["status"], Alert.from_dict(h["alert"]), h["reason"], h["at_ms"], h.get("note", ""))
               for h in d.get("history") or ()]  # fmt: skip
    return _Entry(d["fingerprint"], dict(d["labels"]), d["status"], d["revision"], d["starts_at_ms"], d["ends_at_ms"],
                  d["observations"], last, d["last_event_ts_ms"], list(d["group_keys"]), list(d["receivers"]),
                  history, list(d["flips"]), d["flapping"], d["note"], {k: list(v) for k, v in d["sent"].items()},
                  route_gen=-1, saved=True)


_GROUP_FIELDS = ("key", "receiver", "labels", "wait_ms", "interval_ms", "repeat_ms", "next_flush_ms", "has_sent",
                 "last_sent_ms", "repeat_seq", "overflow")  # fmt: skip


def group_data(g: _Group) -> dict[str, Any]:
    """A group as plain data."""
    d = {k: getattr(g, k) for k in _GROUP_FIELDS}
    d["members"] = sorted(g.members)
    return d


def group_from(d: dict[str, Any]) -> _Group:
    """The inverse of :func:`group_data`."""
    return _Group(d["key"], d["receiver"], dict(d["labels"]), d["wait_ms"], d["interval_ms"], d["repeat_ms"],
                  d["next_flush_ms"], set(d["members"]), d["has_sent"], d["last_sent_ms"], d["repeat_seq"],
                  d.get("overflow", 0), saved=True)  # fmt: skip

"""The contract between the alert manager and the notifiers.

The manager (:mod:`vigil.alerting.manager`) turns many detector alerts into few notifications: one
:class:`Notification` per alert *group* and state change. Notifiers (:mod:`vigil.alerting.notifiers`)
deliver them (webhook, Alertmanager API v2, Kafka, Slack, tickets) and must treat
``Notification.idempotency_key`` as the de-duplication key: the same key delivered twice (a retry, a
restart replaying from a checkpoint) must have the effect of one delivery.

Labels follow Prometheus/Alertmanager conventions: ``alertname`` (the detector step), ``key`` (the
entity: user, host, service), ``severity``, ``pipeline``, plus any the detector adds. Label values are
strings. An alert's *fingerprint* is a hash of its sorted labels, so every alert of one detector on one
key is one logical alert (de-duplicated), however many events fire it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

AlertStatus = Literal["firing", "resolved", "retracted"]
Reason = Literal["new", "update", "repeat", "resolved", "revised", "retracted"]


def fingerprint(labels: dict[str, str]) -> str:
    """Deterministic 16-hex-char fingerprint of a label set (order-independent).

    Examples:
        >>> fingerprint({"alertname": "amount_z", "key": "u1"}) == fingerprint({"key": "u1", "alertname": "amount_z"})
        True
    """
    h = hashlib.blake2b(digest_size=8)
    for k in sorted(labels):
        h.update(f"{k}\x1f{labels[k]}\x1e".encode())
    return h.hexdigest()


@dataclass(slots=True)
class NotifiedAlert:
    """One logical alert inside a notification.

    Attributes:
        fingerprint: :func:`fingerprint` of ``labels``.
        status: ``firing``, ``resolved`` (the key returned to normal) or ``retracted`` (late data showed
            it should never have fired).
        labels: identifying labels (strings).
        annotations: ``summary`` (the one-sentence message), ``description``, anything readable.
        starts_at_ms: event time the alert started (epoch ms).
        ends_at_ms: event time it resolved, or ``None`` while firing.
        revision: 1 for the first version; +1 every time late data changed it.
        alert: the latest underlying :class:`~vigil.types.Alert` as a plain dict.
    """

    fingerprint: str
    status: AlertStatus
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int | None = None
    revision: int = 1
    alert: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Notification:
    """One message to one receiver about one alert group.

    Attributes:
        receiver: the routing tree's receiver name.
        group_key: deterministic id of the group (route + ``group_by`` label values).
        group_labels: the ``group_by`` labels and their values.
        status: ``firing`` if any alert in the group fires, else ``resolved``.
        reason: why it is sent now (``new`` group, ``update`` after group_interval, ``repeat`` after
            repeat_interval, ``resolved``, ``revised`` or ``retracted`` by late data).
        alerts: the group's alerts.
        idempotency_key: hash of group key, reason and every alert's (fingerprint, status, revision):
            the same content always gets the same key.
        created_ms: processing time the manager made it (epoch ms).
        truncated: alerts the group left out since its previous notification because it was full (the
            policy's ``group_limit``); they are in the alert store, not in ``alerts``. Alertmanager's
            ``truncatedAlerts``.
    """

    receiver: str
    group_key: str
    group_labels: dict[str, str]
    status: Literal["firing", "resolved"]
    reason: Reason
    alerts: list[NotifiedAlert]
    idempotency_key: str
    created_ms: int
    truncated: int = 0


class Notifier(Protocol):
    """Delivers notifications.

    ``send`` retries transient failures itself and raises :class:`~vigil.errors.NotifyError` when delivery
    finally fails; it must be idempotent by ``Notification.idempotency_key``.
    """

    name: str

    def send(self, notification: Notification) -> None:
        """Deliver one notification (retrying transient failures); raise NotifyError when it finally fails."""

    def close(self) -> None:
        """Release connections and flush anything buffered."""

"""Notifications as Alertmanager webhook JSON, POSTed to any URL.

The payload is Alertmanager's webhook format (version ``"4"``), so anything that already consumes
Alertmanager webhooks (incident tools, chat bridges, home-grown receivers) consumes Vigil's too. Two
differences carry Vigil's extra states without breaking that format:

- a *retracted* alert (late data showed it should never have fired) is sent as ``"resolved"`` with the
  annotation ``vigil_retracted="true"``;
- a top-level ``"vigil"`` object holds ``reason`` (why now), ``idempotency_key`` (de-duplicate by it)
  and ``revisions`` (``{fingerprint: revision}``, +1 each time late data changed an alert).

Examples:
    >>> from vigil.alerting.notification import NotifiedAlert, Notification
    >>> a = NotifiedAlert("f1", "retracted", {"alertname": "amount_z", "key": "u1"}, {"summary": "big"}, 1000,
    ...                   revision=2)
    >>> n = Notification("ops", "g1", {"alertname": "amount_z"}, "resolved", "retracted", [a], "k1", 5000)
    >>> p = webhook_payload(n)
    >>> p["status"], p["alerts"][0]["status"], p["alerts"][0]["annotations"]["vigil_retracted"]
    ('resolved', 'resolved', 'true')
    >>> p["alerts"][0]["startsAt"], p["alerts"][0]["endsAt"], p["vigil"]["revisions"]
    ('1970-01-01T00:00:01Z', '1970-01-01T00:00:05Z', {'f1': 2})
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vigil.alerting.notification import Notification, NotifiedAlert
from vigil.alerting.notifiers.base import ZERO_TIME, HttpDelivery, RetryPolicy, check_http_url, rfc3339

RETRACTED_ANNOTATION = "vigil_retracted"


def alert_status(alert: NotifiedAlert) -> str:
    """The Alertmanager status of ``alert``: ``firing`` or ``resolved`` (retracted counts as resolved)."""
    return "firing" if alert.status == "firing" else "resolved"


def alert_annotations(alert: NotifiedAlert) -> dict[str, str]:
    """The annotations as strings, plus ``vigil_retracted="true"`` for a retracted alert."""
    out = {str(k): str(v) for k, v in alert.annotations.items()}
    if alert.status == "retracted":
        out[RETRACTED_ANNOTATION] = "true"
    return out


def end_ms(alert: NotifiedAlert, now_ms: int) -> int | None:
    """When a resolved/retracted alert ended (``ends_at_ms``, else ``now_ms``, never before it started).

    ``None`` while firing.
    """
    if alert.status == "firing":
        return None
    ends = alert.ends_at_ms if alert.ends_at_ms is not None else now_ms
    return max(ends, alert.starts_at_ms)


def generator_url(alert: NotifiedAlert, default: str = "") -> str:
    """The link back to the source of an alert (``generator_url`` in the underlying alert, else ``default``)."""
    url = alert.alert.get("generator_url") if isinstance(alert.alert, Mapping) else None
    return str(url) if url else default


def _common(dicts: list[dict[str, str]]) -> dict[str, str]:
    if not dicts:
        return {}
    first, rest = dicts[0], dicts[1:]
    return {k: v for k, v in first.items() if all(d.get(k) == v for d in rest)}


def webhook_payload(notification: Notification, external_url: str = "") -> dict[str, Any]:
    """``notification`` as Alertmanager webhook JSON (version 4) plus the ``"vigil"`` object.

    A resolved alert without ``ends_at_ms`` ends at the notification's ``created_ms``.
    """
    alerts: list[dict[str, Any]] = []
    for a in notification.alerts:
        labels = {str(k): str(v) for k, v in a.labels.items()}
        ends = end_ms(a, notification.created_ms)
        alerts.append({
            "status": alert_status(a),
            "labels": labels,
            "annotations": alert_annotations(a),
            "startsAt": rfc3339(a.starts_at_ms),
            "endsAt": ZERO_TIME if ends is None else rfc3339(ends),
            "generatorURL": generator_url(a, external_url),
            "fingerprint": a.fingerprint,
        })  # fmt: skip
    return {
        "version": "4",
        "groupKey": notification.group_key,
        "truncatedAlerts": notification.truncated,
        "status": notification.status,
        "receiver": notification.receiver,
        "groupLabels": {str(k): str(v) for k, v in notification.group_labels.items()},
        "commonLabels": _common([x["labels"] for x in alerts]),
        "commonAnnotations": _common([x["annotations"] for x in alerts]),
        "externalURL": external_url,
        "alerts": alerts,
        "vigil": {
            "reason": notification.reason,
            "idempotency_key": notification.idempotency_key,
            "revisions": {a.fingerprint: a.revision for a in notification.alerts},
        },
    }


class WebhookNotifier:
    """POSTs each notification as Alertmanager webhook JSON (see the module docstring).

    Args:
        url: the receiver's URL.
        headers: extra request headers (e.g. ``Authorization``).
        name: the receiver name (in errors and logs).
        external_url: the payload's ``externalURL`` (a link to this Vigil), also the default ``generatorURL``.
        policy: retries and timeout.
        transport: an httpx transport (tests).

    Examples:
        >>> n = WebhookNotifier("http://127.0.0.1:9/hook", name="ops")
        >>> n.name, n.url
        ('ops', 'http://127.0.0.1:9/hook')
        >>> n.close()
    """

    def __init__(
        self,
        url: str,
        headers: Mapping[str, str] | None = None,
        *,
        name: str = "webhook",
        external_url: str = "",
        policy: RetryPolicy | None = None,
        transport: Any = None,
    ) -> None:
        self.url = check_http_url(url)
        self.name = name
        self.external_url = external_url
        self._http = HttpDelivery(name, policy, headers, transport=transport)

    def send(self, notification: Notification) -> None:
        """Deliver ``notification`` (retrying transient failures; same ``Idempotency-Key`` on every attempt).

        Raises:
            NotifyError: rejected (4xx) or still failing after the last attempt.
        """
        body = webhook_payload(notification, self.external_url)
        self._http.request("POST", self.url, body, notification.idempotency_key)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

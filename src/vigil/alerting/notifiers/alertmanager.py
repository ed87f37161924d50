"""Notifications pushed to a Prometheus Alertmanager (API v2), which then groups, silences and routes them.

Each notification becomes one ``POST {url}/api/v2/alerts`` with one *postable alert* per alert:
``labels``, ``annotations``, ``startsAt``, ``endsAt`` and ``generatorURL``. Alertmanager identifies an
alert by its label set, so sending the same alert again (a retry, a repeat) only refreshes it:
delivery is idempotent by construction.

- Resolved and retracted alerts get ``endsAt`` = their ``ends_at_ms`` (or now): Alertmanager marks them
  resolved and sends its own resolved notifications. Retracted ones carry ``vigil_retracted="true"``.
- Firing alerts get no ``endsAt`` by default, so Alertmanager's ``resolve_timeout`` (5 min unless
  configured) resolves them if nothing refreshes them; Vigil sends an alert again only on a change or
  after ``repeat_interval``, so either set Alertmanager's ``resolve_timeout`` longer than that or pass
  ``firing_ttl_s`` (``endsAt`` = now + ttl, refreshed by each send).
- Alertmanager accepts only Prometheus label names (``[a-zA-Z_][a-zA-Z0-9_]*``), for annotations too:
  others are rewritten by :func:`prom_name` (``http.status`` → ``http_status``), and empty values are
  dropped (in Prometheus an empty label is an absent label).

Examples:
    >>> sanitize_labels({"alertname": "z", "http.status": "500", "2xx": "a", "empty": ""})
    {'_2xx': 'a', 'alertname': 'z', 'http_status': '500'}
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from vigil.alerting.notification import Notification, NotifiedAlert
from vigil.alerting.notifiers.base import HttpDelivery, RetryPolicy, check_http_url, rfc3339
from vigil.alerting.notifiers.webhook import alert_annotations, end_ms, generator_url
from vigil.errors import ConfigError, NotifyError

_INVALID = re.compile(r"[^a-zA-Z0-9_]")


def prom_name(name: str) -> str:
    """``name`` as a valid Prometheus label name.

    Examples:
        >>> prom_name("key"), prom_name("http.status"), prom_name("9lives"), prom_name("")
        ('key', 'http_status', '_9lives', '_')
    """
    out = _INVALID.sub("_", name)
    return out if out and not out[0].isdigit() else "_" + out


def sanitize_labels(labels: Mapping[str, Any]) -> dict[str, str]:
    """Valid label names, string values, no empty values; names that collide after rewriting get ``_2``, ``_3`` ...

    Names already valid win a collision, so ``{"a_b": .., "a.b": ..}`` keeps ``a_b`` as it is.

    Examples:
        >>> sanitize_labels({"a.b": "1", "a_b": "2"})
        {'a_b': '2', 'a_b_2': '1'}
    """
    items = sorted(((str(k), str(v)) for k, v in labels.items() if v is not None and str(v) != ""),
                   key=lambda kv: (prom_name(kv[0]) != kv[0], kv[0]))
    out: dict[str, str] = {}
    for k, v in items:
        name = prom_name(k)
        base, n = name, 1
        while name in out:
            n += 1
            name = f"{base}_{n}"
        out[name] = v
    return dict(sorted(out.items()))


def postable_alert(
    alert: NotifiedAlert, now_ms: int, firing_ttl_s: float | None = None, default_generator_url: str = ""
) -> dict[str, Any]:
    """One alert in Alertmanager's ``PostableAlert`` shape.

    Examples:
        >>> a = NotifiedAlert("f", "resolved", {"alertname": "z", "key": "u1"}, {}, 1000, ends_at_ms=2000)
        >>> postable_alert(a, now_ms=9000)["endsAt"]
        '1970-01-01T00:00:02Z'
        >>> "endsAt" in postable_alert(NotifiedAlert("f", "firing", {"alertname": "z"}, {}, 1000), 9000)
        False
    """
    out: dict[str, Any] = {
        "labels": sanitize_labels(alert.labels),
        "annotations": sanitize_labels(alert_annotations(alert)),
        "startsAt": rfc3339(alert.starts_at_ms),
        "generatorURL": generator_url(alert, default_generator_url),
    }
    ends = end_ms(alert, now_ms)
    if ends is None and firing_ttl_s is not None:
        ends = max(now_ms + int(firing_ttl_s * 1000), alert.starts_at_ms)
    if ends is not None:
        out["endsAt"] = rfc3339(ends)
    return out


class AlertmanagerNotifier:
    """Pushes alerts to Alertmanager's ``/api/v2/alerts`` (see the module docstring).

    Args:
        url: Alertmanager's base URL (without ``/api/v2``).
        headers: extra request headers (e.g. ``Authorization`` for a proxy in front of it).
        name: the receiver name (in errors and logs).
        firing_ttl_s: ``endsAt`` of firing alerts = now + this; ``None`` leaves it to Alertmanager.
        generator_url: default ``generatorURL`` (a link to this Vigil) for alerts without their own.
        policy: retries and timeout.
        now_ms: the wall clock in epoch ms ("now" for alerts resolved without an end time, and the ttl).
        transport: an httpx transport (tests).

    Examples:
        >>> n = AlertmanagerNotifier("http://127.0.0.1:9093/", name="am")
        >>> n.endpoint
        'http://127.0.0.1:9093/api/v2/alerts'
        >>> n.close()
    """

    def __init__(
        self,
        url: str = "http://127.0.0.1:9093",
        headers: Mapping[str, str] | None = None,
        *,
        name: str = "alertmanager",
        firing_ttl_s: float | None = None,
        generator_url: str = "",
        policy: RetryPolicy | None = None,
        now_ms: Callable[[], int] | None = None,
        transport: Any = None,
    ) -> None:
        base = check_http_url(url).rstrip("/")
        if firing_ttl_s is not None and not firing_ttl_s > 0:
            raise ConfigError("must be > 0 (or unset)", field="firing_ttl_s", value=firing_ttl_s)
        self.name = name
        self.endpoint = base.removesuffix("/api/v2/alerts").removesuffix("/api/v2") + "/api/v2/alerts"
        self.firing_ttl_s = firing_ttl_s
        self.generator_url = generator_url
        self._now_ms = now_ms or (lambda: int(time.time() * 1000))
        self._http = HttpDelivery(name, policy, headers, transport=transport)

    def payload(self, notification: Notification) -> list[dict[str, Any]]:
        """The postable alerts for ``notification`` (alerts without any label are left out)."""
        now = self._now_ms()
        alerts = [postable_alert(a, now, self.firing_ttl_s, self.generator_url) for a in notification.alerts]
        return [a for a in alerts if a["labels"]]

    def send(self, notification: Notification) -> None:
        """Push the notification's alerts (retrying transient failures).

        Raises:
            NotifyError: rejected (e.g. HTTP 400 for an invalid alert) or still failing after the last attempt.
        """
        alerts = self.payload(notification)
        if not alerts:
            if notification.alerts:
                raise NotifyError(f"notifier `{self.name}`: no alert of group {notification.group_key!r} has "
                                  "labels; Alertmanager needs at least one")
            return
        self._http.request("POST", self.endpoint, alerts, notification.idempotency_key)

    def close(self) -> None:
        """Release the connection pool."""
        self._http.close()

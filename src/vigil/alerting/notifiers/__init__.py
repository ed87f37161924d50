"""Notifiers: deliver :class:`~vigil.alerting.notification.Notification` s to the outside world.

One module per kind, all implementing the :class:`~vigil.alerting.notification.Notifier` protocol
(``name``, ``send``, ``close``) and idempotent by ``Notification.idempotency_key``:

- :mod:`~vigil.alerting.notifiers.webhook`: Alertmanager-format webhook JSON to any URL;
- :mod:`~vigil.alerting.notifiers.alertmanager`: alerts pushed to Prometheus Alertmanager (API v2);
- :mod:`~vigil.alerting.notifiers.kafka`: webhook JSON to a Kafka topic (idempotent producer);
- :mod:`~vigil.alerting.notifiers.slack`: Slack-compatible incoming-webhook messages, escaped;
- :mod:`~vigil.alerting.notifiers.ticket`: one ticket per alert episode, never two (state in SQLite);
- :mod:`~vigil.alerting.notifiers.base`: retries with back-off and jitter, HTTP delivery, helpers;
- :mod:`~vigil.alerting.notifiers.spec`: the config (:data:`NotifierSpec`) and :func:`build_notifier`.

The Kafka notifier is imported lazily (confluent-kafka is an optional dependency).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from vigil.alerting.notifiers.alertmanager import AlertmanagerNotifier
from vigil.alerting.notifiers.base import HttpDelivery, RetryPolicy
from vigil.alerting.notifiers.slack import SlackNotifier
from vigil.alerting.notifiers.spec import NotifierSpec, build_notifier, parse_notifier_spec
from vigil.alerting.notifiers.ticket import TicketNotifier
from vigil.alerting.notifiers.webhook import WebhookNotifier, webhook_payload

if TYPE_CHECKING:
    from vigil.alerting.notifiers.kafka import KafkaNotifier

__all__ = [
    "AlertmanagerNotifier", "HttpDelivery", "KafkaNotifier", "NotifierSpec", "RetryPolicy", "SlackNotifier",
    "TicketNotifier", "WebhookNotifier", "build_notifier", "parse_notifier_spec", "webhook_payload",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name == "KafkaNotifier":
        from vigil.alerting.notifiers.kafka import KafkaNotifier

        return KafkaNotifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

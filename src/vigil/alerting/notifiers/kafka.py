"""Notifications as webhook JSON on a Kafka topic, for consumers downstream of Vigil.

Each notification is one message: value = the Alertmanager-format webhook JSON of
:func:`~vigil.alerting.notifiers.webhook.webhook_payload`, key = the group key (every notification of
a group lands on one partition, in order), header ``idempotency-key`` = the notification's
idempotency key. The producer is idempotent (``enable.idempotence``: librdkafka's own retries never
duplicate a message) and ``send`` waits for the broker's acknowledgement (``acks=all``) up to
``flush_timeout_s``. A send that timed out may still be written later, and a caller that retries
then writes it twice: consumers de-duplicate by the ``idempotency-key`` header.

It reuses :func:`vigil.io.kafka.parse_kafka_url` and :func:`~vigil.io.kafka.client_config` (one way
to name brokers and configure clients in Vigil) and imports them lazily, because confluent-kafka is
an optional dependency that only this notifier needs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vigil.alerting.notification import Notification
from vigil.alerting.notifiers.base import dumps
from vigil.alerting.notifiers.webhook import webhook_payload
from vigil.errors import ConfigError, NotifyError


def kafka_target(bootstrap_or_url: str, topic: str | None = None) -> tuple[str, str]:
    """``(bootstrap, topic)`` from ``kafka://host:port/topic``, or from a bootstrap string and ``topic``.

    Examples:
        >>> kafka_target("kafka://127.0.0.1:9092/vigil.notifications")
        ('127.0.0.1:9092', 'vigil.notifications')
        >>> kafka_target("127.0.0.1:9092", "ops")
        ('127.0.0.1:9092', 'ops')
        >>> kafka_target("127.0.0.1:9092")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `topic` is required with a bootstrap address ...
    """
    from vigil.io.kafka import parse_kafka_url

    if not isinstance(bootstrap_or_url, str) or not bootstrap_or_url:
        raise ConfigError("must be host:port[,host:port] or kafka://host:port/topic", field="bootstrap",
                          value=bootstrap_or_url)
    if bootstrap_or_url.startswith("kafka://"):
        bootstrap, url_topic = parse_kafka_url(bootstrap_or_url)
        if topic is not None and topic != url_topic:
            raise ConfigError(f"differs from the URL's topic {url_topic!r}", field="topic", value=topic)
        return bootstrap, url_topic
    if not topic:
        raise ConfigError("is required with a bootstrap address", field="topic", value=topic,
                          hint="or give a URL, kafka://host:port/topic")
    return parse_kafka_url(f"kafka://{bootstrap_or_url}/{topic}")


class KafkaNotifier:
    """Produces each notification to a Kafka topic (see the module docstring).

    Args:
        bootstrap: ``host:port[,host:port]`` or ``kafka://host:port/topic``.
        topic: the topic (required with a bootstrap address).
        name: the receiver name (in errors and the client id).
        external_url: the payload's ``externalURL``.
        flush_timeout_s: how long ``send`` waits for the acknowledgement.
        producer_config: librdkafka overrides.

    Examples:
        >>> n = KafkaNotifier("kafka://127.0.0.1:9092/vigil.notifications", name="stream")
        >>> n.name, n.bootstrap, n.topic
        ('stream', '127.0.0.1:9092', 'vigil.notifications')
        >>> n.close()
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str | None = None,
        *,
        name: str = "kafka",
        external_url: str = "",
        flush_timeout_s: float = 30.0,
        producer_config: Mapping[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import KafkaException, Producer

        from vigil.io.kafka import ErrorLog, client_config

        self.bootstrap, self.topic = kafka_target(bootstrap, topic)
        if not flush_timeout_s > 0:
            raise ConfigError("must be > 0", field="flush_timeout_s", value=flush_timeout_s)
        self.name, self.external_url, self.flush_timeout_s = name, external_url, flush_timeout_s
        base: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "client.id": f"vigil-notifier-{name}",
            # librdkafka gives up (and reports why) a little before send() stops waiting
            "message.timeout.ms": max(1000, int(flush_timeout_s * 1000) - 500),
        }
        try:
            self._p = Producer(client_config(self.bootstrap, base, dict(producer_config or {}),
                                             ErrorLog(f"notifier `{name}`")))
        except (KafkaException, TypeError, ValueError) as exc:
            raise ConfigError(f"is not a valid librdkafka producer config ({exc})", field="producer_config",
                              value=dict(producer_config or {})) from None
        self._failed: list[str] = []
        self._closed = False

    def _on_delivery(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self._failed.append(f"{err.name()}: {err.str()}")

    def send(self, notification: Notification) -> None:
        """Produce the notification and wait until the broker acknowledged it.

        Raises:
            NotifyError: not acknowledged within ``flush_timeout_s``, or the delivery failed.
        """
        if self._closed:
            raise NotifyError(f"notifier `{self.name}` is closed")
        value = dumps(webhook_payload(notification, self.external_url))
        headers: list[tuple[str, str | bytes | None]] = [("idempotency-key", notification.idempotency_key.encode())]
        where = f"notifier `{self.name}` (kafka://{self.bootstrap}/{self.topic})"
        self._failed = []
        try:
            self._p.produce(self.topic, value=value, key=notification.group_key.encode(), headers=headers,
                            on_delivery=self._on_delivery)
        except BufferError:
            self._p.flush(self.flush_timeout_s)  # the local queue is full: make room once, then try again
            try:
                self._p.produce(self.topic, value=value, key=notification.group_key.encode(), headers=headers,
                                on_delivery=self._on_delivery)
            except BufferError as exc:
                raise NotifyError(f"{where}: the producer queue stays full ({exc})") from exc
        except Exception as exc:  # KafkaException for e.g. a message larger than message.max.bytes
            raise NotifyError(f"{where}: produce failed: {exc}") from exc
        left = self._p.flush(self.flush_timeout_s)
        if left:
            # don't let a stale copy go out behind the caller's retry (it may still, if already in flight)
            self._p.purge(in_queue=True, in_flight=False)
            self._p.poll(0)
            raise NotifyError(f"{where}: notification {notification.idempotency_key} not acknowledged within "
                              f"{self.flush_timeout_s:g} s; is the broker up?")
        failed, self._failed = self._failed, []
        if failed:
            raise NotifyError(f"{where}: delivery of notification {notification.idempotency_key} failed: {failed[0]}")

    def close(self) -> None:
        """Wait briefly for anything still queued, then release the producer."""
        if not self._closed:
            self._closed = True
            self._p.flush(min(5.0, self.flush_timeout_s))

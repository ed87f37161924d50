"""The alert manager beside a pipeline, as Alertmanager runs beside Prometheus: alerts in from a Kafka topic.

A pipeline on Flink (or any runtime writing its alerts to Kafka) needs no SQLite and no alert manager of its
own: ``vigil alertmanager --from kafka://HOST:PORT/alerts`` runs grouping, inhibition, silences, notifiers and
the store as their own process. :class:`AlertFeed` reads the topic ``read_committed`` (only alerts of committed
transactions: exactly-once upstream stays exactly-once here), hands each poll's alerts to a
:class:`~vigil.alerting.runtime.ManagedAlerts`, and moves the event-time watermark along the alerts' own
times (the newest event time seen minus ``watermark_delay_ms``, so alerts resolve in event time as they
would inside the pipeline). Offsets are committed after the manager has flushed what they cover; a restart
replays at most what came after, and the store's writes are idempotent.

Examples:
    >>> f = AlertFeed.__new__(AlertFeed)
    >>> f.watermark_delay_ms, f._newest = 60_000, 1_700_000_090_000
    >>> f.watermark()
    1700000030000
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

import orjson

from vigil.errors import SourceError
from vigil.types import Alert

log = logging.getLogger("vigil.alerting.feed")


class AlertFeed:
    """Alerts from a Kafka topic into an alert manager (see the module docstring).

    Args:
        url: ``kafka://HOST:PORT/TOPIC`` of the alerts.
        managed: the :class:`~vigil.alerting.runtime.ManagedAlerts` to feed.
        group_id: the consumer group (its committed offsets say where a restart resumes).
        watermark_delay_ms: how far the watermark trails the newest alert's event time.
        flush_every: flush the manager and commit offsets after this many polls that brought alerts.
        consumer_config: librdkafka overrides (security settings).
    """

    def __init__(self, url: str, managed: Any, *, group_id: str = "vigil-alertmanager",
                 watermark_delay_ms: int = 60_000, flush_every: int = 10,
                 consumer_config: dict[str, Any] | None = None) -> None:  # fmt: skip
        from confluent_kafka import Consumer

        from vigil.io.kafka import ErrorLog, client_config, parse_kafka_url

        self.bootstrap, self.topic = parse_kafka_url(url)
        self.managed = managed
        self.watermark_delay_ms = int(watermark_delay_ms)
        self.flush_every = max(1, int(flush_every))
        self.counts = {"alerts": 0, "unreadable": 0, "polls": 0}
        self._newest = -(2**62)
        self._stop = threading.Event()
        self._errors = ErrorLog(f"alert feed `{self.topic}`")
        base = {"group.id": group_id, "auto.offset.reset": "earliest", "isolation.level": "read_committed",
                "enable.auto.commit": False, "client.id": "vigil-alertmanager"}  # fmt: skip
        self._c = Consumer(client_config(self.bootstrap, base, consumer_config, self._errors))
        self._c.subscribe([self.topic])

    def watermark(self) -> int:
        """The event-time watermark the alerts have carried so far."""
        return self._newest - self.watermark_delay_ms

    def stop(self) -> None:
        """Stop after the current poll (flushing and committing)."""
        self._stop.set()

    def poll_once(self, timeout_s: float = 0.5, max_messages: int = 10_000) -> int:
        """One poll: alerts into the manager, the watermark after them; returns the alerts read."""
        msgs = self._c.consume(max_messages, timeout_s)
        alerts: list[Alert] = []
        for m in msgs:
            if m.error() is not None:
                continue
            try:
                alerts.append(Alert.from_dict(orjson.loads(m.value() or b"")))
            except (orjson.JSONDecodeError, TypeError, KeyError, ValueError) as exc:
                self.counts["unreadable"] += 1
                log.warning("alerts topic %s: message at %s/%s is not an alert (%s); skipped", self.topic,
                            m.partition(), m.offset(), exc)  # fmt: skip
        self.counts["polls"] += 1
        if alerts:
            self.counts["alerts"] += len(alerts)
            self._newest = max(self._newest, max(a.event_ts_ms for a in alerts))
            self.managed.write_batch(alerts)
            self.managed.on_watermark(self.watermark())
        return len(alerts)

    def commit(self) -> None:
        """Flush the manager (its store holds what was read), then commit the offsets that cover it."""
        self.managed.flush()
        try:
            self._c.commit(asynchronous=False)
        except Exception as exc:  # noqa: BLE001 - nothing read since the last commit, or a retriable error
            if "NO_OFFSET" not in str(exc):
                log.warning("alerts topic %s: committing offsets failed (%s); they are committed next time",
                            self.topic, exc)  # fmt: skip

    def run(self, on_poll: Callable[[AlertFeed], None] | None = None) -> None:
        """Poll until :meth:`stop`; flush and commit every ``flush_every`` polls with alerts, and at the end."""
        pending = 0
        try:
            while not self._stop.is_set():
                if self.poll_once():
                    pending += 1
                if on_poll is not None:
                    on_poll(self)
                if pending >= self.flush_every:
                    self.commit()
                    pending = 0
            self.commit()
        finally:
            self.close()

    def close(self) -> None:
        """Leave the group; the manager is the caller's to close."""
        try:
            self._c.close()
        except RuntimeError as exc:  # already closed
            raise SourceError(f"alert feed `{self.topic}`: {exc}") from None

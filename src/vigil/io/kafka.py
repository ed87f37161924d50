"""Apache Kafka source and sinks: URLs, shared client plumbing, and the public names.

The pieces live in two modules, re-exported here so that ``from vigil.io.kafka import ...`` is the
one import users need:

- :mod:`vigil.io.kafka_source`: :class:`~vigil.io.kafka_source.KafkaSource` (one Vigil partition
  reading every Kafka partition of a topic, positions per Kafka partition, dead letters to a topic).
- :mod:`vigil.io.kafka_sink`: :class:`~vigil.io.kafka_sink.KafkaAlertSink` (alerts as JSON keyed by
  entity, optionally transactional for exactly-once), :class:`~vigil.io.kafka_sink.TransactionAborted`
  and :func:`~vigil.io.kafka_sink.produce_records` (fast bulk producer for the generator).

Shared here: :func:`parse_kafka_url`, client config and logging, :func:`parse_resume` (source
positions), :class:`KafkaTimeDecoder` (event time from the record timestamp when the schema's time
field is ``"@timestamp"``) and :class:`DeadLetterProducer`.

Client logs. librdkafka's own log lines go to the ``vigil.kafka.rdkafka`` logger, each kind (its
facility, e.g. ``FAIL`` for a refused connection) at most once a minute, so a broker outage does not
flood the log; client errors (``error_cb``) go to ``vigil.kafka``, once per error code until the
client recovers.

Examples:
    >>> parse_kafka_url("kafka://127.0.0.1:9092/transactions")
    ('127.0.0.1:9092', 'transactions')
    >>> parse_kafka_url("kafka://b1:9092,b2:9093/alerts.v1")
    ('b1:9092,b2:9093', 'alerts.v1')
    >>> parse_kafka_url("kafka://localhost/t")
    ('localhost:9092', 't')
    >>> parse_kafka_url("kafka://127.0.0.1:9092/")
    Traceback (most recent call last):
    ...
    vigil.errors.ConfigError: `url` names no topic; got 'kafka://127.0.0.1:9092/' (hint: ...)
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import msgspec
import numpy as np
from confluent_kafka import KafkaError, Message, Producer

from vigil.errors import ConfigError, SinkError, SourceError
from vigil.io.base import Records
from vigil.io.decode import (
    RecordChecker,
    _decode_all,
    _make_extractor,
    _Scalar,
    _Validator,
    json_reason,
    raw_text,
)
from vigil.io.schema import Schema

if TYPE_CHECKING:
    from vigil.io.kafka_sink import KafkaAlertSink, TransactionAborted, produce_records
    from vigil.io.kafka_source import KafkaSource

__all__ = ["KafkaAlertSink", "KafkaSource", "TransactionAborted", "parse_kafka_url", "produce_records"]

log = logging.getLogger("vigil.kafka")
rdkafka_log = logging.getLogger("vigil.kafka.rdkafka")

DEFAULT_PORT = 9092
KAFKA_TIMESTAMP = "@timestamp"
"""Schema time field meaning "the Kafka record timestamp" (CreateTime or LogAppendTime, in ms)."""
_NO_TIME_FIELD = "__vigil_kafka_timestamp__"  # a field nobody sends: the row struct needs a time slot
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::(\d{1,5}))?$")
_EXAMPLE = "kafka://127.0.0.1:9092/transactions"


def parse_kafka_url(url: str) -> tuple[str, str]:
    """Split ``kafka://host:port[,host:port...]/topic`` into ``(bootstrap, topic)``.

    A host without a port gets 9092. Topic names follow Kafka's rule (letters, digits, ``.``, ``_``,
    ``-``; at most 249 characters).

    Raises:
        ConfigError: naming what is wrong, with an example of a valid URL.
    """
    if not isinstance(url, str) or not url.startswith("kafka://"):
        raise ConfigError("must start with kafka://", field="url", value=url, hint=f"e.g. {_EXAMPLE}")
    rest = url[len("kafka://"):]
    if "?" in rest or "#" in rest:
        raise ConfigError("takes no query or fragment", field="url", value=url, hint=f"e.g. {_EXAMPLE}")
    netloc, slash, topic = rest.partition("/")
    if not slash or not topic:
        raise ConfigError("names no topic", field="url", value=url, hint=f"e.g. {_EXAMPLE}")
    if not _TOPIC_RE.match(topic):
        raise ConfigError(
            f"topic {topic!r} is not a valid Kafka topic name", field="url", value=url,
            hint="use letters, digits, '.', '_' and '-' (at most 249 characters)",
        )
    if not netloc:
        raise ConfigError("names no broker", field="url", value=url, hint=f"e.g. {_EXAMPLE}")
    hosts = []
    for part in netloc.split(","):
        m = _HOST_RE.match(part.strip())
        if m is None:
            raise ConfigError(f"broker {part!r} is not host[:port]", field="url", value=url, hint=f"e.g. {_EXAMPLE}")
        port = int(m.group(2)) if m.group(2) else DEFAULT_PORT
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} is out of range", field="url", value=url)
        hosts.append(f"{m.group(1)}:{port}")
    return ",".join(hosts), topic


class _OncePerInterval(logging.Filter):
    """Lets each kind of librdkafka log line through at most once per ``interval_s``."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        """Keep the record if its kind was not logged within the interval."""
        args = record.args if isinstance(record.args, tuple) else ()
        kind = str(args[0]) if args else record.getMessage()[:40]
        now = time.monotonic()
        if now - self._last.get(kind, -1e18) < self.interval_s:
            return False
        self._last[kind] = now
        return True


rdkafka_log.addFilter(_OncePerInterval())


class ErrorLog:
    """Logs client errors once per error code until :meth:`recovered` (a broker outage logs once).

    Examples:
        >>> e = ErrorLog("source `tx`")
        >>> e.seen
        set()
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.seen: set[str] = set()

    def error(self, err: Any) -> None:
        """Log a ``KafkaError`` (or text) if its kind was not logged since the last recovery."""
        name = err.name() if hasattr(err, "name") else str(err)
        if name in self.seen:
            return
        self.seen.add(name)
        text = err.str() if hasattr(err, "str") else str(err)
        log.warning("%s: Kafka client error %s: %s (logged once until it recovers; retrying)", self.what, name, text)

    def recovered(self) -> None:
        """Note that the client works again (logs it if errors were logged)."""
        if self.seen:
            log.info("%s: Kafka client recovered after %s", self.what, ", ".join(sorted(self.seen)))
            self.seen.clear()


def client_config(
    bootstrap: str, base: dict[str, Any], user: dict[str, Any] | None, errors: ErrorLog
) -> dict[str, Any]:
    """The librdkafka config: ``base`` defaults, then the user's overrides, plus logging and error hooks."""
    conf: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": rdkafka_log}
    conf.update(base)
    conf.update(user or {})
    conf.setdefault("error_cb", errors.error)
    return conf


def parse_resume(name: str, resume: Any) -> dict[int, int]:
    """A source position (``{partition: next_offset}``, keys int or str) as ``{int: int}``; checked."""
    if resume is None:
        return {}
    if not isinstance(resume, Mapping):
        raise SourceError(f"source `{name}`: resume must be {{partition: next_offset}}; got {resume!r}")
    out: dict[int, int] = {}
    for k, v in resume.items():
        try:
            p = int(k)
        except (TypeError, ValueError):
            p = -1
        if p < 0 or isinstance(k, bool) or isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise SourceError(
                f"source `{name}`: resume must map partition numbers to offsets >= 0; got {k!r}: {v!r}"
            )
        out[p] = v
    return out


class KafkaTimeDecoder:
    """JSON decoding whose event time is the Kafka record timestamp (schema time ``"@timestamp"``).

    Same row type, extraction and validation as :class:`~vigil.io.decode.JsonDecoder`, except the time
    slot is not read from JSON: the timestamps come beside the values and go through the same range
    checks (a record without a timestamp, ``-1``, becomes a dead letter as a "negative time").
    """

    def __init__(self, schema: Schema) -> None:
        spec: list[tuple[Any, ...]] = [("f0", str | int), ("f1", int, 0)]
        spec += [(f"f{2 + i}", float) for i in range(len(schema.fields))]
        for i, name in enumerate(schema.extra_columns):
            attr = f"f{2 + len(schema.fields) + i}"
            spec.append((attr, _Scalar | None, None) if name in schema.optional else (attr, _Scalar))
        names = [schema.key, _NO_TIME_FIELD, *schema.fields, *schema.extra_columns]
        row_type = msgspec.defstruct(
            "KafkaRow", spec, rename={f"f{i}": n for i, n in enumerate(names)}, gc=False, kw_only=True
        )
        self._decode_line = msgspec.json.Decoder(row_type).decode
        self._extract = _make_extractor(len(schema.fields), len(schema.extra_columns))
        self._validator = _Validator(schema)
        self._reason = json_reason(RecordChecker(schema, time_in_record=False))

    def decode_indexed(
        self, lines: list[bytes], ts_ms: list[int], source: str
    ) -> tuple[Records, np.ndarray | None]:
        """Decode ``lines`` with event times ``ts_ms``; dead-letter positions are indices in ``lines``."""
        def raw_of(i: int) -> str:
            return raw_text(lines[i])

        rows, row_line, dead = _decode_all(lines, self._decode_line, self._reason, raw_of, source, 0)
        keys, _, nums, extras = self._extract(rows, len(rows))
        ts_all = np.asarray(ts_ms, np.int64)
        ts = ts_all if row_line is None else ts_all[row_line]
        return self._validator.assemble(keys, ts, nums, extras, row_line, raw_of, source, 0, dead)


class DeadLetterProducer:
    """A small idempotent producer for dead letters, with delivery failures collected for :meth:`flush`."""

    def __init__(self, bootstrap: str, client_id: str, errors: ErrorLog) -> None:
        base = {"enable.idempotence": True, "linger.ms": 20, "client.id": client_id}
        self._p = Producer(client_config(bootstrap, base, None, errors))
        self._failed: list[str] = []

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{err.name()}: {err.str()}")

    def produce(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        """Queue one message (waits for room when the local queue is full, e.g. broker down for long)."""
        while True:
            try:
                self._p.produce(topic, value=value, key=key, headers=headers,  # type: ignore[arg-type]
                                on_delivery=self._on_delivery)
                break
            except BufferError:
                self._p.poll(0.1)
        self._p.poll(0)

    def flush(self, what: str, timeout_s: float) -> None:
        """Wait for every acknowledgement.

        Raises:
            SinkError: a dead letter was not delivered, or not within ``timeout_s``.
        """
        left = self._p.flush(timeout_s)
        failed, self._failed = self._failed, []
        if left:
            raise SinkError(f"{what}: {left} dead letters not delivered within {timeout_s} s")
        if failed:
            raise SinkError(f"{what}: {len(failed)} dead letters failed: {failed[0]}")


def __getattr__(name: str) -> Any:
    # Lazy re-exports: the submodules import this module's helpers, so importing them eagerly here
    # would be circular.
    if name == "KafkaSource":
        from vigil.io.kafka_source import KafkaSource

        return KafkaSource
    if name in ("KafkaAlertSink", "TransactionAborted", "produce_records"):
        from vigil.io import kafka_sink

        return getattr(kafka_sink, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

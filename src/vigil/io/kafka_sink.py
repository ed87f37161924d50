"""Writing to Kafka: alerts (optionally exactly-once, in transactions) and bulk event production.

:class:`KafkaAlertSink` produces each alert as compact JSON keyed by its entity (``key``), so every
alert of one entity lands on one partition, in order. Without ``transactional_id`` it is an
at-least-once sink: ``flush()`` is the durability point (every alert acknowledged by the broker, or
:class:`~vigil.errors.SinkError`). With it, alerts are written inside Kafka transactions and the
source offsets are committed in the same transaction, which is what makes a Kafka→Vigil→Kafka
pipeline exactly-once for ``read_committed`` consumers::

    sink.begin()                               # or implicitly on the first write
    sink.write_batch(alerts) ...               # as the engine produces them
    sink.commit(reader.position(), topic, reader.consumer_group_metadata())   # the checkpoint barrier

If the broker is down, ``commit`` waits (retrying with back-off up to ``commit_timeout_s``) rather
than fail; if the transaction can no longer commit (fenced, timed out on the broker, a failed
delivery) it is aborted and :class:`TransactionAborted` is raised: restart from the last checkpoint,
whose offsets are the group's committed offsets.

:func:`produce_records` is the fast path for the generator CLI: JSON lines or dicts to a topic,
keyed by user, batched and lz4-compressed, optionally paced at a rate.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec
import orjson
from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from vigil.errors import ConfigError, SinkError, TransactionAborted
from vigil.io.kafka import ErrorLog, client_config, log, parse_kafka_url
from vigil.io.sinks import _JSON_OPTS, _as_dict, _json_default


def _bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode()


@runtime_checkable
class _GroupReader(Protocol):
    """A Kafka source reader, as far as committing its offsets in a transaction goes."""

    topic: str

    def consumer_group_metadata(self) -> Any:
        """The consumer group's metadata for ``send_offsets_to_transaction``."""
        ...


class KafkaAlertSink:
    """Alerts to a Kafka topic as JSON, keyed by entity; see the module docstring.

    Args:
        bootstrap: ``host:port[,host:port]``.
        topic: the alert topic.
        transactional_id: enables transactions (exactly-once); must be stable across restarts of the
            same pipeline (a restart fences the previous instance and aborts its open transaction).
        producer_config: librdkafka overrides.
        commit_timeout_s: how long ``commit``/``abort``/``init`` keep retrying retriable errors.
        flush_timeout_s: how long ``flush`` waits for acknowledgements.

    Examples:
        >>> sink = KafkaAlertSink("127.0.0.1:9092", "alerts")
        >>> sink.transactional, sink.topic
        (False, 'alerts')
        >>> sink.close()
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        transactional_id: str | None = None,
        producer_config: Mapping[str, Any] | None = None,
        commit_timeout_s: float = 60.0,
        flush_timeout_s: float = 30.0,
    ) -> None:
        parse_kafka_url(f"kafka://{bootstrap}/{topic}")
        if transactional_id is not None and (not isinstance(transactional_id, str) or not transactional_id):
            raise ConfigError("must be a non-empty string", field="transactional_id", value=transactional_id)
        if commit_timeout_s <= 0:
            raise ConfigError("must be > 0", field="commit_timeout_s", value=commit_timeout_s)
        self.topic, self.transactional_id = topic, transactional_id
        self.commit_timeout_s, self.flush_timeout_s = commit_timeout_s, flush_timeout_s
        self._errors = ErrorLog(f"sink `kafka:{topic}`")
        base: dict[str, Any] = {
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "client.id": f"vigil-alerts-{topic}",
        }
        if transactional_id:
            base["transactional.id"] = transactional_id
            # the broker must not expire a transaction while commit() is still retrying
            base["transaction.timeout.ms"] = int(min(900_000, (commit_timeout_s + 60) * 1000))
        self._conf = client_config(bootstrap, base, dict(producer_config or {}), self._errors)
        self._p = Producer(self._conf)
        self._failed: list[str] = []
        self._closed = False
        self._initialized = False
        self._in_txn = False

    @property
    def transactional(self) -> bool:
        """True when the sink writes in transactions."""
        return self.transactional_id is not None

    @property
    def in_transaction(self) -> bool:
        """True between :meth:`begin` (or the first write) and :meth:`commit` / :meth:`abort`."""
        return self._in_txn

    # -- writing -----------------------------------------------------------------------------------

    def _on_delivery(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._failed.append(f"{err.name()}: {err.str()}")

    def _produce(self, topic: str, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        while True:
            try:
                self._p.produce(topic, value=value, key=key, headers=headers,  # type: ignore[arg-type]
                                on_delivery=self._on_delivery)
                return
            except BufferError:  # the local queue is full (broker slow or down): backpressure
                self._p.poll(0.1)

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(f"Kafka sink `{self.topic}` is closed; can't write")
        if self.transactional and not self._in_txn:
            self.begin()

    def write_batch(self, items: list[Any]) -> None:
        """Produce each item (``to_dict()`` or a dict) as compact JSON keyed by ``key``, header ``vigil.alert_id``."""
        self._check_open()
        for item in items:
            d = _as_dict(item)
            value = orjson.dumps(d, default=_json_default, option=_JSON_OPTS)
            headers = [("vigil.alert_id", str(d["id"]).encode())] if d.get("id") is not None else []
            self._produce(self.topic, _bytes(d.get("key")), value, headers)
        self._p.poll(0)

    def produce_raw(
        self, topic: str, key: Any, value: bytes | str, headers: Mapping[str, Any] | list[tuple[str, Any]] | None = None
    ) -> None:
        """Produce one message as is (inside the open transaction in transactional mode)."""
        self._check_open()
        pairs = list(headers.items()) if isinstance(headers, Mapping) else list(headers or [])
        raw = value.encode() if isinstance(value, str) else value
        self._produce(topic, _bytes(key), raw, [(k, _bytes(v) or b"") for k, v in pairs])
        self._p.poll(0)

    def flush(self) -> None:
        """Wait until everything written is acknowledged (in transactional mode durability is :meth:`commit`).

        Raises:
            SinkError: a message was not delivered, or not within ``flush_timeout_s``.
        """
        if self._closed:
            return
        left = self._p.flush(self.flush_timeout_s)
        if left:
            raise SinkError(f"Kafka sink `{self.topic}`: {left} messages not delivered within {self.flush_timeout_s} s")
        failed, self._failed = self._failed, []
        if failed:
            raise SinkError(f"Kafka sink `{self.topic}`: {len(failed)} messages failed: {failed[0]}")

    # -- transactions ------------------------------------------------------------------------------

    def _retry(self, what: str, call: Callable[[float], Any], deadline: float) -> None:
        """Run ``call(timeout_s)`` until it succeeds, retrying retriable errors with back-off until ``deadline``.

        Raises:
            TransactionAborted: the error requires an abort (done here before raising).
            SinkError: a fatal or non-retriable error, or the deadline passed.
        """
        backoff = 0.1
        while True:
            remaining = deadline - time.monotonic()
            try:
                call(max(1.0, min(10.0, remaining)))
                self._errors.recovered()
                return
            except KafkaException as e:
                err: KafkaError = e.args[0]
                if err.txn_requires_abort():
                    self.abort()
                    # A fresh producer (same transactional.id: init_transactions bumps the epoch) also
                    # resets the idempotence sequence numbers, which a permanently failed message leaves
                    # with a gap that would fail the next transaction with OUT_OF_ORDER_SEQUENCE_NUMBER.
                    self._p = Producer(self._conf)
                    self._initialized = False
                    raise TransactionAborted(
                        f"Kafka sink `{self.topic}`: {what} failed ({err.name()}: {err.str()}); transaction aborted, "
                        f"restart from the last checkpoint"
                    ) from e
                if err.fatal() or not err.retriable():
                    raise SinkError(f"Kafka sink `{self.topic}`: {what} failed: {err.name()}: {err.str()}") from e
                if time.monotonic() + backoff > deadline:
                    raise SinkError(
                        f"Kafka sink `{self.topic}`: {what} still failing after {self.commit_timeout_s} s "
                        f"({err.name()}: {err.str()}); the transaction is undecided: abort() or restart"
                    ) from e
                self._errors.error(err)
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _init(self) -> None:
        if not self.transactional:
            raise SinkError(f"Kafka sink `{self.topic}` is not transactional (no transactional_id)")
        if not self._initialized:
            deadline = time.monotonic() + self.commit_timeout_s
            self._retry("init_transactions", self._p.init_transactions, deadline)
            self._initialized = True

    def fence(self) -> None:
        """Initialize transactions now, fencing a crashed predecessor with the same ``transactional.id``.

        Its open transaction is aborted, so the consumer group's offsets are stable to read. Call before
        reading the committed offsets on a restart: while a zombie's transaction holding offsets is open,
        the broker answers offset fetches with ``UNSTABLE_OFFSET_COMMIT`` until it times out.
        """
        self._init()

    def begin(self) -> None:
        """Start a transaction (``init_transactions`` on first use); a no-op when one is open."""
        if self._closed:
            raise SinkError(f"Kafka sink `{self.topic}` is closed")
        self._init()
        if self._in_txn:
            return
        try:
            self._p.begin_transaction()
        except KafkaException as e:
            raise SinkError(f"Kafka sink `{self.topic}`: begin_transaction failed: {e.args[0].str()}") from e
        self._in_txn = True

    def commit(
        self, offsets: Mapping[Any, int] | None = None, topic: str | None = None, group_metadata: Any = None
    ) -> None:
        """Commit the open transaction, with the source's ``{partition: next_offset}`` as the group's offsets.

        Args:
            offsets: the source reader's ``position()`` (keys int or str); ``None`` or empty commits
                only the produced messages.
            topic: the source topic the offsets belong to (required with ``offsets``).
            group_metadata: the source reader's ``consumer_group_metadata()`` (required with ``offsets``).

        Raises:
            TransactionAborted: aborted instead (restart from the last checkpoint).
            SinkError: fatal error, or still retrying after ``commit_timeout_s`` (undecided).
        """
        if not self._in_txn:
            self.begin()
        deadline = time.monotonic() + self.commit_timeout_s
        if offsets:
            if topic is None or group_metadata is None:
                raise SinkError("commit(offsets) needs the source topic and the consumer group metadata")
            tps = [TopicPartition(topic, int(p), int(o)) for p, o in offsets.items()]
            self._retry(
                "send_offsets_to_transaction",
                lambda t: self._guarded("send_offsets_to_transaction",
                                        lambda: self._p.send_offsets_to_transaction(tps, group_metadata, t), t),
                deadline,
            )  # fmt: skip
        self._retry("commit_transaction", self._p.commit_transaction, deadline)
        self._in_txn = False
        self._failed.clear()  # a committed transaction had every message delivered

    def commit_checkpoint(self, positions: Mapping[str, Any], readers: Mapping[str, Any]) -> None:
        """The engine's exactly-once step at a checkpoint (:class:`~vigil.dataflow.capabilities.TransactionalSink`).

        The Kafka readers' positions (the next offset per partition) go into the open transaction as the
        consumer group's offsets, and the transaction commits: outputs and offsets become visible together.
        Without a Kafka source, only the outputs commit.
        """
        kafka = [(r, positions.get(part)) for part, r in readers.items() if isinstance(r, _GroupReader)]
        if not kafka:
            self.commit()
        for reader, pos in kafka:
            self.commit(pos, reader.topic, reader.consumer_group_metadata())

    def abort(self) -> None:
        """Abort the open transaction: nothing written since :meth:`begin` becomes visible."""
        if not self._in_txn:
            return
        deadline = time.monotonic() + self.commit_timeout_s
        try:
            self._retry("abort_transaction", self._p.abort_transaction, deadline)
        finally:
            self._in_txn = False
            self._failed.clear()

    def _guarded(self, what: str, call: Callable[[], Any], timeout_s: float) -> None:
        """Run a transactional call that may ignore its timeout, giving up on it after ``timeout_s`` + 10 s.

        librdkafka's ``send_offsets_to_transaction`` can block forever when the group coordinator it
        cached went away (a broker restart; confluentinc/librdkafka#5456, #5511). The call then runs
        on in a thread of its own; this sink is marked unusable and :class:`TransactionAborted` tells
        the caller to restart from its checkpoint with a new producer, which fences this one (same
        ``transactional.id``), so the stuck transaction can never commit.
        """
        box: dict[str, BaseException] = {}

        def run() -> None:
            try:
                call()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller below
                box["error"] = exc

        t = threading.Thread(target=run, name=f"vigil-kafka-{what}", daemon=True)
        t.start()
        t.join(timeout_s + 10)
        if t.is_alive():
            self._stuck = True
            raise TransactionAborted(
                f"Kafka sink `{self.topic}`: {what} did not return within {timeout_s + 10:.0f} s (a stale "
                "coordinator after a broker restart); restart from the last checkpoint"
            )
        if "error" in box:
            raise box["error"]

    def close(self) -> None:
        """Flush (or, with a transaction open, abort it) and release the producer; idempotent."""
        if self._closed:
            return
        if getattr(self, "_stuck", False):
            # a transactional call is still blocked inside librdkafka: touching the producer would
            # block too; the next instance's init_transactions fences this one
            self._closed = True
            return
        try:
            if self._in_txn:
                log.warning("Kafka sink `%s`: closing with an open transaction; aborting it", self.topic)
                self.abort()
            else:
                self.flush()
        finally:
            self._closed = True


def produce_records(
    bootstrap: str,
    topic: str,
    rows: Iterable[Mapping[str, Any] | bytes | str],
    *,
    key_field: str = "user",
    timestamp_field: str | None = None,
    rate: float | None = None,
    progress: Callable[[int], None] | None = None,
    progress_interval_s: float = 0.5,
    producer_config: Mapping[str, Any] | None = None,
    flush_timeout_s: float = 60.0,
) -> int:
    """Produce JSON records to a topic fast; returns how many were produced (all acknowledged).

    Args:
        bootstrap: ``host:port``.
        topic: destination topic.
        rows: dicts (encoded with orjson) or JSON lines (bytes/str, sent as is).
        key_field: field whose value keys each message (so one user's events keep their order).
        timestamp_field: field holding epoch ms to use as the Kafka record timestamp (default: now).
        rate: events per second to pace at (``None`` = as fast as possible).
        progress: called with the running count about every ``progress_interval_s``, and at the end.
        progress_interval_s: see ``progress``.
        producer_config: librdkafka overrides.
        flush_timeout_s: how long to wait for the final acknowledgements.

    Raises:
        SinkError: some records were not delivered.
    """
    parse_kafka_url(f"kafka://{bootstrap}/{topic}")
    if rate is not None and rate <= 0:
        raise ConfigError("must be > 0 events/s", field="rate", value=rate)
    errors = ErrorLog(f"producer `kafka:{topic}`")
    base = {
        "enable.idempotence": True,
        "linger.ms": 50,
        "batch.size": 1 << 20,
        "compression.type": "lz4",
        "queue.buffering.max.kbytes": 256 << 10,
        "client.id": f"vigil-produce-{topic}",
    }
    p = Producer(client_config(bootstrap, base, dict(producer_config or {}), errors))
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failed.append(f"{err.name()}: {err.str()}")

    rename = {"key": key_field, "ts": timestamp_field or "__vigil_no_timestamp__"}
    key_ts = msgspec.defstruct("KeyTs", [("key", str | int | None, None), ("ts", int | None, None)], rename=rename)
    peek: Any = msgspec.json.Decoder(key_ts).decode
    produce, poll = p.produce, p.poll
    n = 0
    t0 = time.monotonic()
    next_progress = t0 + progress_interval_s
    pace_every = max(1, int(rate / 200)) if rate else 1024
    for row in rows:
        if isinstance(row, Mapping):
            value = orjson.dumps(row, default=_json_default, option=_JSON_OPTS)
            key, ts = row.get(key_field), row.get(timestamp_field) if timestamp_field else None
        else:
            value = row.encode() if isinstance(row, str) else row
            try:
                kt = peek(value)
                key, ts = kt.key, kt.ts
            except msgspec.DecodeError:  # sent anyway: the consumer's dead-letter path is the place for it
                key, ts = None, None
        k = None if key is None else str(key).encode()
        while True:
            try:
                produce(topic, value=value, key=k, timestamp=int(ts) if ts else 0, on_delivery=on_delivery)
                break
            except BufferError:
                poll(0.05)
        n += 1
        if n % pace_every == 0:
            poll(0)
            now = time.monotonic()
            if rate:
                ahead = t0 + n / rate - now
                if ahead > 0:
                    time.sleep(ahead)
            if progress is not None and now >= next_progress:
                next_progress = now + progress_interval_s
                progress(n)
    left = p.flush(flush_timeout_s)
    if progress is not None:
        progress(n)
    if left or failed:
        raise SinkError(
            f"produce to `{topic}`: {left} records undelivered after {flush_timeout_s} s, {len(failed)} failed"
            + (f": {failed[0]}" if failed else "")
        )
    return n


class KafkaTopicView:
    """Another topic written through a :class:`KafkaAlertSink`'s producer (and so its transaction).

    Exactly-once needs every Kafka output of a pipeline inside the one transaction that also carries
    the source offsets; a view lets e.g. window results go to their own topic within it.
    ``flush`` and ``close`` defer to the parent (the engine flushes and closes the parent too).
    """

    transactional = False  # the parent commits

    def __init__(self, parent: KafkaAlertSink, topic: str) -> None:
        self.parent, self.topic = parent, topic

    def write_batch(self, items: list[Any]) -> None:
        """Produce each item as compact JSON keyed by its ``key``, on the parent's producer."""
        for item in items:
            d = _as_dict(item)
            value = orjson.dumps(d, default=_json_default, option=_JSON_OPTS)
            headers = [("vigil.alert_id", str(d["id"]))] if d.get("id") is not None else None
            self.parent.produce_raw(self.topic, d.get("key"), value, headers)

    def flush(self) -> None:
        """Flush the parent producer."""
        self.parent.flush()

    def close(self) -> None:
        """Nothing of its own to release."""

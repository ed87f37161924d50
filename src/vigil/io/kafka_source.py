"""A Kafka topic as a Vigil source: one reader over every partition, positions per Kafka partition.

Messages are JSON objects (``{"user":"u1","ts":1700000000123,"amount":23.4}``), decoded a batch at a
time by :class:`~vigil.io.decode.JsonDecoder` into columnar :class:`~vigil.io.base.Records` that carry
two more int64 columns in ``extra``: ``_partition`` and ``_offset`` (where each row came from), so the
engine can keep one watermark per Kafka partition.

Examples:
    >>> from vigil.io.schema import Schema
    >>> src = KafkaSource("127.0.0.1:9092", "transactions", Schema("user", "ts", fields=("amount",)),
    ...                   group_id="vigil-fraud")
    >>> src.name, src.partitions()
    ('kafka:transactions', ['kafka'])
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from confluent_kafka import OFFSET_INVALID, Consumer, KafkaError, KafkaException, Message, TopicPartition

from vigil.errors import ConfigError, SinkError, SourceError
from vigil.io.base import DeadLetter, Records
from vigil.io.decode import JsonDecoder, raw_text
from vigil.io.kafka import (
    KAFKA_TIMESTAMP,
    DeadLetterProducer,
    ErrorLog,
    KafkaTimeDecoder,
    client_config,
    log,
    parse_kafka_url,
    parse_resume,
)
from vigil.io.schema import Schema

PARTITION_COLUMN = "_partition"
OFFSET_COLUMN = "_offset"
_MAX_CONSUME = 1_000_000  # confluent-kafka's cap on consume(num_messages=...)
_EOF = KafkaError._PARTITION_EOF
_TRANSIENT = {
    KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError._TIMED_OUT, KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN, KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
}


class KafkaSource:
    """A Kafka topic, read by one embedded worker: ONE Vigil partition (``"kafka"``) over all Kafka partitions.

    Why one reader for the whole topic: the embedded runtime's keyed state (key → slot arrays) is not
    partitioned by Kafka partition, so splitting the topic across readers would buy no parallelism
    (one engine loop owns the state) and would complicate checkpoints. The reader therefore
    ``assign()`` s every partition itself (no consumer-group rebalancing, no ``subscribe``); the
    ``group_id`` only names where offsets are committed, so lag shows in the usual Kafka tools.
    Scale-out comes with the Flink runtime, where the Kafka connector splits partitions across
    subtasks.

    Where reading starts (``open(resume=...)``): ``resume`` is a position from :meth:`KafkaSourceReader.position`
    (``{partition: next_offset}``, keys int or str); partitions it lacks start at the group's committed
    offset, else at the earliest retained offset. Positions are explicit integers from the start.

    Memory stays bounded whatever the producer rate: the engine pulls (``read_batch`` consumes at
    most ``max_items`` messages), and librdkafka's prefetch queue is capped by
    ``queued.max.messages.kbytes`` (``max_prefetch_bytes``, 16 MB by default) and ``fetch.max.bytes``
    (half of it): once the queue is full the client stops fetching, and the backlog stays in Kafka.
    When the engine is behind it can also :meth:`~KafkaSourceReader.pause` fetching altogether.

    Args:
        bootstrap: ``host:port[,host:port]``.
        topic: the topic to read.
        schema: the records' shape. ``time="@timestamp"`` takes event time from the Kafka record
            timestamp instead of a JSON field.
        group_id: consumer group for committed offsets and lag (never joined: partitions are assigned).
        name: source name (dead letters, logs); default ``kafka:<topic>``.
        dead_letter_topic: if set, undecodable messages are also produced there, with their original
            value and key and the headers ``vigil.reason`` (the reason code, :mod:`vigil.io.reasons`),
            ``vigil.message``, ``vigil.source.topic``, ``vigil.source.partition``, ``vigil.source.offset``.
        stop_at_end: make the source finite: ``at_end`` once every partition reached its end
            (for tests and ``vigil run --until-end``). Otherwise a Kafka source never ends.
        max_prefetch_bytes: cap of librdkafka's prefetch queue.
        consumer_config: librdkafka overrides (e.g. security settings). ``enable.auto.commit`` and
            ``enable.partition.eof`` are always set by the source (positions depend on them).
        open_timeout_s: how long ``open`` waits for metadata and committed offsets.
        decoder: decode message values with this instead of JSON by ``schema``: an object with
            ``decode_indexed(values, source, first_position) -> (records, row_message)``, where a message may
            give zero, one or many rows — e.g. ``metric_decoder("influx")`` or ``metric_decoder("json")``
            (Telegraf) from :mod:`vigil.io.metrics` for host metrics.
        max_record_bytes: a message value larger than this (8 MiB by default) is not decoded: it is a dead
            letter with the reason ``too_large`` (the dead-letter topic gets its first 4 KiB).
    """

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        schema: Schema | None,
        *,
        group_id: str,
        name: str | None = None,
        dead_letter_topic: str | None = None,
        stop_at_end: bool = False,
        max_prefetch_bytes: int = 16 << 20,
        consumer_config: Mapping[str, Any] | None = None,
        open_timeout_s: float = 10.0,
        decoder: Any = None,
        max_record_bytes: int = 8 << 20,
    ) -> None:
        if decoder is not None and not hasattr(decoder, "decode_indexed"):
            raise ConfigError("must have decode_indexed(values, source, first_position)", field="decoder",
                              value=type(decoder).__name__)  # fmt: skip
        if schema is None and decoder is not None:
            schema = Schema("host", "time")  # the metric decoders fix the shape themselves
        if not isinstance(schema, Schema):
            raise ConfigError("must be a Schema", field="schema", value=type(schema).__name__)
        if not isinstance(group_id, str) or not group_id:
            raise ConfigError("must be a non-empty consumer group id", field="group_id", value=group_id)
        parse_kafka_url(f"kafka://{bootstrap}/{topic}")  # validates both, with a clear message
        for topic_name in (dead_letter_topic,) if dead_letter_topic else ():
            parse_kafka_url(f"kafka://{bootstrap}/{topic_name}")
        clash = {PARTITION_COLUMN, OFFSET_COLUMN, "emit_ns"} & set(schema.extra_columns)
        if clash:
            raise ConfigError("are added by the Kafka source; rename them", field="extra", value=sorted(clash))
        if isinstance(max_record_bytes, bool) or not isinstance(max_record_bytes, int) or max_record_bytes < 1024:
            raise ConfigError("must be an integer of bytes >= 1024", field="max_record_bytes", value=max_record_bytes)
        self.max_record_bytes = max_record_bytes
        if max_prefetch_bytes < 1 << 20:
            raise ConfigError("must be >= 1 MiB", field="max_prefetch_bytes", value=max_prefetch_bytes)
        self.bootstrap, self.topic, self.schema, self.group_id = bootstrap, topic, schema, group_id
        self.name = name or f"kafka:{topic}"
        self.dead_letter_topic = dead_letter_topic
        self.stop_at_end = stop_at_end
        self.max_prefetch_bytes = max_prefetch_bytes
        self.consumer_config = dict(consumer_config or {})
        self.open_timeout_s = open_timeout_s
        self.decoder = decoder

    @classmethod
    def from_url(cls, url: str, schema: Schema | None, **kwargs: Any) -> KafkaSource:
        """Make a source from ``kafka://host:port/topic`` (see :func:`~vigil.io.kafka.parse_kafka_url`)."""
        bootstrap, topic = parse_kafka_url(url)
        return cls(bootstrap, topic, schema, **kwargs)

    def partitions(self) -> list[str]:
        """One Vigil partition for the whole topic (see the class docstring)."""
        return ["kafka"]

    def open(self, partition: str = "kafka", resume: Any = None) -> KafkaSourceReader:
        """Connect, assign every partition of the topic and seek to the start offsets.

        Raises:
            SourceError: unknown partition name, a malformed ``resume``, a missing topic or an
                unreachable broker (after ``open_timeout_s``).
        """
        if partition != "kafka":
            raise SourceError(f"source `{self.name}` has one partition, 'kafka'; got {partition!r}")
        return KafkaSourceReader(self, parse_resume(self.name, resume))


class KafkaSourceReader:
    """Reads every partition of the topic; see :class:`KafkaSource`.

    ``position()`` is ``{str(partition): next_offset}`` of what ``read_batch`` has *returned* (Kafka's
    commit convention: the offset of the next record to read), for every assigned partition, plain
    ints, JSON-stable (string keys survive a JSON round trip unchanged). End-of-partition events move
    a partition's position past transaction markers and aborted records, so a caught-up reader's
    position equals the partition end and lag reads 0.

    Checkpoints must store the position returned *with* the last batch the engine processed (the
    runner's source thread reads ahead of the engine), and commit that same position: with
    :meth:`commit` (at-least-once) or through a transactional
    :class:`~vigil.io.kafka_sink.KafkaAlertSink` with :meth:`consumer_group_metadata` (exactly-once).
    Dead letters produced to a dead-letter topic are at-least-once: :meth:`flush_dead_letters` before
    committing; duplicates after a restart carry the same ``vigil.source.*`` headers.
    ``pause``/``resume`` may be called from another thread than ``read_batch`` (librdkafka is
    thread-safe).
    """

    def __init__(self, src: KafkaSource, resume: dict[int, int]) -> None:
        self.src, self.name, self.topic = src, src.name, src.topic
        self._errors = ErrorLog(f"source `{src.name}`")
        prefetch = src.max_prefetch_bytes
        base = {
            "group.id": src.group_id,
            "client.id": f"vigil-{src.name}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
            "queued.max.messages.kbytes": prefetch // 1024,
            "fetch.max.bytes": max(1 << 20, prefetch // 2),
        }
        conf = client_config(src.bootstrap, base, src.consumer_config, self._errors)
        conf.update({"enable.auto.commit": False, "enable.auto.offset.store": False, "enable.partition.eof": True})
        self._closed = False
        self._dlq: DeadLetterProducer | None = None
        self._c = Consumer(conf)
        try:
            self._parts = self._topic_partitions(src.open_timeout_s)
            self._pos = self._start_offsets(resume, src.open_timeout_s)
            self._tps = [TopicPartition(self.topic, p) for p in self._parts]
            self._c.assign([TopicPartition(self.topic, p, self._pos[p]) for p in self._parts])
        except BaseException:
            self._c.close()
            raise
        self._eof: set[int] = set()
        self._paused = False
        self._decoder: Any = None
        self._kafka_time: KafkaTimeDecoder | None = None
        if src.decoder is not None:
            self._decoder = src.decoder
        elif src.schema.time == KAFKA_TIMESTAMP:
            self._kafka_time = KafkaTimeDecoder(src.schema)
        else:
            self._decoder = JsonDecoder(src.schema)

    # -- opening -----------------------------------------------------------------------------------

    def _topic_partitions(self, timeout_s: float) -> list[int]:
        deadline = time.monotonic() + timeout_s
        while True:
            md = self._retrying("metadata", lambda t: self._c.list_topics(self.topic, timeout=t), deadline)
            tmd = md.topics.get(self.topic)
            err = tmd.error if tmd is not None else None
            if tmd is not None and err is None and tmd.partitions:
                return sorted(tmd.partitions)
            missing = tmd is None or (err is not None and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART)
            if missing or time.monotonic() > deadline:
                why = err.str() if err is not None else "no partitions"
                raise SourceError(
                    f"source `{self.name}`: topic `{self.topic}` is not readable on {self.src.bootstrap} ({why}); "
                    f"create it first, e.g. kafka-topics.sh --create --topic {self.topic} --partitions 3"
                )
            time.sleep(0.1)  # e.g. LEADER_NOT_AVAILABLE right after creation or a broker restart

    def _start_offsets(self, resume: dict[int, int], timeout_s: float) -> dict[int, int]:
        unknown = sorted(set(resume) - set(self._parts))
        if unknown:
            log.warning("source `%s`: resume names partitions %s that %s no longer has; ignored",
                        self.name, unknown, self.topic)
        start = {p: resume[p] for p in self._parts if p in resume}
        missing = [TopicPartition(self.topic, p) for p in self._parts if p not in start]
        deadline = time.monotonic() + timeout_s
        if missing:
            for tp in self._retrying("committed offsets", lambda t: self._c.committed(missing, timeout=t), deadline):
                if tp.error is not None:
                    raise SourceError(f"source `{self.name}`: committed offsets unavailable: {tp.error.str()}")
                if tp.offset >= 0:
                    start[tp.partition] = tp.offset
        for p in self._parts:
            if p not in start:  # no commit: the earliest retained offset, as an explicit number
                tp = TopicPartition(self.topic, p)
                start[p] = self._retrying("offsets", lambda t, tp=tp: self._c.get_watermark_offsets(tp, timeout=t),
                                          deadline)[0]
        return start

    def _retrying(self, what: str, call: Any, deadline: float) -> Any:
        """``call(timeout_s)``, retrying retriable errors (coordinator loading or moving) until ``deadline``."""
        backoff = 0.05
        while True:
            try:
                return call(max(0.5, deadline - time.monotonic()))
            except KafkaException as e:
                err = e.args[0]
                transient = err.retriable() or err.code() in _TRANSIENT
                if not transient or time.monotonic() + backoff > deadline:
                    raise SourceError(
                        f"source `{self.name}`: can't read {what} from {self.src.bootstrap} "
                        f"within {self.src.open_timeout_s} s: {err.name()}: {err.str()}"
                    ) from e
                time.sleep(backoff)
                backoff = min(1.0, backoff * 2)

    # -- reading -----------------------------------------------------------------------------------

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        """Up to ``max_items`` decoded records (plus dead letters); ``None`` when nothing arrived in time.

        Transport errors (broker down) are logged once per kind and never raised: the call returns
        what it has and librdkafka reconnects by itself. A fatal client error raises SourceError.
        """
        if self._closed:
            raise SourceError(f"source `{self.name}` is closed")
        if self.at_end or max_items < 1:
            return None
        try:
            msgs = self._c.consume(num_messages=min(max_items, _MAX_CONSUME), timeout=max(0, timeout_ms) / 1000)
        except KafkaException as e:
            self._client_error(e.args[0])
            return None
        if not msgs:
            return None
        errs = [m.error() for m in msgs]
        if any(e is not None for e in errs):  # (KafkaError == None raises, so no list.count)
            msgs = self._events(msgs, errs)
            if not msgs:
                return None
        elif self._eof:
            self._eof.difference_update(m.partition() for m in msgs)
        self._errors.recovered()
        return self._decode(msgs)

    def _events(self, msgs: list[Message], errs: list[Any]) -> list[Message]:
        """Slow path: a batch holding end-of-partition or error events; returns the real messages."""
        good = []
        for m, err in zip(msgs, errs, strict=True):
            if err is None:
                good.append(m)
                self._eof.discard(m.partition())
            elif err.code() == _EOF:
                # Every message of this partition before the event is in this batch or an earlier one,
                # so its position can move to the end (past transaction markers and aborted records).
                p: Any = m.partition()
                off: Any = m.offset()
                self._eof.add(p)
                if off is not None and off > self._pos.get(p, -1):
                    self._pos[p] = off
            else:
                self._client_error(err)
        return good

    def _client_error(self, err: KafkaError) -> None:
        if err.fatal():
            raise SourceError(f"source `{self.name}`: fatal Kafka error {err.name()}: {err.str()}")
        self._errors.error(err)

    def _decode(self, msgs: list[Message]) -> Records:
        values: list[Any] = [m.value() for m in msgs]
        parts: list[Any] = [m.partition() for m in msgs]
        offs: list[Any] = [m.offset() for m in msgs]
        if None in values:  # tombstones: decoded as blank, reported as dead letters below
            values = [b"" if v is None else v for v in values]
        cap = self.src.max_record_bytes
        big = [i for i, v in enumerate(values) if len(v) > cap] if max(map(len, values), default=0) > cap else []
        if big:  # over the size cap: decoded as blank, reported as `too_large` (the dead-letter topic gets the start)
            sizes = {i: len(values[i]) for i in big}
            values = list(values)
            heads = {i: bytes(values[i][:4096]) for i in big}
            for i in big:
                values[i] = b""
        if self._kafka_time is not None:
            ts = [m.timestamp()[1] for m in msgs]
            recs, row_line = self._kafka_time.decode_indexed(values, ts, self.name)
        else:
            recs, row_line = self._decoder.decode_indexed(values, self.name, 0)
        if big:
            recs.dead += [DeadLetter("too_large", f"a message value of {sizes[i]:,} bytes, over the source's "
                                     f"max_record_bytes ({cap:,}); its start is kept here", raw_text(heads[i]),
                                     self.name, i) for i in big]  # fmt: skip
            recs.dead.sort(key=lambda d: d.position)
            for i in big:
                values[i] = heads[i]
        n = len(msgs)
        if len(recs) + len(recs.dead) < n or self.src.decoder is not None:  # blank values are skipped silently
            # by the decoder; not here (a metric message may hold many rows, so count messages, not rows)
            seen = set(row_line.tolist() if row_line is not None else range(len(recs)))
            seen.update(d.position for d in recs.dead)
            recs.dead += [
                DeadLetter("empty_value", "empty message value (null or blank)", raw_text(values[i]), self.name, i)
                for i in range(n) if i not in seen
            ]
            recs.dead.sort(key=lambda d: d.position)
        if recs.dead:
            self._dead_letters(recs.dead, msgs, values)
        part_arr = np.asarray(parts, np.int64)
        off_arr = np.asarray(offs, np.int64)
        if row_line is not None:
            part_arr, off_arr = part_arr[row_line], off_arr[row_line]
        recs.extra[PARTITION_COLUMN] = part_arr
        recs.extra[OFFSET_COLUMN] = off_arr
        # the record's CreateTime: when the producer emitted it, so the engine can measure
        # emission -> alert latency (log-append time is close enough where the topic uses it)
        emit_ms = np.fromiter((m.timestamp()[1] for m in msgs), np.int64, n)
        recs.extra["emit_ns"] = (emit_ms[row_line] if row_line is not None else emit_ms) * 1_000_000
        pos = self._pos
        for p, off in dict(zip(parts, offs, strict=True)).items():  # last (highest) offset per partition
            if off >= pos[p]:
                pos[p] = off + 1
        return recs

    def _dead_letters(self, dead: list[DeadLetter], msgs: list[Message], values: list[bytes]) -> None:
        """Give dead letters Kafka positions and, with a dead-letter topic, produce them there."""
        dlq = self.src.dead_letter_topic
        for d in dead:
            i = d.position
            m = msgs[i]
            d.position = {"partition": m.partition(), "offset": m.offset()}
            if dlq is None:
                continue
            headers = [
                ("vigil.reason", d.reason.encode()),
                ("vigil.message", d.message.encode()),
                ("vigil.source.topic", self.topic.encode()),
                ("vigil.source.partition", str(m.partition()).encode()),
                ("vigil.source.offset", str(m.offset()).encode()),
            ]
            if self._dlq is None:
                self._dlq = DeadLetterProducer(self.src.bootstrap, f"vigil-{self.name}-dlq", self._errors)
            self._dlq.produce(dlq, m.key(), values[i], headers)

    def flush_dead_letters(self, timeout_s: float = 30.0) -> None:
        """Wait until every dead letter produced so far is acknowledged (call before committing offsets).

        Raises:
            SinkError: a dead letter was not delivered, or not within ``timeout_s``.
        """
        if self._dlq is not None:
            self._dlq.flush(f"source `{self.name}`", timeout_s)

    # -- positions, commits, flow control --------------------------------------------------------

    def position(self) -> dict[str, int]:
        """``{str(partition): next_offset}`` after the last returned record, for every partition."""
        return {str(p): int(self._pos[p]) for p in self._parts}

    @property
    def at_end(self) -> bool:
        """False for a live topic; with ``stop_at_end``, True once every partition hit its end after the last read."""
        return self.src.stop_at_end and len(self._eof) == len(self._parts)

    def behind(self) -> list[str]:
        """Partitions that have not reported their end since their last record: they may hold unread records.

        The engine never lets these go idle (a partition still catching up holds the watermark back
        however long its fetch takes); a partition at its end that stays quiet does go idle.
        """
        return [str(p) for p in self._parts if p not in self._eof]

    def lag(self) -> dict[str, int]:
        """Messages behind the end of each partition, from the client's cached high watermarks (no request)."""
        out = {}
        for p in self._parts:
            try:
                high = self._c.get_watermark_offsets(TopicPartition(self.topic, p), cached=True)[1]
            except KafkaException:
                continue
            if high is not None and high >= 0:
                out[str(p)] = max(0, high - self._pos[p])
        return out

    def pause(self) -> None:
        """Stop fetching every partition (the engine is behind); prefetched messages are dropped, not lost."""
        if not self._paused:
            self._c.pause(self._tps)
            self._paused = True

    def resume(self) -> None:
        """Fetch again, from the position after the last returned record."""
        if self._paused:
            self._c.resume(self._tps)
            self._paused = False

    @property
    def paused(self) -> bool:
        """True between :meth:`pause` and :meth:`resume`."""
        return self._paused

    def consumer_group_metadata(self) -> Any:
        """The consumer's group metadata, for ``send_offsets_to_transaction`` (exactly-once)."""
        return self._c.consumer_group_metadata()

    def committed_offsets(self, timeout_s: float = 10.0) -> dict[str, int]:
        """The group's committed offsets, ``{str(partition): offset}`` (partitions without one left out)."""
        try:
            tps = self._c.committed(self._tps, timeout=timeout_s)
        except KafkaException as e:
            raise SourceError(f"source `{self.name}`: can't read committed offsets: {e}") from e
        return {str(tp.partition): tp.offset for tp in tps if tp.offset != OFFSET_INVALID and tp.offset >= 0}

    def commit(self, offsets: Mapping[Any, int] | None = None) -> None:
        """Commit ``offsets`` (default: :meth:`position`) to the group, synchronously (at-least-once mode).

        Raises:
            SourceError: the commit failed (the next checkpoint commits again; nothing is lost).
        """
        offsets = self.position() if offsets is None else offsets
        tps = [TopicPartition(self.topic, int(p), int(o)) for p, o in offsets.items()]
        if not tps:
            return
        try:
            result = self._c.commit(offsets=tps, asynchronous=False)
        except KafkaException as e:
            raise SourceError(f"source `{self.name}`: offset commit failed: {e}") from e
        bad = [tp for tp in result or () if tp.error is not None]
        if bad:
            raise SourceError(f"source `{self.name}`: offset commit failed for partition {bad[0].partition}: "
                              f"{bad[0].error}")

    def close(self) -> None:
        """Flush dead letters (best effort) and close the consumer; idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self.flush_dead_letters(timeout_s=10.0)
        except SinkError as e:
            log.error("%s", e)
        self._dlq = None
        t0 = time.monotonic()
        self._c.close()
        log.debug("source `%s` closed in %.3f s", self.name, time.monotonic() - t0)

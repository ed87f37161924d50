"""Prototype PyFlink DataStream job: Kafka JSON transactions -> per-key EW z-score -> exactly-once Kafka alerts.

Submitted to the standalone session cluster (deploy/flink/flink.sh) with::

    ./deploy/flink/flink.sh flink run -d -p 2 -py deploy/flink/prototype/job.py \\
        -pyfs deploy/flink/prototype/zscore.py -- --variant bucket --topic txns --alerts txns-alerts

Variants (same source, watermarks, sink; the scoring differs):

* ``per-event``: the anchor, a plain PyFlink job: parse each record in a ``map``, ``key_by(user)``, a
  ``KeyedProcessFunction`` that reads and writes the key's typed ``ValueState`` for every event (no buffering, no
  event-time ordering: arrival order).
* ``keyed``: ``key_by(user)``; each key buffers its raw records in ``ListState`` and registers an event-time timer
  at the end of the record's tick; the timer flushes the buffered records up to it, sorted by event time, through
  the numba kernel, state as versioned bytes in ``ValueState``.
* ``bucket``: the same, but keyed by a *bucket* of users (crc32(user) % buckets), so one timer flushes a
  micro-batch spanning many users; per-user state in ``MapState[user -> bytes]`` (``--bucket-state map``) or the
  whole bucket as one blob in ``ValueState`` (``blob``).
* ``nonkeyed``: a ceiling measurement only: no ``key_by``; a ``ProcessFunction`` buffers N records in Python memory
  and scores them. Its per-user state is NOT checkpointed (not fault tolerant) and a tail of < N records per
  subtask is never flushed; it shows what batching could give if PyFlink had a pre-checkpoint hook.

Event time is the Kafka record timestamp (the producer sets it to the event's ``ts``), so the
``WatermarkStrategy`` (bounded out-of-orderness + idleness) runs inside the Java source, per partition
(``--python-ts`` assigns it with a Python ``TimestampAssigner`` after the source instead, for comparison).
Late records (event time <= the current watermark) go to a side output, written to ``<alerts>-late``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
import zlib

import numpy as np

log = logging.getLogger("vigil.flink.prototype")


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variant", choices=["per-event", "keyed", "bucket", "nonkeyed", "sqlbatch"], default="bucket")
    p.add_argument("--bootstrap", default="127.0.0.1:19092")
    p.add_argument("--topic", default="txns")
    p.add_argument("--alerts", default=None, help="alerts topic (default <topic>-alerts)")
    p.add_argument("--group", default=None, help="consumer group (default vigil-<variant>)")
    p.add_argument("--bounded", action="store_true", help="stop at the end offsets seen at start (benchmarks)")
    p.add_argument("--tick-ms", type=int, default=1000, help="event-time flush tick (keyed, bucket)")
    p.add_argument("--buckets", type=int, default=128, help="bucket variant: keys are crc32(user) %% buckets")
    p.add_argument("--bucket-state", choices=["map", "blob"], default="map")
    p.add_argument("--batch", type=int, default=2000, help="nonkeyed variant: records per batch")
    p.add_argument("--kernel", choices=["numba", "python"], default="numba", help="the per-key EW loop")
    p.add_argument("--state-bytes", choices=["pickled", "primitive"], default="pickled",
                   help="type of the bytes states: PICKLED_BYTE_ARRAY works in both modes; PRIMITIVE_ARRAY(BYTE) is "
                        "raw bytes in process mode but a tuple of ints (and None fails) in thread mode")
    p.add_argument("--out-of-orderness-ms", type=int, default=2000)
    p.add_argument("--idleness-ms", type=int, default=5000)
    p.add_argument("--python-ts", action="store_true", help="assign timestamps in Python after the source")
    p.add_argument("--window-ms", type=int, default=1000, help="sqlbatch: event-time window of one micro-batch")
    p.add_argument("--checkpoint-ms", type=int, default=5000)
    p.add_argument("--max-parallelism", type=int, default=128)
    p.add_argument("--txn-prefix", default=None, help="transactional id prefix (default vigil-<alerts>)")
    p.add_argument("--txn-timeout-ms", type=int, default=600_000, help="must be <= the broker's max (15 min)")
    p.add_argument("--name", default=None, help="job name")
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------------
# record helpers (plain Python, run inside the workers)


def user_of(line: str) -> str:
    """The user of a raw record: a slice for the producer's fixed layout, a JSON parse otherwise."""
    if line.startswith('{"user":"'):
        end = line.find('"', 9)
        if end > 0:
            return line[9:end]
    return json.loads(line)["user"]


def md5_bucket(user: str, buckets: int) -> int:
    """The sqlbatch variant's bucket, computed in SQL from MD5's first two hex digits (Flink SQL has no hash)."""
    import hashlib

    return int(hashlib.md5(user.encode()).hexdigest()[:2], 16) % buckets


def bucket_of(line: str, buckets: int) -> int:
    return zlib.crc32(user_of(line).encode()) % buckets


def decode_lines(lines: list[str]):
    """Raw JSON records -> (users list, ts int64[], amount float64[]) in one pass (orjson when available)."""
    try:
        import orjson

        loads = orjson.loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    recs = [loads(s) for s in lines]
    users = [r["user"] for r in recs]
    ts = np.fromiter((r["ts"] for r in recs), dtype=np.int64, count=len(recs))
    x = np.fromiter((r["amount"] for r in recs), dtype=np.float64, count=len(recs))
    return users, ts, x


def alert_json(user: str, ts: int, x: float, z: float) -> str:
    return json.dumps({"user": user, "ts": int(ts), "amount": float(x), "z": float(z)}, separators=(",", ":"))


def encode_blob(users: list[str], n, mean, var) -> bytes:
    """A bucket's whole state: version byte, count, users joined by newlines, then the three arrays."""
    head = "\n".join(users).encode()
    return b"".join([bytes([1]), len(users).to_bytes(4, "little"), len(head).to_bytes(4, "little"), head,
                     np.asarray(n, np.int64).tobytes(), np.asarray(mean, np.float64).tobytes(),
                     np.asarray(var, np.float64).tobytes()])


def decode_blob(raw):
    if raw is None:
        return [], np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
    raw = bytes(raw)
    if raw[0] != 1:
        raise ValueError(f"bucket state: unknown version {raw[0]}")
    k = int.from_bytes(raw[1:5], "little")
    hl = int.from_bytes(raw[5:9], "little")
    users = raw[9:9 + hl].decode().split("\n") if k else []
    off = 9 + hl
    n = np.frombuffer(raw, np.int64, k, off).copy()
    mean = np.frombuffer(raw, np.float64, k, off + 8 * k).copy()
    var = np.frombuffer(raw, np.float64, k, off + 16 * k).copy()
    return users, n, mean, var


def map_get(state, key):
    """MapState.get that returns None for a missing key in both modes: thread mode's byte-array converter raises
    TypeError on the missing value (PyFlink 2.2)."""
    try:
        return state.get(key)
    except TypeError:
        return None


def score_grouped(users: list[str], ts: np.ndarray, x: np.ndarray, get_states, put_states, kernel="numba"):
    """Sort a micro-batch into per-user segments (event time, then arrival), score it, write the state back.

    get_states(distinct_users) -> list[(n, mean, var)]; put_states(distinct_users, n, mean, var).
    Returns the alerts as JSON strings.
    """
    import zscore

    ids_of: dict[str, int] = {}
    ids = np.fromiter((ids_of.setdefault(u, len(ids_of)) for u in users), dtype=np.int64, count=len(users))
    order = np.lexsort((np.arange(len(ids)), ts, ids))  # stable: ties in ts keep arrival order
    sid = ids[order]
    starts = np.searchsorted(sid, np.arange(len(ids_of) + 1))
    distinct = list(ids_of)
    st = get_states(distinct)
    n = np.fromiter((s[0] for s in st), np.int64, len(st))
    mean = np.fromiter((s[1] for s in st), np.float64, len(st))
    var = np.fromiter((s[2] for s in st), np.float64, len(st))
    xs = x[order]
    z = zscore.score_batch(starts, xs, n, mean, var, kernel)
    put_states(distinct, n, mean, var)
    hits = np.flatnonzero(np.abs(z) > zscore.THRESHOLD)
    if len(hits) == 0:
        return []
    tss = ts[order]
    return [alert_json(distinct[sid[i]], tss[i], xs[i], z[i]) for i in hits]


# ------------------------------------------------------------------------------------------------
# the job


def build(args):
    from pyflink.common import Duration, Types, WatermarkStrategy
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.common.watermark_strategy import TimestampAssigner
    from pyflink.datastream import (
        CheckpointingMode,
        KeyedProcessFunction,
        OutputTag,
        ProcessFunction,
        RuntimeContext,
        StreamExecutionEnvironment,
    )
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import (
        KafkaOffsetsInitializer,
        KafkaRecordSerializationSchema,
        KafkaSink,
        KafkaSource,
    )
    from pyflink.datastream.state import ListStateDescriptor, MapStateDescriptor, ValueStateDescriptor

    alerts_topic = args.alerts or f"{args.topic}-alerts"
    late_topic = f"{alerts_topic}-late"
    env = StreamExecutionEnvironment.get_execution_environment()
    # fixed max parallelism = fixed key groups: savepoints restore at any parallelism up to it
    env.set_max_parallelism(args.max_parallelism)
    env.enable_checkpointing(args.checkpoint_ms, CheckpointingMode.EXACTLY_ONCE)

    src = (KafkaSource.builder()
           .set_bootstrap_servers(args.bootstrap)
           .set_topics(args.topic)
           .set_group_id(args.group or f"vigil-{args.variant}")
           .set_starting_offsets(KafkaOffsetsInitializer.earliest())
           .set_value_only_deserializer(SimpleStringSchema())
           .set_property("partition.discovery.interval.ms", "0" if args.bounded else "10000"))
    if args.bounded:
        src = src.set_bounded(KafkaOffsetsInitializer.latest())
    wm = (WatermarkStrategy.for_bounded_out_of_orderness(Duration.of_millis(args.out_of_orderness_ms))
          .with_idleness(Duration.of_millis(args.idleness_ms)))
    if args.python_ts:
        class JsonTs(TimestampAssigner):
            def extract_timestamp(self, value, record_timestamp):
                return json.loads(value)["ts"]

        raw = env.from_source(src.build(), WatermarkStrategy.no_watermarks(), "kafka-source").uid("kafka-source")
        raw = raw.assign_timestamps_and_watermarks(wm.with_timestamp_assigner(JsonTs())).uid("event-time")
    else:
        # no Python assigner: the Kafka record timestamp (= the event's ts, set by the producer) is the event time,
        # and the watermarks are generated per partition inside the Java source
        raw = env.from_source(src.build(), wm, "kafka-source").uid("kafka-source")

    late_tag = OutputTag("late", Types.STRING())

    class PerEventZ(KeyedProcessFunction):
        def open(self, ctx: RuntimeContext):
            self.st = ctx.get_state(ValueStateDescriptor("ew", Types.TUPLE([Types.LONG(), Types.DOUBLE(), Types.DOUBLE()])))

        def process_element(self, value, ctx):
            import zscore

            user, ts, x = value
            s = self.st.value()
            n, mean, var = s if s is not None else (0, 0.0, 0.0)
            if n >= zscore.MIN_N and var > 0.0:
                z = (x - mean) / math.sqrt(var)
                if z > zscore.THRESHOLD or z < -zscore.THRESHOLD:
                    yield alert_json(user, ts, x, z)
            if n == 0:
                mean, var = x, 0.0
            else:
                d = x - mean
                mean = mean + zscore.ALPHA * d
                var = (1.0 - zscore.ALPHA) * (var + zscore.ALPHA * d * d)
            self.st.update((n + 1, mean, var))

    class Buffered(KeyedProcessFunction):
        """Buffer raw records per key in ListState; flush them on event-time timers as one micro-batch."""

        def __init__(self, tick_ms: int, mode: str, kernel: str, state_bytes: str):
            self.state_bytes = state_bytes
            self.tick_ms = tick_ms
            self.mode = mode  # "keyed" | "map" | "blob"
            self.kernel = kernel

        def open(self, ctx: RuntimeContext):
            import zscore

            self.buf = ctx.get_list_state(ListStateDescriptor("buffer", Types.STRING()))
            bytes_type = Types.PICKLED_BYTE_ARRAY() if self.state_bytes == "pickled" else Types.PRIMITIVE_ARRAY(Types.BYTE())
            if self.mode == "map":
                self.users = ctx.get_map_state(MapStateDescriptor("ew", Types.STRING(), bytes_type))
            else:
                self.st = ctx.get_state(ValueStateDescriptor("ew", bytes_type))
            # timers already registered by this instance: Flink dedups (key, time) timers anyway, this only
            # saves the call; after a restore it is empty and the timers are registered again (harmless)
            self.timers: set = set()
            t0 = time.perf_counter()
            zscore.score_batch(np.array([0, 1]), np.zeros(1), np.zeros(1, np.int64), np.zeros(1), np.zeros(1),
                               self.kernel)  # compile now, not on the first timer
            log.warning("vigil prototype: %s kernel ready in %.2fs", self.kernel, time.perf_counter() - t0)

        def process_element(self, line, ctx):
            ts = ctx.timestamp()
            ts_svc = ctx.timer_service()
            if ts <= ts_svc.current_watermark():
                yield late_tag, line
                return
            self.buf.add(line)
            t = (ts // self.tick_ms + 1) * self.tick_ms - 1
            k = (ctx.get_current_key(), t)
            if k not in self.timers:
                self.timers.add(k)
                ts_svc.register_event_time_timer(t)

        def on_timer(self, t, ctx):
            import zscore

            self.timers.discard((ctx.get_current_key(), t))
            lines = list(self.buf.get() or ())
            if not lines:
                return
            users, ts, x = decode_lines(lines)
            due = ts <= t
            if due.all():
                self.buf.clear()
            else:
                self.buf.update([s for s, d in zip(lines, due) if not d])
                users = [u for u, d in zip(users, due) if d]
                ts, x = ts[due], x[due]
            if self.mode == "map":
                def get(distinct):
                    return [zscore.decode_state(map_get(self.users, u)) for u in distinct]

                def put(distinct, n, mean, var):
                    # not put_all: process mode wants (key, value) pairs there, thread mode a dict (PyFlink 2.2)
                    for i, u in enumerate(distinct):
                        self.users.put(u, zscore.encode_state(int(n[i]), float(mean[i]), float(var[i])))
            elif self.mode == "blob":
                b_users, b_n, b_mean, b_var = decode_blob(self.st.value())
                index = {u: i for i, u in enumerate(b_users)}

                def get(distinct):
                    return [(int(b_n[index[u]]), float(b_mean[index[u]]), float(b_var[index[u]])) if u in index
                            else (0, 0.0, 0.0) for u in distinct]

                def put(distinct, n, mean, var):
                    all_users = list(b_users) + [u for u in distinct if u not in index]
                    at = {u: i for i, u in enumerate(all_users)}
                    nn = np.zeros(len(all_users), np.int64)
                    mm = np.zeros(len(all_users))
                    vv = np.zeros(len(all_users))
                    nn[:len(b_users)], mm[:len(b_users)], vv[:len(b_users)] = b_n, b_mean, b_var
                    pos = np.fromiter((at[u] for u in distinct), np.int64, len(distinct))
                    nn[pos], mm[pos], vv[pos] = n, mean, var
                    self.st.update(encode_blob(all_users, nn, mm, vv))
            else:  # keyed: the key is the user, one state
                def get(distinct):
                    return [zscore.decode_state(self.st.value())]

                def put(distinct, n, mean, var):
                    self.st.update(zscore.encode_state(int(n[0]), float(mean[0]), float(var[0])))
            yield from score_grouped(users, ts, x, get, put, self.kernel)

    class NonKeyedBatch(ProcessFunction):
        def __init__(self, batch: int, kernel: str):
            self.batch = batch
            self.kernel = kernel

        def open(self, ctx: RuntimeContext):
            import zscore

            self.lines: list[str] = []
            self.state: dict[str, tuple] = {}
            zscore.score_batch(np.array([0, 1]), np.zeros(1), np.zeros(1, np.int64), np.zeros(1), np.zeros(1),
                               self.kernel)

        def process_element(self, line, ctx):
            self.lines.append(line)
            if len(self.lines) >= self.batch:
                lines, self.lines = self.lines, []
                users, ts, x = decode_lines(lines)

                def get(distinct):
                    return [self.state.get(u, (0, 0.0, 0.0)) for u in distinct]

                def put(distinct, n, mean, var):
                    for i, u in enumerate(distinct):
                        self.state[u] = (int(n[i]), float(mean[i]), float(var[i]))
                yield from score_grouped(users, ts, x, get, put, self.kernel)

    if args.variant == "sqlbatch":
        return build_sqlbatch(args, env, kafka_sink_factory(args), alerts_topic, late_topic)

    if args.variant == "per-event":
        parsed = raw.map(lambda s: (lambda r: (r["user"], r["ts"], r["amount"]))(json.loads(s)),
                         output_type=Types.TUPLE([Types.STRING(), Types.LONG(), Types.DOUBLE()])).uid("parse")
        alerts = (parsed.key_by(lambda e: e[0], key_type=Types.STRING()).process(PerEventZ(), output_type=Types.STRING())
                  .uid("zscore").name("zscore-per-event"))
        late = None
    elif args.variant == "nonkeyed":
        alerts = raw.process(NonKeyedBatch(args.batch, args.kernel), output_type=Types.STRING()).uid("zscore").name("zscore-nonkeyed")
        late = None
    else:
        if args.variant == "keyed":
            keyed = raw.key_by(user_of, key_type=Types.STRING())
            fn = Buffered(args.tick_ms, "keyed", args.kernel, args.state_bytes)
        else:
            buckets = args.buckets
            keyed = raw.key_by(lambda s: bucket_of(s, buckets), key_type=Types.INT())
            fn = Buffered(args.tick_ms, args.bucket_state, args.kernel, args.state_bytes)
        alerts = keyed.process(fn, output_type=Types.STRING()).uid("zscore").name(f"zscore-{args.variant}")
        late = alerts.get_side_output(late_tag)

    kafka_sink = kafka_sink_factory(args)

    prefix = args.txn_prefix or f"vigil-{alerts_topic}"
    alerts.sink_to(kafka_sink(alerts_topic, prefix)).uid("alerts-sink").name("alerts-sink")
    if late is not None:
        late.sink_to(kafka_sink(late_topic, prefix + "-late")).uid("late-sink").name("late-sink")
    return env


def kafka_sink_factory(args):
    from pyflink.common.serialization import SimpleStringSchema
    from pyflink.datastream.connectors.base import DeliveryGuarantee
    from pyflink.datastream.connectors.kafka import KafkaRecordSerializationSchema, KafkaSink

    def kafka_sink(topic: str, prefix: str):
        return (KafkaSink.builder()
                .set_bootstrap_servers(args.bootstrap)
                .set_record_serializer(KafkaRecordSerializationSchema.builder().set_topic(topic)
                                       .set_value_serialization_schema(SimpleStringSchema()).build())
                .set_delivery_guarantee(DeliveryGuarantee.EXACTLY_ONCE)
                .set_transactional_id_prefix(prefix)
                # the broker refuses transactions longer than its transaction.max.timeout.ms (15 min by default);
                # the connector's default (1 h) would fail every transaction
                .set_property("transaction.timeout.ms", str(args.txn_timeout_ms))
                .build())

    return kafka_sink


def build_sqlbatch(args, env, kafka_sink, alerts_topic: str, late_topic: str):
    """Micro-batches made in the JVM: Flink SQL reads Kafka (raw lines + partition/offset/timestamp metadata),
    assigns each record a bucket of users and an event-time tumbling window, and aggregates each (bucket, window)
    into ONE record (LISTAGG of the lines): Python is called once per micro-batch instead of once per event.
    Records behind the watermark (CURRENT_WATERMARK) are selected by a second query: the late output."""
    from pyflink.common import Types
    from pyflink.datastream import KeyedProcessFunction, RuntimeContext
    from pyflink.datastream.state import MapStateDescriptor
    from pyflink.table import StreamTableEnvironment

    t_env = StreamTableEnvironment.create(env)
    t_env.get_config().set("table.exec.source.idle-timeout", f"{args.idleness_ms} ms")
    bounded = "'scan.bounded.mode' = 'latest-offset'," if args.bounded else ""
    t_env.execute_sql(f"""
        CREATE TEMPORARY TABLE src (
          `line` STRING,
          `ts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
          `part` INT METADATA FROM 'partition' VIRTUAL,
          `off` BIGINT METADATA FROM 'offset' VIRTUAL,
          WATERMARK FOR `ts` AS `ts` - INTERVAL '{args.out_of_orderness_ms / 1000:.3f}' SECOND
        ) WITH (
          'connector' = 'kafka', 'topic' = '{args.topic}',
          'properties.bootstrap.servers' = '{args.bootstrap}',
          'properties.group.id' = '{args.group or "vigil-sqlbatch"}',
          'scan.startup.mode' = 'earliest-offset', {bounded}
          'format' = 'raw'
        )""")
    hexd = "'0123456789abcdef'"
    t_env.execute_sql(f"""
        CREATE TEMPORARY VIEW tagged AS
        SELECT line, ts, part, off,
               MOD((POSITION(SUBSTRING(MD5(JSON_VALUE(line, '$.user')), 1, 1) IN {hexd}) - 1) * 16
                   + POSITION(SUBSTRING(MD5(JSON_VALUE(line, '$.user')), 2, 1) IN {hexd}) - 1, {args.buckets})
                 AS bucket,
               CURRENT_WATERMARK(ts) AS wm
        FROM src""")
    batches = t_env.sql_query(f"""
        SELECT bucket, window_end, COUNT(*) AS n,
               LISTAGG(CONCAT(CAST(part AS STRING), ' ', CAST(off AS STRING), ' ', line), '\n') AS body
        FROM TABLE(TUMBLE(TABLE tagged, DESCRIPTOR(ts), INTERVAL '{args.window_ms / 1000:.3f}' SECOND))
        WHERE wm IS NULL OR ts > wm
        GROUP BY bucket, window_start, window_end""")
    late = t_env.sql_query("SELECT line FROM tagged WHERE wm IS NOT NULL AND ts <= wm")

    class ScoreBatch(KeyedProcessFunction):
        """One call per (bucket, window): decode, sort per user by (event time, partition, offset), score."""

        def __init__(self, kernel: str):
            self.kernel = kernel

        def open(self, ctx: RuntimeContext):
            import zscore

            self.users = ctx.get_map_state(MapStateDescriptor("ew", Types.STRING(), Types.PICKLED_BYTE_ARRAY()))
            zscore.score_batch(np.array([0, 1]), np.zeros(1), np.zeros(1, np.int64), np.zeros(1), np.zeros(1),
                               self.kernel)

        def process_element(self, row, ctx):
            import zscore

            body = row[3]
            parts = [ln.split(" ", 2) for ln in body.split("\n")]
            # arrival order = (partition, offset): sort by it first, score_grouped's stable sort keeps it for ties
            parts.sort(key=lambda p3: (int(p3[0]), int(p3[1])))
            users, ts, x = decode_lines([p3[2] for p3 in parts])

            def get(distinct):
                return [zscore.decode_state(map_get(self.users, u)) for u in distinct]

            def put(distinct, n, mean, var):
                for i, u in enumerate(distinct):
                    self.users.put(u, zscore.encode_state(int(n[i]), float(mean[i]), float(var[i])))
            yield from score_grouped(users, ts, x, get, put, self.kernel)

    rows = t_env.to_data_stream(batches)
    alerts = (rows.key_by(lambda r: r[0], key_type=Types.INT())
              .process(ScoreBatch(args.kernel), output_type=Types.STRING()).uid("zscore").name("zscore-sqlbatch"))
    late_lines = t_env.to_data_stream(late).map(lambda r: r[0], output_type=Types.STRING()).uid("late-lines")
    prefix = args.txn_prefix or f"vigil-{alerts_topic}"
    alerts.sink_to(kafka_sink(alerts_topic, prefix)).uid("alerts-sink").name("alerts-sink")
    late_lines.sink_to(kafka_sink(late_topic, prefix + "-late")).uid("late-sink").name("late-sink")
    return env


def main(argv=None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    env = build(args)
    env.execute(args.name or f"vigil-zscore-{args.variant}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

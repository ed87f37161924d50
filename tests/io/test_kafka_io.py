"""Kafka source and sinks against the real local broker (deploy/kafka/kafka.sh; fixtures in conftest.py)."""

from __future__ import annotations

import base64
import collections
import json
import os
import time
import uuid

import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, Producer

from vigil.errors import ConfigError, SinkError, SourceError
from vigil.io.kafka import KafkaAlertSink, KafkaSource, TransactionAborted, parse_kafka_url, produce_records
from vigil.io.schema import Schema
from vigil.testing.sources import check_source
from vigil.types import Alert, alert_id

pytestmark = pytest.mark.kafka

SCHEMA = Schema("user", "ts", fields=("amount",))
T0 = 1_700_000_000_000


def _rows(lo: int, hi: int) -> list[dict]:
    return [{"user": f"u{i % 97}", "ts": T0 + i, "amount": round(i * 0.25, 2)} for i in range(lo, hi)]


def _group() -> str:
    return f"vigil-test-{uuid.uuid4().hex[:10]}"


def _read_to_end(reader, max_items: int = 5000, timeout_s: float = 20.0) -> list:
    """Read a stop_at_end reader until at_end; returns the non-empty Records."""
    out = []
    deadline = time.monotonic() + timeout_s
    while not reader.at_end:
        assert time.monotonic() < deadline, f"not at_end after {timeout_s} s; position {reader.position()}"
        recs = reader.read_batch(max_items, 100)
        if recs is not None and (len(recs) or recs.dead):
            out.append(recs)
    return out


def _read_n(reader, n: int, max_items: int = 1000, timeout_s: float = 10.0) -> list:
    out, got = [], 0
    deadline = time.monotonic() + timeout_s
    while got < n:
        assert time.monotonic() < deadline, f"read {got} of {n} records in {timeout_s} s"
        recs = reader.read_batch(min(max_items, n - got), 100)
        if recs is not None and len(recs):
            out.append(recs)
            got += len(recs)
    return out


def _cat(batches: list, name: str) -> np.ndarray:
    if name == "keys":
        return np.concatenate([b.keys for b in batches])
    if name == "ts_ms":
        return np.concatenate([b.ts_ms for b in batches])
    if name in ("_partition", "_offset"):
        return np.concatenate([b.extra[name] for b in batches])
    return np.concatenate([b.cols[name] for b in batches])


def _consume_all(bootstrap: str, topic: str, isolation: str = "read_committed", timeout_s: float = 10.0) -> list:
    """Every message of a topic (a plain consumer, independent of the code under test)."""
    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": _group(), "auto.offset.reset": "earliest",
        "enable.auto.commit": False, "enable.partition.eof": True, "isolation.level": isolation,
    })
    try:
        parts = len(c.list_topics(topic, timeout=10).topics[topic].partitions)
        c.subscribe([topic])
        eof: set[int] = set()
        out = []
        deadline = time.monotonic() + timeout_s
        while len(eof) < parts:
            assert time.monotonic() < deadline, f"{topic}: no end of partitions after {timeout_s} s"
            m = c.poll(0.2)
            if m is None:
                continue
            if m.error():
                if m.error().code() == KafkaError._PARTITION_EOF:
                    eof.add(m.partition())
                continue
            eof.discard(m.partition())
            out.append(m)
        return out
    finally:
        c.close()


def _alerts(n: int, prefix: str = "e") -> list[Alert]:
    return [
        Alert(alert_id("fraud", "amount_z", f"u{i % 3}", f"{prefix}{i}"), f"u{i % 3}", f"{prefix}{i}", "amount_z",
              5.0 + i, 4.0, T0 + i, T0 + i + 100, stats={"n": 10 + i}, event_ids=[f"{prefix}{i}"])
        for i in range(n)
    ]


# -- URLs --------------------------------------------------------------------------------------------


def test_parse_kafka_url():
    assert parse_kafka_url("kafka://127.0.0.1:9092/transactions") == ("127.0.0.1:9092", "transactions")
    assert parse_kafka_url("kafka://a:1,b/t-1") == ("a:1,b:9092", "t-1")
    for bad in ("http://x:9092/t", "kafka://x:9092", "kafka:///t", "kafka://x:9092/a/b", "kafka://x:99999/t",
                "kafka://x:9092/t?group=g"):
        with pytest.raises(ConfigError, match="`url`"):
            parse_kafka_url(bad)


# -- source ------------------------------------------------------------------------------------------


def test_round_trip_20k_records(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=3)
    rows = _rows(0, 20_000)
    assert produce_records(kafka_bootstrap, topic, rows) == 20_000
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), stop_at_end=True)
    assert src.partitions() == ["kafka"]
    reader = src.open("kafka")
    try:
        assert reader.position() == {"0": 0, "1": 0, "2": 0}
        batches = _read_to_end(reader, max_items=3000)
        assert all(len(b) <= 3000 and not b.dead for b in batches)
        keys, ts, amount = _cat(batches, "keys"), _cat(batches, "ts_ms"), _cat(batches, "amount")
        part, off = _cat(batches, "_partition"), _cat(batches, "_offset")
        assert len(keys) == 20_000 and part.dtype == np.int64 and off.dtype == np.int64
        got = sorted(zip(ts.tolist(), keys.tolist(), amount.tolist(), strict=True))
        assert got == [(r["ts"], r["user"], r["amount"]) for r in rows]  # rows are sorted by ts already
        # keyed by user: one user, one partition; offsets 0..n-1 in order within each partition
        by_user = {}
        for k, p in zip(keys.tolist(), part.tolist(), strict=True):
            assert by_user.setdefault(k, p) == p
        counts = {}
        for p in (0, 1, 2):
            offs = off[part == p]
            assert offs.tolist() == list(range(len(offs)))
            counts[str(p)] = len(offs)
        assert sum(counts.values()) == 20_000 and min(counts.values()) > 0
        assert reader.position() == counts
        assert reader.lag() == {"0": 0, "1": 0, "2": 0}
        assert reader.read_batch(100, 10) is None  # at end
    finally:
        reader.close()
        reader.close()


def test_resume_gives_exactly_the_remainder(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=3)
    produce_records(kafka_bootstrap, topic, _rows(0, 3000))
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), stop_at_end=True)
    first = src.open("kafka")
    head = _read_n(first, 1234, max_items=200)
    pos = json.loads(json.dumps(first.position()))  # as a checkpoint stores it
    assert pos == first.position() and sum(pos.values()) == 1234
    first.close()
    rest = src.open("kafka", resume=pos)
    assert rest.position() == pos
    tail = _read_to_end(rest)
    rest.close()
    seen = list(zip(_cat(head + tail, "_partition").tolist(), _cat(head + tail, "_offset").tolist(), strict=True))
    assert len(seen) == len(set(seen)) == 3000  # no duplicate, no gap
    assert sorted(_cat(head + tail, "ts_ms").tolist()) == [T0 + i for i in range(3000)]
    for p, start in pos.items():  # the tail starts exactly where the head stopped
        tail_offs = _cat(tail, "_offset")[_cat(tail, "_partition") == int(p)]
        assert len(tail_offs) == 0 or tail_offs.min() == start


def test_group_commit_is_the_default_start(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=3)
    produce_records(kafka_bootstrap, topic, _rows(0, 900))
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), stop_at_end=True)
    r = src.open("kafka")
    _read_n(r, 500, max_items=100)
    r.commit()  # at-least-once mode: synchronous commit of the returned positions
    assert r.committed_offsets() == r.position()
    pos = r.position()
    r.close()
    r2 = src.open("kafka")  # no resume: the group's committed offsets
    assert r2.position() == pos
    assert sum(len(b) for b in _read_to_end(r2)) == 400
    r2.close()


def test_conformance_check_source(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=1)  # one partition: a total order, as check_source compares sequences
    values = [orjson.dumps(r) for r in _rows(0, 300)]
    values[17] = b'{"user":"u1","ts":'  # broken JSON
    values[150] = b'{"user":"u2","ts":1700000000000}'  # missing field
    produce_records(kafka_bootstrap, topic, values)
    totals = check_source(
        lambda: KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), stop_at_end=True), cuts=4
    )
    assert totals["records"] == 298 and totals["dead"] == 2


def test_bad_messages_go_to_dead_letters_and_topic(kafka_bootstrap, kafka_topic):
    topic, dlq = kafka_topic(partitions=3), kafka_topic(partitions=1)
    bad = {  # value -> its reason code
        b'{"user":"u1","ts":17000': "invalid_json",
        b'{"user":"u1","ts":1700000000000,"amount":NaN}': "invalid_json",
        b'{"user":"u1","ts":1700000000000,"amount":1e999}': "not_finite",
        b'{"user":"u1","ts":1700000000000}': "missing_field",
        b'{"user":"\xff\xfe","ts":1700000000000,"amount":1}': "invalid_utf8",
        b'{"user":"u1","ts":1700000000,"amount":1}': "absurd_timestamp",
        b"": "empty_value",
    }
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i, r in enumerate(_rows(0, 50)):
        p.produce(topic, orjson.dumps(r), key=r["user"].encode())
        if i % 7 == 0:
            for value in bad:
                p.produce(topic, value, key=b"bad")
    p.produce(topic, None, key=b"tombstone")
    assert p.flush(10) == 0
    n_bad = 8 * len(bad) + 1
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), stop_at_end=True, dead_letter_topic=dlq)
    reader = src.open("kafka")
    batches = _read_to_end(reader, max_items=40)
    reader.flush_dead_letters()
    reader.close()
    assert sum(len(b) for b in batches) == 50
    dead = [d for b in batches for d in b.dead]
    assert len(dead) == n_bad
    codes = collections.Counter(d.reason for d in dead)
    assert codes == {**{code: 8 for code in bad.values()}, "invalid_json": 16, "empty_value": 9}, codes
    assert all(d.source == f"kafka:{topic}" and set(d.position) == {"partition", "offset"} for d in dead)
    assert sum(len(b) for b in batches) + n_bad == sum(reader.position().values())
    # the dead-letter topic holds the original bytes, with the reason and the origin in headers
    msgs = _consume_all(kafka_bootstrap, dlq)
    assert len(msgs) == n_bad
    by_pos = {(d.position["partition"], d.position["offset"]): d for d in dead}
    for m in msgs:
        h = {k: v.decode() for k, v in m.headers()}
        assert h["vigil.source.topic"] == topic
        d = by_pos[(int(h["vigil.source.partition"]), int(h["vigil.source.offset"]))]
        assert h["vigil.reason"] == d.reason and h["vigil.message"] == d.message
        assert (m.value() or b"") in (*bad, b"")
    assert {m.value() for m in msgs if m.key() == b"bad"} == set(bad)


def test_a_message_over_the_size_cap_is_a_too_large_dead_letter(kafka_bootstrap, kafka_topic):
    topic, dlq = kafka_topic(partitions=1), kafka_topic(partitions=1)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    rows = _rows(0, 4)
    big = orjson.dumps({**rows[1], "pad": "x" * 5000})
    for i, r in enumerate(rows):
        p.produce(topic, big if i == 1 else orjson.dumps(r), key=b"k")
    assert p.flush(10) == 0
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), stop_at_end=True, dead_letter_topic=dlq,
                      max_record_bytes=4096)
    reader = src.open("kafka")
    batches = _read_to_end(reader)
    reader.flush_dead_letters()
    reader.close()
    assert _cat(batches, "keys").tolist() == [rows[0]["user"], rows[2]["user"], rows[3]["user"]]
    (dead,) = [d for b in batches for d in b.dead]
    assert dead.reason == "too_large" and dead.position == {"partition": 0, "offset": 1}
    assert dead.message == f"a message value of {len(big):,} bytes, over the source's max_record_bytes (4,096); " \
                           "its start is kept here"
    (m,) = _consume_all(kafka_bootstrap, dlq)
    assert m.value() == big[:4096] and dict(m.headers())["vigil.reason"] == b"too_large"
    with pytest.raises(ConfigError, match="max_record_bytes"):
        KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group(), max_record_bytes=10)


def test_event_time_from_kafka_timestamp(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=3)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(300):
        # no `ts` field; an "@timestamp" string field in the JSON is ignored, not mistaken for the time
        p.produce(topic, orjson.dumps({"user": f"u{i % 5}", "amount": i, "@timestamp": "x"}),
                  key=f"u{i % 5}".encode(), timestamp=T0 + 1000 * i)
    p.produce(topic, b'{"user":"u1","amount":1}', timestamp=42)  # absurd record time -> dead letter
    assert p.flush(10) == 0
    schema = Schema(key="user", time="@timestamp", fields=("amount",))
    reader = KafkaSource(kafka_bootstrap, topic, schema, group_id=_group(), stop_at_end=True).open("kafka")
    batches = _read_to_end(reader, max_items=64)
    reader.close()
    ts, amount = _cat(batches, "ts_ms"), _cat(batches, "amount")
    assert len(ts) == 300
    assert (ts == T0 + 1000 * amount.astype(np.int64)).all()
    dead = [d for b in batches for d in b.dead]
    assert len(dead) == 1 and dead[0].reason == "absurd_timestamp" and "`@timestamp` 42 is absurd" in dead[0].message


def test_pause_stops_delivery_and_resume_restarts_it(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=3)
    produce_records(kafka_bootstrap, topic, _rows(0, 600))
    reader = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=_group()).open("kafka")
    try:
        head = _read_n(reader, 300, max_items=100)  # the client has prefetched the rest by now
        produce_records(kafka_bootstrap, topic, _rows(600, 1000))
        reader.pause()
        assert reader.paused
        pos = reader.position()
        for _ in range(8):
            recs = reader.read_batch(1000, 100)
            assert recs is None or len(recs) == 0
        assert reader.position() == pos and not reader.at_end
        reader.resume()
        rest = _read_n(reader, 700)
        assert sorted(_cat(head + rest, "ts_ms").tolist()) == [T0 + i for i in range(1000)]
        assert sum(reader.position().values()) == 1000
    finally:
        reader.close()


def test_source_errors_are_clear(kafka_bootstrap):
    with pytest.raises(ConfigError, match="group_id"):
        KafkaSource(kafka_bootstrap, "t", SCHEMA, group_id="")
    with pytest.raises(ConfigError, match="_partition"):
        KafkaSource(kafka_bootstrap, "t", Schema("user", "ts", extra=("_partition",)), group_id="g")
    src = KafkaSource(kafka_bootstrap, f"vigil-test.missing.{uuid.uuid4().hex[:8]}", SCHEMA, group_id="g",
                      open_timeout_s=5)
    with pytest.raises(SourceError, match="create it first"):
        src.open("kafka")
    with pytest.raises(SourceError, match="resume"):
        src.open("kafka", resume={"0": -3})
    with pytest.raises(SourceError, match="one partition"):
        src.open("0")


# -- sinks -------------------------------------------------------------------------------------------


def test_alert_sink_keyed_by_entity(kafka_bootstrap, kafka_topic):
    from vigil.testing.sources import check_sink

    topic = kafka_topic(partitions=3)
    alerts = _alerts(12)

    def read_back(_sink):
        return [orjson.loads(m.value()) for m in sorted(_consume_all(kafka_bootstrap, topic),
                                                        key=lambda m: orjson.loads(m.value())["event_ts_ms"])]

    check_sink(lambda: KafkaAlertSink(kafka_bootstrap, topic), items=alerts, read_back=read_back)
    msgs = _consume_all(kafka_bootstrap, topic)
    parts = {}
    for m in msgs:
        body = orjson.loads(m.value())
        assert m.key().decode() == body["key"]
        assert dict(m.headers())["vigil.alert_id"].decode() == body["id"]
        assert parts.setdefault(body["key"], m.partition()) == m.partition()  # one entity, one partition


def test_transactions_commit_abort_and_offsets(kafka_bootstrap, kafka_topic):
    src_topic, out = kafka_topic(partitions=3), kafka_topic(partitions=3)
    produce_records(kafka_bootstrap, src_topic, _rows(0, 300))
    group = _group()
    reader = KafkaSource(kafka_bootstrap, src_topic, SCHEMA, group_id=group, stop_at_end=True).open("kafka")
    sink = KafkaAlertSink(kafka_bootstrap, out, transactional_id=f"vigil-test-{uuid.uuid4().hex[:8]}")
    try:
        _read_n(reader, 120, max_items=60)
        sink.write_batch(_alerts(5, "ok"))  # opens the transaction
        assert sink.in_transaction
        pos = reader.position()
        sink.commit(pos, src_topic, reader.consumer_group_metadata())
        assert not sink.in_transaction
        assert reader.committed_offsets() == pos  # the transaction committed the source offsets
        sink.begin()
        sink.write_batch(_alerts(4, "no"))
        sink.flush()  # delivered to the log, but only inside the transaction
        sink.abort()
        committed = [orjson.loads(m.value())["event_id"] for m in _consume_all(kafka_bootstrap, out)]
        assert sorted(committed) == [f"ok{i}" for i in range(5)]
        everything = _consume_all(kafka_bootstrap, out, isolation="read_uncommitted")
        assert len(everything) == 9  # the aborted alerts were written, and are invisible to read_committed
        # a fresh reader of the group starts where the transaction left it
        r2 = KafkaSource(kafka_bootstrap, src_topic, SCHEMA, group_id=group, stop_at_end=True).open("kafka")
        assert r2.position() == pos
        r2.close()
    finally:
        reader.close()
        sink.close()


def test_transaction_that_cannot_commit_is_aborted(kafka_bootstrap, kafka_topic):
    out = kafka_topic(partitions=1, config={"max.message.bytes": "1024"})
    sink = KafkaAlertSink(kafka_bootstrap, out, transactional_id=f"vigil-test-{uuid.uuid4().hex[:8]}",
                          commit_timeout_s=20)
    try:
        big = {"id": "big", "key": "u1", "blob": base64.b64encode(os.urandom(6000)).decode()}  # incompressible
        sink.write_batch([big])
        with pytest.raises(TransactionAborted):
            sink.commit()
        assert not sink.in_transaction
        sink.write_batch([{"id": "small", "key": "u1"}])  # the sink is usable again after the abort
        sink.commit()
        assert [orjson.loads(m.value())["id"] for m in _consume_all(kafka_bootstrap, out)] == ["small"]
    finally:
        sink.close()
    with pytest.raises(SinkError):
        sink.write_batch([{"id": "late", "key": "u1"}])


def test_produce_records_lines_rate_and_progress(kafka_bootstrap, kafka_topic):
    topic = kafka_topic(partitions=3)
    lines = [orjson.dumps(r) for r in _rows(0, 200)]
    seen = []
    t0 = time.monotonic()
    n = produce_records(kafka_bootstrap, topic, lines, rate=2000, progress=seen.append, timestamp_field="ts")
    assert n == 200 and seen[-1] == 200
    assert time.monotonic() - t0 >= 0.09  # paced: 200 events at 2000/s take 0.1 s
    msgs = _consume_all(kafka_bootstrap, topic)
    assert len(msgs) == 200
    for m in msgs:
        body = orjson.loads(m.value())
        assert m.key().decode() == body["user"] and m.timestamp()[1] == body["ts"]


def test_fenced_sink_fails_instead_of_writing_twice(kafka_bootstrap, kafka_topic):
    out = kafka_topic(partitions=1)
    txn_id = f"vigil-test-{uuid.uuid4().hex[:8]}"
    old = KafkaAlertSink(kafka_bootstrap, out, transactional_id=txn_id, commit_timeout_s=10)
    old.write_batch([{"id": "old", "key": "u1"}])
    new = KafkaAlertSink(kafka_bootstrap, out, transactional_id=txn_id, commit_timeout_s=10)
    new.write_batch([{"id": "new", "key": "u1"}])  # init_transactions fences `old` and aborts its transaction
    new.commit()
    with pytest.raises(SinkError):
        old.commit()
    new.close()
    assert [orjson.loads(m.value())["id"] for m in _consume_all(kafka_bootstrap, out)] == ["new"]


@pytest.mark.slow
def test_broker_restart_reader_continues_and_commit_waits(kafka_bootstrap, kafka_topic, kafka_broker):
    import threading

    if not kafka_broker.managed:
        pytest.skip("needs the local broker (stops and starts it)")
    src_topic, out = kafka_topic(partitions=3), kafka_topic(partitions=3)
    produce_records(kafka_bootstrap, src_topic, _rows(0, 2000))
    group = _group()
    reader = KafkaSource(kafka_bootstrap, src_topic, SCHEMA, group_id=group, stop_at_end=True).open("kafka")
    sink = KafkaAlertSink(kafka_bootstrap, out, transactional_id=f"vigil-test-{uuid.uuid4().hex[:8]}",
                          commit_timeout_s=180)
    batches = _read_n(reader, 1000, max_items=100)
    pos = reader.position()
    sink.write_batch(_alerts(3))
    sink.flush()
    kafka_broker.stop()
    for _ in range(5):  # broker down: reads return what is prefetched or nothing, never raise
        recs = reader.read_batch(100, 50)
        if recs is not None and len(recs):
            batches.append(recs)
    restart = threading.Timer(2.0, kafka_broker.start)
    restart.start()
    t0 = time.monotonic()
    sink.commit(pos, src_topic, reader.consumer_group_metadata())  # waits for the broker instead of failing
    restart.join()
    assert time.monotonic() - t0 >= 1.5
    batches += _read_to_end(reader, timeout_s=60)
    seen = list(zip(_cat(batches, "_partition").tolist(), _cat(batches, "_offset").tolist(), strict=True))
    assert len(seen) == len(set(seen)) == 2000
    assert reader.committed_offsets() == pos
    reader.close()
    sink.close()
    assert len(_consume_all(kafka_bootstrap, out)) == 3

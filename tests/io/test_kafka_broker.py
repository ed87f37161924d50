"""The local Apache Kafka broker (deploy/kafka/kafka.sh) works as the engine's tests need it to.

Real broker, real client (confluent-kafka): produce/consume, transactions seen through
read_committed, and a stop/start of the broker that keeps topics, messages and committed offsets.
"""

from __future__ import annotations

import time
import uuid
from collections import defaultdict

import pytest

confluent_kafka = pytest.importorskip("confluent_kafka")
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition  # noqa: E402

pytestmark = pytest.mark.kafka


def _producer(bootstrap: str, **extra) -> Producer:
    return Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5, **extra}
    )


def _consumer(bootstrap: str, group: str | None = None, isolation: str = "read_committed", **extra) -> Consumer:
    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group or f"vigil-test-{uuid.uuid4().hex[:10]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": isolation,
            **extra,
        }
    )


def _produce(producer: Producer, topic: str, values: list[str], keyed: bool = True) -> None:
    errors: list[object] = []

    def on_delivery(err, _msg) -> None:
        if err is not None:
            errors.append(err)

    for i, v in enumerate(values):
        producer.produce(topic, key=f"k{i % 7}" if keyed else None, value=v.encode(), on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0, "messages still in flight after 30 s"
    assert not errors, errors


def _consume(consumer: Consumer, topic: str, count: int, timeout: float = 60.0, until: str | None = None) -> list:
    """Poll until `count` messages arrived (or the one whose value is `until`)."""
    consumer.subscribe([topic])
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(got) < count:
        msg = consumer.poll(0.5)
        if msg is None:
            continue
        if msg.error():
            if msg.error().code() == KafkaError._PARTITION_EOF:
                continue
            raise AssertionError(f"consume error: {msg.error()}")
        got.append(msg)
        if until is not None and msg.value().decode() == until:
            break
    return got


def test_produce_and_consume_1000_messages(kafka_bootstrap, kafka_topic) -> None:
    topic = kafka_topic(partitions=3)
    values = [f"m{i:04d}" for i in range(1000)]
    _produce(_producer(kafka_bootstrap), topic, values)

    consumer = _consumer(kafka_bootstrap)
    try:
        got = _consume(consumer, topic, len(values))
    finally:
        consumer.close()

    assert sorted(m.value().decode() for m in got) == values
    assert {m.partition() for m in got} == {0, 1, 2}
    # per key, order is kept (one key -> one partition)
    by_key: dict[bytes, list[str]] = defaultdict(list)
    for m in got:
        by_key[m.key()].append(m.value().decode())
    for seq in by_key.values():
        assert seq == sorted(seq)


def test_transaction_commit_and_abort(kafka_bootstrap, kafka_topic) -> None:
    topic = kafka_topic(partitions=1)  # one partition: "after-4" is read after everything before it
    producer = _producer(kafka_bootstrap, **{"transactional.id": f"vigil-test-tx-{uuid.uuid4().hex[:10]}"})
    producer.init_transactions(30)

    producer.begin_transaction()
    _produce(producer, topic, [f"committed-{i}" for i in range(10)])
    producer.commit_transaction(30)

    producer.begin_transaction()
    _produce(producer, topic, [f"aborted-{i}" for i in range(10)])
    producer.abort_transaction(30)

    producer.begin_transaction()
    _produce(producer, topic, [f"after-{i}" for i in range(5)])
    producer.commit_transaction(30)

    committed = _consumer(kafka_bootstrap, isolation="read_committed")
    try:
        seen = [m.value().decode() for m in _consume(committed, topic, 25, until="after-4")]
    finally:
        committed.close()
    assert seen == [f"committed-{i}" for i in range(10)] + [f"after-{i}" for i in range(5)]

    # the aborted records were really written: read_uncommitted sees them
    uncommitted = _consumer(kafka_bootstrap, isolation="read_uncommitted")
    try:
        raw = [m.value().decode() for m in _consume(uncommitted, topic, 25, until="after-4")]
    finally:
        uncommitted.close()
    assert raw == [f"committed-{i}" for i in range(10)] + [f"aborted-{i}" for i in range(10)] + [
        f"after-{i}" for i in range(5)
    ]


def test_broker_stop_start_keeps_topics_messages_and_offsets(kafka_broker, kafka_topic) -> None:
    bootstrap = kafka_broker.bootstrap
    topic = kafka_topic(partitions=3)
    values = [f"v{i:03d}" for i in range(100)]
    _produce(_producer(bootstrap), topic, values)

    # a group reads the first 40 and commits them
    group = f"vigil-test-restart-{uuid.uuid4().hex[:10]}"
    first = _consumer(bootstrap, group=group)
    try:
        part1 = _consume(first, topic, 40)
        assert len(part1) == 40
        first.commit(asynchronous=False)
    finally:
        first.close()

    kafka_broker.stop()
    assert not kafka_broker.is_up(timeout=2)
    t0 = time.monotonic()
    kafka_broker.start()
    restart_s = time.monotonic() - t0
    assert kafka_broker.is_up()
    assert restart_s < 60, f"broker took {restart_s:.1f}s to come back"

    # the topic is still there with its partitions
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic=topic, timeout=10).topics[topic]
    assert md.error is None and len(md.partitions) == 3

    # all messages are still there
    fresh = _consumer(bootstrap)
    try:
        everything = _consume(fresh, topic, len(values))
    finally:
        fresh.close()
    assert sorted(m.value().decode() for m in everything) == values

    # the group's committed offsets survived: it resumes after the first 40
    resumed = _consumer(bootstrap, group=group)
    try:
        committed = resumed.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert sum(tp.offset for tp in committed if tp.offset >= 0) == 40
        part2 = _consume(resumed, topic, 60)
    finally:
        resumed.close()
    assert sorted(m.value().decode() for m in part1 + part2) == values

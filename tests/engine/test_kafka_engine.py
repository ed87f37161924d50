"""The engine over a real Kafka topic: per-partition watermarks and backpressure by pausing partitions."""

import json
import time

import pytest
from confluent_kafka import Producer

from vigil.dataflow.pipeline import Pipeline
from vigil.detectors import VelocityRule
from vigil.engine.runner import EmbeddedRunner
from vigil.io.kafka_source import KafkaSource
from vigil.io.schema import Schema
from vigil.io.sinks import MemorySink

pytestmark = pytest.mark.kafka
SCHEMA = Schema("key", "ts", fields=("v",))


def _produce(bootstrap, topic, n, keys=30, partition_skew=False):
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 10})
    base = 1_767_225_600_000
    for i in range(n):
        k = i % keys
        rec = {"key": f"k{k}", "ts": base + i * 10, "v": 1.0}
        p.produce(topic, json.dumps(rec).encode(), key=f"k{k}".encode(), partition=k % 3)
        if i % 10_000 == 0:
            p.poll(0)
    assert p.flush(30) == 0


class SlowSink(MemorySink):
    def write_batch(self, items):
        time.sleep(0.1)
        super().write_batch(items)


class Echo:
    def process(self, event, ctx):
        yield {"key": ctx.key}

    def on_timer(self, ts, ctx):
        return ()


def test_slow_sink_pauses_the_kafka_partitions(kafka_bootstrap, kafka_topic, tmp_path):
    topic = kafka_topic(3)
    _produce(kafka_bootstrap, topic, 30_000)
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=f"bp-{topic}", stop_at_end=True)
    sink = SlowSink()
    p = (Pipeline("bp").source(src).micro_batches(max_rows=500, queue_batches=1).process("echo", Echo(), to=sink))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert st.events == 30_000 and len(sink.items) == 30_000
    assert st.source_pauses > 0  # the source was paused while the engine was behind, then resumed


@pytest.mark.parametrize("idle_timeout", ["5s", "1ms"])
def test_every_partition_has_its_own_watermark(kafka_bootstrap, kafka_topic, tmp_path, idle_timeout):
    """Partitions read at different speeds: nothing is late, because the stream's watermark is their minimum.

    With a 1 ms idle timeout too: a partition that still has unread records (no end-of-partition
    since its last record) is behind, never idle, however long its next fetch takes.
    """
    topic = kafka_topic(3)
    _produce(kafka_bootstrap, topic, 60_000)
    late = MemorySink()
    src = KafkaSource(kafka_bootstrap, topic, SCHEMA, group_id=f"wm-{topic}", stop_at_end=True)
    p = (Pipeline("wm").source(src).watermark("1s", idle_timeout=idle_timeout).micro_batches(max_rows=700)
         .detect("v", VelocityRule(window="10s", max_count=10_000)).alerts_to(MemorySink()).late_to(late))
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    st = runner.run()
    assert st.events == 60_000 and st.late_events == 0 and not late.items
    assert sorted(runner.watermarks.partitions) == ["kafka:0", "kafka:1", "kafka:2"]

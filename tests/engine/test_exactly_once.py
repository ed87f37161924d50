"""Exactly-once over a real Kafka broker: SIGKILLed workers and a restarted broker change nothing.

The Flink way: a generator writes a numbered sequence per key; the pipeline runs from Kafka to Kafka
with `delivery: exactly-once`; the worker is killed with SIGKILL mid-stream and restarted; a checker reads
the output topics `read_committed` and compares with an uninterrupted run on the same input: the same
alerts (none lost, none duplicated) and the same per-key window counts.

Nothing is paced by the clock: a worker is killed once its own checkpoints say it has read past a given share
of the input, and the workers that are to be killed run without ``--until-end``, so they can't finish first.
"""

import json
import signal
import subprocess
import sys
import time
from collections import Counter

import numpy as np
import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.kafka

KEYS = 60
PER_KEY = 10_000


def _produce_input(bootstrap, topic):
    """A numbered sequence per key, with deterministic spikes; keyed by key so each key stays in order."""
    rng = np.random.default_rng(11)
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "enable.idempotence": True})
    base = 1_767_225_600_000
    n = 0
    for seq in range(PER_KEY):
        for k in range(KEYS):
            value = 50.0 + 5.0 * float(rng.standard_normal())
            if seq > 30 and (seq * 7 + k) % 211 == 0:
                value += 80.0
            rec = {"key": f"k{k:03d}", "seq": seq, "ts": base + seq * 1000 + k, "value": round(value, 4)}
            while True:
                try:
                    p.produce(topic, json.dumps(rec).encode(), key=rec["key"].encode())
                    break
                except BufferError:
                    p.poll(0.05)
            n += 1
        p.poll(0)
    assert p.flush(60) == 0
    return n


def _pipeline(tmp_path, name, bootstrap, topic_in, out_alerts, out_counts, group, state):
    f = tmp_path / f"{name}-{group}.yaml"
    f.write_text(f"""
name: eos
source:
  kind: kafka
  url: kafka://{bootstrap}/{topic_in}
  group_id: {group}
  schema: {{key: key, time: ts, fields: [value], extra: [seq]}}
event_time: {{max_delay: 10s, idle_timeout: 60s}}
event_ids: seq
delivery: exactly-once
checkpoints: {{dir: {state}, interval: 200ms}}
batching: {{max_rows: 2000}}
steps:
  - {{name: z, detector: sliding_zscore, params: {{field: value, window: 60s, threshold: 5, min_count: 20,
                                                  baseline_halflife: null}}}}
  - {{name: per_key_10s, window: {{kind: tumbling, size: 10s}}, field: value,
      to: {{kind: kafka, url: kafka://{bootstrap}/{out_counts}}}}}
alerts: [{{kind: kafka, url: kafka://{bootstrap}/{out_alerts}}}]
""")
    return f


def _start(pipe, tmp_path, until_end=True):
    args = [sys.executable, "-m", "vigil.cli.main", "run", str(pipe), "--quiet", "--out", str(tmp_path / "out")]
    return subprocess.Popen([*args, "--until-end"] if until_end else args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)


def _read_all(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"check-{topic}", "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed", "enable.partition.eof": True, "enable.auto.commit": False})
    c.subscribe([topic])
    out, eof, parts = [], set(), None
    deadline = time.time() + 60
    while time.time() < deadline:
        msg = c.poll(0.5)
        if parts is None:
            md = c.list_topics(topic, timeout=10)
            parts = len(md.topics[topic].partitions)
        if msg is None:
            if len(eof) >= parts:
                break
            continue
        if msg.error():
            if msg.error().code() == -191:  # partition EOF
                eof.add(msg.partition())
            continue
        eof.discard(msg.partition())
        out.append(json.loads(msg.value()))
    c.close()
    return out


def _summary(bootstrap, alerts_topic, counts_topic):
    alerts = _read_all(bootstrap, alerts_topic)
    counts = _read_all(bootstrap, counts_topic)
    ids = Counter(a["id"] for a in alerts)
    windows = Counter((w["key"], w["start_ms"], w["count"], round(w["sum"], 6)) for w in counts)
    per_key = Counter()
    for w in counts:
        per_key[w["key"]] += w["count"]
    return ids, windows, per_key


@pytest.fixture(scope="module")
def uninterrupted(kafka_bootstrap, tmp_path_factory):
    from confluent_kafka.admin import AdminClient, NewTopic

    tmp = tmp_path_factory.mktemp("eos")
    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    run_id = str(int(time.time() * 1000))
    topic_in = f"eos-in-{run_id}"
    outs = (f"eos-alerts-clean-{run_id}", f"eos-counts-clean-{run_id}")
    for t in (topic_in, *outs):
        admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])[t].result(30)
    n = _produce_input(kafka_bootstrap, topic_in)
    pipe = _pipeline(tmp, "clean", kafka_bootstrap, topic_in, *outs, group=f"clean-{run_id}", state=tmp / "clean")
    proc = _start(pipe, tmp)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    ids, windows, per_key = _summary(kafka_bootstrap, *outs)
    assert len(ids) > 100 and max(ids.values()) == 1
    assert sum(per_key.values()) == n == KEYS * PER_KEY
    return {"topic_in": topic_in, "run_id": run_id, "ids": ids, "windows": windows, "per_key": per_key, "tmp": tmp}


def _fresh_outputs(kafka_bootstrap, label, run_id):
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
    outs = (f"eos-alerts-{label}-{run_id}", f"eos-counts-{label}-{run_id}")
    for t in outs:
        admin.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])[t].result(30)
    return outs


def _checkpointed_records(state_dir):
    """Records read up to the newest readable checkpoint (the sum of its Kafka positions), 0 before the first."""
    from vigil.state.checkpoint import CheckpointStore

    best = 0
    for d in {p.parent for p in state_dir.rglob("chk-*.vck")}:
        loaded = CheckpointStore(d).load_latest()
        if loaded is not None and loaded.seq >= 0:
            best = max(best, sum(v for pos in loaded.state["positions"].values() for v in pos.values()))
    return best


def _wait_until_read(state_dir, records, proc, timeout_s=300.0):
    """Block until the worker's checkpoints cover ``records`` input records (the timeout only guards a hang)."""
    deadline = time.monotonic() + timeout_s
    while _checkpointed_records(state_dir) < records:
        assert proc.poll() is None, f"the worker stopped on its own:\n{proc.stderr.read().decode()[-3000:]}"
        assert time.monotonic() < deadline, f"no checkpoint past {records} records in {timeout_s:.0f} s"
        time.sleep(0.01)


def test_sigkill_three_times_gives_exactly_the_uninterrupted_output(kafka_bootstrap, uninterrupted, tmp_path):
    u = uninterrupted
    outs = _fresh_outputs(kafka_bootstrap, "killed", u["run_id"])
    pipe = _pipeline(tmp_path, "killed", kafka_bootstrap, u["topic_in"], *outs, group=f"killed-{u['run_id']}",
                     state=tmp_path / "state")
    total = KEYS * PER_KEY
    for share in (0.2, 0.45, 0.7):  # each worker is killed once its checkpoints cover this share of the input
        proc = _start(pipe, tmp_path, until_end=False)  # runs until killed: it can't end before the kill
        _wait_until_read(tmp_path / "state", int(share * total), proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    proc = _start(pipe, tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    ids, windows, per_key = _summary(kafka_bootstrap, *outs)
    assert max(ids.values()) == 1, "an alert was delivered twice"
    assert ids == u["ids"], "alerts lost or invented"
    assert per_key == u["per_key"] and windows == u["windows"]


def test_broker_restart_mid_run_gives_exactly_the_uninterrupted_output(kafka_bootstrap, kafka_broker, uninterrupted,
                                                                     tmp_path):
    u = uninterrupted
    outs = _fresh_outputs(kafka_bootstrap, "broker", u["run_id"])
    pipe = _pipeline(tmp_path, "broker", kafka_bootstrap, u["topic_in"], *outs, group=f"broker-{u['run_id']}",
                     state=tmp_path / "state")
    proc = _start(pipe, tmp_path, until_end=False)  # runs until stopped: it can't end before the broker stops
    _wait_until_read(tmp_path / "state", KEYS * PER_KEY // 3, proc)  # mid-run, by the worker's own progress
    kafka_broker.stop()
    kafka_broker.start()
    # the worker rides out the outage; once its checkpoints cover the whole input, stop it as an operator would
    _wait_until_read(tmp_path / "state", KEYS * PER_KEY, proc, timeout_s=600)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]  # SIGTERM stops cleanly, as Ctrl-C does
    # a stopped stream leaves its last windows open; a run to the end of the input closes them, as the
    # uninterrupted run did
    proc = _start(pipe, tmp_path)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err.decode()[-3000:]
    ids, windows, per_key = _summary(kafka_bootstrap, *outs)
    assert max(ids.values()) == 1 and ids == u["ids"]
    assert per_key == u["per_key"] and windows == u["windows"]


def test_restart_fences_a_crashed_transaction_holding_offsets(kafka_bootstrap, kafka_topic, tmp_path):
    """A worker died inside a transaction that already carried the group's offsets. The restarted worker
    fences it (init_transactions) before reading the committed offsets, which would otherwise stay unstable
    until the old transaction timed out, and the read would fail."""
    from confluent_kafka import TopicPartition

    from vigil.io.kafka_sink import KafkaAlertSink
    from vigil.io.kafka_source import KafkaSource
    from vigil.io.schema import Schema

    topic_in, topic_out = kafka_topic(3), kafka_topic(3)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(300):
        p.produce(topic_in, json.dumps({"key": f"k{i % 5}", "seq": i, "ts": 1_767_225_600_000 + i * 1000,
                                        "value": 50.0}).encode(), key=f"k{i % 5}".encode())
    assert p.flush(30) == 0
    group = f"zombie-{topic_in}"
    pipe = _pipeline(tmp_path, "zombie", kafka_bootstrap, topic_in, topic_out, topic_out, group=group,
                     state=tmp_path / "state")
    # the zombie: same transactional id as the pipeline's sink, a transaction with the group's offsets, no commit
    zombie = KafkaAlertSink(kafka_bootstrap, topic_out, transactional_id=f"vigil-eos-{topic_out}")
    reader = KafkaSource(kafka_bootstrap, topic_in, Schema("key", "ts", fields=("value",)), group_id=group).open()
    zombie.begin()
    zombie.write_batch([{"key": "k0", "note": "never committed"}])
    zombie._p.flush(10)
    tps = [TopicPartition(topic_in, p, 10) for p in range(3)]
    zombie._p.send_offsets_to_transaction(tps, reader.consumer_group_metadata(), 10)
    proc = _start(pipe, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-3000:]
    out = _read_all(kafka_bootstrap, topic_out)
    assert sum(r.get("count", 0) for r in out) == 300  # every input counted once
    assert not [r for r in out if r.get("note") == "never committed"]  # the zombie's write never became visible
    reader.close()

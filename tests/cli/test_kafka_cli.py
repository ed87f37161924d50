"""The Kafka faces of the `vigil` command, against the real broker."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]


def vigil(*args, cwd=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "vigil.cli.main", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def _count(bootstrap, topic):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"count-{uuid.uuid4().hex}", "auto.offset.reset": "earliest",
                  "isolation.level": "read_committed", "enable.partition.eof": True, "enable.auto.commit": False})
    c.subscribe([topic])
    n, eof, idle = 0, set(), 0
    while idle < 20:
        msg = c.poll(0.5)
        if msg is None:
            idle += 1
            continue
        if msg.error():
            eof.add(msg.partition())
            if len(eof) == 3:
                break
            continue
        n += 1
    c.close()
    return n


def test_generate_to_kafka_then_run_the_kafka_pipeline(kafka_bootstrap, kafka_topic, tmp_path):
    tx, alerts, dead = kafka_topic(3), kafka_topic(3), kafka_topic(1)
    r = vigil("generate", "transactions", "--to", f"kafka://{kafka_bootstrap}/{tx}", "--events", "30000",
              "--users", "500")
    assert r.returncode == 0 and "produced 30,000 transactions" in r.stderr, r.stderr
    text = (ROOT / "pipelines" / "fraud-kafka.yaml").read_text()
    text = (text.replace("kafka://127.0.0.1:9092/transactions", f"kafka://{kafka_bootstrap}/{tx}")
            .replace("kafka://127.0.0.1:9092/fraud-alerts", f"kafka://{kafka_bootstrap}/{alerts}")
            .replace("transactions-dead-letters", dead).replace("vigil-fraud", f"g-{tx}")
            .replace("  - {kind: console}\n", ""))
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "fraud-kafka.yaml").write_text(text)
    r = vigil("run", "pipelines/fraud-kafka.yaml", "--quiet", "--until-end", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "30,000 events" in r.stderr
    n_alerts = _count(kafka_bootstrap, alerts)
    assert n_alerts > 100
    # running it again resumes from the committed checkpoint: nothing new, nothing repeated
    r = vigil("run", "pipelines/fraud-kafka.yaml", "--quiet", "--until-end", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert _count(kafka_bootstrap, alerts) == n_alerts
    r = vigil("checkpoint", "inspect", str(tmp_path / "vigil-state" / "fraud-kafka"), "--json")
    state = json.loads(r.stdout)
    assert sum(state["positions"]["kafka"].values()) == 30_000


def test_demo_through_kafka(kafka_bootstrap, tmp_path):
    r = vigil("demo", "--kafka", "--bootstrap", kafka_bootstrap, "--events", "60000", "--users", "1200",
              "--rate", "30000", "--json", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["events"] == 60_000 and out["precision"] >= 0.9 and out["recall"] >= 0.9
    assert out["latency_ms"]["p99"] > 0
    assert _count(kafka_bootstrap, out["alerts_topic"]) == out["alerts"]


def test_demo_kafka_without_a_broker_says_how_to_start_one():
    r = vigil("demo", "--kafka", "--bootstrap", "127.0.0.1:1", "--events", "1000")
    assert r.returncode == 1 and "make kafka-up" in r.stderr and "Traceback" not in r.stderr

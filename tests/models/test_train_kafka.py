"""`vigil train --input kafka://...`: training data read from a real Kafka topic, earliest to end."""

import json
import subprocess
import sys

import numpy as np
import pytest
from confluent_kafka import Producer

from vigil.models.registry import ModelRegistry

pytestmark = pytest.mark.kafka


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "vigil.cli.main", *args], capture_output=True, text=True)


def test_train_an_isolation_forest_from_a_topic(kafka_bootstrap, kafka_topic, tmp_path):
    topic = kafka_topic(3)
    rng = np.random.default_rng(0)
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    for i in range(3000):
        rec = {"ts": 1_704_067_200_000 + i * 1000, "amount": float(rng.lognormal(3, 0.5)), "gap_s": float(rng.exponential(60))}
        p.produce(topic, json.dumps(rec).encode(), key=str(i % 7).encode())
    p.produce(topic, b"{not json")  # unreadable: a row of missing values, left out of training and counted
    assert p.flush(30) == 0
    cfg = tmp_path / "train.yaml"
    cfg.write_text("name: spend\nfeatures: [amount, gap_s]\ntime_column: ts\nn_estimators: 30\n")
    r = _cli("train", "--config", str(cfg), "--input", f"kafka://{kafka_bootstrap}/{topic}",
             "--registry", str(tmp_path / "reg"), "--promote", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["version"] == "v1" and out["meta"]["n_rows"] + out["meta"]["validation"]["n_rows"] == 3000
    assert ModelRegistry(str(tmp_path / "reg")).promoted("spend")[0] == "v1"


def test_train_the_servers_model_from_influx_on_kafka(kafka_bootstrap, kafka_topic, tmp_path):
    topic = kafka_topic(3)
    r = _cli("generate", "fleet", "--to", f"kafka://{kafka_bootstrap}/{topic}", "--hosts", "8", "--days", "0.4")
    assert r.returncode == 0, r.stderr
    pipe = tmp_path / "servers.yaml"
    aliases = {f"{m}.value": m for m in ("cpu", "mem", "net_in", "net_out", "disk_io", "disk_used")}
    pipe.write_text(f"""
name: servers
source: {{kind: kafka, url: kafka://{kafka_bootstrap}/{topic}, metrics: influx}}
steps:
  - name: fleet
    servers: {{metric_aliases: {json.dumps(aliases)}}}
    model: {{registry: {tmp_path / "reg"}, name: fleet}}
""")
    r = _cli("train", "--pipeline", str(pipe), "--input", f"kafka://{kafka_bootstrap}/{topic}", "--until", "4h",
             "--promote")
    assert r.returncode == 0, r.stderr
    assert ModelRegistry(str(tmp_path / "reg")).promoted("fleet")[0] == "v1"

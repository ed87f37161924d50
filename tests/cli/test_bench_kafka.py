"""`vigil bench kafka --json`: the fraud pipeline between real topics on the local broker, small and quick.

The figures themselves are the benchmark's business (``make bench``); here: every key the issue names is
there with a sane value, exactly-once recovery produced no duplicate, and the bench's topics are gone after.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PERF = ROOT.parent / "shared" / "bench" / "perf"

pytestmark = [pytest.mark.kafka,
              pytest.mark.skipif(not (PERF / "workload.py").exists(), reason="../shared/bench/perf is absent")]


def test_bench_kafka_prints_the_named_figures(kafka_bootstrap, tmp_path):
    from confluent_kafka.admin import AdminClient

    def bench_topics() -> set[str]:
        topics = AdminClient({"bootstrap.servers": kafka_bootstrap}).list_topics(timeout=10).topics
        return {t for t in topics if t.startswith("vigil-bench.")}

    before = bench_topics()
    out = tmp_path / "kafka.json"
    r = subprocess.run(
        [sys.executable, "-m", "vigil.cli.main", "bench", "kafka", "--json", "--bootstrap", kafka_bootstrap,
         "--n", "20000", "--keys", "500", "--rate", "5000", "--latency-seconds", "1", "--out", str(out),
         "--pipeline", str(ROOT / "pipelines" / "fraud-kafka.yaml")],
        capture_output=True, text=True, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == json.loads(out.read_text())
    assert got["consume_eps"] > 0 and got["consume_eps_alo"] > 0
    for mode in ("alo", "eo"):
        assert 0 < got["latency_ms"][mode]["p50"] <= got["latency_ms"][mode]["p99"]
    assert got["recovery_s"] > 0 and got["recovery_duplicates"] == 0
    assert bench_topics() <= before  # its topics are deleted


def test_bench_kafka_without_a_broker_says_how_to_start_one(tmp_path):
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "bench", "kafka", "--bootstrap", "127.0.0.1:1",
                        "--out", str(tmp_path / "k.json")], capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode != 0
    assert "make kafka-up" in r.stderr and "Traceback" not in r.stderr, r.stderr

"""The Flink job's Python half without a cluster: the same steps as the embedded runtime, state as per-key bytes.

:func:`vigil.testing.flink.simulate_job` plays the JVM's part (event time and watermarks per partition, batches
per key bucket and window, event-time timers) and runs the job's :class:`TaskRunner` as is, over a
:class:`DictStore` that holds bytes only, as Flink's ``MapState`` does. ``restart_every`` rebuilds the Python half
(memory lost, keyed state kept) as after a failure and restore, so every step's per-key slices are exercised.
The cluster tests (test_flink_cluster.py) check the real job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vigil.config import load_pipeline
from vigil.engine.runner import EmbeddedRunner
from vigil.errors import ConfigError
from vigil.integrations.flink.options import FlinkOptions
from vigil.integrations.flink.spec import load_job
from vigil.io.generators.fleet import FleetSpec, simulate_fleet, to_influx_lines
from vigil.io.generators.transactions import TransactionSpec, generate_transactions, iter_records
from vigil.testing.flink import simulate_job

METRICS = ("cpu", "mem", "net_in", "net_out", "disk_io", "disk_used")
ALIASES = {f"{m}.value": m for m in METRICS}


def _alerts_of(out: list[tuple[str, tuple[Any, ...]]]) -> dict[str, dict[str, Any]]:
    alerts = {}
    for role, row in out:
        if role == "alerts":
            a = json.loads(row[1])
            alerts[a["id"]] = {k: v for k, v in a.items() if k not in ("detect_ts_ms", "latency_ms")}
    return alerts


def _fraud(tmp_path: Path) -> tuple[Any, list[tuple[int, str | None, str, int]]]:
    (tmp_path / "p.yaml").write_text("""
name: fraud
source: {kind: kafka, url: kafka://127.0.0.1:1/txns, dead_letter_topic: txns-dead,
         schema: {key: user, time: ts, fields: [amount], extra: [txn_id], optional: [label, pattern]}}
event_time: {max_delay: 2s}
keys: {ttl: 10m}
event_ids: txn_id
steps:
  - {name: amount_z, detector: sliding_zscore, params: {field: amount, window: 60s, threshold: 3, min_count: 5}}
  - {name: velocity, detector: velocity, params: {window: 60s, max_count: 4}}
  - {name: test_then_cashout, detector: pattern, params: {sequence: [{field: amount, below: 2.0, at_least: 3},
                                                                     {field: amount, above: 200}], within: 10m}}
  - {name: spend, window: {kind: tumbling, size: 1m}, field: amount, to: {kind: kafka, url: kafka://127.0.0.1:1/spend}}
alerts: [{kind: kafka, url: kafka://127.0.0.1:1/alerts}]
""")
    cols = generate_transactions(TransactionSpec(events=2_000, users=40, seed=2, span_ms=1_800_000, disorder_frac=0))
    records = [(i % 2, r["user"], json.dumps(r), int(r["ts"])) for i, r in enumerate(iter_records(cols))]
    records.insert(100, (0, "u0000001", "{broken", records[100][3]))
    return load_job(str(tmp_path / "p.yaml")), records


def test_a_restored_python_half_continues_every_key_exactly(tmp_path: Path) -> None:
    job, records = _fraud(tmp_path)
    clean = simulate_job(job, records, batch_window_ms=30_000)
    alerts = _alerts_of(clean)
    assert len(alerts) > 10 and any(role == "step:spend" for role, _ in clean)
    dead = [row for role, row in clean if role == "dead_letters"]
    assert [(r[1], r[2]) for r in dead] == [("{broken", "invalid_json")]
    restarted = simulate_job(job, records, batch_window_ms=30_000, restart_every=40)
    assert _alerts_of(restarted) == alerts
    assert sorted(r for role, r in restarted if role == "step:spend") == sorted(r for role, r in clean
                                                                                 if role == "step:spend")  # fmt: skip


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    cols = simulate_fleet(FleetSpec(hosts=3, days=0.12, seed=5, incidents_per_host_day=8.0, warmup_h=0.5))
    lines = to_influx_lines(cols)
    path = tmp_path_factory.mktemp("fleet") / "fleet.influx"
    path.write_text("\n".join(lines) + "\n")
    return path, lines


def _servers_yaml(tmp_path: Path, source: str, alerts: str) -> Path:
    f = tmp_path / f"servers-{abs(hash(source)) % 1000}.yaml"
    f.write_text(f"""
name: servers
source: {source}
event_time: {{max_delay: 5s, allowed_lateness: 10s}}
keys: {{ttl: 1h}}
steps:
  - name: fleet
    servers: {{window_s: 10, k: 2, persist_windows: 2, metric_aliases: {json.dumps(ALIASES)}}}
alerts: [{alerts}]
""")
    return f


def test_the_servers_pipeline_gives_the_embedded_runtimes_alerts(fleet: tuple[Path, list[str]],
                                                                 tmp_path: Path) -> None:  # fmt: skip
    """The windowed join per host, the detectors, k-of-n: window alerts equal, through restores too."""
    path, lines = fleet
    file = _servers_yaml(tmp_path, f"{{kind: influx, path: {path}}}", f"{{kind: jsonl, path: {tmp_path}/alerts.jsonl}}")
    EmbeddedRunner(load_pipeline(str(file)), out_dir=str(tmp_path)).run()
    embedded = [json.loads(x) for x in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    want = {(a["key"], a["stats"]["window_start_ms"], a["stats"]["votes"]) for a in embedded
            if a["detector"] == "k_of_n"}  # fmt: skip
    assert len(want) >= 3
    job = load_job(str(_servers_yaml(tmp_path, "{kind: kafka, url: kafka://127.0.0.1:1/metrics, metrics: influx}",
                                     "{kind: kafka, url: kafka://127.0.0.1:1/alerts}")))
    ts = [int(ln.rsplit(" ", 1)[1]) // 1_000_000 for ln in lines]
    records = [(0, None, ln, t) for ln, t in zip(lines, ts, strict=True)]
    for restart_every in (0, 5):
        out = simulate_job(job, records, batch_window_ms=30_000, restart_every=restart_every)
        got = {(a["key"], a["stats"]["window_start_ms"], a["stats"]["votes"]) for a in _alerts_of(out).values()
               if a["detector"] == "k_of_n"}  # fmt: skip
        assert got == want, f"restart_every={restart_every}: {len(got - want)} extra, {len(want - got)} missing"


def test_a_file_that_cannot_run_on_flink_says_why(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("""
name: p
source: {kind: jsonl, path: x.jsonl, schema: {key: k, time: ts, fields: [v]}}
steps: [{name: z, detector: sliding_zscore, params: {field: v}}]
alerts: [{kind: console}]
""")
    with pytest.raises(ConfigError, match="Kafka topic to run on Flink"):
        load_job(str(f))
    f.write_text(f.read_text().replace("kind: jsonl, path: x.jsonl", "kind: kafka, url: kafka://h:1/t"))
    with pytest.raises(ConfigError, match="alerts.*no Kafka topic"):
        load_job(str(f))


def test_options_travel_as_job_arguments() -> None:
    o = FlinkOptions(batch_window_ms=250, buckets=64, bounded=True, idle_timeout_ms=0, bootstrap="kafka:29092")
    assert FlinkOptions.from_args(o.to_args()) == o
    with pytest.raises(ConfigError, match="buckets"):
        FlinkOptions(buckets=0)
    assert np.int64(FlinkOptions().max_parallelism) == 128

"""RED windows and the service graph (the `service_graph` step) over the `otlp` source: exact against a plain
reference, in the engine from YAML over Kafka, and kept across a crash and a restart from checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest

from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.emit import KafkaSink
from vigil.apps.services.telemetry.red import RedWindows
from vigil.apps.services.telemetry.step import ServiceTelemetryStep
from vigil.config import load_pipeline
from vigil.dataflow.pipeline import Pipeline
from vigil.engine.runner import EmbeddedRunner
from vigil.io.otlp.traces import TraceDecoder
from vigil.io.sinks import MemorySink

SPEC = ServiceSimSpec(services=14, minutes=6, seed=11, peak_rate=6.0, window_s=60)


def test_red_windows_match_a_plain_reference():
    rng = np.random.default_rng(3)
    n = 20_000
    keys = np.array(["a", "b", "c"], object)[rng.integers(0, 3, n)]
    ts = np.sort(rng.integers(0, 10_000, n))
    dur = rng.lognormal(2, 1, n)
    err = (rng.random(n) < 0.1).astype(float)
    red = RedWindows(window_ms=1000)
    for a in range(0, n, 3000):  # micro-batches
        red.add(red.slots(keys[a : a + 3000]), ts[a : a + 3000], dur[a : a + 3000], err[a : a + 3000], 0)
    out = red.close(10_000)
    assert len(out["key"]) == 30
    for i in range(30):
        m = (keys == out["key"][i]) & (ts // 1000 * 1000 == out["start_ms"][i])
        assert out["count"][i] == m.sum() and out["errors"][i] == err[m].sum()
        assert out["mean_ms"][i] == pytest.approx(dur[m].mean())
        for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            exact = np.sort(dur[m])[int(np.ceil(q * m.sum())) - 1]
            assert out[col][i] == pytest.approx(exact, rel=0.021)
    # a row of a closed window is late, and not folded
    assert red.add(
        red.slots(np.array(["a"], object)), np.array([500]), np.array([1.0]), np.array([0.0]), 0
    ).tolist() == [0]
    snap = red.snapshot()
    again = RedWindows(window_ms=1000)
    again.restore(snap)
    assert again.keys == red.keys and again.closed_until == red.closed_until


def _produce(bootstrap: str, topic: str, metrics_topic: str) -> ServiceSimulator:
    sim = ServiceSimulator(SPEC)
    sink = KafkaSink(sim, bootstrap, topic, metrics_topic, max_spans=2000)
    for w in sim.run():
        sink.write(w)
    sink.close()
    return sim


@pytest.mark.kafka
def test_service_graph_from_yaml_over_kafka_and_across_a_crash(kafka_bootstrap, kafka_topic, tmp_path):
    traces, metrics = kafka_topic(2), kafka_topic(1)
    sim = _produce(kafka_bootstrap, traces, metrics)
    f = tmp_path / "services.yaml"
    f.write_text(f"""
name: shop
source: {{kind: otlp, url: "kafka://{kafka_bootstrap}/{traces}", stop_at_end: true}}
event_time: {{max_delay: 90s, idle_timeout: 30s}}  # the simulator sends a minute of spans at a time, by service
steps:
  - name: red
    service_graph: {{window: 60s, max_error_rate: 0.2, min_count: 10}}
    to: {{kind: jsonl, path: {tmp_path / "red.jsonl"}}}
alerts: [{{kind: jsonl, path: {tmp_path / "alerts.jsonl"}}}]
""")
    p = load_pipeline(str(f))
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert st.dead_letters == 0 and st.events_in > 10_000
    rows = [json.loads(x) for x in (tmp_path / "red.jsonl").read_text().splitlines()]
    levels = {r["level"] for r in rows}
    assert levels == {"service", "edge"}
    assert {"key", "start_ms", "count", "rate", "errors", "error_rate", "p50_ms", "p95_ms", "p99_ms"} <= set(rows[0])
    step = p.steps[0]
    g = step.graph_json()
    names = set(sim.names["service"])
    edges = {(e["source"], e["target"]) for e in g["edges"]}
    assert {n["id"] for n in g["nodes"]} <= names and len(edges) >= 13
    assert ("frontend", "checkout") in edges or any(a == "frontend" for a, _ in edges)
    e0 = g["edges"][0]
    assert e0["calls"] > 0 and e0["first_seen_ms"] <= e0["last_seen_ms"] and e0["versions"]
    assert any(e["callee_versions"] for e in g["edges"])  # SERVER children joined to their client parents
    # edge calls equal the client spans with that peer (a plain count from the decoded columns)
    from vigil.io.kafka_source import KafkaSource

    src = KafkaSource(kafka_bootstrap, traces, None, group_id="ref", stop_at_end=True, decoder=TraceDecoder())
    reader = src.open("kafka")
    calls: dict = {}
    while not reader.at_end:
        r = reader.read_batch(50_000, 500)
        if r is None or not len(r):
            continue
        x = r.extra
        m = np.isin(x["kind"], (3, 4)) & (x["peer"] != "")
        for a, b in zip(x["service"][m].tolist(), x["peer"][m].tolist(), strict=True):
            calls[(a, b)] = calls.get((a, b), 0) + 1
    reader.close()
    assert {(e["source"], e["target"]): e["calls"] for e in g["edges"]} == {
        k: v for k, v in calls.items() if k[0] != k[1]
    }

    # crash half-way through the window rows, restart from the checkpoint: the same graph and windows. Counted in
    # rows, not write calls: a busy machine's sink thread coalesces several batches into one write.
    class Crash(Exception):
        pass

    class CrashingSink(MemorySink):
        def __init__(self, after: int) -> None:
            super().__init__()
            self.left = after

        def write_batch(self, items):
            items = list(items)
            if len(items) > self.left:
                super().write_batch(items[: self.left])  # a partial write, then the failure
                self.left = 0
                raise Crash("boom")
            self.left -= len(items)
            super().write_batch(items)

    def run(sink, state, group):
        step = ServiceTelemetryStep("red", window_ms=60_000, max_error_rate=0.2, min_count=10, sink=sink)
        src = KafkaSource(kafka_bootstrap, traces, None, group_id=group, stop_at_end=True, decoder=TraceDecoder())
        pl = (
            Pipeline("shop")
            .source(src)
            .watermark("90s")
            .micro_batches(max_rows=5_000)
            .checkpoints(str(state), interval="1ms")
            .step(step)
        )
        EmbeddedRunner(pl, out_dir=str(tmp_path)).run()
        return step

    counting = CrashingSink(after=10**9)
    run(counting, tmp_path / "clean", "clean")
    total = len(counting.items)
    assert total >= 2
    first = CrashingSink(after=total // 2)
    with pytest.raises(Crash):
        run(first, tmp_path / "state", "crash")
    second = MemorySink()
    step2 = run(second, tmp_path / "state", "crash")
    g2 = step2.graph_json()
    strip = lambda gr: sorted((e["source"], e["target"], e["calls"], e["errors"]) for e in gr["edges"])  # noqa: E731
    assert strip(g2) == strip(g)
    got = {(r["level"], r["key"], r["start_ms"]): r["count"] for r in first.items + second.items}
    assert got == {(r["level"], r["key"], r["start_ms"]): r["count"] for r in rows}

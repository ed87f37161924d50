"""OTLP over Kafka: the simulator's `otlp_proto` messages and the REAL OpenTelemetry Collector's Kafka exporter,
read by the `otlp` source kind (Kafka source + the OTLP decoder)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.emit import KafkaSink
from vigil.apps.services.sim.readback import decode_traces
from vigil.config.registry import source_kind
from vigil.io.otlp.traces import concat_records

pytestmark = pytest.mark.kafka
REPO = Path(__file__).resolve().parents[2]


def _ctx() -> SimpleNamespace:
    return SimpleNamespace(pipeline="otlp-test", overrides={}, shared={}, base_dir=".", delivery="at-least-once")


def _source(url: str, **kw):
    kind = source_kind("otlp")
    spec = kind.spec.model_validate({"kind": "otlp", "url": url, "stop_at_end": True, **kw})
    return kind.build(spec, _ctx())


def _read_all(src, limit_s: float = 60.0):
    reader = src.open("kafka")
    parts, dead = [], []
    deadline = time.monotonic() + limit_s
    try:
        while not reader.at_end and time.monotonic() < deadline:
            r = reader.read_batch(50_000, 500)
            if r is not None:
                dead += r.dead
                if len(r):
                    parts.append(r)
    finally:
        reader.close()
    return (concat_records(parts) if parts else None), dead


def test_the_simulators_kafka_messages_become_the_same_span_columns(kafka_bootstrap, kafka_topic):
    traces, metrics = kafka_topic(2), kafka_topic(1)
    sim = ServiceSimulator(ServiceSimSpec(services=14, minutes=2, seed=5, faults=(), peak_rate=8.0, window_s=60))
    sink = KafkaSink(sim, kafka_bootstrap, traces, metrics, max_spans=500)
    from confluent_kafka import Producer

    kept, points = [], 0
    for w in sim.run():
        kept.append(w.spans)
        points += len(w.metrics["value"])
        sink.write(w)
    sink.close()
    p = Producer({"bootstrap.servers": kafka_bootstrap})
    p.produce(traces, value=b"\x0a\xff\x01", partition=0)  # a broken message among them
    p.flush(10)
    recs, dead = _read_all(_source(f"kafka://{kafka_bootstrap}/{traces}", key="edge"))
    assert [d.reason for d in dead] == ["invalid_protobuf"] and dead[0].position["partition"] == 0
    n = sum(len(s["span_id"]) for s in kept)
    assert len(recs) == n
    # the same spans as the plain protobuf read-back: match by span id
    from vigil.apps.services.sim.otlp import trace_requests

    kinds = [d.kind for d in sim.topology.defs]
    ref = decode_traces([r for s in kept for r in trace_requests(s, sim.names, kinds)])
    a, b = np.argsort(recs.extra["span_id"]), np.argsort(ref["span_id"])
    for mine, theirs in (
        ("span_id", "span_id"),
        ("parent_span_id", "parent_span_id"),
        ("service", "service"),
        ("operation", "name"),
        ("peer", "peer"),
        ("version", "version"),
        ("status", "status"),
    ):
        np.testing.assert_array_equal(recs.extra[mine][a], ref[theirs][b], err_msg=mine)  # fmt: skip
    assert set(recs.keys) == {f"{s}->{p}" for s, p in zip(recs.extra["service"], recs.extra["peer"], strict=True)}
    assert "emit_ns" in recs.extra
    # the metrics topic through the same source kind, signal: metrics
    m, dead = _read_all(_source(f"kafka://{kafka_bootstrap}/{metrics}", signal="metrics", key="series"))
    assert not dead and len(m) == points
    assert set(m.extra["service"]) <= set(sim.names["service"]) and (m.extra["type"] > 0).all()
    assert all(k.count("|") == 2 for k in m.keys.tolist())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_real_collector_exports_sdk_spans_to_kafka_and_vigil_reads_them(
    otelcol_binary, kafka_bootstrap, kafka_topic, tmp_path
):
    traces, metrics, logs = kafka_topic(1), kafka_topic(1), kafka_topic(1)
    http_port, grpc_port = _free_port(), _free_port()
    env = {**os.environ, "VIGIL_OTELCOL_HTTP_PORT": str(http_port), "VIGIL_OTELCOL_GRPC_PORT": str(grpc_port),
           "VIGIL_KAFKA_BOOTSTRAP": kafka_bootstrap, "VIGIL_OTELCOL_TRACES_TOPIC": traces,
           "VIGIL_OTELCOL_METRICS_TOPIC": metrics, "VIGIL_OTELCOL_LOGS_TOPIC": logs,
           "VIGIL_OTELCOL_DATA": str(tmp_path / "otelcol")}  # fmt: skip
    sh = str(REPO / "deploy" / "otelcol" / "otelcol.sh")
    up = subprocess.run([sh, "up"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert up.returncode == 0, up.stderr[-2000:]
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.trace import SpanKind

        def provider(service: str, version: str) -> TracerProvider:
            p = TracerProvider(resource=Resource.create({"service.name": service, "service.version": version}))
            p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"http://127.0.0.1:{http_port}/v1/traces")))
            return p

        shop, pay = provider("checkout", "2.0.1"), provider("payment", "7.3")
        ts, tp = shop.get_tracer("t"), pay.get_tracer("t")
        for _ in range(10):
            with ts.start_as_current_span("checkout/PlaceOrder", kind=SpanKind.SERVER):
                with ts.start_as_current_span("payment/Charge", kind=SpanKind.CLIENT):  # no peer.service
                    with tp.start_as_current_span("payment/Charge", kind=SpanKind.SERVER):
                        pass
        shop.shutdown()
        pay.shutdown()
        # the collector batches (200 ms) and exports: read until the 30 spans are there
        src = _source(f"kafka://{kafka_bootstrap}/{traces}", key="edge", stop_at_end=False)
        reader = src.open("kafka")
        parts, got, deadline = [], 0, time.monotonic() + 60
        while got < 30 and time.monotonic() < deadline:
            r = reader.read_batch(1000, 500)
            if r is not None and len(r):
                parts.append(r)
                got += len(r)
        reader.close()
    finally:
        subprocess.run([sh, "down"], env=env, capture_output=True, timeout=60, check=False)
    recs = concat_records(parts)
    assert len(recs) == 30
    x = recs.extra
    assert set(zip(x["service"], x["version"], strict=True)) == {("checkout", "2.0.1"), ("payment", "7.3")}
    # the client spans have no peer.service: the peer comes from their SERVER child when the collector
    # exported both in one message, and the edge key carries it
    client = x["kind"] == 3
    assert client.sum() == 10 and set(x["peer"][client]) <= {"payment", ""}
    ids = {int(s): i for i, s in enumerate(x["span_id"])}
    for i in np.flatnonzero(x["service"] == "payment"):
        assert x["service"][ids[int(x["parent_span_id"][i])]] == "checkout"

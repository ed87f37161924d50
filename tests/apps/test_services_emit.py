"""What the simulator writes: OTLP protobuf (checked with opentelemetry-proto), OTLP/JSON, files, HTTP, Kafka, CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.emit import FileSink, KafkaSink, MemorySink, OtlpHttpSink, read_frames
from vigil.apps.services.sim.metrics import METRICS, OTLP_METRICS
from vigil.apps.services.sim.otlp import metrics_request, trace_requests
from vigil.apps.services.sim.readback import decode_traces

SPEC = ServiceSimSpec(services=14, minutes=2, seed=3, faults=(), peak_rate=8.0, window_s=60)


@pytest.fixture(scope="module")
def window():
    sim = ServiceSimulator(SPEC)
    return sim, sim.step()


def test_protobuf_round_trip_keeps_every_span_field(window):
    sim, w = window
    sp, names = w.spans, sim.names
    kinds = [d.kind for d in sim.topology.defs]
    reqs = list(trace_requests(sp, names, kinds, max_spans=1000))
    assert len(reqs) == -(-len(sp["span_id"]) // 1000)
    cols = decode_traces(reqs)
    n = len(sp["span_id"])
    assert len(cols["span_id"]) == n
    # decoded rows come grouped by resource: match them back by span id
    order = np.argsort(cols["span_id"])
    pos = order[np.searchsorted(cols["span_id"][order], sp["span_id"])]
    np.testing.assert_array_equal(cols["span_id"][pos], sp["span_id"])
    for k in ("trace_hi", "trace_lo", "parent_span_id", "start_us", "duration_us"):
        np.testing.assert_array_equal(cols[k][pos], sp[k], err_msg=k)
    np.testing.assert_array_equal(cols["kind"][pos], sp["kind"])
    np.testing.assert_array_equal(cols["status"][pos], sp["status"])
    np.testing.assert_array_equal(cols["code"][pos], sp["code"])
    svc = np.array(names["service"], object)
    np.testing.assert_array_equal(cols["service"][pos], svc[sp["service"]])
    np.testing.assert_array_equal(cols["version"][pos], np.array(names["version"], object)[sp["version"]])
    np.testing.assert_array_equal(cols["zone"][pos], np.array(names["zone"], object)[sp["zone"]])
    peer = np.where(sp["peer"] >= 0, svc[np.maximum(sp["peer"], 0)], "")
    np.testing.assert_array_equal(cols["peer"][pos], peer)
    # names follow the conventions: HTTP routes at the frontend, service/method for gRPC, "OP db" for datastores
    name = cols["name"][pos]
    fe = (sp["service"] == 0) & (sp["kind"] == 2)
    assert set(name[fe]) <= {"GET /", "GET /product", "GET /cart", "POST /cart", "POST /checkout", "GET /search",
                             "POST /login", "GET /account"}
    cart = sim.topology.service_index("cart")
    assert set(name[(sp["service"] == cart) & (sp["kind"] == 2)]) <= {"cart/GetCart", "cart/AddItem", "cart/EmptyCart"}
    assert "HGETALL redis-cart" in set(name)


def test_protobuf_attributes_and_resources(window):
    sim, w = window
    kinds = [d.kind for d in sim.topology.defs]
    req = ExportTraceServiceRequest.FromString(next(trace_requests(w.spans, sim.names, kinds)))
    keys = set()
    for rs in req.resource_spans:
        res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
        assert {"service.name", "service.version", "service.namespace", "deployment.environment.name",
                "cloud.availability_zone", "k8s.deployment.name"} <= set(res)
        assert rs.scope_spans[0].scope.name == "vigil.apps.services.sim"
        for span in rs.scope_spans[0].spans:
            attrs = {kv.key: kv.value for kv in span.attributes}
            keys |= set(attrs)
            if span.kind == 3:
                assert "peer.service" in attrs
            if not span.parent_span_id:
                assert span.flags == 1 and span.kind == 2  # roots: the frontend (or a cron job), sampled
    assert {"rpc.system", "rpc.method", "peer.service", "http.route", "db.system"} <= keys


def test_metrics_request_round_trip(window):
    sim, w = window
    versions = [st[-1] for st in sim.world.stack]
    req = ExportMetricsServiceRequest.FromString(metrics_request(w.metrics, sim.names, versions, 10_000))
    assert len(req.resource_metrics) == len(sim.topology.services)
    got = {}
    for rm in req.resource_metrics:
        svc = {kv.key: kv.value.string_value for kv in rm.resource.attributes}["service.name"]
        for m in rm.scope_metrics[0].metrics:
            pts = m.sum.data_points if m.HasField("sum") else m.gauge.data_points
            got[(svc, m.name)] = [p.as_int if m.HasField("sum") else p.as_double for p in pts]
            if m.HasField("sum"):
                assert m.sum.is_monotonic and m.sum.aggregation_temporality == 1  # delta
    s = sim.topology.service_index("cart")
    rows = (w.metrics["service"] == s) & (w.metrics["metric"] == METRICS.index("cpu"))
    np.testing.assert_allclose(got[("cart", OTLP_METRICS["cpu"][0])], w.metrics["value"][rows])
    rows = (w.metrics["service"] == s) & (w.metrics["metric"] == METRICS.index("requests"))
    assert got[("cart", "service.requests")] == w.metrics["value"][rows].astype(int).tolist()


def test_file_formats(tmp_path):
    for fmt in ("otlp-proto", "jsonl", "columns"):
        sim = ServiceSimulator(SPEC)
        sink = FileSink(sim, str(tmp_path / fmt), fmt)
        mem = MemorySink()
        for w in sim.run():
            sink.write(w)
            mem.write(w)
        sink.close()
        n = len(mem.spans()["span_id"])
        d = tmp_path / fmt
        if fmt == "otlp-proto":
            assert len(decode_traces(read_frames(str(d / "traces.otlp")))["span_id"]) == n
            frames = list(read_frames(str(d / "metrics.otlp")))
            assert len(frames) == 2 and ExportMetricsServiceRequest.FromString(frames[0]).resource_metrics
        elif fmt == "jsonl":
            lines = (d / "traces.jsonl").read_text().splitlines()
            spans = [s for line in lines for rs in json.loads(line)["resourceSpans"] for ss in rs["scopeSpans"]
                     for s in ss["spans"]]
            assert len(spans) == n
            s0 = spans[0]
            assert len(s0["traceId"]) == 32 and len(s0["spanId"]) == 16 and isinstance(s0["startTimeUnixNano"], str)
            assert isinstance(s0["kind"], int)
            assert json.loads((d / "metrics.jsonl").read_text().splitlines()[0])["resourceMetrics"]
        else:
            cols = np.load(d / "spans.npz")
            assert len(cols["span_id"]) == n and cols["start_us"].dtype == np.int64
            names = json.loads((d / "names.json").read_text())
            assert names["service"][0] == "frontend" and "cpu" in names["metric"]
        assert (d / "changes.jsonl").exists()
    # the same seed writes the same bytes
    sim = ServiceSimulator(SPEC)
    again = FileSink(sim, str(tmp_path / "again"), "otlp-proto")
    for w in sim.run():
        again.write(w)
    again.close()
    assert (tmp_path / "again" / "traces.otlp").read_bytes() == (tmp_path / "otlp-proto" / "traces.otlp").read_bytes()


def test_otlp_http_sink_posts_protobuf():
    import httpx

    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.url.path, request.headers["content-type"], request.content))
        return httpx.Response(503 if len(seen) == 1 else 200)  # the first answer asks for a retry

    sim = ServiceSimulator(SPEC)
    waits: list[float] = []
    sink = OtlpHttpSink(sim, "http://collector:4318", client=httpx.Client(transport=httpx.MockTransport(handler)),
                        sleep=waits.append)
    w = sim.step()
    sink.write(w)
    sink.close()
    assert waits == [0.2]
    paths = [p for p, _, _ in seen]
    assert paths[0] == paths[1] == "/v1/traces" and paths[-1] == "/v1/metrics"
    assert all(ct == "application/x-protobuf" for _, ct, _ in seen)
    traced = decode_traces([body for p, _, body in seen[1:] if p == "/v1/traces"])
    assert len(traced["span_id"]) == len(w.spans["span_id"])


def test_cli_generate_services(tmp_path):
    from typer.testing import CliRunner

    from vigil.cli.main import app

    out = tmp_path / "sim"
    r = CliRunner().invoke(app, ["generate", "services", "--minutes", "16", "--services", "12", "--seed", "4",
                                 "--rate", "5", "--faults", "latency", "--out", str(out), "--format", "columns"])
    assert r.exit_code == 0, r.output
    truth = json.loads((out / "ground_truth.json").read_text())
    assert [f["type"] for f in truth["faults"]] == ["latency"] and truth["legit"]
    assert (out / "spans.npz").exists()
    r = CliRunner().invoke(app, ["generate", "services", "--faults", "bogus", "--out", str(out)])
    assert r.exit_code == 2 and "bogus" in r.output
    r = CliRunner().invoke(app, ["generate", "services", "--help"])
    assert "Examples" in r.output and "--kafka" in r.output


@pytest.mark.kafka
def test_kafka_sink_one_request_per_message(kafka_bootstrap, kafka_topic):
    from confluent_kafka import Consumer

    spans_topic, metrics_topic = kafka_topic(partitions=1), kafka_topic(partitions=1)
    sim = ServiceSimulator(SPEC)
    sink = KafkaSink(sim, kafka_bootstrap, spans_topic, metrics_topic, max_spans=2000)
    mem = MemorySink()
    for w in sim.run():
        sink.write(w)
        mem.write(w)
    sink.close()
    c = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": f"t-{os.getpid()}-{spans_topic[-6:]}",
                  "auto.offset.reset": "earliest", "enable.auto.commit": False})
    c.subscribe([spans_topic, metrics_topic])
    got: dict[str, list[bytes]] = {spans_topic: [], metrics_topic: []}
    idle = 0
    while idle < 20:  # stop after ~10 s without messages once everything expected arrived
        m = c.poll(0.5)
        if m is None:
            idle += 1 if got[metrics_topic] else 0
            continue
        if m.error():
            continue
        got[m.topic()].append(m.value())
        idle = 0
        if len(got[metrics_topic]) == 2 and sum(map(len, got.values())) == sink.messages:
            break
    c.close()
    cols = decode_traces(got[spans_topic])
    assert len(cols["span_id"]) == len(mem.spans()["span_id"])
    assert all(len(ExportTraceServiceRequest.FromString(v).resource_spans) > 0 for v in got[spans_topic])
    assert len(got[metrics_topic]) == 2

"""Recorded OTLP traces and metrics as the RCA's input: protobuf and JSON files, callees without peer.service,
deploys from service.version, and `vigil rca` on them."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from typer.testing import CliRunner

from vigil.apps.services.rca_eval import frame_of
from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.emit import FileSink, MemorySink
from vigil.cli.main import app
from vigil.rca import rank_causes
from vigil.rca.otlp import frame_from_otlp, read_messages, read_otlp_metrics, read_otlp_spans

T0 = 1_772_452_800_000


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A small shop with an error burst, written as OTLP protobuf and OTLP/JSON, plus the in-memory truth."""
    spec = ServiceSimSpec(services=8, minutes=27, seed=11, peak_rate=3.0, faults=("error_burst",), warmup_min=23,
                          start_ms=T0)  # fmt: skip
    root = tmp_path_factory.mktemp("otlp")
    sims = {fmt: ServiceSimulator(spec) for fmt in ("otlp-proto", "jsonl", "mem")}
    sinks = {"otlp-proto": FileSink(sims["otlp-proto"], str(root / "proto")),
             "jsonl": FileSink(sims["jsonl"], str(root / "json"), fmt="jsonl"), "mem": MemorySink()}  # fmt: skip
    for fmt, sim in sims.items():
        for w in sim.run():
            sinks[fmt].write(w)
        sinks[fmt].close()
    sim = sims["mem"]
    fault = sim.plan.faults[0]
    at = fault.start_ms + 180_000
    truth = frame_of(sim, sinks["mem"].spans(), sinks["mem"].metrics(), at)  # type: ignore[attr-defined]
    return root, sim, fault, at, truth


def test_protobuf_and_json_give_the_series_built_from_the_spans_themselves(recorded):
    root, sim, fault, at, truth = recorded
    fp = frame_from_otlp(str(root / "proto" / "traces.otlp"), str(root / "proto" / "metrics.otlp"), until_ms=at)
    fj = frame_from_otlp(str(root / "json" / "traces.jsonl"), str(root / "json" / "metrics.jsonl"), until_ms=at)
    assert fp.entities == fj.entities and fp.metrics == fj.metrics
    np.testing.assert_allclose(fp.values, fj.values, rtol=1e-12, equal_nan=True)
    assert set(fp.entities) == set(truth.entities)
    assert {"cpu", "mem", "gc", "cpu-pressure"} <= set(fp.metrics)
    # same spans, same bins: the RED series agree with the ones built from the simulator's own columns
    for e in truth.services:
        for m in ("rate", "errors", "latency-mean"):
            a, b = fp.series(e, m), truth.series(e, m)
            k = min(len(a), len(b))
            np.testing.assert_allclose(a[-k:], b[-k:], rtol=1e-6, atol=1e-3, equal_nan=True, err_msg=f"{e} {m}")
    got = rank_causes(fp, at)
    assert got.top(1) == [fault.service] and got.causes[0].kind == "errors"
    # deploys come from service.version: every deploy the simulator logged before `at` is there
    logged = {c["service"] for c in sim.world.changes if c["type"] == "deploy" and c["ts_ms"] < at}
    assert logged <= {c.service for c in fp.changes}


def _span(name: str, kind: int, sid: int, parent: int, start_ms: int, dur_ms: int, error: bool = False,
          **attrs: str) -> dict:  # fmt: skip
    return {
        "name": name,
        "kind": kind,
        "spanId": f"{sid:016x}",
        "parentSpanId": f"{parent:016x}" if parent else "",
        "traceId": "0" * 31 + "1",
        "startTimeUnixNano": str(start_ms * 1_000_000),
        "endTimeUnixNano": str((start_ms + dur_ms) * 1_000_000),
        "status": {"code": 2 if error else 0},
        "attributes": [{"key": k.replace("_", "."), "value": {"stringValue": v}} for k, v in attrs.items()],
    }


def _request(service: str, version: str, spans: list[dict]) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [
        {"key": "service.name", "value": {"stringValue": service}},
        {"key": "service.version", "value": {"stringValue": version}}]},
        "scopeSpans": [{"spans": spans}]}]}  # fmt: skip


def test_callees_without_peer_service_come_from_child_spans_or_the_database_system(tmp_path):
    reqs = [_request("frontend", "1.0", [_span("GET /", 2, 1, 0, T0, 30), _span("cart/Get", 3, 2, 1, T0 + 1, 20),
                                         _span("SELECT", "SPAN_KIND_CLIENT", 4, 1, T0 + 22, 5, db_system="mysql")]),
            _request("cart", "2.0", [_span("cart/Get", 2, 3, 2, T0 + 2, 18, error=True)]),
            _request("cart", "2.1", [_span("cart/Get", 2, 5, 0, T0 + 60_000, 18)])]  # fmt: skip
    path = tmp_path / "t.json"
    path.write_text(json.dumps(reqs))  # a JSON list of requests
    cols, names = read_otlp_spans(str(path))
    edges = {(names[s], names[p]) for s, p in zip(cols["service"], cols["peer"], strict=True) if p >= 0}
    assert edges == {("frontend", "cart"), ("frontend", "mysql")}
    assert cols["status"].tolist() == [0, 0, 0, 2, 0]
    f = frame_from_otlp(str(path), step_ms=10_000)
    assert {"frontend", "cart", "mysql", "frontend->cart", "frontend->mysql"} <= set(f.entities)
    assert "mysql" in f.virtual
    assert [(c.service, c.detail, c.ts_ms) for c in f.changes] == [("cart", "2.0 -> 2.1", T0 + 60_000)]


def test_framings_bare_gzip_and_bad_input(tmp_path):
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.append(KeyValue(key="service.name", value=AnyValue(string_value="api")))
    sp = rs.scope_spans.add().spans.add(
        name="GET",
        kind=2,
        span_id=b"\x00" * 7 + b"\x01",
        start_time_unix_nano=T0 * 1_000_000,
        end_time_unix_nano=(T0 + 5) * 1_000_000,
    )
    sp.status.code = 2
    body = req.SerializeToString()
    (tmp_path / "bare.pb").write_bytes(body)
    (tmp_path / "framed.otlp.gz").write_bytes(gzip.compress((struct.pack(">I", len(body)) + body) * 2))
    assert read_messages(str(tmp_path / "bare.pb")) == ("proto", [body])
    assert read_messages(str(tmp_path / "framed.otlp.gz")) == ("proto", [body, body])
    cols, names = read_otlp_spans([str(tmp_path / "bare.pb"), str(tmp_path / "framed.otlp.gz")])
    assert names == ["api"] and cols["duration_us"].tolist() == [5000] * 3 and cols["status"].tolist() == [2] * 3
    (tmp_path / "junk.bin").write_bytes(b"\xff\xfe not protobuf")
    with pytest.raises(ValueError, match="junk.bin: request 1 is not an OTLP trace request"):
        read_otlp_spans(str(tmp_path / "junk.bin"))
    (tmp_path / "bad.jsonl").write_text('{"resourceSpans": []}\n{nope\n')
    with pytest.raises(ValueError, match="bad.jsonl: line 2 is not JSON"):
        read_messages(str(tmp_path / "bad.jsonl"))
    services: list[str] = []
    rows, mnames = read_otlp_metrics([], services)
    assert len(rows["ts_ms"]) == 0 and "cpu" in mnames


def test_cli_rca_on_recorded_otlp(recorded):
    root, _, fault, at, _ = recorded
    runner = CliRunner()
    r = runner.invoke(app, ["rca", str(root / "proto" / "traces.otlp"), "--metrics", str(root / "proto" / "metrics.otlp"),
                            "--at", str(at), "--json", "--top", "3"])  # fmt: skip
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["causes"][0]["service"] == fault.service and out["causes"][0]["kind"] == "errors"
    r = runner.invoke(app, ["rca", str(root / "json"), "--at", str(at)])  # a folder: traces.jsonl + metrics.jsonl
    assert r.exit_code == 0, r.output
    assert fault.service in r.output
    r = runner.invoke(app, ["rca", str(root / "proto" / "traces.otlp"), "--at", str(T0 - 3_600_000)])
    assert r.exit_code == 2 and "no spans before the incident time" in r.output

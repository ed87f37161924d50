"""The OTLP/HTTP receiver: the real OpenTelemetry Python SDK sends to it; bad input gets a clear 4xx and dead letters."""

from __future__ import annotations

import gzip

import httpx
import numpy as np
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from vigil.io.otlp.columns import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, UNKNOWN_SERVICE
from vigil.io.otlp.metrics import MetricDecoder
from vigil.io.otlp.receiver import OtlpHttpReceiver, OtlpHttpSource
from vigil.io.otlp.traces import TraceDecoder

T0 = 1_765_000_000_000_000_000  # ns


@pytest.fixture
def rx():
    r = OtlpHttpReceiver("127.0.0.1", 0, traces=TraceDecoder(require_service=True), max_body_bytes=200_000).start()
    yield r
    r.stop()


def _span(tid: int, sid: int, parent: int, name: str, kind: int, start: int, dur: int, status: int = 0,
          attrs: dict | None = None) -> dict:  # fmt: skip
    d = {"traceId": f"{tid:032x}", "spanId": f"{sid:016x}", "name": name, "kind": kind,
         "startTimeUnixNano": str(start), "endTimeUnixNano": str(start + dur), "status": {"code": status},
         "attributes": [{"key": k, "value": {"stringValue": v} if isinstance(v, str) else {"intValue": str(v)}}
                        for k, v in (attrs or {}).items()]}  # fmt: skip
    if parent:
        d["parentSpanId"] = f"{parent:016x}"
    return d


def _request(spans_by_service: dict[str, list[dict]]) -> dict:
    return {"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": s}},
                                                           {"key": "service.version", "value": {"stringValue": "v2"}}]}
                               if s else {}, "scopeSpans": [{"spans": sp}]}
                              for s, sp in spans_by_service.items()]}  # fmt: skip


def test_the_opentelemetry_sdk_sends_spans_that_become_columns(rx):
    from opentelemetry.exporter.otlp.proto.http import Compression
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    def provider(service: str) -> TracerProvider:
        p = TracerProvider(resource=Resource.create({"service.name": service, "service.version": "1.4.2"}))
        p.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=rx.url + "/v1/traces",
                                                                  compression=Compression.Gzip)))  # fmt: skip
        return p

    front, cart = provider("frontend"), provider("cart")
    tf, tc = front.get_tracer("t"), cart.get_tracer("t")
    for i in range(5):
        with tf.start_as_current_span("GET /cart", kind=SpanKind.SERVER):
            with tf.start_as_current_span(
                "cart/GetCart", kind=SpanKind.CLIENT, attributes={"peer.service": "cart", "rpc.grpc.status_code": 0}
            ):
                with tc.start_as_current_span("cart/GetCart", kind=SpanKind.SERVER) as s:
                    if i == 4:
                        s.set_status(Status(StatusCode.ERROR, "boom"))
    front.shutdown()
    cart.shutdown()
    reader = OtlpHttpSource(rx).open()
    recs = reader.read_batch(1000, 1000)
    assert recs is not None and len(recs) == 15 and not recs.dead
    x = recs.extra
    assert sorted(set(x["service"])) == ["cart", "frontend"] and set(x["version"]) == {"1.4.2"}
    client = x["kind"] == KIND_CLIENT
    assert client.sum() == 5 and set(x["peer"][client]) == {"cart"} and set(x["code"][client]) == {0}
    # parent/child: each cart SERVER span's parent is a frontend CLIENT span of the same trace
    srv = np.flatnonzero((x["kind"] == KIND_SERVER) & (x["service"] == "cart"))
    by_id = {int(s): i for i, s in enumerate(x["span_id"])}
    for i in srv:
        p = by_id[int(x["parent_span_id"][i])]
        assert x["service"][p] == "frontend" and x["kind"][p] == KIND_CLIENT and x["trace_lo"][p] == x["trace_lo"][i]
    assert (x["status"][srv] == STATUS_ERROR).sum() == 1 and recs.cols["error"].sum() == 1
    assert (recs.cols["duration_ms"] >= 0).all() and (recs.ts_ms == x["end_ns"] // 1_000_000).all()
    assert rx.stats()["accepted"] == 15 and rx.stats()["rejected"] == 0


def test_json_and_protobuf_give_the_same_rows(rx):
    """The same two spans as OTLP/JSON (hex ids) and as protobuf built with the official classes."""
    import orjson
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    doc = _request({"checkout": [_span(7, 1, 0, "checkout/Place", KIND_SERVER, T0, 5_000_000),
                                 _span(7, 2, 1, "payment/Charge", KIND_CLIENT, T0 + 10, 3_000_000, STATUS_ERROR,
                                       {"http.response.status_code": 503})]})  # fmt: skip
    r = httpx.post(rx.url + "/v1/traces", content=orjson.dumps(doc), headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json() == {}
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.add(key="service.name").value.string_value = "checkout"
    rs.resource.attributes.add(key="service.version").value.string_value = "v2"
    spans = rs.scope_spans.add().spans
    tid = (7).to_bytes(16, "big")
    spans.add(trace_id=tid, span_id=(1).to_bytes(8, "big"), name="checkout/Place", kind=Span.SPAN_KIND_SERVER,
              start_time_unix_nano=T0, end_time_unix_nano=T0 + 5_000_000)  # fmt: skip
    client = spans.add(trace_id=tid, span_id=(2).to_bytes(8, "big"), parent_span_id=(1).to_bytes(8, "big"),
                       name="payment/Charge", kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=T0 + 10,
                       end_time_unix_nano=T0 + 3_000_010, status=Status(code=Status.STATUS_CODE_ERROR))  # fmt: skip
    client.attributes.add(key="http.response.status_code").value.int_value = 503
    body = gzip.compress(req.SerializeToString())
    r = httpx.post(rx.url + "/v1/traces", content=body,
                   headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"})  # fmt: skip
    assert r.status_code == 200
    recs = OtlpHttpSource(rx).open().read_batch(100, 1000)
    assert len(recs) == 4
    a = recs.extra
    for col in ("span_id", "parent_span_id", "trace_lo", "kind", "status", "code", "start_ns", "end_ns", "service",
                "version", "operation", "peer"):  # fmt: skip
        assert a[col][:2].tolist() == a[col][2:].tolist(), col
    assert a["span_id"].tolist()[:2] == [1, 2] and a["parent_span_id"].tolist()[:2] == [0, 1]
    # no peer.service on the client span and no server child in the request: the peer stays unknown
    assert a["peer"].tolist()[:2] == ["", ""] and a["code"].tolist()[:2] == [-1, 503]
    assert recs.cols["duration_ms"].tolist() == [5.0, 3.0, 5.0, 3.0] and a["version"].tolist()[0] == "v2"


def _post(rx, body: bytes, **headers: str) -> httpx.Response:
    h = {"Content-Type": "application/x-protobuf", **headers}
    return httpx.post(rx.url + "/v1/traces", content=body, headers=h)


def _pb(doc: dict) -> bytes:
    import orjson

    from vigil.io.otlp.metrics import json_to_proto

    return json_to_proto(orjson.dumps(doc), "traces")


def test_bad_input_gets_a_clear_4xx_dead_letters_and_counts_and_the_receiver_keeps_serving(rx):
    good = _pb(_request({"cart": [_span(1, 1, 0, "cart/Get", KIND_SERVER, T0, 1_000_000)]}))
    cases = [
        (_post(rx, b"\x0a\xff\xff\xff\xff\x0f"), 400, "invalid_protobuf"),  # a length past the end
        (_post(rx, good[:-3]), 400, "invalid_protobuf"),  # truncated message
        (_post(rx, b"\x0b\x0c"), 400, "invalid_protobuf"),  # a group wire type
        (_post(rx, b"x" * 300_000), 413, "too_large"),
        (_post(rx, gzip.compress(b"\0" * 400_000), **{"Content-Encoding": "gzip"}), 413, "too_large"),  # a bomb
        (_post(rx, b"not gzip", **{"Content-Encoding": "gzip"}), 400, "undecodable"),
        (_post(rx, good, **{"Content-Type": "text/plain"}), 415, None),
        (_post(rx, good, **{"Content-Encoding": "br"}), 415, None),
        (httpx.post(rx.url + "/v1/logs", content=good, headers={"Content-Type": "application/x-protobuf"}), 404, None),
        (httpx.post(rx.url + "/v1/traces", content=b"{nope", headers={"Content-Type": "application/json"}), 400,
         "invalid_json"),
        (httpx.post(rx.url + "/v1/traces", content=b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
                    headers={"Content-Type": "application/json"}), 400, "wrong_type"),
    ]  # fmt: skip
    for r, status, reason in cases:
        assert r.status_code == status, (r.status_code, r.content[:200])
        assert r.headers.get("X-Vigil-Reason") == reason
    from google.rpc.status_pb2 import Status  # the OTLP/HTTP error body

    msg = Status.FromString(cases[0][0].content).message
    assert "not an OTLP ExportTraceServiceRequest" in msg and "at byte 0" in msg
    # truncated on the wire: Content-Length says more than comes (the connection closes)
    import socket

    with socket.create_connection(("127.0.0.1", rx.port)) as s:
        s.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                  b"Content-Length: 100\r\n\r\n" + good[:20])  # fmt: skip
        s.shutdown(socket.SHUT_WR)
        assert b" 400 " in s.recv(1000).split(b"\r\n")[0] + b" "
    # spans with problems: the good ones are kept, each bad one is a dead letter, the response counts them
    bad = _request({
        "cart": [_span(2, 1, 0, "ok", KIND_SERVER, T0, 1_000_000),
                 _span(2, 2, 0, "ends before start", KIND_SERVER, T0, -5_000_000),
                 _span(2, 3, 0, "skewed", KIND_SERVER, T0 + 7_200 * 10**9, 1_000_000),
                 _span(2, 4, 0, "skewed too", KIND_SERVER, T0 - 7_200 * 10**9, 1_000_000),
                 _span(2, 5, 0, "ok too", KIND_SERVER, T0, 1_000_000),
                 _span(2, 0, 0, "zero span id", KIND_SERVER, T0, 1_000_000)],
        "": [_span(3, 1, 0, "no service", KIND_SERVER, T0, 1_000_000)],
    })  # fmt: skip
    r = _post(rx, _pb(bad))
    assert r.status_code == 200
    resp = ExportTraceServiceResponse.FromString(r.content)
    assert resp.partial_success.rejected_spans == 5 and "dead letters" in resp.partial_success.error_message
    r = _post(rx, good)
    assert r.status_code == 200 and r.content == b""  # the server still serves
    recs = OtlpHttpSource(rx).open().read_batch(100, 1000)
    assert recs.extra["operation"].tolist() == ["ok", "ok too", "cart/Get"]
    reasons = sorted(d.reason for d in recs.dead)
    assert reasons.count("absurd_timestamp") == 3 and reasons.count("missing_field") == 2
    assert any("median end" in d.message for d in recs.dead) and any("service.name" in d.message for d in recs.dead)
    st = rx.stats()
    assert st["rejected_by_reason"]["invalid_protobuf"] == 3 and st["rejected_by_reason"]["too_large"] == 2
    assert st["dead_items"] == 5 and st["errors"] == 0
    assert ExportTraceServiceRequest.FromString(good)  # the good request is a real one


def test_without_require_service_a_span_belongs_to_unknown_service_and_metrics_are_read():
    rx = OtlpHttpReceiver("127.0.0.1", 0, signal="metrics", metrics=MetricDecoder(key="series")).start()
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import (
            InMemoryMetricReader,  # noqa: F401
            PeriodicExportingMetricReader,
        )
        from opentelemetry.sdk.resources import Resource

        reader = PeriodicExportingMetricReader(OTLPMetricExporter(endpoint=rx.url + "/v1/metrics"),
                                               export_interval_millis=3_600_000)  # fmt: skip
        mp = MeterProvider(resource=Resource.create({"service.name": "cart"}), metric_readers=[reader])
        meter = mp.get_meter("m")
        h = meter.create_histogram("rpc.server.duration", unit="ms")
        for v in range(1, 101):
            h.record(v, {"rpc.method": "Get"})
        meter.create_counter("requests").add(7)
        mp.force_flush()
        mp.shutdown()
        recs = OtlpHttpSource(rx).open().read_batch(1000, 1000)
        got = dict(zip(recs.keys.tolist(), recs.cols["value"].tolist(), strict=True))
        assert got["cart|requests|"] == 7
        assert got["cart|rpc.server.duration.count|rpc.method=Get"] == 100
        assert 40 <= got["cart|rpc.server.duration.p50|rpc.method=Get"] <= 60
        # a traces request to a metrics receiver is checked and counted, not passed on
        r = _post(rx, _pb(_request({"": [_span(3, 1, 0, "x", KIND_SERVER, T0, 1)]})))
        assert r.status_code == 200 and rx.stats()["ignored"] == 1
    finally:
        rx.stop()
    recs = TraceDecoder().decode(_pb(_request({"": [_span(3, 1, 0, "x", KIND_SERVER, T0, 1)]})), "t")
    assert recs.keys.tolist() == [UNKNOWN_SERVICE] and not recs.dead


def test_a_full_queue_answers_503_with_retry_after_and_keeps_nothing():
    rx = OtlpHttpReceiver("127.0.0.1", 0, queue_rows=2).start()
    try:
        body = _pb(_request({"cart": [_span(1, i, 0, "x", KIND_SERVER, T0, 1_000) for i in (1, 2)]}))
        assert _post(rx, body).status_code == 200
        r = _post(rx, body)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        reader = OtlpHttpSource(rx).open()
        assert len(reader.read_batch(100, 100)) == 2  # drained: room again
        assert _post(rx, body).status_code == 200 and rx.stats()["busy"] == 1
    finally:
        rx.stop()


def test_mangled_requests_are_refused_or_read_never_crash_or_hang():
    """Random byte flips, cuts and splices of a real request: each decodes or raises OtlpError, in bounded time."""
    from vigil.io.otlp.traces import OtlpError

    rng = np.random.default_rng(0)
    spans = [_span(9, i + 1, i, f"op{i % 3}", KIND_SERVER if i % 2 else KIND_CLIENT, T0 + i, 1_000 + i,
                   attrs={"peer.service": "db", "http.response.status_code": 200}) for i in range(20)]  # fmt: skip
    good = bytearray(_pb(_request({"cart": spans[:10], "web": spans[10:]})))
    dec = TraceDecoder(span_attributes=["peer.service"], require_service=True)
    outcomes = {"read": 0, "refused": 0}
    for _ in range(3000):
        b = bytearray(good)
        how = rng.integers(4)
        if how == 0:
            for i in rng.integers(0, len(b), rng.integers(1, 6)):
                b[i] = int(rng.integers(256))
        elif how == 1:
            b = b[: rng.integers(len(b))]
        elif how == 2:  # a huge varint where a length goes
            i = int(rng.integers(len(b)))
            b[i:i] = b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"
        else:
            i, j = sorted(rng.integers(0, len(b), 2))
            b = b[:i] + b[j:] + b[i:j]
        try:
            dec.decode(bytes(b), "fuzz")
            outcomes["read"] += 1
        except OtlpError as e:
            assert e.reason == "invalid_protobuf"
            outcomes["refused"] += 1
    assert outcomes["read"] > 100 and outcomes["refused"] > 100

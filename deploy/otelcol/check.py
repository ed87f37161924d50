#!/usr/bin/env python3
"""End-to-end check of the local collector (deploy/otelcol/otelcol.sh up): OTLP/HTTP in, Kafka out.

Sends three spans (a parent and two children) and a counter with the OpenTelemetry Python SDK's OTLP/HTTP
exporters to the collector, then reads the Kafka topics the collector's kafka exporter writes to
(`otlp_proto` encoding) with confluent-kafka and decodes every record with opentelemetry-proto.

What the kafka exporter writes for otlp_proto is pdata's ProtoMarshaler output: one record per exported
batch, holding a `TracesData` / `MetricsData` message (opentelemetry/proto/{trace,metrics}/v1). That is
byte-for-byte the wire format of `ExportTraceServiceRequest` / `ExportMetricsServiceRequest` too (both are
`repeated ResourceSpans resource_spans = 1`), which this check asserts as well.

Usage:  python deploy/otelcol/check.py [--otlp-http http://127.0.0.1:4318] [--bootstrap 127.0.0.1:9092]
Needs:  confluent-kafka, opentelemetry-sdk, opentelemetry-exporter-otlp-proto-http (brings opentelemetry-proto)
Exits 0 when every check passed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1.metrics_pb2 import MetricsData
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

RUN_ATTR = "vigil.check.run"


def ok(msg: str) -> None:
    print(f"ok: {msg}", flush=True)


def fail(msg: str) -> None:
    print(f"FAIL: {msg}", file=sys.stderr, flush=True)
    sys.exit(1)


def resource_run(resource) -> str | None:
    for kv in resource.attributes:
        if kv.key == RUN_ATTR:
            return kv.value.string_value
    return None


def send(otlp_http: str, run: str) -> dict[str, tuple[str, str]]:
    """Export 3 spans and one counter point; return {span name: (trace id hex, parent span id hex)}."""
    resource = Resource.create({"service.name": "vigil-otelcol-check", RUN_ATTR: run})

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"{otlp_http}/v1/traces")))
    tracer = tracer_provider.get_tracer("vigil.otelcol.check")
    sent: dict[str, tuple[str, str]] = {}
    with tracer.start_as_current_span("check-parent", attributes={"vigil.kind": "parent"}) as parent:
        sent["check-parent"] = (f"{parent.get_span_context().trace_id:032x}", "")
        parent_id = f"{parent.get_span_context().span_id:016x}"
        for i in range(2):
            with tracer.start_as_current_span(f"check-child-{i}", attributes={"vigil.index": i}) as child:
                sent[f"check-child-{i}"] = (f"{child.get_span_context().trace_id:032x}", parent_id)
    if not tracer_provider.force_flush(timeout_millis=10_000):
        fail("the span exporter did not flush within 10 s")
    tracer_provider.shutdown()

    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"{otlp_http}/v1/metrics"), export_interval_millis=3_600_000
    )
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    counter = meter_provider.get_meter("vigil.otelcol.check").create_counter("vigil_check_events", unit="1")
    counter.add(7, {"outcome": "ok"})
    if not meter_provider.force_flush(timeout_millis=10_000):
        fail("the metric exporter did not flush within 10 s")
    meter_provider.shutdown()
    return sent


def wait_for_topics(bootstrap: str, topics: list[str], timeout: float) -> dict[str, int]:
    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    deadline = time.monotonic() + timeout
    have: dict[str, int] = {}
    while True:
        try:
            md = admin.list_topics(timeout=5)
            have = {t: len(md.topics[t].partitions) for t in topics if t in md.topics and md.topics[t].partitions}
        except KafkaException:  # broker not (yet) reachable: the collector's exporter is retrying too
            pass
        if len(have) == len(topics):
            return have
        if time.monotonic() > deadline:
            fail(f"topics {sorted(set(topics) - set(have))} not created by the collector within {timeout:.0f}s")
        time.sleep(0.3)


def read_run(bootstrap: str, partitions: dict[str, int], run: str, want: set[str], timeout: float):
    """Read every partition of the topics from the beginning; return this run's records per topic."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": f"vigil-otelcol-check-{run}",
        "enable.auto.commit": False,
        "log_level": 0,
    })
    consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t, n in partitions.items() for p in range(n)])
    found: dict[str, list] = {t: [] for t in partitions}
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not want <= {t for t, recs in found.items() if recs}:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise KafkaException(msg.error())
            decoder = TracesData if "span" in msg.topic() else MetricsData
            data = decoder.FromString(msg.value())
            resources = data.resource_spans if decoder is TracesData else data.resource_metrics
            if any(resource_run(r.resource) == run for r in resources):
                found[msg.topic()].append((msg, data))
    finally:
        consumer.close()
    return found


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--otlp-http", default=f"http://127.0.0.1:{os.environ.get('VIGIL_OTELCOL_HTTP_PORT', '4318')}")
    p.add_argument("--bootstrap", default=os.environ.get("VIGIL_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    p.add_argument("--traces-topic", default=os.environ.get("VIGIL_OTELCOL_TRACES_TOPIC", "otlp_spans"))
    p.add_argument("--metrics-topic", default=os.environ.get("VIGIL_OTELCOL_METRICS_TOPIC", "otlp_metrics"))
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()

    run = uuid.uuid4().hex
    t0 = time.monotonic()
    sent = send(args.otlp_http, run)
    ok(f"exported {len(sent)} spans and 1 counter over OTLP/HTTP to {args.otlp_http} (run {run})")

    partitions = wait_for_topics(args.bootstrap, [args.traces_topic, args.metrics_topic], args.timeout)
    found = read_run(args.bootstrap, partitions, run, {args.traces_topic, args.metrics_topic}, args.timeout)
    elapsed = time.monotonic() - t0

    # --- traces
    span_records = found[args.traces_topic]
    if not span_records:
        fail(f"no record of run {run} in topic {args.traces_topic}")
    got: dict[str, tuple[str, str]] = {}
    for msg, data in span_records:
        raw = msg.value()
        if ExportTraceServiceRequest.FromString(raw).SerializeToString() != data.SerializeToString():
            fail("the record does not read the same as ExportTraceServiceRequest")
        for rs in data.resource_spans:
            if resource_run(rs.resource) != run:
                continue
            for ss in rs.scope_spans:
                assert ss.scope.name == "vigil.otelcol.check", ss.scope.name
                for span in ss.spans:
                    got[span.name] = (span.trace_id.hex(), span.parent_span_id.hex())
    if got != sent:
        fail(f"spans in Kafka {got} != spans sent {sent}")
    msg0 = span_records[0][0]
    ok(f"topic {args.traces_topic}: {len(span_records)} record(s) (partition {msg0.partition()}, offset "
       f"{msg0.offset()}, {len(msg0.value())} bytes, key {msg0.key()!r}, headers {msg0.headers()!r}) decode as TracesData (and identically as "
       f"ExportTraceServiceRequest) with all 3 spans, trace ids and parent links intact")

    # --- metrics
    metric_records = found[args.metrics_topic]
    if not metric_records:
        fail(f"no record of run {run} in topic {args.metrics_topic}")
    points = []
    for msg, data in metric_records:
        if ExportMetricsServiceRequest.FromString(msg.value()).SerializeToString() != data.SerializeToString():
            fail("the record does not read the same as ExportMetricsServiceRequest")
        for rm in data.resource_metrics:
            if resource_run(rm.resource) != run:
                continue
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    if m.name == "vigil_check_events":
                        points += [dp.as_int for dp in m.sum.data_points]
    # cumulative temporality: the flush and the provider's shutdown may each export the same sum 7
    if not points or set(points) != {7}:
        fail(f"counter points in Kafka {points}: want the cumulative sum 7")
    ok(f"topic {args.metrics_topic}: {len(metric_records)} record(s) decode as MetricsData with the counter "
       f"vigil_check_events = 7")
    print(f"all collector checks passed ({elapsed:.1f}s from first export to last record read)", flush=True)


if __name__ == "__main__":
    main()

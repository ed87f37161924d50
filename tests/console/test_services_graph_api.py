"""The service graph in the console: the OpenTelemetry SDK sends spans to the `otlp` source (OTLP/HTTP) of a
pipeline from YAML with a `service_graph` step; `GET /api/services/graph` serves the graph the run built."""

from __future__ import annotations

import socket

import httpx

from vigil.alerting.store import AlertStore
from vigil.config import load_pipeline
from vigil.console.app import create_app
from vigil.console.server import serve_console
from vigil.engine.runner import EmbeddedRunner

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_sdk_spans_through_the_http_source_make_the_graph_the_console_serves(tmp_path):
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind, Status, StatusCode

    port = _free_port()
    f = tmp_path / "p.yaml"
    f.write_text(f"""
name: shop
source: {{kind: otlp, listen: "127.0.0.1:{port}", stop_after: 60}}
event_time: {{max_delay: 1s, idle_timeout: 1s}}
steps:
  - name: red
    service_graph: {{window: 10s, max_error_rate: 0.3, min_count: 5}}
    to: {{kind: jsonl, path: {tmp_path / "red.jsonl"}}}
alerts: [{{kind: jsonl, path: {tmp_path / "alerts.jsonl"}}}]
""")
    p = load_pipeline(str(f))
    p.source_.receiver.start()  # listening before the SDK sends (the run's open() finds it started)

    def provider(service: str, version: str) -> TracerProvider:
        tp = TracerProvider(resource=Resource.create({"service.name": service, "service.version": version}))
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(f"http://127.0.0.1:{port}/v1/traces")))
        return tp

    web, cart = provider("web", "1.0"), provider("cart", "2.3")
    tw, tc = web.get_tracer("t"), cart.get_tracer("t")
    for i in range(20):
        with tw.start_as_current_span("GET /cart", kind=SpanKind.SERVER):
            with tw.start_as_current_span("cart/Get", kind=SpanKind.CLIENT):  # no peer.service: joined by parent
                with tc.start_as_current_span("cart/Get", kind=SpanKind.SERVER) as s:
                    if i % 2:
                        s.set_status(Status(StatusCode.ERROR))
    web.shutdown()
    cart.shutdown()
    runner = EmbeddedRunner(p, out_dir=str(tmp_path))
    st = runner.run()
    assert st.events_in == 60 and st.dead_letters == 0
    store = AlertStore(tmp_path / "alerts.db")
    app = create_app(store=store, runner=runner, token=TOKEN, pipeline_name="shop")
    handle, url = serve_console(app)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            r = client.get("/api/services/graph", headers=AUTH)
            assert r.status_code == 200, r.text
            g = r.json()
            assert g["step"] == "red"
            assert [(e["source"], e["target"], e["calls"], e["errors"]) for e in g["edges"]] == [
                ("web", "cart", 20, 10)
            ]
            assert g["edges"][0]["callee_versions"].keys() == {"2.3"}
            assert g["edges"][0]["last_window"]["count"] == 20 and g["edges"][0]["last_window"]["rate"] == 2.0
            nodes = {n["id"]: n for n in g["nodes"]}
            assert nodes["cart"]["versions"].keys() == {"2.3"} and nodes["cart"]["anomalous"]  # 50 % errors
            assert not nodes["web"]["anomalous"]
            assert client.get("/api/services/graph?step=nope", headers=AUTH).status_code == 404
            assert client.get("/api/services/graph").status_code == 401
    finally:
        handle.stop()
        store.close()

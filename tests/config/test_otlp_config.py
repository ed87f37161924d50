"""The `otlp` source kind and the `service_graph` step in pipeline files: what loads, and errors that name the field."""

from __future__ import annotations

import pytest

from vigil.config import build_pipeline, parse_spec
from vigil.errors import ConfigError


def _doc(source: dict, graph: dict | None = None) -> dict:
    return {"name": "shop", "source": {"kind": "otlp", **source},
            "steps": [{"name": "red", "service_graph": graph or {}}]}  # fmt: skip


def test_an_otlp_pipeline_loads_with_its_columns_and_step(tmp_path):
    p = build_pipeline(parse_spec(_doc({"listen": "127.0.0.1:0", "key": "edge", "resource_attributes": ["k8s.pod"]},
                                       {"window": "30s", "max_p99_ms": 500})), base_dir=str(tmp_path))  # fmt: skip
    src, step = p.source_, p.steps[0]
    assert src.receiver.traces.key == "edge" and src.receiver.traces.resource_attributes == ["k8s.pod"]
    assert step.window_ms == 30_000 and step.max_p99_ms == 500
    src.receiver.stop()
    kafka = build_pipeline(parse_spec(_doc({"url": "kafka://127.0.0.1:9092/otlp_spans", "event_time": "start"})),
                           base_dir=str(tmp_path))  # fmt: skip
    assert kafka.source_.topic == "otlp_spans" and kafka.source_.decoder.event_time == "start"
    # metric rows have `value`, not the span columns the step reads: named at load
    with pytest.raises(ConfigError, match="duration_ms"):
        build_pipeline(parse_spec(_doc({"url": "kafka://127.0.0.1:9092/m", "signal": "metrics", "key": "series"})),
                       base_dir=str(tmp_path))  # fmt: skip


@pytest.mark.parametrize(
    ("source", "graph", "expected"),
    [
        ({}, None, "exactly one of `listen`"),
        ({"listen": "127.0.0.1:4318", "url": "kafka://h:9092/t"}, None, "exactly one of `listen`"),
        ({"listen": "4318"}, None, "`listen` must be HOST:PORT"),
        ({"listen": "127.0.0.1:4318", "signal": "metrics", "key": "edge"}, None, "`key` of a metrics source"),
        ({"listen": "127.0.0.1:4318", "signal": "logs"}, None, "signal"),
        ({"listen": "127.0.0.1:4318"}, {"windw": "60s"}, "windw"),
        ({"listen": "127.0.0.1:4318"}, {"max_error_rate": 2}, "max_error_rate"),
    ],
)
def test_bad_otlp_config_is_named(tmp_path, source, graph, expected):
    with pytest.raises(ConfigError) as exc:
        build_pipeline(parse_spec(_doc(source, graph)), base_dir=str(tmp_path))
    assert expected in str(exc.value)


def test_service_graph_needs_span_columns(tmp_path):
    doc = {"name": "x", "source": {"kind": "transactions", "events": 10},
           "steps": [{"name": "red", "service_graph": {}}]}  # fmt: skip
    with pytest.raises(ConfigError, match="duration_ms"):
        build_pipeline(parse_spec(doc), base_dir=str(tmp_path))

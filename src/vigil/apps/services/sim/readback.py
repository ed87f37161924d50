"""OTLP trace requests back into span columns (strings, not codes): for tests and offline analysis.

A plain loop over the parsed protobuf (a few microseconds a span): fine for checking what the simulator
wrote or for feeding a few minutes of traces to the RCA prototype, not for a hot path.

Examples:
    >>> cols = decode_traces([])
    >>> sorted(cols)[:4]
    ['code', 'duration_us', 'kind', 'name']
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

__all__ = ["decode_traces"]

_U64 = ("span_id", "parent_span_id", "trace_hi", "trace_lo")
_I64 = ("start_us", "duration_us")
_SMALL = ("kind", "status", "code")
_STR = ("service", "version", "zone", "name", "peer")


def decode_traces(messages: Iterable[bytes]) -> dict[str, np.ndarray]:
    """Span columns of every ``ExportTraceServiceRequest`` in ``messages``.

    Columns: ``trace_hi``, ``trace_lo``, ``span_id``, ``parent_span_id`` (uint64, 0 at roots), ``service``,
    ``version``, ``zone`` (resource attributes), ``name``, ``peer`` (``peer.service`` or ""), ``kind``,
    ``status``, ``code`` (``rpc.grpc.status_code`` or ``http.response.status_code``, else 0), ``start_us``,
    ``duration_us``.
    """
    out: dict[str, list[object]] = {k: [] for k in (*_U64, *_I64, *_SMALL, *_STR)}
    for msg in messages:
        req = ExportTraceServiceRequest.FromString(msg)
        for rs in req.resource_spans:
            res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    attrs = {kv.key: kv.value for kv in sp.attributes}
                    out["trace_hi"].append(int.from_bytes(sp.trace_id[:8], "big"))
                    out["trace_lo"].append(int.from_bytes(sp.trace_id[8:], "big"))
                    out["span_id"].append(int.from_bytes(sp.span_id, "big"))
                    out["parent_span_id"].append(int.from_bytes(sp.parent_span_id, "big") if sp.parent_span_id else 0)
                    out["start_us"].append(sp.start_time_unix_nano // 1000)
                    out["duration_us"].append((sp.end_time_unix_nano - sp.start_time_unix_nano) // 1000)
                    out["kind"].append(sp.kind)
                    out["status"].append(sp.status.code)
                    code = attrs.get("rpc.grpc.status_code") or attrs.get("http.response.status_code")
                    out["code"].append(code.int_value if code is not None else 0)
                    out["service"].append(res.get("service.name", ""))
                    out["version"].append(res.get("service.version", ""))
                    out["zone"].append(res.get("cloud.availability_zone", ""))
                    out["name"].append(sp.name)
                    peer = attrs.get("peer.service")
                    out["peer"].append(peer.string_value if peer is not None else "")
    cols: dict[str, np.ndarray] = {}
    for k, v in out.items():
        if k in _U64:
            cols[k] = np.array(v, np.uint64)
        elif k in _I64:
            cols[k] = np.array(v, np.int64)
        elif k in _SMALL:
            cols[k] = np.array(v, np.int16)
        else:
            cols[k] = np.array(v, object)
    return cols

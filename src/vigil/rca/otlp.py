"""Recorded OpenTelemetry data for the RCA: OTLP trace (and metric) files -> a :class:`MetricFrame`.

**Files read** (the format is sniffed, not taken from the name; ``.gz`` is unpacked):

* **OTLP protobuf**, length-delimited: ``ExportTraceServiceRequest`` messages, each preceded by its length as
  a 4-byte big-endian unsigned integer (what the Collector's ``file`` exporter writes with ``format: proto``,
  and ``vigil generate services``'s ``traces.otlp``); or one bare ``ExportTraceServiceRequest`` / ``TracesData``
  (the same wire format), e.g. a captured OTLP/HTTP request body.
* **OTLP/JSON**: one request per line (the ``file`` exporter's ``format: json``, ``traces.jsonl``), one JSON
  document, or a JSON list of them. Ids are hex, as the OTLP JSON mapping says; kinds may be integers or
  ``SPAN_KIND_SERVER``-style names.

**From spans to series.** SERVER and CONSUMER spans are a service's own requests; CLIENT and PRODUCER spans are
its calls. The callee of a call is ``peer.service`` when set, else the service of the call's child span (the
server span it caused: what real instrumentation gives), else ``server.address`` / ``net.peer.name`` /
``db.system``, so databases and external APIs without spans of their own become virtual services seen through
their callers. :func:`vigil.rca.series.red_frame` then bins them into RED series per service and call edge
(10 s by default; percentiles mix-adjusted by operation name). Status ``ERROR`` (code 2) is a failed request.
``service.version`` (resource attribute) gives the change events: the first span of each new version of a
service is a ``deploy`` at that time.

**Metrics** (optional, the same framings of ``ExportMetricsServiceRequest``): gauges and sums named
:data:`METRIC_NAMES` become the resource series ``cpu``, ``mem``, ``gc``, ``cpu_pressure`` per
``service.name`` (cumulative sums are differenced).

Parsing walks the protobuf span by span in Python (~2-4 us a span here): fine for the minutes around an
incident (a million spans in a few seconds), not for a hot path.

Examples:
    >>> cols, names = read_otlp_spans([])
    >>> names, len(cols["ts_ms"])
    ([], 0)
"""

from __future__ import annotations

import gzip
import struct
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np

from vigil.rca.frame import ChangeEvent, MetricFrame

__all__ = ["METRIC_NAMES", "frame_from_otlp", "read_messages", "read_otlp_metrics", "read_otlp_spans"]

#: OTLP metric names (semantic conventions and common exporters) -> the RCA's resource metric
METRIC_NAMES = {
    "container.cpu.utilization": "cpu", "k8s.pod.cpu.utilization": "cpu", "process.cpu.utilization": "cpu",
    "system.cpu.utilization": "cpu", "container.memory.usage": "mem", "container.memory.working_set": "mem",
    "k8s.pod.memory.working_set": "mem", "process.memory.usage": "mem", "runtime.gc.pause.time": "gc",
    "jvm.gc.duration": "gc", "go.gc.pause.time": "gc", "container.cpu.pressure": "cpu_pressure",
}  # fmt: skip
_KIND_NAMES = {"SPAN_KIND_UNSPECIFIED": 0, "SPAN_KIND_INTERNAL": 1, "SPAN_KIND_SERVER": 2, "SPAN_KIND_CLIENT": 3,
               "SPAN_KIND_PRODUCER": 4, "SPAN_KIND_CONSUMER": 5}  # fmt: skip
_STATUS_NAMES = {"STATUS_CODE_UNSET": 0, "STATUS_CODE_OK": 1, "STATUS_CODE_ERROR": 2}
_PEER_KEYS = ("server.address", "net.peer.name", "db.system")
_SERVER, _CLIENT = 2, 3


def _raw(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def read_messages(path: str) -> tuple[str, list[Any]]:
    """The requests of an OTLP file: ``("proto", [bytes, ...])`` or ``("json", [dict, ...])`` (module docstring)."""
    data = _raw(path)
    head = data[:64].lstrip()
    if head[:1] in (b"{", b"["):
        import msgspec

        lines = [ln for ln in data.splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].lstrip()[:1] == b"{":  # JSON lines
            docs = []
            for n, line in enumerate(lines, 1):
                try:
                    docs.append(msgspec.json.decode(line))
                except msgspec.DecodeError as exc:
                    raise ValueError(f"{path}: line {n} is not JSON ({exc})") from None
        else:
            try:
                doc = msgspec.json.decode(data)
            except msgspec.DecodeError as exc:
                raise ValueError(f"{path}: not JSON ({exc})") from None
            docs = doc if isinstance(doc, list) else [doc]
        return "json", [d for d in docs if isinstance(d, dict)]
    return "proto", list(_frames(data)) if _framed_ok(data) else [data]


def _framed_ok(data: bytes) -> bool:
    """Does ``data`` split exactly into 4-byte big-endian length-prefixed frames?"""
    pos, n = 0, len(data)
    while pos < n:
        if pos + 4 > n:
            return False
        (size,) = struct.unpack_from(">I", data, pos)
        pos += 4 + size
    return pos == n and n > 0


def _frames(data: bytes) -> Iterator[bytes]:
    pos = 0
    while pos < len(data):
        (size,) = struct.unpack_from(">I", data, pos)
        yield data[pos + 4 : pos + 4 + size]
        pos += 4 + size


def _hex_id(s: Any) -> int:
    return int(s, 16) if s else 0


def _json_value(v: dict[str, Any]) -> Any:
    for k in ("stringValue", "intValue", "doubleValue", "boolValue"):
        if k in v:
            return int(v[k]) if k == "intValue" else v[k]
    return None


class _Spans:
    """Span rows gathered from either encoding, then turned into columns."""

    def __init__(self) -> None:
        self.svc: dict[str, int] = {}
        self.ops: dict[str, int] = {}
        self.rows: list[tuple[int, int, int, int, int, int, int, int, int, str, str]] = []

    def code(self, name: str) -> int:
        return self.svc.setdefault(name, len(self.svc))

    def add(self, service: int, version: str, name: str, kind: int, status: int, start_ns: int, end_ns: int,
            span_id: int, parent_id: int, peer: str) -> None:  # fmt: skip
        op = self.ops.setdefault(name, len(self.ops))
        self.rows.append((start_ns // 1_000_000, service, kind, status, max(0, end_ns - start_ns) // 1000, op,
                          span_id, parent_id, -1, peer, version))  # fmt: skip

    def proto(self, msg: bytes) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        req = ExportTraceServiceRequest.FromString(msg)
        add = self.add
        for rs in req.resource_spans:
            res = {kv.key: kv.value.string_value for kv in rs.resource.attributes}
            s, ver = self.code(res.get("service.name", "") or "unknown"), res.get("service.version", "")
            for ss in rs.scope_spans:
                for sp in ss.spans:
                    kind = sp.kind
                    peer = ""
                    if kind == 3 or kind == 4:
                        attrs = {kv.key: kv.value.string_value for kv in sp.attributes}
                        peer = attrs.get("peer.service", "") or next(
                            ("~" + attrs[k] for k in _PEER_KEYS if attrs.get(k)), "")  # fmt: skip
                    add(s, ver, sp.name, kind, sp.status.code, sp.start_time_unix_nano, sp.end_time_unix_nano,
                        int.from_bytes(sp.span_id, "big"), int.from_bytes(sp.parent_span_id, "big"), peer)  # fmt: skip

    def json(self, doc: dict[str, Any]) -> None:
        for rs in doc.get("resourceSpans", doc.get("resource_spans", [])):
            res = {a["key"]: _json_value(a.get("value", {})) for a in rs.get("resource", {}).get("attributes", [])}
            s, ver = self.code(str(res.get("service.name") or "unknown")), str(res.get("service.version") or "")
            for ss in rs.get("scopeSpans", rs.get("instrumentationLibrarySpans", [])):
                for sp in ss.get("spans", []):
                    kind = sp.get("kind", 0)
                    kind = _KIND_NAMES.get(kind, 0) if isinstance(kind, str) else int(kind)
                    status = sp.get("status", {}).get("code", 0)
                    status = _STATUS_NAMES.get(status, 0) if isinstance(status, str) else int(status)
                    peer = ""
                    if kind in (3, 4):
                        attrs = {a["key"]: _json_value(a.get("value", {})) for a in sp.get("attributes", [])}
                        peer = str(attrs.get("peer.service") or "") or next(
                            ("~" + str(attrs[k]) for k in _PEER_KEYS if attrs.get(k)), "")  # fmt: skip
                    self.add(s, ver, str(sp.get("name", "")), kind, status, int(sp.get("startTimeUnixNano", 0)),
                             int(sp.get("endTimeUnixNano", 0)), _hex_id(sp.get("spanId")),
                             _hex_id(sp.get("parentSpanId")), peer)  # fmt: skip

    def columns(self) -> tuple[dict[str, np.ndarray], list[str]]:
        n = len(self.rows)
        cols = list(zip(*self.rows, strict=True)) if n else [()] * 11
        ts, svc, kind, status, dur, op = (np.array(c, np.int64) for c in cols[:6])
        sid = np.array(cols[6], np.uint64) if n else np.zeros(0, np.uint64)
        par = np.array(cols[7], np.uint64) if n else np.zeros(0, np.uint64)
        # a call's callee: peer.service, else the service of the span it caused, else an address/db system
        order = np.argsort(sid, kind="stable")
        child_of = np.full(n, -1, np.int64)
        peer = np.full(n, -1, np.int64)
        if n:
            pos = np.clip(np.searchsorted(sid[order], par), 0, n - 1)
            hit = (par != 0) & (sid[order][pos] == par)
            child_of[order[pos][hit]] = np.flatnonzero(hit)  # one child per parent is enough
            uniq, inv = np.unique(np.array(cols[9], object).astype(str), return_inverse=True)
            named = np.array([self.code(u) if u and not u.startswith("~") else -1 for u in uniq.tolist()], np.int64)
            other = np.array([self.code(u[1:]) if u.startswith("~") else -1 for u in uniq.tolist()], np.int64)
            child_svc = np.where(child_of >= 0, svc[np.maximum(child_of, 0)], -1)
            child_svc[child_svc == svc] = -1
            peer = np.where(named[inv] >= 0, named[inv], np.where(child_svc >= 0, child_svc, other[inv]))
            peer[(kind != 3) & (kind != 4)] = -1
        names = list(self.svc)
        # messaging: a consumer span is the service's own work, a producer span a call
        kind = np.where(kind == 5, _SERVER, np.where(kind == 4, _CLIENT, kind))
        out = {"ts_ms": ts, "service": svc, "peer": peer, "kind": kind, "status": status, "duration_us": dur,
               "op": op, "span_id": sid, "parent_span_id": par,
               "version": np.array(cols[10], object)}  # fmt: skip
        return out, names


def read_otlp_spans(paths: str | Iterable[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Span columns (codes into the returned service names) of OTLP trace files (module docstring).

    Columns: ``ts_ms`` (start), ``service``, ``peer`` (-1 unless a call with a known callee), ``kind`` (2 server,
    3 client; consumer/producer folded in), ``status`` (2 = error), ``duration_us``, ``op`` (code of the span
    name), ``span_id``, ``parent_span_id``, ``version`` (strings).
    """
    acc = _Spans()
    for path in [paths] if isinstance(paths, str) else paths:
        fmt, msgs = read_messages(path)
        for i, m in enumerate(msgs):
            try:
                acc.proto(m) if fmt == "proto" else acc.json(m)
            except Exception as exc:  # protobuf's DecodeError and malformed JSON shapes alike
                raise ValueError(f"{path}: request {i + 1} is not an OTLP trace request ({exc})") from None
    return acc.columns()


def _version_changes(cols: dict[str, np.ndarray], names: list[str]) -> list[ChangeEvent]:
    """A ``deploy`` at the first span of every version of a service after its first."""
    out = []
    first: dict[tuple[int, str], int] = {}
    for t, s, v in zip(cols["ts_ms"].tolist(), cols["service"].tolist(), cols["version"].tolist(), strict=True):
        if v and ((s, v) not in first or t < first[(s, v)]):
            first[(s, v)] = t
    by_svc: dict[int, list[tuple[int, str]]] = {}
    for (s, v), t in first.items():
        by_svc.setdefault(s, []).append((t, v))
    for s, vs in by_svc.items():
        vs.sort()
        for (_, old), (t, new) in zip(vs, vs[1:], strict=False):
            out.append(ChangeEvent(t, names[s], "deploy", f"{old} -> {new}"))
    return sorted(out, key=lambda c: c.ts_ms)


def _metric_points(fmt: str, msg: Any) -> Iterator[tuple[str, str, bool, list[tuple[int, float, str]]]]:
    """(service, metric name, cumulative?, [(time ns, value, attribute key), ...]) of one request."""
    if fmt == "proto":
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        req = ExportMetricsServiceRequest.FromString(msg)
        for rm in req.resource_metrics:
            res = {kv.key: kv.value.string_value for kv in rm.resource.attributes}
            for sm in rm.scope_metrics:
                for met in sm.metrics:
                    which = met.WhichOneof("data")
                    if met.name not in METRIC_NAMES or which not in ("gauge", "sum"):
                        continue
                    data = getattr(met, which)
                    cum = which == "sum" and data.aggregation_temporality == 2
                    pts = [(dp.time_unix_nano, dp.as_double if dp.WhichOneof("value") == "as_double"
                            else float(dp.as_int), str(sorted((kv.key, str(kv.value)) for kv in dp.attributes)))
                           for dp in data.data_points]  # fmt: skip
                    yield res.get("service.name", ""), met.name, cum, pts
        return
    for rm in msg.get("resourceMetrics", []):
        res = {a["key"]: _json_value(a.get("value", {})) for a in rm.get("resource", {}).get("attributes", [])}
        for sm in rm.get("scopeMetrics", []):
            for met in sm.get("metrics", []):
                which = "gauge" if "gauge" in met else "sum" if "sum" in met else None
                if met.get("name") not in METRIC_NAMES or which is None:
                    continue
                data = met[which]
                temp = data.get("aggregationTemporality", 0)
                cum = which == "sum" and temp in (2, "AGGREGATION_TEMPORALITY_CUMULATIVE")
                pts = [(int(dp.get("timeUnixNano", 0)), float(dp.get("asDouble", dp.get("asInt", 0))),
                        str(sorted((a["key"], str(a.get("value"))) for a in dp.get("attributes", []))))
                       for dp in data.get("dataPoints", [])]  # fmt: skip
                yield str(res.get("service.name") or ""), met["name"], cum, pts


def read_otlp_metrics(paths: str | Iterable[str], services: list[str]) -> tuple[dict[str, np.ndarray], list[str]]:
    """Long-form rows (``ts_ms``, ``service``, ``metric``, ``value``) of the known metrics in OTLP metric files.

    ``services`` is extended with services seen only here; ``metric`` codes index the returned names.
    """
    mnames = sorted(set(METRIC_NAMES.values()))
    rows: list[tuple[int, int, int, float]] = []
    last: dict[tuple[int, str, str], float] = {}
    for path in [paths] if isinstance(paths, str) else paths:
        fmt, msgs = read_messages(path)
        for i, m in enumerate(msgs):
            try:
                found = list(_metric_points(fmt, m))
            except Exception as exc:  # protobuf's DecodeError and malformed JSON shapes alike
                raise ValueError(f"{path}: request {i + 1} is not an OTLP metrics request ({exc})") from None
            for name, metric, cumulative, pts in found:
                if not name:
                    continue
                if name not in services:
                    services.append(name)
                s, j = services.index(name), mnames.index(METRIC_NAMES[metric])
                for t_ns, v, attrs in pts:
                    if cumulative:  # counters since start: the increase over the interval
                        key = (s, metric, attrs)
                        prev, last[key] = last.get(key), v
                        if prev is None or v < prev:
                            continue
                        v -= prev
                    rows.append((t_ns // 1_000_000, s, j, v))
    rows.sort()
    arr = list(zip(*rows, strict=True)) if rows else [(), (), (), ()]
    return ({"ts_ms": np.array(arr[0], np.int64), "service": np.array(arr[1], np.int64),
             "metric": np.array(arr[2], np.int64), "value": np.array(arr[3], np.float64)}, mnames)  # fmt: skip


def frame_from_otlp(traces: str | Iterable[str], metrics: str | Iterable[str] | None = None, *,
                    step_ms: int = 10_000, until_ms: int | None = None) -> MetricFrame:  # fmt: skip
    """RED series per service and call edge from OTLP trace files, resource series from metric files.

    With the deploys that ``service.version`` shows; only spans starting before ``until_ms`` are used.
    """
    from vigil.rca.series import add_resource_metrics, red_frame

    cols, names = read_otlp_spans(traces)
    if not len(cols["ts_ms"]):
        raise ValueError("no spans in the OTLP input")
    end = int(cols["ts_ms"].max()) + 1 if until_ms is None else until_ms
    keep = cols["ts_ms"] < end
    if not keep.any():
        raise ValueError("no spans before the incident time")
    cols = {k: v[keep] for k, v in cols.items()}
    t0 = int(cols["ts_ms"].min()) // step_ms * step_ms
    frame = red_frame(cols, names, t0_ms=t0, t1_ms=end, step_ms=step_ms)
    if metrics is not None:
        rows, mnames = read_otlp_metrics(metrics, names)
        keep = rows["ts_ms"] <= end
        frame = add_resource_metrics(frame, {k: v[keep] for k, v in rows.items()}, names, mnames)
    frame.changes = _version_changes(cols, names)
    return frame

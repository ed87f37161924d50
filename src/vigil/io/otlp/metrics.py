"""``ExportMetricsServiceRequest`` → metric rows (:mod:`vigil.io.otlp.columns`), and OTLP/JSON → protobuf.

Metric requests hold few points (one per series and interval), so they are read with the protobuf classes.
Points whose value is not finite, or whose time is outside ``[min_ts_ms, max_ts_ms]``, are dead letters
(``not_finite``, ``absurd_timestamp``).

OTLP/JSON (:func:`json_to_proto`) is the protobuf JSON mapping with two OTLP twists: trace and span ids are hex,
not base64, and unknown fields are ignored. It is turned into protobuf bytes and decoded by the same path.

Examples:
    >>> from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    >>> req = ExportMetricsServiceRequest()
    >>> rm = req.resource_metrics.add()
    >>> _ = rm.resource.attributes.add(key="service.name", value={"string_value": "cart"})
    >>> m = rm.scope_metrics.add().metrics.add(name="cpu", unit="1")
    >>> _ = m.gauge.data_points.add(time_unix_nano=1_700_000_000_000_000_000, as_double=0.5)
    >>> recs = MetricDecoder().decode(req.SerializeToString(), "otlp")
    >>> recs.keys.tolist(), recs.extra["metric"].tolist(), recs.cols["value"].tolist()
    (['cart'], ['cpu'], [0.5])
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from vigil.io.base import DeadLetter, Records
from vigil.io.otlp.columns import METRIC_EXTRA, METRIC_TYPES, RESOURCE_COLUMNS, UNKNOWN_SERVICE
from vigil.io.otlp.traces import MAX_TS_MS, MIN_TS_MS, OtlpError, any_value

__all__ = ["MetricDecoder", "bucket_quantile", "json_to_proto"]

QUANTILES = (0.5, 0.95, 0.99)


def bucket_quantile(q: float, bounds: Sequence[float], counts: Sequence[int]) -> float:
    """The ``q`` quantile of an explicit-bucket histogram, linear within the bucket (``histogram_quantile``).

    Examples:
        >>> bucket_quantile(0.5, [10, 20], [0, 10, 0])
        15.0
        >>> bucket_quantile(0.99, [10, 20], [0, 0, 5])  # in the +Inf bucket: the last finite bound
        20.0
    """
    total = sum(counts)
    if total <= 0:
        return math.nan
    rank = q * total
    seen = 0.0
    for i, c in enumerate(counts):
        if seen + c >= rank and c > 0:
            if i >= len(bounds):
                return float(bounds[-1]) if bounds else math.nan
            lo = float(bounds[i - 1]) if i > 0 else min(0.0, float(bounds[0]))
            return lo + (float(bounds[i]) - lo) * (rank - seen) / c
        seen += c
    return float(bounds[-1]) if bounds else math.nan


def _attrs(kvs: Any) -> str:
    return ",".join(f"{kv.key}={any_value(kv.value)}" for kv in sorted(kvs, key=lambda kv: kv.key))


class MetricDecoder:
    """Decodes OTLP metric requests into metric rows (``key``: ``service`` or ``series``)."""

    def __init__(self, *, key: Literal["service", "series"] = "service", min_ts_ms: int = MIN_TS_MS,
                 max_ts_ms: int = MAX_TS_MS) -> None:  # fmt: skip
        if key not in ("service", "series"):
            raise ValueError(f"`key` must be service or series; got {key!r}")
        self.key, self.min_ts_ms, self.max_ts_ms = key, min_ts_ms, max_ts_ms
        self.extra_names: list[str] = []

    def decode(self, body: bytes, source: str, position: Any = None) -> Records:
        """Metric rows of one request (bad points among its ``dead``).

        Raises:
            OtlpError: the bytes are not an ``ExportMetricsServiceRequest``.
        """
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

        try:
            req = ExportMetricsServiceRequest.FromString(body)
        except (DecodeError, RecursionError) as e:
            raise OtlpError("invalid_protobuf", f"not an OTLP ExportMetricsServiceRequest: {e}") from None
        rows: list[tuple[Any, ...]] = []
        dead: list[DeadLetter] = []
        for rm in req.resource_metrics:
            ra = {kv.key: any_value(kv.value) for kv in rm.resource.attributes}
            svc = ra.get("service.name")
            svc = svc if isinstance(svc, str) and svc else UNKNOWN_SERVICE
            res = tuple(next((str(ra[a]) for a in names if a in ra), "") for names in RESOURCE_COLUMNS.values())
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    for name, ty, temp, t, start, value, attrs in self._points(m):
                        ts_ms = t // 1_000_000
                        where = f"{svc} {name} [{attrs}] at {t}"
                        if not math.isfinite(value):
                            dead.append(DeadLetter("not_finite", f"`value` is {value}", where, source, position))
                        elif not self.min_ts_ms <= ts_ms <= self.max_ts_ms:
                            dead.append(DeadLetter("absurd_timestamp", f"time_unix_nano {t} is outside "
                                                   "[min_ts_ms, max_ts_ms]: a broken clock?", where, source,
                                                   position))  # fmt: skip
                        else:
                            rows.append((svc, name, attrs, m.unit, ty, temp, start, ts_ms, value, *res))
        return self._records(rows, dead)

    def _points(self, m: Any) -> Any:
        which = m.WhichOneof("data")
        ty = METRIC_TYPES.get(which or "", 0)
        if which in ("gauge", "sum"):
            d = getattr(m, which)
            temp = d.aggregation_temporality if which == "sum" else 0
            for p in d.data_points:
                v = p.as_double if p.WhichOneof("value") == "as_double" else float(p.as_int)
                yield m.name, ty, temp, p.time_unix_nano, p.start_time_unix_nano, v, _attrs(p.attributes)
        elif which in ("histogram", "exponential_histogram"):
            d = getattr(m, which)
            for p in d.data_points:
                a, base = _attrs(p.attributes), (m.name, ty, d.aggregation_temporality, p.time_unix_nano,
                                                 p.start_time_unix_nano)  # fmt: skip
                stats: list[tuple[str, float]] = [(".count", float(p.count))]
                stats += [(f".{s}", float(getattr(p, s))) for s in ("sum", "min", "max") if p.HasField(s)]
                if which == "histogram":
                    stats += [(f".p{round(q * 100)}", bucket_quantile(q, list(p.explicit_bounds),
                                                                      list(p.bucket_counts)))
                              for q in QUANTILES if p.count]  # fmt: skip
                for suffix, v in stats:
                    yield base[0] + suffix, base[1], base[2], base[3], base[4], v, a
        elif which == "summary":
            for p in m.summary.data_points:
                a = _attrs(p.attributes)
                stats = [(".count", float(p.count)), (".sum", p.sum)]
                stats += [(f".p{q.quantile * 100:g}", q.value) for q in p.quantile_values]
                for suffix, v in stats:
                    yield m.name + suffix, ty, 0, p.time_unix_nano, p.start_time_unix_nano, v, a

    def _records(self, rows: list[tuple[Any, ...]], dead: list[DeadLetter]) -> Records:
        cols = list(zip(*rows, strict=True)) if rows else [()] * (9 + len(RESOURCE_COLUMNS))
        svc, name, attrs, unit, ty, temp, start, ts, value = cols[:9]
        extra: dict[str, np.ndarray] = {
            "service": np.array(svc, object), "metric": np.array(name, object), "attributes": np.array(attrs, object),
            "unit": np.array(unit, object), "type": np.array(ty, np.int8), "temporality": np.array(temp, np.int8),
            "start_ns": np.array(start, np.int64),
        }  # fmt: skip
        for i, col in enumerate(RESOURCE_COLUMNS):
            extra[col] = np.array(cols[9 + i], object)
        assert set(extra) == set(METRIC_EXTRA)
        if self.key == "service":
            keys = extra["service"]
        else:
            keys = np.array([f"{s}|{n}|{a}" for s, n, a in zip(svc, name, attrs, strict=True)], object)
        return Records(keys, np.array(ts, np.int64), {"value": np.array(value, np.float64)}, extra, dead)

    def decode_indexed(
        self, values: Sequence[bytes], source: str, first_position: int = 0
    ) -> tuple[Records, np.ndarray]:
        """Metric rows of many requests (Kafka message values) and, per row, the index of its message."""
        from vigil.io.otlp.traces import concat_records

        parts, idx, dead = [], [], []
        for i, v in enumerate(values):
            if not v:
                continue
            try:
                r = self.decode(bytes(v), source, first_position + i)
            except OtlpError as e:
                dead.append(DeadLetter(e.reason, e.message, bytes(v[:700]).hex(), source, first_position + i))
                continue
            dead += r.dead
            if len(r):
                parts.append(r)
                idx.append(np.full(len(r), i, np.int64))
        out = concat_records(parts) if parts else self._records([], [])
        out.dead = dead
        return out, (np.concatenate(idx) if idx else np.empty(0, np.int64))


def _hex_to_b64(d: dict[str, Any], keys: tuple[str, ...]) -> None:
    for k in keys:
        v = d.get(k)
        if isinstance(v, str) and v:
            try:
                d[k] = base64.b64encode(bytes.fromhex(v)).decode()
            except ValueError:
                raise OtlpError("wrong_type", f"`{k}` must be hex (OTLP/JSON); got {v[:40]!r}") from None


def json_to_proto(body: bytes, signal: Literal["traces", "metrics"]) -> bytes:
    """An OTLP/JSON export request as protobuf bytes.

    Raises:
        OtlpError: not JSON (``invalid_json``), not an object (``not_an_object``), ids not hex or fields of the
            wrong type (``wrong_type``).
    """
    import orjson
    from google.protobuf.json_format import ParseDict, ParseError
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        raise OtlpError("invalid_json", f"not JSON: {e}") from None
    if not isinstance(doc, dict):
        raise OtlpError("not_an_object", f"an OTLP/JSON request is an object; got {type(doc).__name__}")
    ids = ("traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id")
    try:
        if signal == "traces":
            for rs in doc.get("resourceSpans") or doc.get("resource_spans") or ():
                for ss in rs.get("scopeSpans") or rs.get("scope_spans") or ():
                    for sp in ss.get("spans") or ():
                        _hex_to_b64(sp, ids)
                        for link in sp.get("links") or ():
                            _hex_to_b64(link, ids)
        msg: Any = ExportTraceServiceRequest() if signal == "traces" else ExportMetricsServiceRequest()
        if signal == "metrics":  # exemplars carry ids too
            for rm in doc.get("resourceMetrics") or ():
                for sm in rm.get("scopeMetrics") or ():
                    for m in sm.get("metrics") or ():
                        for kind in m.values():
                            for p in kind.get("dataPoints") or () if isinstance(kind, dict) else ():
                                for ex in p.get("exemplars") or ():
                                    _hex_to_b64(ex, ids)
        ParseDict(doc, msg, ignore_unknown_fields=True)
    except (ParseError, AttributeError, TypeError, ValueError) as e:
        if isinstance(e, OtlpError):
            raise
        raise OtlpError("wrong_type", f"not an OTLP/JSON {signal} request: {str(e)[:300]}") from None
    return msg.SerializeToString()  # type: ignore[no-any-return]

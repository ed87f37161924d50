"""The column contract of the ``otlp`` source: what a span row and a metric row hold, by name and dtype.

Everything downstream of the ``otlp`` source (the services pipeline's service graph and RED windows, the
example pipelines, tests) reads these names and nothing else; the decoders in this package fill exactly
these. The contract is **stable**: columns may be added, none renamed, retyped or given another meaning.

**Span rows** (``signal: traces``) — one row per span, in the order the spans came:

* ``keys`` (str): the row's key, by the source's ``key`` option: ``service`` (default), ``operation``
  (``"<service> <operation>"``) or ``edge`` (``"<service>-><peer>"``, ``"<service>->"`` without a peer).
* ``ts_ms`` (int64): the event time, epoch ms: the span's **end** by default (``event_time: start`` picks
  the start). Why the end: a span is exported when it ends, so end times arrive nearly in order; with
  start times the slowest spans — the very ones a latency detector is after — would be the latest
  events, behind the watermark by their own duration.
* ``cols`` (float64, finite): see :data:`SPAN_COLS`.
* ``extra``: see :data:`SPAN_EXTRA` (fixed dtypes), plus one object column per configured
  ``resource_attributes`` / ``span_attributes`` entry (``""`` when absent), plus ``trace_id_hex`` and
  ``span_id_hex`` (lower-case hex str) with ``hex_ids: true``.

**Metric rows** (``signal: metrics``) — one row per (metric, attributes, point, statistic):

* ``keys`` (str): the service (``key: service``, default) or the series
  (``key: series``: ``"<service>|<metric>|<attributes>"``).
* ``ts_ms`` (int64): the point's ``time_unix_nano`` in ms.
* ``cols``: ``value`` (float64, finite).
* ``extra``: see :data:`METRIC_EXTRA`. Gauges and sums give one row per point (``metric`` = the name;
  sums as sent, delta or cumulative: see ``temporality``). Histograms give ``<name>.count``,
  ``<name>.sum`` (when sent), ``<name>.min`` / ``<name>.max`` (when sent) and ``<name>.p50``,
  ``<name>.p95``, ``<name>.p99`` (bucket-derived, linear within the bucket as Prometheus'
  ``histogram_quantile``; the upper bound of the last finite bucket when the quantile falls in the +Inf one).
  Exponential histograms give ``.count``, ``.sum``, ``.min``, ``.max``; summaries ``.count``, ``.sum`` and
  ``.p<q>`` per reported quantile (``.p50``, ``.p99``, ``.p99.9``).

Trace and span ids are 16 and 8 bytes read **big-endian** into unsigned 64-bit words (the simulator's
convention): ``trace_hi`` = bytes 0-7, ``trace_lo`` = bytes 8-15. :func:`hex_ids` turns them back into the
hex strings OTLP/JSON and tracing UIs show.

Examples:
    >>> import numpy as np
    >>> hex_ids(np.array([0x0102030405060708], np.uint64), np.array([0x1112131415161718], np.uint64))
    ['01020304050607081112131415161718']
    >>> hex_ids(np.array([255], np.uint64))
    ['00000000000000ff']
    >>> sorted(SPAN_COLS), SPAN_EXTRA["kind"][0], METRIC_EXTRA["metric"][0]
    (['duration_ms', 'error'], 'int8', 'object')
"""

from __future__ import annotations

from typing import Final

import numpy as np

__all__ = [
    "DEFAULT_CODE_ATTRIBUTES", "DEFAULT_PEER_ATTRIBUTES", "KIND_CLIENT", "KIND_CONSUMER", "KIND_INTERNAL",
    "KIND_PRODUCER", "KIND_SERVER", "KIND_UNSPECIFIED", "METRIC_COLS", "METRIC_EXTRA", "METRIC_TYPES",
    "NO_CODE", "RESOURCE_COLUMNS", "SPAN_COLS", "SPAN_EXTRA", "STATUS_ERROR", "STATUS_OK", "STATUS_UNSET",
    "TEMPORALITY_CUMULATIVE", "TEMPORALITY_DELTA", "TEMPORALITY_UNSPECIFIED", "UNKNOWN_SERVICE", "hex_ids",
]  # fmt: skip

# -- span kinds and statuses: the OTLP enum values, unchanged ----------------------------------------------

KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = 0, 1, 2, 3, 4, 5
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
NO_CODE: Final = -1
"""``code`` of a span that has none of the code attributes."""
UNKNOWN_SERVICE: Final = "unknown_service"
"""The service of a resource without ``service.name`` (the SDKs' own fallback), unless it is required."""

#: span attributes tried in order for ``peer`` (then the service of a SERVER child in the same request)
DEFAULT_PEER_ATTRIBUTES: Final = ("peer.service",)
#: span attributes tried in order for ``code`` (integers; digit strings are read as integers)
DEFAULT_CODE_ATTRIBUTES: Final = ("rpc.grpc.status_code", "http.response.status_code", "http.status_code")

#: column name -> resource attributes tried in order (``""`` when none is present); spans and metrics
RESOURCE_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "version": ("service.version",),
    "namespace": ("service.namespace",),
    "environment": ("deployment.environment.name", "deployment.environment"),
    "zone": ("cloud.availability_zone",),
    "host": ("host.name",),
    "instance": ("service.instance.id",),
}

# -- spans ------------------------------------------------------------------------------------------------

SPAN_COLS: Final[dict[str, str]] = {
    "duration_ms": "end - start, in ms (ns precision, float64)",
    "error": "1.0 when the span's status is ERROR, else 0.0",
}
"""Numeric span columns (``Records.cols``, float64, finite)."""

SPAN_EXTRA: Final[dict[str, tuple[str, str]]] = {
    "service": ("object", f"resource `service.name` ({UNKNOWN_SERVICE!r} when absent and not required)"),
    "operation": ("object", "the span's name"),
    "peer": ("object", "the called service: `peer.service` (see peer_attributes), else the service of a SERVER "
                       "child span in the same request/message; '' when unknown (and on non-CLIENT spans "
                       "without the attribute)"),
    "kind": ("int8", "SpanKind: 0 unspecified, 1 internal, 2 server, 3 client, 4 producer, 5 consumer"),
    "status": ("int8", "Status.code: 0 unset, 1 ok, 2 error"),
    "code": ("int32", "`rpc.grpc.status_code` / `http.response.status_code` / `http.status_code` (see "
                      "code_attributes); -1 when absent"),
    "start_ns": ("int64", "start_time_unix_nano"),
    "end_ns": ("int64", "end_time_unix_nano"),
    "trace_hi": ("uint64", "trace id bytes 0-7, big-endian"),
    "trace_lo": ("uint64", "trace id bytes 8-15, big-endian"),
    "span_id": ("uint64", "span id, big-endian"),
    "parent_span_id": ("uint64", "parent span id, big-endian; 0 at a root span"),
    **{name: ("object", f"resource {' / '.join(f'`{a}`' for a in attrs)}; '' when absent")
       for name, attrs in RESOURCE_COLUMNS.items()},
}  # fmt: skip
"""Other span columns (``Records.extra``): name -> (numpy dtype, meaning)."""

# -- metrics ----------------------------------------------------------------------------------------------

METRIC_TYPES: Final = {"gauge": 1, "sum": 2, "histogram": 3, "exponential_histogram": 4, "summary": 5}
TEMPORALITY_UNSPECIFIED, TEMPORALITY_DELTA, TEMPORALITY_CUMULATIVE = 0, 1, 2

METRIC_COLS: Final[dict[str, str]] = {"value": "the point's value (or the statistic's, for histograms)"}
"""Numeric metric columns (``Records.cols``, float64, finite)."""

METRIC_EXTRA: Final[dict[str, tuple[str, str]]] = {
    "service": ("object", f"resource `service.name` ({UNKNOWN_SERVICE!r} when absent and not required)"),
    "metric": ("object", "the metric's name, with a statistic suffix for histograms and summaries (`.p99`)"),
    "attributes": ("object", "the point's attributes, sorted by key, folded as 'k1=v1,k2=v2' ('' when none)"),
    "unit": ("object", "the metric's unit ('' when none)"),
    "type": ("int8", "1 gauge, 2 sum, 3 histogram, 4 exponential histogram, 5 summary"),
    "temporality": ("int8", "sums and histograms: 1 delta, 2 cumulative; 0 otherwise"),
    "start_ns": ("int64", "start_time_unix_nano (0 when not sent)"),
    **{name: ("object", f"resource {' / '.join(f'`{a}`' for a in attrs)}; '' when absent")
       for name, attrs in RESOURCE_COLUMNS.items()},
}  # fmt: skip
"""Other metric columns (``Records.extra``): name -> (numpy dtype, meaning)."""

_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)


def hex_ids(*words: np.ndarray) -> list[str]:
    """Lower-case hex of 64-bit words side by side, big-endian (``hex_ids(trace_hi, trace_lo)``), vectorized."""
    raw = np.concatenate([np.asarray(w, np.uint64).astype(">u8").view(np.uint8).reshape(-1, 8) for w in words],
                         axis=1)  # fmt: skip
    chars = np.stack([_HEX[raw >> 4], _HEX[raw & 15]], axis=2).reshape(len(raw), -1)
    return chars.copy().view(f"S{chars.shape[1]}").ravel().astype(str).tolist()  # type: ignore[no-any-return]

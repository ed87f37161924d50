"""``ExportTraceServiceRequest`` protobuf → span rows (:mod:`vigil.io.otlp.columns`), vectorized.

:class:`TraceDecoder` runs the compiled wire scanner (:mod:`vigil.io.otlp.wire`) over a request, turns the few
distinct strings into ``str`` once each, reads the resources with the protobuf classes (a handful per request),
and checks every span. A request that is not valid protobuf raises :class:`OtlpError` (``invalid_protobuf``,
with the byte offset): protobuf has no partial parse, so the sender gets a 400 and nothing of it is kept. A
valid request with bad spans keeps the good ones; each bad span is a dead letter:

================== ====================================================================================
code               span
================== ====================================================================================
wrong_type         a trace id that is not 16 bytes, a span or parent id that is not 8
missing_field      an all-zero trace or span id; no ``service.name`` with ``require_service``
absurd_timestamp   clock skew: it ends before it starts, lies outside ``[min_ts_ms, max_ts_ms]``, or ends
                   more than ``max_skew_ms`` away from the median end of its request
================== ====================================================================================

Examples:
    >>> recs = TraceDecoder().decode(b"", "otlp")
    >>> len(recs), sorted(recs.cols)
    (0, ['duration_ms', 'error'])
    >>> try:
    ...     TraceDecoder().decode(bytes([10, 5, 1]), "otlp")
    ... except OtlpError as e:
    ...     print(e.reason, e.message[-17:])
    invalid_protobuf (at byte 0 of 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from vigil.io.base import DeadLetter, Records
from vigil.io.otlp import wire
from vigil.io.otlp.columns import (
    DEFAULT_CODE_ATTRIBUTES,
    DEFAULT_PEER_ATTRIBUTES,
    KIND_CLIENT,
    KIND_PRODUCER,
    KIND_SERVER,
    NO_CODE,
    RESOURCE_COLUMNS,
    STATUS_ERROR,
    UNKNOWN_SERVICE,
    hex_ids,
)

__all__ = ["OtlpError", "TraceDecoder", "any_value", "empty_span_records"]

MIN_TS_MS = 946_684_800_000  # 2000-01-01
MAX_TS_MS = 4_102_444_800_000  # 2100-01-01


class OtlpError(ValueError):
    """A whole request refused: ``reason`` (a dead-letter code) and a message for the sender."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason, self.message = reason, message


def any_value(v: Any) -> Any:
    """The Python value of an ``AnyValue`` (str, bool, int, float, bytes, list, dict; None when unset)."""
    which = v.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if which == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    return getattr(v, which)


def _text(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, bool):
        return "true" if x else "false"
    return str(x)


def _intern(raw: bytes, buf: np.ndarray, off: np.ndarray, ln: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(code per row, distinct strings): equal byte slices share a code; absent (``ln < 0``) is ``""``."""
    h = wire.slice_hashes(buf, off, ln)
    uniq, first, inv = np.unique(h, return_index=True, return_inverse=True)
    strs = np.empty(len(uniq), object)
    for i, (o, n) in enumerate(zip(off[first].tolist(), ln[first].tolist(), strict=True)):
        strs[i] = "" if n < 0 else raw[o : o + n].decode("utf-8", "replace")
    return inv.astype(np.int64), strs


def _pair(a: np.ndarray, sa: np.ndarray, b: np.ndarray, sb: np.ndarray, sep: str) -> np.ndarray:
    """``sa[a] + sep + sb[b]`` per row, building each distinct string once."""
    if not len(a):
        return np.empty(0, object)
    uniq, inv = np.unique(a * (len(sb) + 1) + b, return_inverse=True)
    strs = np.array([f"{sa[u // (len(sb) + 1)]}{sep}{sb[u % (len(sb) + 1)]}" for u in uniq.tolist()], object)
    return strs[inv]  # type: ignore[no-any-return]


def empty_span_records(extra_names: Sequence[str] = ()) -> Records:
    """Span rows with no row (every column, right dtypes)."""
    from vigil.io.otlp.columns import SPAN_EXTRA

    extra = {k: np.empty(0, dt) for k, (dt, _) in SPAN_EXTRA.items()}
    extra.update({k: np.empty(0, object) for k in extra_names})
    return Records(np.empty(0, object), np.empty(0, np.int64),
                   {"duration_ms": np.empty(0), "error": np.empty(0)}, extra)  # fmt: skip


class TraceDecoder:
    """Decodes OTLP trace requests into span rows; one per source (it holds the options).

    Args:
        key: the row key: ``service``, ``operation`` (``"<service> <operation>"``) or ``edge``
            (``"<service>-><peer>"``).
        event_time: ``end`` (default) or ``start`` of the span.
        resource_attributes: more resource attributes as columns (their names as given, ``""`` when absent).
        span_attributes: span attributes as columns (text; ``""`` when absent).
        peer_attributes / code_attributes: span attributes tried in order for ``peer`` and ``code``.
        require_service: a span whose resource lacks ``service.name`` is a dead letter (``missing_field``)
            instead of belonging to ``unknown_service``.
        max_skew_ms: a span ending further than this from the median end of its request is a dead letter
            (``absurd_timestamp``); 0 turns the check off.
        min_ts_ms / max_ts_ms: bounds of plausible span times.
        hex_ids: add ``trace_id_hex`` / ``span_id_hex`` (text) columns.
    """

    def __init__(self, *, key: Literal["service", "operation", "edge"] = "service",
                 event_time: Literal["end", "start"] = "end", resource_attributes: Sequence[str] = (),
                 span_attributes: Sequence[str] = (), peer_attributes: Sequence[str] = DEFAULT_PEER_ATTRIBUTES,
                 code_attributes: Sequence[str] = DEFAULT_CODE_ATTRIBUTES, require_service: bool = False,
                 max_skew_ms: int = 3_600_000, min_ts_ms: int = MIN_TS_MS, max_ts_ms: int = MAX_TS_MS,
                 hex_ids: bool = False) -> None:  # fmt: skip
        if key not in ("service", "operation", "edge"):
            raise ValueError(f"`key` must be service, operation or edge; got {key!r}")
        if event_time not in ("end", "start"):
            raise ValueError(f"`event_time` must be end or start; got {event_time!r}")
        self.key, self.event_time = key, event_time
        self.resource_attributes = list(resource_attributes)
        self.span_attributes = list(span_attributes)
        self.peer_attributes, self.code_attributes = list(peer_attributes), list(code_attributes)
        self.require_service, self.max_skew_ms = require_service, max_skew_ms
        self.min_ts_ms, self.max_ts_ms, self.hex_ids = min_ts_ms, max_ts_ms, hex_ids
        keys = list(dict.fromkeys(self.peer_attributes + self.code_attributes + self.span_attributes))
        self._tindex = {k: i for i, k in enumerate(keys)}
        self._tbuf, self._toff = wire.targets(keys)
        self._ntargets = len(keys)
        self.extra_names = [*self.resource_attributes, *self.span_attributes] + (
            ["trace_id_hex", "span_id_hex"] if hex_ids else [])  # fmt: skip

    # -- the request ---------------------------------------------------------------------------------

    def _scan(self, body: bytes) -> tuple[np.ndarray, tuple[Any, ...], int, int]:
        buf = np.frombuffer(body, np.uint8)
        cap = len(body) // 48 + 16
        while True:
            outs = wire.empty_outputs(cap, len(body) // 4 + 2, self._ntargets)
            ns, nr, err, at = wire.scan_traces(buf, *outs, self._tbuf, self._toff)  # type: ignore[call-arg]
            if err != 4:
                break
            cap = len(body) // 2 + 2  # a span takes 2 bytes at the least: this is always enough
        if err:
            raise OtlpError("invalid_protobuf", f"not an OTLP ExportTraceServiceRequest: {wire.ERRORS[err]} "
                            f"(at byte {at} of {len(body)})")  # fmt: skip
        return buf, outs, ns, nr

    def _resources(self, body: bytes, res: np.ndarray) -> tuple[list[dict[str, str]], list[bool]]:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.resource.v1.resource_pb2 import Resource

        out, has_service = [], []
        for off, ln in res.tolist():
            attrs: dict[str, Any] = {}
            if off >= 0:
                try:
                    r = Resource.FromString(body[off : off + ln])
                except DecodeError as e:
                    raise OtlpError("invalid_protobuf", f"a Resource (at byte {off}) can't be read: {e}") from None
                attrs = {kv.key: any_value(kv.value) for kv in r.attributes}
            row = {name: next((_text(attrs[a]) for a in names if a in attrs), "")
                   for name, names in RESOURCE_COLUMNS.items()}  # fmt: skip
            row.update({a: _text(attrs.get(a)) for a in self.resource_attributes})
            svc = attrs.get("service.name")
            has_service.append(isinstance(svc, str) and svc != "")
            row["service"] = str(svc) if has_service[-1] else UNKNOWN_SERVICE
            out.append(row)
        return out, has_service

    def decode(self, body: bytes, source: str, position: Any = None) -> Records:
        """Span rows of one request (bad spans among its ``dead``).

        Raises:
            OtlpError: the bytes are not an ``ExportTraceServiceRequest``.
        """
        buf, outs, n, nr = self._scan(body)
        if n == 0:
            return empty_span_records(self.extra_names)
        ids, times, small, name, res_of, res, aoff, alen, aint, atype = outs
        ids, times, small, name, res_of = ids[:n], times[:n], small[:n], name[:n], res_of[:n]
        aoff, alen, aint, atype = aoff[:n], alen[:n], aint[:n], atype[:n]
        rows, has_service = self._resources(body, res[:nr])
        # services: one code per resource, mapped to distinct names
        svc_names = sorted({r["service"] for r in rows})
        svc_of_res = np.array([svc_names.index(r["service"]) for r in rows], np.int64)
        svc_strs = np.array(svc_names, object)
        svc_code = svc_of_res[res_of]
        op_code, op_strs = _intern(body, buf, name[:, 0], name[:, 1])
        kind = small[:, 0].clip(0, 127).astype(np.int8)
        status = small[:, 1].clip(0, 127).astype(np.int8)
        start_ns, end_ns = times[:, 0], times[:, 1]
        trace_hi, trace_lo, span_id, parent = ids[:, 0], ids[:, 1], ids[:, 2], ids[:, 3]
        peer_code, peer_strs = self._peer(body, buf, aoff, alen, atype, kind, svc_code, svc_strs, ids)
        code = self._code(body, aoff, alen, aint, atype)
        ok, dead = self._check(small[:, 2], ids, start_ns, end_ns, np.asarray(has_service, bool)[res_of], source,
                               position, svc_strs[svc_code], op_strs[op_code])  # fmt: skip
        keep = np.flatnonzero(ok) if not ok.all() else slice(None)
        svc_code, op_code, peer_code = svc_code[keep], op_code[keep], peer_code[keep]
        res_k = res_of[keep]
        start_ns, end_ns = start_ns[keep], end_ns[keep]
        service = svc_strs[svc_code]
        if self.key == "service":
            keys = service
        elif self.key == "operation":
            keys = _pair(svc_code, svc_strs, op_code, op_strs, " ")
        else:
            keys = _pair(svc_code, svc_strs, peer_code, peer_strs, "->")
        ts_ns = end_ns if self.event_time == "end" else start_ns
        extra: dict[str, np.ndarray] = {
            "service": service, "operation": op_strs[op_code], "peer": peer_strs[peer_code], "kind": kind[keep],
            "status": status[keep], "code": code[keep], "start_ns": start_ns, "end_ns": end_ns,
            "trace_hi": trace_hi[keep], "trace_lo": trace_lo[keep], "span_id": span_id[keep],
            "parent_span_id": parent[keep],
        }  # fmt: skip
        for col in [*RESOURCE_COLUMNS, *self.resource_attributes]:
            per_res = np.array([r[col] for r in rows], object)
            extra[col] = per_res[res_k]
        for a in self.span_attributes:
            extra[a] = self._text_attr(body, a, aoff, alen, aint, atype)[keep]
        if self.hex_ids:
            extra["trace_id_hex"] = np.array(hex_ids(extra["trace_hi"], extra["trace_lo"]), object)
            extra["span_id_hex"] = np.array(hex_ids(extra["span_id"]), object)
        cols = {"duration_ms": (end_ns - start_ns) / 1e6, "error": (extra["status"] == STATUS_ERROR).astype(np.float64)}
        return Records(keys, ts_ns // 1_000_000, cols, extra, dead)

    # -- columns -------------------------------------------------------------------------------------

    def _peer(self, body: bytes, buf: np.ndarray, aoff: np.ndarray, alen: np.ndarray, atype: np.ndarray,
              kind: np.ndarray, svc_code: np.ndarray, svc_strs: np.ndarray,
              ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Peer per span: the first string peer attribute, else the service of a SERVER child (CLIENT spans)."""
        n = len(kind)
        off, ln = np.zeros(n, np.int64), np.full(n, -1, np.int64)
        for a in reversed(self.peer_attributes):
            t = self._tindex[a]
            has = atype[:, t] == wire.STR
            off[has], ln[has] = aoff[has, t], alen[has, t]
        code, strs = _intern(body, buf, off, ln)
        missing = (ln < 0) & ((kind == KIND_CLIENT) | (kind == KIND_PRODUCER))
        if missing.any():  # the service of a SERVER (or CONSUMER) child of the client span, same request
            child = np.flatnonzero((kind == KIND_SERVER) | (kind == 5))
            if len(child):
                order = np.argsort(ids[child, 3], kind="stable")
                par = ids[child, 3][order]
                want = np.flatnonzero(missing)
                at = np.searchsorted(par, ids[want, 2]).clip(0, len(par) - 1)
                hit = par[at] == ids[want, 2]
                if hit.any():
                    extra = np.array([s for s in svc_strs.tolist() if s not in set(strs.tolist())], object)
                    strs = np.concatenate([strs, extra])
                    lookup = {s: i for i, s in enumerate(strs.tolist())}
                    remap = np.array([lookup[s] for s in svc_strs.tolist()], np.int64)
                    code[want[hit]] = remap[svc_code[child[order][at[hit]]]]
        return code, strs

    def _code(self, body: bytes, aoff: np.ndarray, alen: np.ndarray, aint: np.ndarray,
              atype: np.ndarray) -> np.ndarray:  # fmt: skip
        out = np.full(len(atype), NO_CODE, np.int64)
        for a in reversed(self.code_attributes):
            t = self._tindex[a]
            is_int = atype[:, t] == wire.INT
            out[is_int] = aint[is_int, t]
            for i in np.flatnonzero(atype[:, t] == wire.STR).tolist():  # digit strings, rare
                s = body[aoff[i, t] : aoff[i, t] + alen[i, t]]
                if s.isdigit() and len(s) < 10:
                    out[i] = int(s)
        return out.clip(-(2**31), 2**31 - 1).astype(np.int32)

    def _text_attr(self, body: bytes, a: str, aoff: np.ndarray, alen: np.ndarray, aint: np.ndarray,
                   atype: np.ndarray) -> np.ndarray:  # fmt: skip
        t = self._tindex[a]
        ty = atype[:, t]
        out = np.full(len(ty), "", object)
        is_str = ty == wire.STR
        if is_str.any():
            code, strs = _intern(body, np.frombuffer(body, np.uint8), np.where(is_str, aoff[:, t], 0),
                                 np.where(is_str, alen[:, t], -1))  # fmt: skip
            out[is_str] = strs[code[is_str]]
        for v, name in ((wire.INT, None), (wire.BOOL, "bool"), (wire.DOUBLE, "double")):
            m = ty == v
            if m.any():
                vals = aint[m, t]
                if name == "bool":
                    out[m] = np.where(vals != 0, "true", "false")
                elif name == "double":
                    out[m] = [repr(x) for x in vals.view(np.float64).tolist()]
                else:
                    out[m] = vals.astype(str)
        return out

    def _check(self, bad_ids: np.ndarray, ids: np.ndarray, start_ns: np.ndarray, end_ns: np.ndarray,
               has_service: np.ndarray, source: str, position: Any, service: np.ndarray,
               op: np.ndarray) -> tuple[np.ndarray, list[DeadLetter]]:  # fmt: skip
        """Which spans are kept, and a dead letter for each one that is not (the first problem's code)."""
        n = len(bad_ids)
        reason = np.zeros(n, np.int8)  # 0 ok, 1 wrong_type, 2 missing_field, 3 absurd_timestamp
        end_ms, start_ms = end_ns // 1_000_000, start_ns // 1_000_000
        skew = np.zeros(n, bool)
        if self.max_skew_ms > 0:
            skew = np.abs(end_ms - np.median(end_ms)) > self.max_skew_ms
        checks = [
            (3, skew, "ends {d} ms away from the median end of its request (max_skew_ms {m}): a clock off"),
            (
                3,
                (start_ms < self.min_ts_ms) | (end_ms > self.max_ts_ms),
                "a time outside [min_ts_ms, max_ts_ms]: a wrong unit or a broken clock",
            ),
            (3, end_ns < start_ns, "ends before it starts (a clock stepped back?)"),
            (
                2,
                ~has_service if self.require_service else np.zeros(n, bool),
                "the resource has no service.name (require_service is on)",
            ),
            (
                2,
                (bad_ids == 0) & (((ids[:, 0] == 0) & (ids[:, 1] == 0)) | (ids[:, 2] == 0)),
                "an all-zero trace_id or span_id",
            ),
            (1, bad_ids != 0, "trace_id must be 16 bytes and span_id / parent_span_id 8"),
        ]
        msgs: dict[int, list[str]] = {}
        for code, mask, text in checks:  # the last matching check sets the code: they are listed last-first
            hit = np.flatnonzero(mask)
            if not len(hit):
                continue
            reason[hit] = code
            for i in hit.tolist():
                t = text.format(d=int(end_ms[i] - np.median(end_ms)), m=self.max_skew_ms) if "{d}" in text else text
                msgs.setdefault(i, []).insert(0, t)
        ok = reason == 0
        if ok.all():
            return ok, []
        names = {1: "wrong_type", 2: "missing_field", 3: "absurd_timestamp"}
        dead = []
        for i in np.flatnonzero(~ok).tolist():
            raw = (
                f"span {hex_ids(ids[i : i + 1, 2])[0]} of trace {hex_ids(ids[i : i + 1, 0], ids[i : i + 1, 1])[0]}: "
                f"service={service[i]!r} name={op[i]!r} start_ns={int(start_ns[i])} end_ns={int(end_ns[i])}"
            )
            dead.append(DeadLetter(names[int(reason[i])], "; ".join(msgs[i]), raw, source, position))
        return ok, dead

    # -- Kafka: many requests at once -----------------------------------------------------------------

    def decode_indexed(
        self, values: Sequence[bytes], source: str, first_position: int = 0
    ) -> tuple[Records, np.ndarray]:
        """Span rows of many requests (Kafka message values) and, per row, the index of its message.

        A message that is not a request is one dead letter (``invalid_protobuf``); a blank one yields no row
        (the Kafka source reports it as ``empty_value``).
        """
        parts, idx, dead = [], [], []
        for i, v in enumerate(values):
            if not v:
                continue
            try:
                r = self.decode(bytes(v), source, first_position + i)
            except OtlpError as e:
                dead.append(DeadLetter(e.reason, e.message, _raw(v), source, first_position + i))
                continue
            dead += r.dead
            if len(r):
                parts.append(r)
                idx.append(np.full(len(r), i, np.int64))
        out = concat_records(parts) if parts else empty_span_records(self.extra_names)
        out.dead = dead
        return out, (np.concatenate(idx) if idx else np.empty(0, np.int64))


def _raw(v: bytes) -> str:
    head = bytes(v[:700])
    return head.hex() if not head.isascii() else head.decode("ascii", "replace")


def concat_records(parts: Sequence[Records]) -> Records:
    """Records joined end to end (same columns), dead letters too."""
    if len(parts) == 1:
        return parts[0]
    return Records(np.concatenate([p.keys for p in parts]), np.concatenate([p.ts_ms for p in parts]),
                   {k: np.concatenate([p.cols[k] for p in parts]) for k in parts[0].cols},
                   {k: np.concatenate([p.extra[k] for p in parts]) for k in parts[0].extra},
                   [d for p in parts for d in p.dead])  # fmt: skip

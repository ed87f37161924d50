"""Numba kernels that read ``ExportTraceServiceRequest`` protobuf bytes straight into span columns (private).

Why not the protobuf classes: parsing with them is fast (upb, C), but reading the fields back span by span in
Python costs several microseconds a span — over the whole budget of the ``otlp`` source. This scanner walks the
wire format once, in compiled code, and writes each span's fixed fields (ids, times, kind, status) into numpy
columns, and for strings (the span name, wanted attributes) only where they lie in the buffer; the caller turns
the few distinct strings into Python ``str`` once each (:func:`slice_hashes` groups equal byte slices).

The scanner accepts what protobuf parsers accept: fields in any order, repeated scalars (the last one wins),
repeated ``Status`` messages (merged), unknown fields of every wire type but groups (skipped). Anything else —
a length running past its parent, a truncated varint, a group, a known field with the wrong wire type — stops
it with an error code and the byte offset, and the whole request is refused: protobuf has no partial parse.

Error codes (``ERRORS``): 1 truncated or overlong field, 2 wrong wire type for a known field, 3 group wire type,
4 too many spans for the output arrays (the caller retries with more room).

Examples:
    >>> import numpy as np
    >>> n, r, err, at = scan_traces(np.frombuffer(b"", np.uint8), *empty_outputs(4, 1), *targets([]))
    >>> (n, r, err)
    (0, 0, 0)
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["ERRORS", "empty_outputs", "scan_traces", "slice_hashes", "targets"]

ERRORS = {1: "a field is truncated or runs past its enclosing message", 2: "a known field has the wrong wire type",
          3: "group wire types (3/4) are not used by OTLP", 4: "more spans than room"}  # fmt: skip

# attribute value types written to ``atype``
ABSENT, STR, BOOL, INT, DOUBLE = 0, 1, 2, 3, 4


@numba.njit(cache=True)
def _varint(buf: np.ndarray, pos: Any, end: Any) -> tuple[Any, Any]:
    result = np.uint64(0)
    shift = np.uint64(0)
    while pos < end:
        b = buf[pos]
        pos += 1
        result |= np.uint64(b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += np.uint64(7)
        if shift >= np.uint64(70):
            return np.uint64(0), -1
    return np.uint64(0), -1


@numba.njit(cache=True)
def _length(buf: np.ndarray, pos: Any, end: Any) -> tuple[Any, Any]:
    """A length prefix: (length, position after it); position -1 when truncated or longer than what is left.

    Checked as unsigned before any arithmetic: a 64-bit length must never wrap into a negative step back.
    """
    n, pos = _varint(buf, pos, end)
    if pos < 0 or n > np.uint64(end - pos):
        return np.int64(0), -1
    return np.int64(n), pos


@numba.njit(cache=True)
def _skip(buf: np.ndarray, pos: Any, end: Any, wt: Any) -> int:
    """Position after a field's value of wire type ``wt``; -1 truncated, -3 group."""
    if wt == 0:
        _, pos = _varint(buf, pos, end)
        return pos
    if wt == 1:
        pos += 8
    elif wt == 2:
        n, pos = _length(buf, pos, end)
        if pos < 0:
            return -1
        pos += np.int64(n)
    elif wt == 5:
        pos += 4
    else:
        return -3
    return pos if pos <= end else -1


@numba.njit(cache=True)
def _be64(buf: np.ndarray, pos: Any) -> np.uint64:
    v = np.uint64(0)
    for i in range(8):
        v = (v << np.uint64(8)) | np.uint64(buf[pos + i])
    return v


@numba.njit(cache=True)
def _le64(buf: np.ndarray, pos: Any) -> np.uint64:
    v = np.uint64(0)
    for i in range(7, -1, -1):
        v = (v << np.uint64(8)) | np.uint64(buf[pos + i])
    return v


@numba.njit(cache=True)
def _match(buf: np.ndarray, a: Any, n: Any, tbuf: np.ndarray, toff: np.ndarray) -> int:
    """Index of the target key equal to ``buf[a:a+n]``, or -1."""
    for t in range(len(toff) - 1):
        if toff[t + 1] - toff[t] != n:
            continue
        same = True
        for i in range(n):
            if buf[a + i] != tbuf[toff[t] + i]:
                same = False
                break
        if same:
            return t
    return -1


@numba.njit(cache=True)
def _any_value(buf: np.ndarray, pos: Any, end: Any, s: Any, t: Any, aoff: np.ndarray, alen: np.ndarray,
               aint: np.ndarray, atype: np.ndarray) -> int:  # fmt: skip
    """Read an ``AnyValue`` into row ``s``, column ``t``; 0 or an error code."""
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return 1
        f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
        if f == 1 and wt == 2:
            n, pos = _length(buf, pos, end)
            if pos < 0 or pos + np.int64(n) > end:
                return 1
            atype[s, t], aoff[s, t], alen[s, t] = STR, pos, np.int64(n)
            pos += np.int64(n)
        elif (f == 2 or f == 3) and wt == 0:
            v, pos = _varint(buf, pos, end)
            if pos < 0:
                return 1
            atype[s, t], aint[s, t] = (BOOL if f == 2 else INT), np.int64(v)
        elif f == 4 and wt == 1:
            if pos + 8 > end:
                return 1
            atype[s, t] = DOUBLE
            aint[s, t] = np.int64(_le64(buf, pos))  # the bits; the caller views them as float64
            pos += 8
        else:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return 1 if pos == -1 else 3
    return 0


@numba.njit(cache=True)
def _key_value(buf: np.ndarray, pos: Any, end: Any, s: Any, tbuf: np.ndarray, toff: np.ndarray,
               aoff: np.ndarray, alen: np.ndarray, aint: np.ndarray, atype: np.ndarray) -> int:  # fmt: skip
    t = -1
    va, vb = -1, -1
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return 1
        f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
        if (f == 1 or f == 2) and wt == 2:
            n, pos = _length(buf, pos, end)
            if pos < 0 or pos + np.int64(n) > end:
                return 1
            if f == 1:
                t = _match(buf, pos, int(n), tbuf, toff)
            else:
                va, vb = pos, pos + np.int64(n)
            pos += np.int64(n)
        elif f == 1 or f == 2:
            return 2
        else:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return 1 if pos == -1 else 3
    if t >= 0 and va >= 0:
        atype[s, t] = ABSENT  # a repeated key: the last one wins
        return _any_value(buf, va, vb, s, t, aoff, alen, aint, atype)
    return 0


@numba.njit(cache=True)
def _status(buf: np.ndarray, pos: Any, end: Any) -> tuple[Any, Any]:
    code = -1
    while pos < end:
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return -1, 1
        f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
        if f == 3 and wt == 0:
            v, pos = _varint(buf, pos, end)
            if pos < 0:
                return -1, 1
            code = int(v)
        elif f == 3:
            return -1, 2
        else:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return -1, 1 if pos == -1 else 3
    return code, 0


@numba.njit(cache=True)
def _span(buf: np.ndarray, pos: Any, end: Any, s: Any, ids: np.ndarray, times: np.ndarray, small: np.ndarray,
          name: np.ndarray, tbuf: np.ndarray, toff: np.ndarray, aoff: np.ndarray, alen: np.ndarray,
          aint: np.ndarray, atype: np.ndarray) -> tuple[Any, Any]:  # fmt: skip
    """One ``Span`` into row ``s``; (error code, offset)."""
    for j in range(4):
        ids[s, j] = np.uint64(0)
    times[s, 0], times[s, 1] = 0, 0
    small[s, 0], small[s, 1], small[s, 2] = 0, 0, 0  # kind, status, bad id lengths (bit mask)
    name[s, 0], name[s, 1] = pos, 0
    for t in range(atype.shape[1]):
        atype[s, t] = ABSENT
    while pos < end:
        at = pos
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return 1, at
        f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
        if f == 1 or f == 2 or f == 4 or f == 5 or f == 9 or f == 15:
            if wt != 2:
                return 2, at
            n, pos = _length(buf, pos, end)
            if pos < 0 or pos + np.int64(n) > end:
                return 1, at
            nn = np.int64(n)
            if f == 1:
                if nn == 16:
                    ids[s, 0], ids[s, 1] = _be64(buf, pos), _be64(buf, pos + 8)
                else:
                    small[s, 2] |= 1
            elif f == 2:
                if nn == 8:
                    ids[s, 2] = _be64(buf, pos)
                else:
                    small[s, 2] |= 2
            elif f == 4:
                if nn == 8:
                    ids[s, 3] = _be64(buf, pos)
                elif nn == 0:
                    ids[s, 3] = np.uint64(0)
                else:
                    small[s, 2] |= 4
            elif f == 5:
                name[s, 0], name[s, 1] = pos, nn
            elif f == 9:
                err = _key_value(buf, pos, pos + nn, s, tbuf, toff, aoff, alen, aint, atype)
                if err:
                    return err, at
            else:
                code, err = _status(buf, pos, pos + nn)
                if err:
                    return err, at
                if code >= 0:
                    small[s, 1] = code
            pos += nn
        elif f == 6:
            if wt != 0:
                return 2, at
            v, pos = _varint(buf, pos, end)
            if pos < 0:
                return 1, at
            small[s, 0] = int(v)
        elif f == 7 or f == 8:
            if wt != 1:
                return 2, at
            if pos + 8 > end:
                return 1, at
            times[s, f - 7] = np.int64(_le64(buf, pos))
            pos += 8
        else:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return (1 if pos == -1 else 3), at
    return 0, 0


@numba.njit(cache=True)
def scan_traces(buf: np.ndarray, ids: np.ndarray, times: np.ndarray, small: np.ndarray, name: np.ndarray,
                res_of: np.ndarray, res: np.ndarray, aoff: np.ndarray, alen: np.ndarray, aint: np.ndarray,
                atype: np.ndarray, tbuf: np.ndarray, toff: np.ndarray) -> tuple[Any, Any, Any, Any]:  # fmt: skip
    """Scan a request; (spans, resources, error code, byte offset of the error).

    Per span ``s``: ``ids[s]`` = trace_hi, trace_lo, span_id, parent_span_id; ``times[s]`` = start, end (ns);
    ``small[s]`` = kind, status code, bad-id mask (1 trace, 2 span, 4 parent); ``name[s]`` = offset, length;
    ``res_of[s]`` = its ``ResourceSpans`` index; per target attribute ``t``: ``atype[s, t]`` (0 absent, 1 str,
    2 bool, 3 int, 4 double bits), ``aoff``/``alen`` (strings) or ``aint``. Per ``ResourceSpans`` ``r``:
    ``res[r]`` = offset and length of its ``Resource`` (-1 without one).
    """
    cap, rcap = ids.shape[0], res.shape[0]
    ns, nr = 0, 0
    pos, end = 0, len(buf)
    while pos < end:
        at = pos
        tag, pos = _varint(buf, pos, end)
        if pos < 0:
            return ns, nr, 1, at
        f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
        if f != 1:
            pos = _skip(buf, pos, end, wt)
            if pos < 0:
                return ns, nr, (1 if pos == -1 else 3), at
            continue
        if wt != 2:
            return ns, nr, 2, at
        n, pos = _length(buf, pos, end)
        if pos < 0 or pos + np.int64(n) > end:
            return ns, nr, 1, at
        rend = pos + np.int64(n)
        if nr >= rcap:
            return ns, nr, 4, at
        r = nr
        nr += 1
        res[r, 0], res[r, 1] = -1, 0
        while pos < rend:  # ResourceSpans
            at = pos
            tag, pos = _varint(buf, pos, rend)
            if pos < 0:
                return ns, nr, 1, at
            f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
            if f != 1 and f != 2:
                pos = _skip(buf, pos, rend, wt)
                if pos < 0:
                    return ns, nr, (1 if pos == -1 else 3), at
                continue
            if wt != 2:
                return ns, nr, 2, at
            n, pos = _length(buf, pos, rend)
            if pos < 0 or pos + np.int64(n) > rend:
                return ns, nr, 1, at
            send = pos + np.int64(n)
            if f == 1:
                res[r, 0], res[r, 1] = pos, send - pos
                pos = send
                continue
            while pos < send:  # ScopeSpans
                at = pos
                tag, pos = _varint(buf, pos, send)
                if pos < 0:
                    return ns, nr, 1, at
                f, wt = int(tag >> np.uint64(3)), int(tag & np.uint64(7))
                if f != 2:
                    pos = _skip(buf, pos, send, wt)
                    if pos < 0:
                        return ns, nr, (1 if pos == -1 else 3), at
                    continue
                if wt != 2:
                    return ns, nr, 2, at
                n, pos = _length(buf, pos, send)
                if pos < 0 or pos + np.int64(n) > send:
                    return ns, nr, 1, at
                if ns >= cap:
                    return ns, nr, 4, at
                err, eat = _span(buf, pos, pos + np.int64(n), ns, ids, times, small, name, tbuf, toff, aoff, alen,
                                 aint, atype)  # fmt: skip
                if err:
                    return ns, nr, err, eat
                res_of[ns] = r
                ns += 1
                pos += np.int64(n)
    return ns, nr, 0, 0


@numba.njit(cache=True)
def slice_hashes(buf: np.ndarray, off: np.ndarray, ln: np.ndarray) -> np.ndarray:
    """FNV-1a 64 of each byte slice, mixed with its length (``ln < 0``: 0, an absent string)."""
    out = np.zeros(len(off), np.uint64)
    for i in range(len(off)):
        n = ln[i]
        if n < 0:
            continue
        h = np.uint64(14695981039346656037)
        a = off[i]
        for j in range(n):
            h = (h ^ np.uint64(buf[a + j])) * np.uint64(1099511628211)
        out[i] = (h ^ np.uint64(n)) | np.uint64(1)  # never 0
    return out


def empty_outputs(cap: int, rcap: int, n_targets: int = 0) -> tuple[Any, ...]:
    """Output arrays for :func:`scan_traces` with room for ``cap`` spans and ``rcap`` resources."""
    t = max(n_targets, 1)
    return (np.empty((cap, 4), np.uint64), np.empty((cap, 2), np.int64), np.empty((cap, 3), np.int64),
            np.empty((cap, 2), np.int64), np.empty(cap, np.int32), np.empty((rcap, 2), np.int64),
            np.empty((cap, t), np.int64), np.empty((cap, t), np.int64), np.empty((cap, t), np.int64),
            np.empty((cap, t), np.int8))  # fmt: skip


def targets(keys: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Attribute keys to look for, as one byte buffer and offsets."""
    raw = [k.encode() for k in keys]
    off = np.zeros(len(raw) + 1, np.int64)
    off[1:] = np.cumsum([len(r) for r in raw]) if raw else []
    return np.frombuffer(b"".join(raw) or b"\0", np.uint8).copy(), off

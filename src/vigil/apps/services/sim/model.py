"""Requests through the call tree, vectorized per call edge: the spans of one time window.

:func:`simulate_window` draws the frontend's requests (and the cron jobs') for a window, then walks the
operation graph depth first with **arrays of requests**, never one request at a time: serving an operation
for ``n`` requests samples ``n`` self times, then, group by group, the requests that make each call (with
their repeats) are served by the callee recursively, and the callee's durations and failures come back as
arrays. So the Python work is per call edge and attempt (a few hundred per window), the numpy work per span.

Per call attempt the caller emits a CLIENT span (``peer`` = the callee); an instrumented callee adds a SERVER
span under it. What a client sees: refused connections fail in 0.5-3 ms, a hanging callee or one slower than
the client's timeout fails at the timeout (the server span runs on), failures are retried after an
exponential back-off (10 ms x 2^attempt, jittered) while retries remain; a failed ``critical`` call fails
the caller's request, which then skips its later call groups. An operation's own errors (intrinsic or
injected) fail fast, before its calls. Network: 0.1-0.5 ms one way, +0.5 ms across zones, plus any injected
delay on the edge and the callee's zone. GC pauses add to the self time of the requests they hit.

Span times are relative while the tree is built (a span's offset from its parent's start) and made absolute
at the end, level by level.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vigil.apps.services.sim.effects import Effects
from vigil.apps.services.sim.topology import Call, Topology

__all__ = ["CODE", "KIND_CLIENT", "KIND_SERVER", "SPAN_FIELDS", "simulate_window"]

KIND_SERVER, KIND_CLIENT = 2, 3  # OpenTelemetry SpanKind
STATUS_UNSET, STATUS_ERROR = 0, 2  # OpenTelemetry Status.code
#: the ``code`` column: gRPC status codes, and HTTP codes on the frontend's server spans
CODE = {"ok": 0, "unknown": 2, "deadline_exceeded": 4, "unavailable": 14}
SPAN_FIELDS = ("trace", "parent", "service", "peer", "op", "kind", "zone", "version", "status", "code", "depth")
_I = {"trace": np.int64, "parent": np.int64, "service": np.int16, "peer": np.int16, "op": np.int16,
      "kind": np.int8, "zone": np.int8, "version": np.int16, "status": np.int8, "code": np.int16,
      "depth": np.int8}  # fmt: skip


class _Buffer:
    """Span columns appended part by part; parts stay mutable until :meth:`columns` joins them."""

    def __init__(self) -> None:
        self.parts: list[dict[str, np.ndarray]] = []
        self.n = 0

    def add(self, **cols: Any) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        k = len(cols["rel_ms"])
        part = {name: (np.full(k, v, _I[name]) if np.isscalar(v) else np.asarray(v, _I.get(name, np.float64)))
                for name, v in cols.items()}  # fmt: skip
        part["dur_ms"] = np.zeros(k)
        part["status"] = np.zeros(k, np.int8)
        part["code"] = np.zeros(k, np.int16)
        idx = np.arange(self.n, self.n + k, dtype=np.int64)
        self.parts.append(part)
        self.n += k
        return idx, part

    def columns(self) -> dict[str, np.ndarray]:
        if not self.parts:
            return {name: np.empty(0, _I.get(name, np.float64)) for name in (*SPAN_FIELDS, "rel_ms", "dur_ms")}
        return {name: np.concatenate([p[name] for p in self.parts]) for name in self.parts[0]}


class _Walker:
    def __init__(self, topo: Topology, eff: Effects, rng: np.random.Generator) -> None:
        self.topo, self.eff, self.rng = topo, eff, rng
        self.buf = _Buffer()
        self.instrumented = topo.instrumented
        self.n_bins = eff.rate.shape[0]
        self.cum_w = np.cumsum(eff.weights, axis=1)

    def _route(self, s: int, n: int) -> np.ndarray:
        """Zone of each request to service ``s`` by its traffic weights."""
        return np.searchsorted(self.cum_w[s], self.rng.random(n) * self.cum_w[s, -1], side="right").astype(np.int8)

    def serve(self, op: int, b: np.ndarray, trace: np.ndarray, parent: np.ndarray, rel_ms: np.ndarray,
              zone: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Serve ``op`` for each request (``b``: the 1-s bin its trace began in); returns (duration ms, failed)."""
        topo, eff, rng = self.topo, self.eff, self.rng
        n = len(b)
        s = int(topo.op_service[op])
        self_ms = topo.op_median_ms[op] * np.exp(topo.op_sigma[op] * rng.standard_normal(n))
        self_ms = self_ms * eff.lat_mult[op, zone, b] + eff.lat_add_ms[op, b]
        hit = rng.random(n) < eff.gc_p[s, b]
        self_ms += hit * rng.random(n) * eff.gc_pause_ms[s, b]
        own_err = rng.random(n) < topo.op_error[op] + eff.err_p[op, b]
        self_ms = np.where(own_err, self_ms * rng.uniform(0.2, 0.6, n), self_ms)
        part = None
        if self.instrumented[s]:
            idx, part = self.buf.add(trace=trace, parent=parent, rel_ms=rel_ms, service=s, peer=-1, op=op,
                                     kind=KIND_SERVER, zone=zone, version=eff.version[s, b], depth=depth)  # fmt: skip
        else:
            idx = np.full(n, -1, np.int64)
        elapsed = 0.3 * self_ms  # calls start after the first part of the own work
        fail = own_err.copy()
        alive = ~own_err
        for group in topo.calls[op]:
            group_ms = np.zeros(n)
            group_fail = np.zeros(n, bool)
            for callee, c in group:
                who = np.flatnonzero(alive & (rng.random(n) < c.p))
                if not len(who):
                    continue
                inst = np.repeat(who, 1 + rng.poisson(c.repeat, len(who))) if c.repeat > 0 else who
                d, f = self.call(c, callee, s, b[inst], trace[inst], idx[inst], zone[inst], elapsed[inst],
                                 inst if c.repeat > 0 else None, depth + 1)  # fmt: skip
                group_ms = np.maximum(group_ms, np.bincount(inst, weights=d, minlength=n))
                if c.critical:
                    group_fail |= np.bincount(inst, weights=f, minlength=n) > 0
            elapsed = elapsed + group_ms
            fail |= group_fail
            alive &= ~group_fail
        dur = elapsed + 0.7 * self_ms
        if part is not None:
            part["dur_ms"][:] = dur
            part["status"][:] = np.where(fail, STATUS_ERROR, STATUS_UNSET)
            part["code"][:] = np.where(fail, 500 if topo.defs[s].kind == "entry" else CODE["unknown"],
                                       200 if topo.defs[s].kind == "entry" else CODE["ok"])  # fmt: skip
        return dur, fail

    def call(self, c: Call, callee: int, caller: int, b_all: np.ndarray, trace: np.ndarray,
             caller_span: np.ndarray, caller_zone: np.ndarray, base_ms: np.ndarray, inst: np.ndarray | None,
             depth: int) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """One call (with retries) per request; returns (time the caller spent, failed at the end).

        ``inst`` (repeated calls only) names each row's calling request: repeats run one after the other.
        """
        topo, eff, rng = self.topo, self.eff, self.rng
        n = len(b_all)
        s = int(topo.op_service[callee])
        total = np.zeros(n)
        failed = np.zeros(n, bool)
        active = np.arange(n)
        parts: list[tuple[dict[str, np.ndarray], np.ndarray]] = []
        extra = eff.net_add_ms.get((caller, s))
        for attempt in range(c.retries + 1):
            k = len(active)
            b = b_all[active]
            zone_to = self._route(s, k)
            net = rng.uniform(0.1, 0.5, k) + 0.5 * (zone_to != caller_zone[active])
            if extra is not None:
                net = net + extra[zone_to, b]
            cidx, cpart = self.buf.add(
                trace=trace[active], parent=caller_span[active], rel_ms=base_ms[active] + total[active],
                service=caller, peer=s, op=callee, kind=KIND_CLIENT, zone=caller_zone[active],
                version=eff.version[caller, b], depth=depth)  # fmt: skip
            parts.append((cpart, active))
            state = eff.down[s, b]
            up = state == 0
            srv_ms = np.zeros(k)
            srv_fail = np.zeros(k, bool)
            if up.any():
                u = np.flatnonzero(up)
                srv_ms[u], srv_fail[u] = self.serve(callee, b[u], trace[active[u]], cidx[u], net[u], zone_to[u],
                                                    depth + 1)  # fmt: skip
            cli = srv_ms + 2.0 * net
            code = np.where(srv_fail, CODE["unknown"], CODE["ok"])
            refused = state == 1
            cli[refused] = rng.uniform(0.5, 3.0, int(refused.sum()))
            code[refused] = CODE["unavailable"]
            late = (state == 2) | (cli > c.timeout_ms)
            cli[late] = c.timeout_ms
            code[late] = CODE["deadline_exceeded"]
            bad = srv_fail | refused | late
            cpart["dur_ms"][:] = cli
            cpart["status"][:] = np.where(bad, STATUS_ERROR, STATUS_UNSET)
            cpart["code"][:] = code
            total[active] += cli
            failed[active] = bad
            if attempt == c.retries or not bad.any():
                break
            retry = active[bad]
            total[retry] += 10.0 * 2**attempt * rng.uniform(0.5, 1.5, len(retry))
            active = retry
        if inst is not None:  # sequential repeats: each starts when the one before ended
            shift = _exclusive_cumsum_by_group(inst, total)
            for cpart, rows in parts:
                cpart["rel_ms"] += shift[rows]
        return total, failed


def _exclusive_cumsum_by_group(groups: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per row, the sum of ``x`` over the earlier rows of its group (rows of a group are contiguous)."""
    c = np.cumsum(x) - x
    start = np.r_[True, groups[1:] != groups[:-1]]
    first = np.maximum.accumulate(np.where(start, np.arange(len(x)), 0))
    return c - c[first]


def simulate_window(topo: Topology, eff: Effects, rng: np.random.Generator, trace_base: int) -> dict[str, np.ndarray]:
    """Every span of the requests arriving in the window of ``eff`` (columns; times still relative).

    Returns span columns (:data:`SPAN_FIELDS` plus ``start_ms`` float epoch ms and ``dur_ms``), in creation
    order, parents before children; ``trace`` counts from ``trace_base``.
    """
    n_bins = eff.rate.shape[0]
    bin_s = eff.bin_ms / 1000.0
    walker = _Walker(topo, eff, rng)
    roots: list[tuple[int, np.ndarray]] = []
    for j, op in enumerate(topo.entry_ops.tolist()):
        roots.append((op, rng.poisson(eff.rate * topo.entry_mix[j] * bin_s)))
    for j, op in enumerate(topo.batch_ops.tolist()):
        roots.append((op, rng.poisson(eff.batch_rate[j] * bin_s)))
    next_trace = trace_base
    for op, counts in roots:
        n = int(counts.sum())
        if not n:
            continue
        t = eff.t0_ms + np.repeat(np.arange(n_bins), counts) * eff.bin_ms + rng.random(n) * eff.bin_ms
        t = np.sort(t)
        trace = np.arange(next_trace, next_trace + n, dtype=np.int64)
        next_trace += n
        s = int(topo.op_service[op])
        zone = walker._route(s, n)
        walker.serve(op, np.repeat(np.arange(n_bins), counts), trace, np.full(n, -1, np.int64), t, zone, 0)
    cols = walker.buf.columns()
    start = cols.pop("rel_ms")
    parent = cols["parent"]
    depth = cols["depth"]
    for d in range(1, int(depth.max()) + 1 if len(depth) else 0):
        rows = np.flatnonzero(depth == d)
        start[rows] += start[parent[rows]]
    cols["start_ms"] = start
    return cols

"""RED windows per service and per call edge, from span columns, closed on the watermark; and the service graph.

**Input: the span column contract of the ``otlp`` source** (:mod:`vigil.io.otlp.columns` on the ``otlp``
branch), only the columns this needs:

* ``ts_ms`` (int64): the span's **end**, epoch ms (the contract's default event time);
* ``service``, ``peer``: the service and the called service — either ``str`` arrays (``peer`` ``""`` when
  unknown), as the OTLP decoder gives them, or integer codes with a ``names`` table (the simulator's), ``-1``
  for no peer;
* ``kind`` (int8, OTLP SpanKind: 2 server, 3 client), ``duration_ms`` (float64), ``error`` (float64, 1.0 on
  status ERROR).

:func:`spans_of_window` turns a simulator :class:`~vigil.apps.services.sim.Window` into these columns (ends
as event times), so the app runs on the simulator's in-process output today and on the OTLP source's records
unchanged.

**Entities.** A service's series come from its SERVER spans; a service that never emits one (a database, an
external API) gets the sum of its callers' CLIENT spans to it (a "virtual" node). An edge ``a->b`` comes from
``a``'s CLIENT spans with peer ``b`` (what the caller saw: network and timeouts included).

**Windows.** Tumbling event-time bins of ``bin_ms`` (10 s). Per (entity, bin): the count, errors and a latency
histogram on fixed log buckets (:data:`EDGES_MS`, 12 % wide, 0.01 ms to ~170 s), so open bins merge by adding
and p50/p95/p99 and "slower than T" counts come from the histogram (T snapped to a bucket edge, as with
Prometheus ``le`` buckets). A bin closes when the watermark passes its end; a span for a closed bin is late:
counted (``late``), not aggregated.

The :class:`ServiceGraph` holds the edges with their traffic (EW requests/s), first and last seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["EDGES_MS", "ClosedBin", "RedWindows", "ServiceGraph", "spans_of_window"]

#: latency bucket upper edges, ms: 0.01 ms x 1.12^k
EDGES_MS: np.ndarray = 0.01 * 1.12 ** np.arange(1, 145)
_NB = len(EDGES_MS) + 1  # + overflow
_LOG_CENTRE = np.log(np.append(EDGES_MS, EDGES_MS[-1] * 1.12) / np.sqrt(1.12))
_SERVER, _CLIENT = 2, 3
EDGE = "->"


def spans_of_window(window: Any, names: Mapping[str, Sequence[str]] | None = None) -> dict[str, Any]:
    """The simulator's window as span columns of the otlp contract (integer codes + ``names``)."""
    sp = window.spans
    start_ms = sp["start_us"] / 1000.0
    dur_ms = sp["duration_us"] / 1000.0
    cols: dict[str, Any] = {"ts_ms": np.floor(start_ms + dur_ms).astype(np.int64), "service": sp["service"],
                            "peer": sp["peer"], "kind": sp["kind"], "duration_ms": dur_ms,
                            "error": (sp["status"] == 2).astype(np.float64)}  # fmt: skip
    if names is not None:
        cols["names"] = names["service"]
        cols["version"] = np.asarray(names["version"], object)[sp["version"]]
    return cols


@dataclass
class ClosedBin:
    """The RED figures of one closed bin, per entity (aligned with ``entities``)."""

    t0_ms: int
    t1_ms: int
    entities: list[str]
    count: np.ndarray  # requests
    errors: np.ndarray
    hist: np.ndarray  # [E, buckets]

    def quantile(self, q: float) -> np.ndarray:
        """Bucket-edge quantile per entity (ms); NaN without requests."""
        cum = np.cumsum(self.hist, axis=1)
        n = cum[:, -1]
        idx = np.argmax(cum >= np.maximum(q * n, 1e-9)[:, None], axis=1)
        out = np.append(EDGES_MS, EDGES_MS[-1] * 1.12)[idx]
        return np.where(n > 0, out, np.nan)

    def log_mean(self) -> np.ndarray:
        """Log of the geometric mean latency per entity (bucket centres); NaN without requests."""
        n = self.hist.sum(axis=1)
        return np.where(n > 0, (self.hist @ _LOG_CENTRE) / np.maximum(n, 1), np.nan)

    def slower_than(self, threshold_ms: np.ndarray) -> np.ndarray:
        """Requests per entity in buckets above ``threshold_ms`` (snapped to the bucket edge at or above it)."""
        b = np.searchsorted(EDGES_MS, np.asarray(threshold_ms, np.float64), side="left") + 1
        cum = np.cumsum(self.hist, axis=1)
        below = np.take_along_axis(cum, np.clip(b - 1, 0, _NB - 1)[:, None], axis=1)[:, 0]
        return cum[:, -1] - below


class ServiceGraph:
    """Call edges seen in spans: traffic (EW requests/s, half-life 30 bins), first and last seen (ms)."""

    def __init__(self) -> None:
        self.edges: dict[tuple[str, str], list[float]] = {}  # (a, b) -> [rate, first_ms, last_ms]

    def observe(self, a: str, b: str, count: float, t_ms: int, bin_s: float) -> None:
        """Count one bin's calls on an edge."""
        e = self.edges.get((a, b))
        rate = count / bin_s
        if e is None:
            self.edges[(a, b)] = [rate, float(t_ms), float(t_ms)]
        else:
            e[0] += (rate - e[0]) * 0.0228  # half-life 30 bins
            e[2] = float(t_ms)

    def to_json(self) -> dict[str, Any]:
        """The graph as JSON: edges with their traffic, first and last seen."""
        return {"edges": [{"caller": a, "callee": b, "rate": round(v[0], 3), "first_ms": int(v[1]),
                           "last_ms": int(v[2])} for (a, b), v in sorted(self.edges.items())]}  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        return {"edges": [[a, b, *v] for (a, b), v in self.edges.items()]}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.edges = {(str(e[0]), str(e[1])): [float(x) for x in e[2:]] for e in state["edges"]}


class RedWindows:
    """Folds span batches into per-(entity, bin) RED accumulators; :meth:`advance` returns the closed bins."""

    def __init__(self, bin_ms: int = 10_000) -> None:
        if bin_ms <= 0:
            raise ValueError(f"`bin_ms` must be > 0; got {bin_ms}")
        self.bin_ms = int(bin_ms)
        self.entities: list[str] = []
        self._index: dict[str, int] = {}
        self.servers: set[str] = set()  # services seen with SERVER spans
        self.open: dict[int, list[np.ndarray]] = {}  # bin -> [count, errors, hist] sized to the entity table
        self.closed_until = -(2**62)  # bins below this index are closed
        self.late = 0
        self.graph = ServiceGraph()
        self.versions: dict[str, list[Any]] = {}  # service -> [version, deployed at (ms)]

    def _ids(self, names: Sequence[str]) -> np.ndarray:
        out = np.empty(len(names), np.int64)
        for i, n in enumerate(names):
            j = self._index.get(n)
            if j is None:
                j = self._index[n] = len(self.entities)
                self.entities.append(n)
            out[i] = j
        return out

    def add(self, spans: Mapping[str, Any]) -> None:
        """Fold one batch of span columns in (late spans are counted and dropped)."""
        ts = np.asarray(spans["ts_ms"], np.int64)
        if not len(ts):
            return
        kind = np.asarray(spans["kind"])
        svc_u, svc_i, peer_u, peer_i = _codes(spans)
        server = kind == _SERVER
        client = (kind == _CLIENT) & (peer_i >= 0)
        for s in np.unique(svc_i[server]).tolist():
            self.servers.add(svc_u[s])
        if "version" in spans:
            self._versions(svc_u, svc_i[server], np.asarray(spans["version"])[server], ts[server])
        b = ts // self.bin_ms
        ok = b >= self.closed_until
        self.late += int((~ok).sum())
        dur = np.asarray(spans["duration_ms"], np.float64)
        err = np.asarray(spans["error"], np.float64)
        bucket = np.searchsorted(EDGES_MS, dur, side="left")
        # entity ids: services (their server spans), edges (client spans)
        rows_s = server & ok
        rows_e = client & ok
        sid = self._ids(list(svc_u))[svc_i[rows_s]] if rows_s.any() else np.empty(0, np.int64)
        if rows_e.any():
            pair = svc_i[rows_e] * (len(peer_u) + 1) + peer_i[rows_e]
            up, pinv = np.unique(pair, return_inverse=True)
            enames = [f"{svc_u[p // (len(peer_u) + 1)]}{EDGE}{peer_u[p % (len(peer_u) + 1)]}" for p in up.tolist()]
            eid = self._ids(enames)[pinv]
            for n in {peer_u[p % (len(peer_u) + 1)] for p in up.tolist()}:  # virtual nodes exist as entities
                self._ids([n])
        else:
            eid = np.empty(0, np.int64)
        ent = np.concatenate([sid, eid])
        rows = np.concatenate([np.flatnonzero(rows_s), np.flatnonzero(rows_e)])
        E = len(self.entities)
        bins = b[rows]
        for bi in np.unique(bins).tolist():
            m = bins == bi
            acc = self._acc(int(bi), E)
            e, r = ent[m], rows[m]
            acc[0] += np.bincount(e, minlength=E)
            acc[1] += np.bincount(e, weights=err[r], minlength=E)
            acc[2] += np.bincount(e * _NB + bucket[r], minlength=E * _NB).reshape(E, _NB)

    def _versions(self, names: list[str], svc: np.ndarray, ver: np.ndarray, ts: np.ndarray) -> None:
        """A service's version changing (its latest span's) is a deploy at the first span of the new version."""
        if not len(svc):
            return
        order = np.lexsort((ts, svc))
        svc, ver, ts = svc[order], ver[order], ts[order]
        last = np.r_[svc[1:] != svc[:-1], True]
        for k in np.flatnonzero(last).tolist():
            name, v = names[int(svc[k])], str(ver[k])
            cur = self.versions.get(name)
            if cur is None:
                self.versions[name] = [v, -1]
            elif cur[0] != v:
                first = np.flatnonzero((svc == svc[k]) & (ver.astype(str) == v))
                self.versions[name] = [v, int(ts[first[0]])]

    def deployed_since(self, since_ms: int) -> set[str]:
        """Services whose version changed at or after ``since_ms``."""
        return {s for s, (_, t) in self.versions.items() if t >= since_ms}

    def _acc(self, bi: int, E: int) -> list[np.ndarray]:
        acc = self.open.get(bi)
        if acc is None:
            acc = self.open[bi] = [np.zeros(E), np.zeros(E), np.zeros((E, _NB))]
        elif len(acc[0]) < E:
            k = E - len(acc[0])
            acc[0] = np.concatenate([acc[0], np.zeros(k)])
            acc[1] = np.concatenate([acc[1], np.zeros(k)])
            acc[2] = np.concatenate([acc[2], np.zeros((k, _NB))])
        return acc

    def advance(self, watermark_ms: int) -> list[ClosedBin]:
        """Close every bin that ends at or before ``watermark_ms`` (in time order, gaps as empty bins)."""
        last = int(watermark_ms) // self.bin_ms  # bins < last are complete
        if not self.open and self.closed_until < -(2**61):
            self.closed_until = last
            return []
        first = min([*self.open, last]) if self.closed_until < -(2**61) else self.closed_until
        out = []
        E = len(self.entities)
        for bi in range(first, last):
            acc = self._acc(bi, E)
            del self.open[bi]
            cb = self._virtual(ClosedBin(bi * self.bin_ms, (bi + 1) * self.bin_ms, list(self.entities), *acc))
            out.append(cb)
        self.closed_until = max(self.closed_until, last)
        return out

    def _virtual(self, cb: ClosedBin) -> ClosedBin:
        """Services without server spans: the sum of their incoming edges; edges feed the graph."""
        bin_s = self.bin_ms / 1000.0
        for j, name in enumerate(cb.entities):
            if EDGE in name:
                a, b = name.split(EDGE, 1)
                if cb.count[j] > 0:
                    self.graph.observe(a, b, float(cb.count[j]), cb.t1_ms, bin_s)
                if b not in self.servers:
                    k = self._index[b]
                    cb.count[k] += cb.count[j]
                    cb.errors[k] += cb.errors[j]
                    cb.hist[k] += cb.hist[j]
        return cb

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        return {"bin_ms": self.bin_ms, "entities": list(self.entities), "servers": sorted(self.servers),
                "open": [[bi, *acc] for bi, acc in self.open.items()], "closed_until": self.closed_until,
                "late": self.late, "graph": self.graph.snapshot(),
                "versions": [[k, *v] for k, v in self.versions.items()]}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.entities = [str(e) for e in state["entities"]]
        self._index = {e: i for i, e in enumerate(self.entities)}
        self.servers = {str(s) for s in state["servers"]}
        self.open = {int(o[0]): [np.asarray(x, np.float64) for x in o[1:]] for o in state["open"]}
        self.closed_until = int(state["closed_until"])
        self.late = int(state["late"])
        self.graph.restore(state["graph"])
        self.versions = {str(v[0]): [str(v[1]), int(v[2])] for v in state["versions"]}


def _codes(spans: Mapping[str, Any]) -> tuple[list[str], np.ndarray, list[str], np.ndarray]:
    """Service and peer as (names, codes) whether the columns are strings or codes + ``names``."""
    svc, peer = np.asarray(spans["service"]), np.asarray(spans["peer"])
    if "names" in spans:
        names = [str(n) for n in spans["names"]]
        return names, svc.astype(np.int64), names, peer.astype(np.int64)
    su, si = np.unique(svc.astype(str), return_inverse=True)
    pu, pi = np.unique(peer.astype(str), return_inverse=True)
    pnames = [str(x) for x in pu]
    pi = pi.astype(np.int64)
    if "" in pnames:
        blank = pnames.index("")
        pi = np.where(pi == blank, -1, pi)
    return [str(x) for x in su], si.astype(np.int64), pnames, pi

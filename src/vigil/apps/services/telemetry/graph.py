"""The live service dependency graph, built from spans: nodes are services, edges are calls between them.

An edge ``a → b`` counts one call for each

* CLIENT or PRODUCER span of ``a`` with a ``peer`` (the ``peer.service`` attribute, or the service of its SERVER
  child when the decoder saw both in one request): calls to datastores and uninstrumented services count too;
* SERVER or CONSUMER span of ``b`` whose parent span belongs to ``a`` and is not such a client span (a caller
  without client instrumentation, or a client span without ``peer.service``); :meth:`ServiceGraph.add` returns
  these calls so the edge RED windows count them too. Children usually end — and are exported — before their parents, so
  children whose parent is not seen yet wait (at most ``max_pending``) and recent spans are remembered (at most
  ``max_recent``) to join across micro-batches.

Each edge keeps ``calls``, ``errors``, ``duration_ms_sum``, ``first_seen_ms``, ``last_seen_ms``, the caller's
versions and the callee's versions (seen when the callee's SERVER span joins its parent), each version with the
last time it was seen, and (``last_window``) its last closed RED window: rate, error rate, p99 — its current
traffic weight. Each node keeps ``spans``, ``errors``, first/last seen and its versions. The graph is
plain data (:meth:`ServiceGraph.snapshot`), checkpointed with the step, and :meth:`ServiceGraph.to_json` gives
what the console draws.

Examples:
    >>> import numpy as np
    >>> g = ServiceGraph()
    >>> calls = g.add(np.array(["web", "cart"], object), np.array(["cart", ""], object), np.array([3, 2], np.int8),
    ...       np.array([0.0, 1.0]), np.array([5.0, 4.0]), np.array([1000, 1000]), np.array(["v1", "v7"], object),
    ...       np.array([11, 12], np.uint64), np.array([0, 11], np.uint64))
    >>> [(e["source"], e["target"], e["calls"], e["callee_versions"]) for e in g.to_json()["edges"]]
    [('web', 'cart', 1, {'v7': 1000})]
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vigil.apps.services.telemetry.red import factorize

__all__ = ["ServiceGraph"]

CLIENT_KINDS, SERVER_KINDS = (3, 4), (2, 5)
_NO_CALLS: dict[str, np.ndarray] = {"key": np.empty(0, object), "ts_ms": np.empty(0, np.int64),
                                    "duration_ms": np.empty(0), "error": np.empty(0)}  # fmt: skip


def _seen(d: dict[str, Any], calls: int, errors: int, dsum: float, first: int, last: int) -> None:
    d["calls"] += calls
    d["errors"] += errors
    d["duration_ms_sum"] += dsum
    d["first_seen_ms"] = min(d["first_seen_ms"], first)
    d["last_seen_ms"] = max(d["last_seen_ms"], last)


def _new(first: int) -> dict[str, Any]:
    return {"calls": 0, "errors": 0, "duration_ms_sum": 0.0, "first_seen_ms": first, "last_seen_ms": first,
            "versions": {}, "callee_versions": {}}  # fmt: skip


class ServiceGraph:
    """Services and the calls between them, from span columns (module docstring)."""

    def __init__(self, max_recent: int = 200_000, max_pending: int = 200_000) -> None:
        self.max_recent, self.max_pending = max_recent, max_pending
        self.nodes: dict[str, dict[str, Any]] = {}
        self.edges: dict[tuple[str, str], dict[str, Any]] = {}
        self.anomalous: dict[str, int] = {}  # service -> event time (ms) of its last alert
        self.latest: dict[str, dict[str, Any]] = {}  # service or "a->b" -> its last closed RED window
        self.names: list[str] = []  # service codes of the join arrays
        self._code: dict[str, int] = {}
        # recent spans (parents to be) and children waiting for their parent: columns
        self.recent = {
            "span_id": np.empty(0, np.uint64),
            "svc": np.empty(0, np.int64),
            "peered": np.empty(0, bool),
            "seq": np.empty(0, np.int64),
        }
        self._seq = 0
        self.pending = {"parent": np.empty(0, np.uint64), "svc": np.empty(0, np.int64), "err": np.empty(0),
                        "dur": np.empty(0), "ts": np.empty(0, np.int64), "ver": np.empty(0, object)}  # fmt: skip

    def _codes(self, distinct: list[str]) -> np.ndarray:
        return np.array([self._code.setdefault(s, len(self._code)) for s in distinct], np.int64)

    def add(self, service: np.ndarray, peer: np.ndarray, kind: np.ndarray, error: np.ndarray, dur_ms: np.ndarray,
            ts_ms: np.ndarray, version: np.ndarray, span_id: np.ndarray,
            parent: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """Fold a micro-batch of spans in.

        Returns the calls counted from parent/child joins (callers without a client span that names its
        peer): ``key`` (``"a->b"``), ``ts_ms``, ``duration_ms`` (the callee's), ``error`` — for the edge RED windows.
        """
        if not len(service):
            return _NO_CALLS
        s_code, s_names = factorize(service)
        svc = self._codes(s_names)[s_code]
        if len(self._code) > len(self.names):
            self.names += list(self._code)[len(self.names) :]
        self._nodes(svc, error, ts_ms, version)
        p_code, p_names = factorize(peer)
        has_peer = np.array([bool(p) for p in p_names], bool)[p_code] if len(p_names) else np.zeros(0, bool)
        client = np.isin(kind, CLIENT_KINDS) & has_peer
        if client.any():
            pc = self._codes(p_names)[p_code[client]]
            if len(self._code) > len(self.names):
                self.names += list(self._code)[len(self.names) :]
            self._edges(svc[client], pc, error[client], dur_ms[client], ts_ms[client], version[client], callee=False)
        return self._join(svc, kind, client, error, dur_ms, ts_ms, version, span_id, parent)

    def _nodes(self, svc: np.ndarray, error: np.ndarray, ts_ms: np.ndarray, version: np.ndarray) -> None:
        v_code, v_names = factorize(version)
        pair = svc * (len(v_names) + 1) + v_code
        uniq, inv = np.unique(pair, return_inverse=True)
        n = np.bincount(inv)
        e = np.bincount(inv, weights=error)
        lo = np.full(len(uniq), np.iinfo(np.int64).max)
        hi = np.full(len(uniq), np.iinfo(np.int64).min)
        np.minimum.at(lo, inv, ts_ms)
        np.maximum.at(hi, inv, ts_ms)
        for i, u in enumerate(uniq.tolist()):
            name, ver = self.names[u // (len(v_names) + 1)], v_names[u % (len(v_names) + 1)]
            node = self.nodes.setdefault(name, {"spans": 0, "errors": 0, "first_seen_ms": int(lo[i]),
                                                "last_seen_ms": int(hi[i]), "versions": {}})  # fmt: skip
            node["spans"] += int(n[i])
            node["errors"] += int(e[i])
            node["first_seen_ms"] = min(node["first_seen_ms"], int(lo[i]))
            node["last_seen_ms"] = max(node["last_seen_ms"], int(hi[i]))
            if ver:
                node["versions"][ver] = max(node["versions"].get(ver, 0), int(hi[i]))

    def _edges(self, src: np.ndarray, dst: np.ndarray, error: np.ndarray, dur: np.ndarray, ts: np.ndarray,
               version: np.ndarray, callee: bool, count: bool = True) -> None:  # fmt: skip
        keep = src != dst
        src, dst, error, dur, ts, version = src[keep], dst[keep], error[keep], dur[keep], ts[keep], version[keep]
        if not len(src):
            return
        v_code, v_names = factorize(version)
        big = len(self.names) + 1
        pair = (src * big + dst) * (len(v_names) + 1) + v_code
        uniq, inv = np.unique(pair, return_inverse=True)
        n, e, d = np.bincount(inv), np.bincount(inv, weights=error), np.bincount(inv, weights=dur)
        lo = np.full(len(uniq), np.iinfo(np.int64).max)
        hi = np.full(len(uniq), np.iinfo(np.int64).min)
        np.minimum.at(lo, inv, ts)
        np.maximum.at(hi, inv, ts)
        for i, u in enumerate(uniq.tolist()):
            sd, vc = divmod(u, len(v_names) + 1)
            a, b = self.names[sd // big], self.names[sd % big]
            edge = self.edges.setdefault((a, b), _new(int(lo[i])))
            if count:
                _seen(edge, int(n[i]), int(e[i]), float(d[i]), int(lo[i]), int(hi[i]))
            ver = v_names[vc]
            if ver:
                where = edge["callee_versions" if callee else "versions"]
                where[ver] = max(where.get(ver, 0), int(hi[i]))

    def _join(self, svc: np.ndarray, kind: np.ndarray, client: np.ndarray, error: np.ndarray, dur: np.ndarray,
              ts: np.ndarray, version: np.ndarray, span_id: np.ndarray,
              parent: np.ndarray) -> dict[str, np.ndarray]:  # fmt: skip
        """Children (SERVER/CONSUMER spans with a parent) meet their parents, in this batch or remembered.

        Remembered spans stay sorted by span id (each batch is merged in, never re-sorted), with the order
        they came in (``seq``) to forget the oldest beyond ``max_recent``.
        """
        r = self.recent
        order = np.argsort(span_id, kind="stable")
        b_ids, b_svc, b_peer = span_id[order], svc[order], client[order]
        child = np.isin(kind, SERVER_KINDS) & (parent != 0)
        p = self.pending
        c_par = np.concatenate([p["parent"], parent[child]])
        c_svc = np.concatenate([p["svc"], svc[child]])
        c_err, c_dur = np.concatenate([p["err"], error[child]]), np.concatenate([p["dur"], dur[child]])
        c_ts, c_ver = np.concatenate([p["ts"], ts[child]]), np.concatenate([p["ver"], version[child]])
        found = np.zeros(len(c_par), bool)
        p_svc = np.zeros(len(c_par), np.int64)
        p_peered = np.zeros(len(c_par), bool)
        for ids, owner, peered in ((r["span_id"], r["svc"], r["peered"]), (b_ids, b_svc, b_peer)):
            if not len(ids) or not len(c_par):
                continue
            at = np.searchsorted(ids, c_par).clip(0, len(ids) - 1)
            hit = (ids[at] == c_par) & ~found
            p_svc[hit], p_peered[hit] = owner[at[hit]], peered[at[hit]]
            found |= hit
        hit = np.flatnonzero(found)
        calls = _NO_CALLS
        if len(hit):
            src, dst = p_svc[hit], c_svc[hit]
            counted = ~p_peered[hit]  # a client span with a peer counted the call already
            for m, count in ((counted, True), (~counted, False)):
                self._edges(src[m], dst[m], c_err[hit][m], c_dur[hit][m], c_ts[hit][m], c_ver[hit][m], callee=True,
                            count=count)  # fmt: skip
            m = counted & (src != dst)
            if m.any():
                big = len(self.names) + 1
                uniq, inv = np.unique(src[m] * big + dst[m], return_inverse=True)
                keys = np.array([f"{self.names[u // big]}->{self.names[u % big]}" for u in uniq.tolist()], object)
                calls = {"key": keys[inv], "ts_ms": c_ts[hit][m], "duration_ms": c_dur[hit][m],
                         "error": c_err[hit][m]}  # fmt: skip
        wait = ~found
        cap = self.max_pending
        self.pending = {"parent": c_par[wait][-cap:], "svc": c_svc[wait][-cap:], "err": c_err[wait][-cap:],
                        "dur": c_dur[wait][-cap:], "ts": c_ts[wait][-cap:], "ver": c_ver[wait][-cap:]}  # fmt: skip
        # merge the batch into the sorted memory; forget the oldest beyond max_recent
        seq0 = self._seq
        b_seq = seq0 + order.astype(np.int64)
        pos = np.searchsorted(r["span_id"], b_ids)
        merged = {"span_id": np.insert(r["span_id"], pos, b_ids), "svc": np.insert(r["svc"], pos, b_svc),
                  "peered": np.insert(r["peered"], pos, b_peer), "seq": np.insert(r["seq"], pos, b_seq)}  # fmt: skip
        self._seq = seq0 + len(span_id)
        if len(merged["span_id"]) > self.max_recent:
            keep = merged["seq"] >= self._seq - self.max_recent
            merged = {k: v[keep] for k, v in merged.items()}
        self.recent = merged
        return calls

    def mark(self, service: str, ts_ms: int) -> None:
        """Remember that ``service`` had an alert at ``ts_ms`` (drawn as anomalous)."""
        self.anomalous[service] = max(self.anomalous.get(service, ts_ms), ts_ms)

    def window(self, key: str, stats: dict[str, Any]) -> None:
        """Keep the last closed RED window of a service or an edge (``"a->b"``): its traffic weight."""
        self.latest[key] = stats

    def to_json(self, anomalous_since_ms: int | None = None) -> dict[str, Any]:
        """Nodes and edges as JSON-ready data; a node is ``anomalous`` with an alert at or after the given time."""
        since = anomalous_since_ms if anomalous_since_ms is not None else -(2**62)
        nodes = [{"id": name, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in n.items()},
                  "anomalous": self.anomalous.get(name, -(2**63)) >= since, "last_window": self.latest.get(name)}
                 for name, n in sorted(self.nodes.items())]  # fmt: skip
        for name in sorted({b for _, b in self.edges} - set(self.nodes)):  # callees seen only as peers
            nodes.append({"id": name, "spans": 0, "errors": 0, "versions": {}, "peer_only": True,
                          "anomalous": self.anomalous.get(name, -(2**63)) >= since})  # fmt: skip
        edges = [{"source": a, "target": b, **{k: (dict(v) if isinstance(v, dict) else v) for k, v in e.items()},
                  "mean_ms": e["duration_ms_sum"] / e["calls"] if e["calls"] else None,
                  "last_window": self.latest.get(f"{a}->{b}")}
                 for (a, b), e in sorted(self.edges.items()) if e["calls"]]  # fmt: skip
        return {"nodes": nodes, "edges": edges}

    def snapshot(self) -> dict[str, Any]:
        """Plain data: nodes, edges, marks, and the spans waiting to join."""
        return {"nodes": {k: {**v, "versions": dict(v["versions"])} for k, v in self.nodes.items()},
                "edges": [[a, b, {**e, "versions": dict(e["versions"]), "callee_versions": dict(e["callee_versions"])}]
                          for (a, b), e in self.edges.items()],
                "anomalous": dict(self.anomalous), "names": list(self.names),
                "latest": {k: dict(v) for k, v in self.latest.items()},
                "recent": {k: v.copy() for k, v in self.recent.items()}, "seq": self._seq,
                "pending": {k: (v.tolist() if k == "ver" else v.copy()) for k, v in self.pending.items()}}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Reload a snapshot."""
        self.nodes = {k: dict(v) for k, v in state["nodes"].items()}
        self.edges = {(a, b): dict(e) for a, b, e in state["edges"]}
        self.anomalous = dict(state["anomalous"])
        self.latest = {k: dict(v) for k, v in state.get("latest", {}).items()}
        self.names = list(state["names"])
        self._code = {n: i for i, n in enumerate(self.names)}
        self.recent = {k: np.asarray(v) for k, v in state["recent"].items()}
        self._seq = int(state.get("seq", 0))
        self.pending = {k: (np.array(v, object) if k == "ver" else np.asarray(v)) for k, v in state["pending"].items()}

"""From spans to the RCA's series: RED metrics per service and per call edge, and the call graph.

:func:`red_frame` bins span columns (``ts_ms``, ``service``, ``peer``, ``kind``, ``status``, ``duration_us``
as integer codes with a ``services`` name table) on a regular grid and computes, vectorized over every
(entity, bin) at once:

* per **service**, from its SERVER spans: ``rate`` (requests/s), ``errors`` (share failed), ``latency-mean``,
  ``latency-p50``, ``latency-p90``, ``latency-p99`` (ms);
* per **call edge** ``caller->callee``, from the caller's CLIENT spans with ``peer`` = callee: the same,
  as the caller saw it (network and timeouts included);
* a service without server spans (a database, an external API) gets its series from all its callers'
  client spans, as the "virtual node" of a service graph (it is listed in ``frame.virtual``).

Percentiles are exact per bin: one ``lexsort`` by (entity, bin, duration), then an index per group. With
``mix_adjust`` (the default, when spans carry ``op``) they are **mix-adjusted**: each span's duration is
first divided by its operation's median over the spans given and multiplied by its series' median, so a
service whose operations differ by 30x (a 1 ms token check, a 30 ms password hash) does not see its p50
jump whenever the mix of calls wobbles; the mean stays in plain milliseconds (it adds up along calls).

:func:`add_resource_metrics` adds long-form per-service metrics (``ts_ms`` = end of interval, ``service``,
``metric``, ``value``) such as ``cpu``, ``mem``, ``gc``. :func:`infer_graph` reads the call graph off the
spans: a client span's (service, peer), or else a span's parent in another service.

Examples:
    >>> import numpy as np
    >>> spans = {"ts_ms": np.array([0, 5, 12_000]), "service": np.array([0, 1, 1]), "peer": np.array([1, -1, -1]),
    ...          "kind": np.array([3, 2, 2]), "status": np.array([0, 0, 2]), "duration_us": np.array([900, 500, 700])}
    >>> f = red_frame(spans, ["frontend", "cart"], t0_ms=0, t1_ms=20_000, step_ms=10_000)
    >>> f.entities, f.series("cart", "errors").tolist()
    (['cart', 'frontend->cart'], [0.0, 1.0])
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from vigil.rca.frame import EDGE, MetricFrame, ServiceGraph

__all__ = ["RED", "add_resource_metrics", "frame_from_columns", "infer_graph", "red_frame"]

RED = ("rate", "errors", "latency-mean", "latency-p50", "latency-p90", "latency-p99")
_SERVER, _CLIENT = 2, 3
_QS = (0.5, 0.9, 0.99)


def _group_stats(group: np.ndarray, dur_ms: np.ndarray, err: np.ndarray, n_groups: int,
                 qdur_ms: np.ndarray | None = None) -> np.ndarray:  # fmt: skip
    """[n_groups, 6]: count, error share, mean, p50, p90, p99 of each group (NaN where empty).

    Percentiles are taken over ``qdur_ms`` when given (the mix-adjusted durations), the mean over ``dur_ms``.
    """
    qdur_ms = dur_ms if qdur_ms is None else qdur_ms
    out = np.full((n_groups, 6), np.nan)
    if not len(group):
        out[:, 0] = 0
        return out
    order = _sort_by_group_then(group, qdur_ms, n_groups)
    d = qdur_ms[order]
    cnt = np.bincount(group, minlength=n_groups)
    out[:, 0] = cnt
    has = cnt > 0
    out[has, 1] = np.bincount(group, weights=err, minlength=n_groups)[has] / cnt[has]
    out[has, 2] = np.bincount(group, weights=dur_ms, minlength=n_groups)[has] / cnt[has]
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    for j, q in enumerate(_QS):
        idx = start[has] + np.floor(q * (cnt[has] - 1)).astype(np.int64)
        out[has, 3 + j] = d[idx]
    return out


def _sort_by_group_then(group: np.ndarray, x: np.ndarray, n_groups: int) -> np.ndarray:
    """Indices ordering rows by group, then by ``x``: a sort by ``x``, then a stable radix sort by group."""
    if n_groups > 65_535:
        return np.lexsort((x, group))
    by_x = np.argsort(x)
    return by_x[np.argsort(group[by_x].astype(np.uint16), kind="stable")]


def _dense(key: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(key, return_inverse=True)`` for small non-negative keys, in linear time."""
    present = np.bincount(key, minlength=size) > 0
    uniq = np.flatnonzero(present)
    lookup = np.cumsum(present) - 1
    return uniq, lookup[key]


def _mix_adjusted(dur: np.ndarray, op: np.ndarray, kind: np.ndarray, svc: np.ndarray, peer: np.ndarray) -> np.ndarray:
    """Durations rescaled so each operation's median becomes its span group's median (module docstring)."""
    n_op = int(op.max()) + 1 if len(op) else 1
    n_svc = int(max(svc.max(initial=0), peer.max(initial=0))) + 2
    group = ((svc * n_svc + (peer + 1)) * 4 + (kind & 3)).astype(np.int64)  # what one series aggregates
    n_group = n_svc * n_svc * 4
    ug, ginv = _dense(group, n_group)
    uk, inv = _dense(ginv * n_op + op, len(ug) * n_op)
    # medians from a sample: a few hundred thousand spans pin them down as well as millions
    step = max(1, len(dur) // 200_000)
    med_op = _medians(inv[::step], dur[::step], len(uk))
    med_g = _medians(ginv[::step], dur[::step], len(ug))
    missing = np.isnan(med_op)
    if missing.any():  # an operation too rare for the sample: its own median
        med_op[missing] = _medians(inv, dur, len(uk))[missing]
    return dur / np.maximum(med_op[inv], 1e-6) * med_g[ginv]


def _medians(group: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    """Median of ``x`` per group (NaN for empty groups)."""
    order = _sort_by_group_then(group, x, n)
    cnt = np.bincount(group, minlength=n)
    start = np.concatenate([[0], np.cumsum(cnt)[:-1]])
    out = np.full(n, np.nan)
    has = cnt > 0
    out[has] = x[order][start[has] + (cnt[has] - 1) // 2]
    return out


def red_frame(spans: Mapping[str, np.ndarray], services: Sequence[str], *, t0_ms: int, t1_ms: int,
              step_ms: int = 10_000, mix_adjust: bool = True) -> MetricFrame:  # fmt: skip
    """RED series per service and call edge on the grid ``[t0_ms, t1_ms)`` by ``step_ms`` (module docstring)."""
    T = max(1, int(np.ceil((t1_ms - t0_ms) / step_ms)))
    ts = np.asarray(spans["ts_ms"], np.int64)
    keep = (ts >= t0_ms) & (ts < t0_ms + T * step_ms)
    ts = ts[keep]
    svc = np.asarray(spans["service"], np.int64)[keep]
    peer = np.asarray(spans["peer"], np.int64)[keep]
    kind = np.asarray(spans["kind"])[keep]
    err = (np.asarray(spans["status"])[keep] == 2).astype(np.float64)
    dur = np.asarray(spans["duration_us"], np.float64)[keep] / 1000.0
    b = (ts - t0_ms) // step_ms
    S = len(services)
    if mix_adjust and "op" in spans:
        qdur = _mix_adjusted(dur, np.asarray(spans["op"], np.int64)[keep], kind, svc, peer)
    else:
        qdur = dur
    server = kind == _SERVER
    client = (kind == _CLIENT) & (peer >= 0)
    has_server = np.bincount(svc[server], minlength=S) > 0
    # services: their server spans, or their callers' client spans when they have none
    virt = client & ~has_server[np.maximum(peer, 0)]
    ent_s = np.where(server, svc, np.where(virt, peer, -1))
    rows = ent_s >= 0
    stats_s = _group_stats(ent_s[rows] * T + b[rows], dur[rows], err[rows], S * T, qdur[rows]).reshape(S, T, 6)
    # edges
    pair = svc[client] * S + peer[client]
    uniq, inv = _dense(pair, S * S)
    E = len(uniq)
    stats_e = _group_stats(inv * T + b[client], dur[client], err[client], E * T, qdur[client]).reshape(E, T, 6)
    present = np.flatnonzero(stats_s[:, :, 0].sum(axis=1) > 0)
    entities = [services[int(i)] for i in present] + [f"{services[p // S]}{EDGE}{services[p % S]}"
                                                       for p in uniq.tolist()]  # fmt: skip
    stats = np.concatenate([stats_s[present], stats_e], axis=0)  # [E', T, 6]
    values = np.empty((len(entities), len(RED), T))
    values[:, 0] = stats[:, :, 0] / (step_ms / 1000.0)
    values[:, 1:] = stats[:, :, 1:].transpose(0, 2, 1)
    values[:, 1:, :][np.broadcast_to(stats[:, None, :, 0] == 0, values[:, 1:, :].shape)] = np.nan
    virtual = {services[int(i)] for i in present if not has_server[i]}
    return MetricFrame(t0_ms + np.arange(T, dtype=np.int64) * step_ms, entities, list(RED), values, [], virtual)


def add_resource_metrics(frame: MetricFrame, metrics: Mapping[str, np.ndarray], services: Sequence[str],
                         names: Sequence[str], only: Sequence[str] = ("cpu", "mem", "gc", "cpu_pressure"),
                         ) -> MetricFrame:  # fmt: skip
    """``frame`` plus long-form per-service metrics (``ts_ms`` = interval end) averaged into its bins."""
    step = frame.step_ms or 10_000
    T = len(frame.ts_ms)
    ts = np.asarray(metrics["ts_ms"], np.int64) - 1  # an interval's end belongs to the bin before it
    b = (ts - int(frame.ts_ms[0])) // step
    ok = (b >= 0) & (b < T)
    entities = list(frame.entities)
    for s in services:
        if s not in entities:
            entities.insert(len(frame.services), s)
    from vigil.rca.frame import canonical

    new_m = [canonical(m) for m in only if canonical(m) not in frame.metrics]
    mets = list(frame.metrics) + new_m
    values = np.full((len(entities), len(mets), T), np.nan)
    for i, e in enumerate(frame.entities):
        values[entities.index(e), : len(frame.metrics)] = frame.values[i]
    svc_idx = np.array([entities.index(s) for s in services])
    m_code = np.asarray(metrics["metric"], np.int64)
    for name in only:
        if name not in names:
            continue
        rows = ok & (m_code == list(names).index(name))
        e = svc_idx[np.asarray(metrics["service"], np.int64)[rows]]
        key = e * T + b[rows]
        cnt = np.bincount(key, minlength=len(entities) * T)
        tot = np.bincount(key, weights=np.asarray(metrics["value"], np.float64)[rows], minlength=len(entities) * T)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan).reshape(len(entities), T)
        j = mets.index(canonical(name))
        values[:, j] = np.where(np.isnan(mean), values[:, j], mean)
    return MetricFrame(frame.ts_ms, entities, mets, values, list(frame.changes), set(frame.virtual))


def infer_graph(spans: Mapping[str, np.ndarray], services: Sequence[str]) -> ServiceGraph:
    """The call graph of the spans: (service, peer) of client spans, and cross-service parent links."""
    svc = np.asarray(spans["service"], np.int64)
    peer = np.asarray(spans.get("peer", np.full(len(svc), -1)), np.int64)
    S = len(services)
    pairs = set((svc[peer >= 0] * S + peer[peer >= 0]).tolist())
    if "parent_span_id" in spans and "span_id" in spans:
        sid = np.asarray(spans["span_id"])
        order = np.argsort(sid)
        par = np.asarray(spans["parent_span_id"])
        pos = np.clip(np.searchsorted(sid[order], par), 0, max(len(sid) - 1, 0))
        found = (par != 0) & (sid[order][pos] == par) if len(sid) else np.zeros(0, bool)
        p_svc = svc[order][pos]
        cross = found & (p_svc != svc)
        pairs |= set((p_svc[cross] * S + svc[cross]).tolist())
    return ServiceGraph(sorted((services[p // S], services[p % S]) for p in pairs if p // S != p % S))


def frame_from_columns(directory: str, *, step_ms: int = 10_000, until_ms: int | None = None) -> MetricFrame:
    """The frame of a span-columns directory, with the data before ``until_ms``.

    The directory holds ``spans.npz`` and ``names.json``, optionally ``metrics.npz`` and ``changes.jsonl``:
    what ``vigil generate services --format columns`` writes.
    """
    import json
    import os

    from vigil.rca.frame import ChangeEvent

    with open(os.path.join(directory, "names.json"), encoding="utf-8") as f:
        names = json.load(f)
    with np.load(os.path.join(directory, "spans.npz")) as z:
        spans = {k: z[k] for k in ("ts_ms", "service", "peer", "kind", "status", "duration_us", "op")}
    end = int(spans["ts_ms"].max()) + 1 if until_ms is None else until_ms
    keep = spans["ts_ms"] < end
    spans = {k: v[keep] for k, v in spans.items()}
    t0 = int(spans["ts_ms"].min()) // step_ms * step_ms
    frame = red_frame(spans, names["service"], t0_ms=t0, t1_ms=end, step_ms=step_ms)
    mpath = os.path.join(directory, "metrics.npz")
    if os.path.exists(mpath):
        with np.load(mpath) as z:
            met = {k: z[k] for k in z.files}
        keep = met["ts_ms"] <= end
        frame = add_resource_metrics(frame, {k: v[keep] for k, v in met.items()}, names["service"], names["metric"])
    cpath = os.path.join(directory, "changes.jsonl")
    if os.path.exists(cpath):
        with open(cpath, encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        frame.changes = [ChangeEvent(int(r["ts_ms"]), str(r["service"]), str(r.get("type", "deploy")),
                                     str(r.get("version", ""))) for r in rows if int(r["ts_ms"]) < end]  # fmt: skip
    return frame

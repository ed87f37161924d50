"""What steps produce, written once for every runtime: verdicts → alerts, score, late and window rows, health alerts.

A step never knows where its results go. It hands them to an :class:`Outputs`, which a runtime provides:
the embedded runner queues them for its sink thread and counts them in its run statistics; the Flink
runtime collects them for the operator's collector and side outputs. How an alert is built from a
detector's verdicts — its deterministic id, message, evidence and contributions — is here, and only here.

Examples:
    >>> import numpy as np
    >>> from vigil.detectors import SlidingZScore
    >>> from vigil.types import Batch
    >>> det = SlidingZScore(field="amount", window="60s", min_count=3, baseline_halflife=None)
    >>> b = Batch(np.zeros(5, np.int32), np.arange(5) * 1000, {"amount": np.array([10, 11, 9, 10, 90.0])})
    >>> out = CollectingOutputs("fraud")
    >>> v = det.process_many(b.slots, b.ts_ms, b.cols)
    >>> alerts = verdict_alerts(out, "amount_z", det, "warning", b, np.array(["u1"] * 5, object), v)
    >>> [(a.key, a.detector, a.event_id, round(a.score, 1)) for a in alerts]
    [('u1', 'amount_z', 'fraud@4000', 98.0)]
    >>> alerts[0].id == alert_id("fraud", "amount_z", "u1", "fraud@4000")
    True
    >>> c = alerts[0].contributions[0]
    >>> c.feature, round(c.score, 1), c.value, c.expected
    ('amount', 98.0, 90.0, 10.0)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vigil.types import Alert, Batch, Contribution, alert_id


@runtime_checkable
class Explainer(Protocol):
    """A detector that can attribute its flagged rows to features (used for alerts' ``contributions``)."""

    def explain_many(self, X: dict[str, np.ndarray], verdicts: Any, rows: np.ndarray) -> list[list[Contribution]]:
        """Per row in ``rows`` (indices into the batch), the features behind it, most anomalous first."""
        ...


@dataclass
class Counts:
    """What went out: alerts (per step, those fired), rows flagged and unscored per step, windows, late events."""

    alerts: int = 0
    fired: dict[str, int] = field(default_factory=dict)
    flagged: dict[str, int] = field(default_factory=dict)
    windows_emitted: int = 0
    late_events: int = 0
    unscored: dict[str, int] = field(default_factory=dict)


class Outputs:
    """Where steps' results go (a runtime subclasses it and implements :meth:`emit`).

    Args:
        pipeline: the pipeline's name (in alert ids and event ids).
        id_field: the extra column holding event ids (default: ``id`` if present, else ``<pipeline>@<ts_ms>``).
        keys_of: key slot → key string, through the runtime's key index.
        now_ns: the wall clock (detection time and latency only; never used for logic).
        score_sink: where per-event verdict rows go, if anywhere (``Pipeline.scores_to``).
        alert_sinks: where alerts go.
        late_sink: where late rows go.
        counts: where to count what goes out (a :class:`Counts`, or the runtime's own statistics with the same
            fields, e.g. the embedded runner's ``RunStats``).
    """

    def __init__(self, pipeline: str, *, id_field: str | None = None,
                 keys_of: Callable[[np.ndarray], Any] | None = None, now_ns: Callable[[], int] | None = None,
                 score_sink: Any = None, alert_sinks: list[Any] | None = None, late_sink: Any = None,
                 counts: Any = None) -> None:  # fmt: skip
        self.pipeline = pipeline
        self.id_field = id_field
        self._keys_of = keys_of
        self._now_ns = now_ns or _zero
        self.score_sink = score_sink
        self.alert_sinks = list(alert_sinks or [])
        self.late_sink = late_sink
        self.counts: Any = counts if counts is not None else Counts()

    # -- what a runtime implements ---------------------------------------------------------------

    def emit(self, sink: Any, items: list[Any]) -> None:
        """Send ``items`` to ``sink`` (in order with everything emitted before)."""
        raise NotImplementedError

    # -- what steps call ---------------------------------------------------------------------------

    def now_ns(self) -> int:
        """Wall-clock time in ns (for detection time and latency)."""
        return self._now_ns()

    def keys_of(self, slots: np.ndarray) -> Any:
        """The key strings of key slots (a sequence, indexable like the slots)."""
        if self._keys_of is None:
            return np.asarray([str(s) for s in np.asarray(slots).tolist()], object)
        return self._keys_of(slots)

    def event_ids(self, batch: Batch, rows: np.ndarray) -> list[str]:
        """The ids of ``rows`` of ``batch``: the ``id_field`` column, an ``id`` column, or ``<pipeline>@<ts_ms>``."""
        col = batch.extra.get(self.id_field) if self.id_field else None
        if col is None:
            col = batch.extra.get("id")
        if col is not None:
            return [str(x) for x in col[rows].tolist()]
        return [f"{self.pipeline}@{ts}" for ts in batch.ts_ms[rows].tolist()]

    def alerts(self, step: str, alerts: list[Alert], fired: bool = True) -> None:
        """Send alerts of ``step`` to every alert sink (``fired``: count them as fired by the step)."""
        if not alerts:
            return
        c = self.counts
        c.alerts += len(alerts)
        if fired:
            c.fired[step] = c.fired.get(step, 0) + len(alerts)
        for sink in self.alert_sinks:
            self.emit(sink, alerts)

    def route(self, step: str, items: list[Any], sink: Any, fired: bool = True) -> None:
        """A step's mixed outputs: alerts to the alert sinks, everything else to ``sink`` (if any)."""
        if not items:
            return
        alerts = [o for o in items if isinstance(o, Alert)]
        if alerts:
            self.alerts(step, alerts, fired)
        if sink is not None and len(alerts) < len(items):
            self.emit(sink, [o for o in items if not isinstance(o, Alert)])

    def count_flagged(self, step: str, n: int) -> None:
        """Rows a step flagged (an alert may cover several)."""
        if n:
            self.counts.flagged[step] = self.counts.flagged.get(step, 0) + n

    def count_unscored(self, step: str, n: int) -> None:
        """Rows a step could not score because of their value (e.g. ``transform: log`` of a value <= 0)."""
        if n:
            self.counts.unscored[step] = self.counts.unscored.get(step, 0) + n


class CollectingOutputs(Outputs):
    """Outputs kept in lists by sink (tests, doctests, and runtimes that hand them on themselves).

    Attributes:
        items: ``id(sink) -> [items]``; ``collected(sink)`` reads it.
    """

    def __init__(self, pipeline: str, **kw: Any) -> None:
        super().__init__(pipeline, **kw)
        self.items: dict[int, list[Any]] = {}

    def emit(self, sink: Any, items: list[Any]) -> None:
        """Keep ``items`` under ``sink``."""
        if items and sink is not None:
            self.items.setdefault(id(sink), []).extend(items)

    def collected(self, sink: Any) -> list[Any]:
        """Everything emitted to ``sink``."""
        return self.items.get(id(sink), [])


def _zero() -> int:
    return 0


def make_alert(pipeline: str, step: str, key: str, event_id: str, *, score: float, threshold: float,
               event_ts_ms: int, detect_ts_ms: int, detector: str | None = None, latency_ms: float | None = None,
               stats: dict[str, Any] | None = None, event_ids: list[str] | None = None, severity: str = "warning",
               message: str = "", labels: dict[str, str] | None = None,
               contributions: list[Contribution] | None = None) -> Alert:  # fmt: skip
    """An :class:`~vigil.types.Alert` whose id is made of ``pipeline``, ``step``, ``key`` and ``event_id``.

    Every alert Vigil raises is made here, so ids never collide across pipelines or steps and every alert
    has the same shape. ``detector`` (the ``alertname``) defaults to the step's name.
    """
    return Alert(id=alert_id(pipeline, step, key, event_id), key=key, event_id=event_id, detector=detector or step,
                 score=score, threshold=threshold, event_ts_ms=event_ts_ms, detect_ts_ms=detect_ts_ms,
                 latency_ms=latency_ms, stats=stats if stats is not None else {},
                 event_ids=event_ids if event_ids is not None else [], severity=severity, message=message,
                 labels=labels if labels is not None else {},
                 contributions=contributions if contributions is not None else [])  # fmt: skip


def verdict_alerts(out: Outputs, step: str, detector: Any, severity: str, batch: Batch, keys: np.ndarray, v: Any,
                   late_behind_ms: list[int] | None = None) -> list[Alert]:  # fmt: skip
    """The alerts of the rows a detector fired on (``v.fire``), with their evidence and contributions.

    ``late_behind_ms`` (per row of ``batch``) marks them raised late: scored against the key's current state
    though behind the watermark by that much.
    """
    fire = np.flatnonzero(v.fire)
    if not len(fire):
        return []
    now_ns = out.now_ns()
    ids = out.event_ids(batch, fire)
    emit_ns = batch.extra.get("emit_ns")
    latency = ((now_ns - emit_ns[fire].astype(np.int64)) / 1e6).tolist() if emit_ns is not None else None
    stat_cols = {k: a[fire].tolist() for k, a in v.stats.items()}
    scores = v.score[fire].tolist()
    ts = batch.ts_ms[fire].tolist()
    contributions = (detector.explain_many(batch.cols, v, fire) if isinstance(detector, Explainer)
                     else [[] for _ in range(len(fire))])  # fmt: skip
    alerts = []
    for j, i in enumerate(fire.tolist()):
        key = str(keys[i])
        stats = {k: c[j] for k, c in stat_cols.items()}
        stats["calibrated"] = float(v.calibrated[i])
        message = detector.describe(stats)
        if late_behind_ms is not None:
            why = (f"late event ({late_behind_ms[i]} ms behind the watermark), scored against the key's current "
                   "state, not learned")  # fmt: skip
            stats["revision"] = {"action": "raised_late", "why": why}
            message = f"raised late: {message}"
        alerts.append(make_alert(
            out.pipeline, step, key, ids[j], score=scores[j], threshold=detector.threshold, event_ts_ms=ts[j],
            detect_ts_ms=now_ns // 1_000_000, latency_ms=None if latency is None else latency[j], stats=stats,
            event_ids=[ids[j]], severity=severity, message=message, contributions=contributions[j],
        ))  # fmt: skip
    return alerts


def score_rows(out: Outputs, step: str, batch: Batch, keys: np.ndarray, v: Any) -> list[dict[str, Any]]:
    """One row per event: key, time, id, score, calibrated score, flag, ready."""
    ids = out.event_ids(batch, np.arange(len(batch)))
    return [
        {"step": step, "key": str(k), "ts_ms": t, "event_id": i, "score": sc, "calibrated": c, "flag": f, "ready": r}
        for k, t, i, sc, c, f, r in zip(keys.tolist(), batch.ts_ms.tolist(), ids, v.score.tolist(),
                                        v.calibrated.tolist(), v.flag.tolist(), v.ready.tolist(), strict=True)
    ]  # fmt: skip


def late_rows(step: str, keys: np.ndarray, ts_ms: np.ndarray, cols: dict[str, np.ndarray], idx: np.ndarray,
              watermarks: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Late events as rows for the late output: key, time, the watermark they were behind, their fields.

    With ``extra`` (events late at the watermark, before any step), also how far behind and the extra columns.
    """
    out = []
    for i in idx.tolist():
        row: dict[str, Any] = {"step": step, "key": str(keys[i]), "ts_ms": int(ts_ms[i]),
                               "watermark_ms": int(watermarks[i])}  # fmt: skip
        if extra is not None:
            row["behind_ms"] = int(watermarks[i] - ts_ms[i])
        row.update({k: float(v[i]) for k, v in cols.items()})
        if extra is not None:
            row.update({k: _plain(v[i]) for k, v in extra.items()})
        out.append(row)
    return out


def window_rows(step: str, res: Any, keys: np.ndarray) -> list[dict[str, Any]]:
    """Closed windows as rows: key, start, end, count, sum, mean, std, min, max."""
    return [
        {"step": step, "key": keys[i], "start_ms": s, "end_ms": e, "count": c, "sum": su, "mean": m, "std": sd,
         "min": lo, "max": hi}
        for i, (s, e, c, su, m, sd, lo, hi) in enumerate(zip(
            res.start_ms.tolist(), res.end_ms.tolist(), res.count.tolist(), res.sum.tolist(), res.mean.tolist(),
            res.std.tolist(), res.min.tolist(), res.max.tolist(), strict=True))
    ]  # fmt: skip


def model_health_alert(pipeline: str, step: str, health: dict[str, Any], watermark_ms: int, now_ms: int) -> Alert:
    """A "model unhealthy" alert when a step's served model falls back, or the notice when it serves again."""
    healthy = bool(health["healthy"])
    key = f"{pipeline}/{step}"
    since = health.get("since")
    what = "unhealthy" if not healthy else "healthy again"
    event = f"{what}@{int(since * 1000) if isinstance(since, int | float) else now_ms}"
    msg = (f"model of step `{step}` is unhealthy: {health.get('reason')}; falling back to the statistical "
           "detectors until a servable version is promoted (`vigil models list/promote/rollback`)"
           if not healthy else f"model of step `{step}` is served again ({health.get('version')})")  # fmt: skip
    return make_alert(pipeline, "model_health", key, event, score=float(not healthy), threshold=0.5,
                      event_ts_ms=max(watermark_ms, 0), detect_ts_ms=now_ms,
                      stats={"step": step, **{k: health.get(k) for k in ("healthy", "version", "reason")}},
                      severity="critical" if not healthy else "info", message=msg)  # fmt: skip


def _plain(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x

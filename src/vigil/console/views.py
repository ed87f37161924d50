"""What the console's routes show: alerts as the API serves them, their explanation, and the pipeline's health.

- :class:`_Console`: the store and the optional manager, runner and recorder behind the routes of
  :func:`~vigil.console.app.create_app`, with the alert views (live state from the manager when attached, else
  what the store says) and the health report.
- :func:`explain`: the features behind an alert (re-exported by :mod:`vigil.console.app`).
- :class:`ApiError`: an error the app answers as ``{error, field, value}``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from vigil.alerting.policy import AlertPolicy, Matcher, matches_all
from vigil.alerting.runtime import DEFAULT_GROUP_BY
from vigil.alerting.store import AlertStore
from vigil.errors import ConfigError

_NO_WM = 2**62


class ApiError(Exception):
    """An API error answered as ``{error, field, value}`` with ``status``."""

    def __init__(self, status: int, error: str, field: str | None = None, value: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.value = status, error, field, value


def explain(alert: dict[str, Any]) -> list[dict[str, Any]]:
    """The features behind an alert, most anomalous first: its structured ``contributions``.

    Each is ``{feature, score, value, expected, flag}`` as the detector attributed it
    (:class:`~vigil.types.Contribution`); an alert without contributions has no explanation beyond its message.

    Examples:
        >>> a = {"contributions": [{"feature": "cpu", "score": 2.0}, {"feature": "mem", "score": -5.0, "flag": True}]}
        >>> [(x["feature"], x["score"]) for x in explain(a)]
        [('mem', -5.0), ('cpu', 2.0)]
    """
    out = []
    for c in alert.get("contributions") or []:
        if isinstance(c, dict) and _is_num(c.get("score")):
            out.append({"feature": str(c.get("feature")), "score": float(c["score"]), "value": c.get("value"),
                        "expected": c.get("expected"), "flag": c.get("flag")})  # fmt: skip
    return sorted(out, key=lambda x: (-abs(x["score"]), x["feature"]))


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


class _Console:
    """What the routes read: the store, and the optional manager, runner and recorder."""

    def __init__(self, store: AlertStore, manager: Any, runner: Any, recorder: Any, pipeline: str,
                 clock: Callable[[], int]) -> None:  # fmt: skip
        self.store, self.manager, self.runner, self.recorder = store, manager, runner, recorder
        self.pipeline, self.clock = pipeline, clock
        # without a manager (a store served alone), group as a pipeline's default policy does: per detector and key
        default = {"route": {"receiver": "default", "group_by": list(DEFAULT_GROUP_BY)}}
        self.policy = getattr(manager, "policy", None) or AlertPolicy.from_dict(default)
        self.search_budget_s: float | None = None

    def live(self, fingerprints: set[str]) -> dict[str, Any]:
        """The manager's view of these alerts (empty without a manager, or if it keeps racing the engine)."""
        if self.manager is None or not fingerprints:
            return {}
        for _ in range(3):
            try:
                return {s.fingerprint: s for s in self.manager.alerts(fingerprints=fingerprints)}
            except RuntimeError:  # the engine changed the manager's dicts while we read them
                time.sleep(0.01)
        return {}

    def views(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Stored alert rows as the API shows them (live state from the manager when one is attached)."""
        live = self.live({r["fingerprint"] for r in rows})
        silences = [(s["id"], tuple(Matcher.parse(t) for t in s["matchers"]))
                    for s in self.store.silences(active_at_ms=self.clock())]  # fmt: skip
        acks = self.store.acks_for([r["fingerprint"] for r in rows])
        return [self.view(r, live.get(r["fingerprint"]), silences, acks) for r in rows]

    def group_of(self, labels: dict[str, Any]) -> str:
        """The group key the policy puts an alert with these labels in (its first route's)."""
        nodes = self.policy.tree.match(labels)
        return nodes[0].group_key(labels) if nodes else ""

    def view(self, row: dict[str, Any], live: Any, silences: list[Any], acks: dict[str, Any]) -> dict[str, Any]:
        labels, last = row["labels"], row.get("last_alert") or {}
        fp = row["fingerprint"]
        if live is not None:
            silenced_by, inhibited_by, flapping, group = live.silenced_by, live.inhibited_by, live.flapping, \
                live.group_key  # fmt: skip
            acked = live.acked
        else:
            silenced_by = [sid for sid, ms in silences if matches_all(ms, labels)]
            inhibited_by, flapping = [], False
            group = self.group_of(labels)
            a = acks.get(fp)
            acked = {k: a[k] for k in ("by", "comment", "at_ms")} if a else None
        return {"fingerprint": fp, "labels": labels, "alertname": labels.get("alertname"), "key": labels.get("key"),
                "severity": labels.get("severity"), "status": row["status"], "revision": row["revision"],
                "starts_at_ms": row["starts_at_ms"], "ends_at_ms": row["ends_at_ms"], "updated_ms": row["updated_ms"],
                "observations": row["observations"], "score": last.get("score"), "threshold": last.get("threshold"),
                "event_ts_ms": last.get("event_ts_ms"), "message": last.get("message", ""),
                "silenced": bool(silenced_by), "silenced_by": silenced_by, "inhibited": bool(inhibited_by),
                "inhibited_by": inhibited_by, "acked": acked, "flapping": flapping, "group": group}  # fmt: skip

    def find(self, fp: str) -> dict[str, Any]:
        row = self.store.alert(fp)
        if row is None:
            try:
                row = self.store.alert(self.store.find_fingerprint(fp))
            except ConfigError:
                row = None
        if row is None:
            raise ApiError(404, "no such alert", "fingerprint", fp)
        return row

    def health(self) -> dict[str, Any]:
        """The health bar: run counters and lags (with a runner), alerts per state, silences, the recorder.

        Two lags, never event time against the wall clock (a replay of last year's data is not a year late):
        ``event_lag_ms``, how far the watermark trails the newest event seen (out-of-order slack plus idle
        partitions), and ``processing_lag_ms``, how long ago (processing time) the last batch was processed.
        Both need the stream recorder, which sees every batch; ``null`` when unknown, or once the run finished.
        """
        now = self.clock()
        out: dict[str, Any] = {"pipeline": self.pipeline, "now_ms": now, "attached": self.runner is not None}
        r, rec = self.runner, self.recorder
        if r is None:
            out["message"] = "no pipeline attached"
        else:
            st = r.stats
            stats = {f.name: getattr(st, f.name) for f in fields(st) if f.name not in ("positions", "started_s")}
            stats["flagged"], stats["fired"] = dict(st.flagged), dict(st.fired)
            stats["events_per_s"] = st.events_per_s
            wm = int(st.watermark_ms)
            stats["watermark_ms"] = wm if -_NO_WM < wm < _NO_WM else None
            out["stats"] = stats
            newest = getattr(rec, "newest_ts_ms", None)
            last_batch = getattr(rec, "last_batch_ms", None)
            running = not st.finished
            out["newest_event_ms"] = newest
            out["event_lag_ms"] = max(0, newest - wm) if running and newest is not None and \
                stats["watermark_ms"] is not None else None  # fmt: skip
            out["processing_lag_ms"] = max(0, now - last_batch) if running and last_batch is not None else None
            out["last_batch_ms"] = last_batch
            out["checkpoint_age_s"] = _checkpoint_age_s(r, now)
            metrics = getattr(r, "metrics", None)
            out["lag"] = _safe(lambda: metrics.lag()) if metrics is not None else None
            out["self_alerts"] = _self_alerts(metrics)
            out["model_health"] = _model_health(r)
        active = self.store.silences(active_at_ms=now)
        counts = self.store.alert_counts()
        matchers = [[(m.label, m.op, m.value) for m in map(Matcher.parse, s["matchers"])] for s in active]
        silenced, acked, exact = self.store.count_muted(matchers)
        out["alerts"] = {**counts, "silenced": silenced, "acked": acked}
        out["alerts_exact"] = exact
        out["silences"] = len(active)
        out["recorder"] = None if rec is None else {"keys": len(rec), **_safe_dict(getattr(rec, "stats", None))}
        return out


def _safe_dict(fn: Any) -> dict[str, Any]:
    got = _safe(fn) if callable(fn) else None
    return got if isinstance(got, dict) else {}


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - health must show what it can, never fail
        return None


def _checkpoint_age_s(runner: Any, now_ms: int) -> float | None:
    store = getattr(runner, "store", None)
    listing = _safe(store.list) if store is not None and hasattr(store, "list") else None
    if not listing:
        return None
    mtime = _safe(lambda: listing[-1][1].stat().st_mtime)
    return None if mtime is None else max(0.0, now_ms / 1000 - mtime)


def _self_alerts(metrics: Any) -> list[dict[str, Any]]:
    watch = getattr(metrics, "selfwatch", None)
    active = getattr(watch, "active", None)
    if not isinstance(active, dict):
        return []
    out = []
    for key, (episode, alert) in tuple(active.items()):
        out.append({"key": key, "rule": episode.rule, "since_s": episode.started_s, "severity": alert.severity,
                    "message": alert.message})  # fmt: skip
    return out


def _model_health(runner: Any) -> list[dict[str, Any]]:
    out = []
    for step in runner.p.steps:
        obj = getattr(step, "detector", None) or getattr(step, "op", None)
        fn = getattr(obj, "health", None)
        h = _safe(fn) if callable(fn) else None
        if isinstance(h, dict):
            out.append({"step": step.name, "healthy": bool(h.get("healthy")), "version": h.get("version"),
                        "reason": h.get("reason")})  # fmt: skip
    return out

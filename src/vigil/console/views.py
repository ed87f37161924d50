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
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from typing import Any

from vigil.alerting.policy import AlertPolicy, Matcher, matches_all
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
        self.policy = getattr(manager, "policy", None) or AlertPolicy.from_dict(None)

    def live(self) -> dict[str, Any]:
        """The manager's view of each alert by fingerprint (empty without a manager, or if it keeps racing)."""
        if self.manager is None:
            return {}
        for _ in range(3):
            try:
                return {s.fingerprint: s for s in self.manager.alerts()}
            except RuntimeError:  # the engine changed the manager's dicts while we read them
                time.sleep(0.01)
        return {}

    def views(self, status: str | None = None, key: str | None = None, rows: list[Any] | None = None
              ) -> list[dict[str, Any]]:  # fmt: skip
        """Stored alerts (``rows``, default all) as the API shows them, newest change first."""
        rows = self.store.alerts(status=status, key=key) if rows is None else rows
        live = self.live()
        silences = [(s["id"], tuple(Matcher.parse(t) for t in s["matchers"]))
                    for s in self.store.silences(active_at_ms=self.clock())]  # fmt: skip
        acks = {a["fingerprint"]: a for a in self.store.acks()}
        return [self.view(r, live.get(r["fingerprint"]), silences, acks) for r in rows]

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
            nodes = self.policy.tree.match(labels)
            group = nodes[0].group_key(labels) if nodes else ""
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
        now = self.clock()
        out: dict[str, Any] = {"pipeline": self.pipeline, "now_ms": now, "attached": self.runner is not None}
        r = self.runner
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
            out["watermark_lag_ms"] = now - wm if -_NO_WM < wm < _NO_WM else None
            out["checkpoint_age_s"] = _checkpoint_age_s(r)
            metrics = getattr(r, "metrics", None)
            out["lag"] = _safe(lambda: metrics.lag()) if metrics is not None else None
            out["self_alerts"] = _self_alerts(metrics)
            out["model_health"] = _model_health(r)
        views = self.views()
        out["alerts"] = dict(Counter(v["status"] for v in views))
        out["alerts"]["silenced"] = sum(v["silenced"] for v in views if v["status"] == "firing")
        out["alerts"]["acked"] = sum(v["acked"] is not None for v in views if v["status"] == "firing")
        out["silences"] = len(self.store.silences(active_at_ms=now))
        out["recorder"] = None if self.recorder is None else {"keys": len(self.recorder)}
        return out


def _safe(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception:  # noqa: BLE001 - health must show what it can, never fail
        return None


def _checkpoint_age_s(runner: Any) -> float | None:
    store = getattr(runner, "store", None)
    listing = _safe(store.list) if store is not None and hasattr(store, "list") else None
    if not listing:
        return None
    mtime = _safe(lambda: listing[-1][1].stat().st_mtime)
    return None if mtime is None else max(0.0, time.time() - mtime)


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

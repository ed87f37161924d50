"""The web console's API and page: a FastAPI app over an alert store, and optionally a live pipeline.

:func:`create_app` serves the single-page console (``/``, ``/static/``) and a JSON API under ``/api/``:

======================================= ==========================================================================
``GET /api/health``                     run counters, watermark lag, checkpoint age, model health, self-alerts,
                                        alerts per state ("no pipeline attached" without a runner)
``GET /api/alerts``                     logical alerts; filters ``status``, ``key``, ``q`` (text), ``severity``,
                                        ``group``, ``limit``
``GET /api/alerts/{fingerprint}``       one alert with its revisions, acks, feedback and explanation
``POST /api/alerts/{fp}/ack``           ``{by, comment}``
``POST /api/alerts/{fp}/feedback``      ``{label: true_positive|false_positive, note, by}``
``GET /api/feedback/export``            every label, ``?format=csv|jsonl`` (as ``vigil alerts export-labels``)
``GET|POST /api/silences``              list (``?all=true`` with expired ones) / create ``{matchers, duration,
                                        comment, created_by}``
``DELETE /api/silences/{id}``           expire a silence (also ``DELETE /api/silences?id=``)
``GET /api/keys``, ``/api/series/{key}`` the recorder's keys and one key's recent points (``?around=&span=``)
``GET /api/fleet``                      events and flags per second, and the latest flagged points
======================================= ==========================================================================

Errors are JSON ``{error, field, value}``. Authentication, security headers and the body-size limit are the
:class:`~vigil.console.auth.ConsoleGuard` middleware's job. Writes go through the alert manager when one is
attached (it reads them back from the store at its next tick anyway), else straight to the store.

The manager is not thread-safe and the console reads it from the web server's thread: a read that races the
engine (a dict changing size) is retried, then the console falls back to what the store says.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException

from vigil.alerting.policy import AlertPolicy, Matcher, matches_all, parse_matchers
from vigil.alerting.store import AlertStore
from vigil.console.auth import MAX_BODY_BYTES, ConsoleGuard
from vigil.errors import ConfigError, StateError
from vigil.types import parse_duration_ms

STATIC = Path(__file__).parent / "static"
STATUSES = ("firing", "resolved", "retracted")
_NO_WM = 2**62
Short = Annotated[str, StringConstraints(max_length=100, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(max_length=2000)]
FP = Annotated[str, PathParam(pattern=r"^[0-9a-f]{4,64}$")]


class ApiError(Exception):
    """An API error answered as ``{error, field, value}`` with ``status``."""

    def __init__(self, status: int, error: str, field: str | None = None, value: Any = None) -> None:
        super().__init__(error)
        self.status, self.error, self.field, self.value = status, error, field, value


class AckIn(BaseModel):
    """Body of ``POST /api/alerts/{fp}/ack``."""

    model_config = ConfigDict(extra="forbid")
    by: Short = ""
    comment: Text = ""


class FeedbackIn(BaseModel):
    """Body of ``POST /api/alerts/{fp}/feedback``."""

    model_config = ConfigDict(extra="forbid")
    label: Literal["true_positive", "false_positive"]
    note: Text = ""
    by: Short = ""


class SilenceIn(BaseModel):
    """Body of ``POST /api/silences``: matchers, and a ``duration`` (``"2h"``) or an absolute ``ends_ms``."""

    model_config = ConfigDict(extra="forbid")
    matchers: list[Annotated[str, StringConstraints(max_length=500)]] = Field(min_length=1, max_length=20)
    duration: Annotated[str, StringConstraints(max_length=32)] | None = None
    starts_ms: int | None = None
    ends_ms: int | None = None
    comment: Text = ""
    created_by: Short = ""


class _JSON(JSONResponse):
    """JSON where NaN and infinities (possible in detector stats) become ``null``."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def explain(alert: dict[str, Any]) -> list[dict[str, Any]]:
    """The features behind an alert, most anomalous first, from the z-like numbers in its ``stats``.

    Reads ``z`` (the detector's own field, named after the detector), ``z_<feature>``, ensemble members'
    ``<member>.z`` and the per-metric contributions of a server alert (``metrics.<metric>.z``).

    Examples:
        >>> a = {"detector": "cpu_z", "stats": {"z": 2.0, "z_mem": -5.0, "metrics": {"disk": {"z": 3.5}}}}
        >>> [(x["feature"], x["z"]) for x in explain(a)]
        [('mem', -5.0), ('disk', 3.5), ('cpu_z', 2.0)]
    """
    raw = alert.get("stats")
    stats: dict[str, Any] = raw if isinstance(raw, dict) else {}
    out = []
    metrics = stats.get("metrics")
    if isinstance(metrics, dict):
        for name, m in metrics.items():
            if isinstance(m, dict) and _is_num(m.get("z")):
                out.append({"feature": str(name), "z": float(m["z"]), "value": m.get("value"), "flag": m.get("flag"),
                            "source": f"metrics.{name}.z"})  # fmt: skip
    for k, v in stats.items():
        if not _is_num(v):
            continue
        if k == "z":
            feature = str(alert.get("detector") or "score")
        elif k.startswith("z_"):
            feature = k[2:]
        elif k.endswith(".z"):
            feature = k[:-2]
        else:
            continue
        out.append({"feature": feature, "z": float(v), "value": stats.get("value") if k == "z" else None,
                    "flag": None, "source": k})  # fmt: skip
    return sorted(out, key=lambda x: (-abs(x["z"]), x["feature"]))


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


def create_app(*, store: AlertStore, manager: Any = None, runner: Any = None, recorder: Any = None, token: str,
               pipeline_name: str, clock: Callable[[], int] | None = None) -> FastAPI:  # fmt: skip
    """The console app (see the module docstring).

    Args:
        store: the alert store (alerts, silences, acks, feedback).
        manager: the pipeline's :class:`~vigil.alerting.manager.AlertManager`, for live state (silenced,
            inhibited, flapping, group) and to route writes through.
        runner: the :class:`~vigil.engine.runner.EmbeddedRunner`, for health.
        recorder: a :class:`~vigil.console.recorder.StreamRecorder` tapping the runner, for charts.
        token: the access token (see :mod:`vigil.console.auth`).
        pipeline_name: shown in the page title and health.
        clock: processing time in epoch ms (default: the wall clock).
    """
    ctx = _Console(store, manager, runner, recorder, pipeline_name, clock or (lambda: time.time_ns() // 1_000_000))
    app = FastAPI(title="Vigil console", docs_url=None, redoc_url=None, openapi_url=None,
                  default_response_class=_JSON)  # fmt: skip
    app.state.console = ctx
    app.add_middleware(ConsoleGuard, token=token, max_body_bytes=MAX_BODY_BYTES)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> Response:
        return _JSON({"error": exc.error, "field": exc.field, "value": exc.value}, status_code=exc.status)

    @app.exception_handler(ConfigError)
    async def _config_error(_: Request, exc: ConfigError) -> Response:
        return _JSON({"error": str(exc), "field": exc.field, "value": _short(exc.value)}, status_code=400)

    @app.exception_handler(StateError)
    async def _state_error(_: Request, exc: StateError) -> Response:
        return _JSON({"error": str(exc), "field": None, "value": None}, status_code=503)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> Response:
        err = (exc.errors() or [{}])[0]
        loc = [str(x) for x in err.get("loc", ()) if x not in ("body", "query", "path")]
        return _JSON({"error": err.get("msg", "invalid request"), "field": ".".join(loc) or None,
                      "value": _short(err.get("input"))}, status_code=422)  # fmt: skip

    @app.exception_handler(HTTPException)
    async def _http_error(_: Request, exc: HTTPException) -> Response:
        return _JSON({"error": str(exc.detail).lower(), "field": None, "value": None}, status_code=exc.status_code)

    @app.get("/", include_in_schema=False)
    def index() -> Response:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/api/health")
    def health() -> Any:
        return ctx.health()

    @app.get("/api/alerts")
    def alerts(status: Literal["firing", "resolved", "retracted"] | None = None,
               key: Annotated[str | None, Query(max_length=1000)] = None,
               q: Annotated[str | None, Query(max_length=200)] = None,
               severity: Annotated[str | None, Query(max_length=50)] = None,
               group: Annotated[str | None, Query(max_length=2000)] = None,
               limit: Annotated[int, Query(ge=1, le=5000)] = 500) -> Any:  # fmt: skip
        out = []
        needle = q.lower() if q else None
        views = ctx.views(status=status, key=key or None)
        for v in views:
            if (severity and v["severity"] != severity) or (group and v["group"] != group):
                continue
            if needle and not any(needle in str(v[f] or "").lower()
                                  for f in ("key", "alertname", "message", "fingerprint")):  # fmt: skip
                continue
            out.append(v)
        return {"alerts": out[:limit], "total": len(out), "pipeline": ctx.pipeline}

    @app.get("/api/alerts/{fingerprint}")
    def alert(fingerprint: FP) -> Any:
        row = ctx.find(fingerprint)
        fp = row["fingerprint"]
        view = ctx.views(rows=[row])[0]
        last = row.get("last_alert") or {}
        return {**view, "alert": last, "explanation": explain(last), "revisions": store.revisions(fp),
                "acks": store.acks(fp, active_only=False), "feedback": store.feedback(fp)}  # fmt: skip

    @app.post("/api/alerts/{fingerprint}/ack", status_code=201)
    def ack(fingerprint: FP, body: Annotated[AckIn, Body()]) -> Any:
        fp = ctx.find(fingerprint)["fingerprint"]
        by = body.by or "console"
        if manager is not None:
            manager.ack(fp, by, body.comment)
        else:
            store.add_ack(fp, by, body.comment, ctx.clock())
        return {"fingerprint": fp, "acks": store.acks(fp)}

    @app.post("/api/alerts/{fingerprint}/feedback", status_code=201)
    def feedback(fingerprint: FP, body: Annotated[FeedbackIn, Body()]) -> Any:
        fp = ctx.find(fingerprint)["fingerprint"]
        fid = store.add_feedback(fp, body.label, at_ms=ctx.clock(), note=body.note, by=body.by or "console")
        return {"id": fid, "fingerprint": fp, "feedback": store.feedback(fp)}

    @app.get("/api/feedback/export")
    def export(format: Literal["csv", "jsonl"] = "csv") -> Response:  # noqa: A002 - the query parameter's name
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"feedback.{format}"
            store.export_feedback(path)
            data = path.read_bytes()
        media = "text/csv; charset=utf-8" if format == "csv" else "application/x-ndjson"
        disposition = f'attachment; filename="vigil-feedback.{format}"'
        return Response(data, media_type=media, headers={"content-disposition": disposition})

    @app.get("/api/silences")
    def silences(all: bool = False) -> Any:  # noqa: A002 - the query parameter's name
        now = ctx.clock()
        rows = store.silences(include_expired=all)
        for s in rows:
            s["active"] = s["expired_ms"] is None and s["starts_ms"] <= now < s["ends_ms"]
        return {"silences": rows, "now_ms": now}

    @app.post("/api/silences", status_code=201)
    def add_silence(body: Annotated[SilenceIn, Body()]) -> Any:
        parse_matchers(list(body.matchers), "matchers")
        now = ctx.clock()
        starts = now if body.starts_ms is None else body.starts_ms
        if body.ends_ms is not None:
            ends = body.ends_ms
        elif body.duration:
            try:
                ends = starts + parse_duration_ms(body.duration)
            except ValueError:
                raise ApiError(422, "is not a duration such as '30m', '2h'", "duration", body.duration) from None
        else:
            raise ApiError(422, "give a duration (e.g. '2h') or ends_ms", "duration", None)
        if ends <= starts:
            raise ApiError(422, "must be after the start", "ends_ms", ends)
        who = body.created_by or "console"
        if manager is not None:
            sid = manager.add_silence(list(body.matchers), starts_ms=starts, ends_ms=ends, created_by=who,
                                      comment=body.comment)  # fmt: skip
        else:
            sid = store.add_silence(list(body.matchers), starts_ms=starts, ends_ms=ends, created_by=who,
                                    comment=body.comment, now_ms=now)  # fmt: skip
        return {"id": sid}

    @app.delete("/api/silences")
    def expire_silence_q(id: Annotated[str, Query(max_length=64)]) -> Any:  # noqa: A002 - the query parameter
        return expire_silence(id)

    @app.delete("/api/silences/{silence_id}")
    def expire_silence(silence_id: Annotated[str, PathParam(max_length=64)]) -> Any:
        if manager is not None:
            ok = manager.expire_silence(silence_id)
        else:
            ok = store.expire_silence(silence_id, ctx.clock())
        if not ok:
            raise ApiError(404, "no unexpired silence with this id", "id", silence_id)
        return {"id": silence_id, "expired": True}

    @app.get("/api/keys")
    def keys(q: Annotated[str | None, Query(max_length=200)] = None,
             limit: Annotated[int, Query(ge=1, le=2000)] = 200) -> Any:  # fmt: skip
        if recorder is None:
            return {"keys": [], "recorder": False}
        return {"keys": recorder.keys(q=q, limit=limit), "recorder": True}

    @app.get("/api/series/{key:path}")
    def series(key: str, around: int | None = None,
               span: Annotated[int | None, Query(ge=1, le=31 * 86_400_000)] = None) -> Any:  # fmt: skip
        if recorder is None:
            raise ApiError(404, "no stream recorder attached (the console serves an alert store only)", "key", key)
        s = recorder.series(key, around_ms=around, span_ms=span)
        if s is None:
            raise ApiError(404, "no recorded points for this key (never seen, or forgotten)", "key", key)
        return s

    @app.get("/api/fleet")
    def fleet() -> Any:
        if recorder is None:
            return {"ts_ms": [], "events": [], "flags": [], "recent_flags": []}
        return {**recorder.fleet(), "recent_flags": recorder.recent_flags(50)}

    return app


def _short(value: Any) -> Any:
    """A value small enough to echo in an error (long or odd inputs are cut down to a string)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."

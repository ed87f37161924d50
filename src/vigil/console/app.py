"""The web console's API and page: a FastAPI app over an alert store, and optionally a live pipeline.

:func:`create_app` serves the single-page console (``/``, ``/static/``) and a JSON API under ``/api/``:

======================================= ==========================================================================
``GET /api/health``                     run counters, watermark lag, checkpoint age, model health, self-alerts,
                                        alerts per state ("no pipeline attached" without a runner)
``GET /api/alerts``                     a page of logical alerts, newest change first: ``limit``, ``cursor``
                                        (the previous page's ``next_cursor``); filters ``status``, ``severity``,
                                        ``key``, ``q`` (text), ``group`` (see :mod:`vigil.console.listing`)
``GET /api/alerts/{fingerprint}``       one alert with its revisions, acks, feedback and explanation (and
                                        ``recorder``: whether ``/api/series`` can chart around it)
``POST /api/alerts/{fp}/ack``           ``{by, comment}``
``POST /api/alerts/{fp}/feedback``      ``{label: true_positive|false_positive, note, by}``
``GET /api/feedback/export``            every label, ``?format=csv|jsonl`` (as ``vigil alerts export-labels``)
``GET|POST /api/silences``              list (``?all=true`` with expired ones) / create ``{matchers, duration,
                                        comment, created_by}``
``DELETE /api/silences/{id}``           expire a silence (also ``DELETE /api/silences?id=``)
``GET /api/keys``, ``/api/series/{key}`` the recorder's keys and one key's recent points (``?around=&span=``)
``GET /api/fleet``                      events and flags per second, and the latest flagged points
``GET /api/services/graph``             the live service graph of a ``service_graph`` or ``services`` step
                                        (``?step=``): nodes (versions, ``anomalous``; the services step adds each
                                        one's deciding ``layer`` and ``strategy``, and the orchestrator's
                                        decisions and fallbacks), edges (calls or rate, errors, first/last seen)
``GET /api/incidents[/{id}]``,          incidents, one incident with its subgraph, causes and playbook runs, and
``POST /api/remediation/{run}/approve`` approving a run's gate (see :mod:`vigil.console.incidents`)
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
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException

from vigil.alerting.policy import parse_matchers
from vigil.alerting.store import AlertStore
from vigil.console.auth import MAX_BODY_BYTES, ConsoleGuard
from vigil.console.incidents import Approver, IncidentsView, add_routes
from vigil.console.listing import list_alerts
from vigil.console.views import ApiError, _Console, explain
from vigil.errors import ConfigError, StateError
from vigil.types import parse_duration_ms

STATIC = Path(__file__).parent / "static"
STATUSES = ("firing", "resolved", "retracted")
SEARCH_BUDGET_S = 0.08  # of searching per call: with the rest of a call (and a loaded machine), within 200 ms
Short = Annotated[str, StringConstraints(max_length=100, strip_whitespace=True)]
Text = Annotated[str, StringConstraints(max_length=2000)]
FP = Annotated[str, PathParam(pattern=r"^[0-9a-f]{4,64}$")]


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


class ConfigIn(BaseModel):
    """Body of ``POST /api/config``: the changed pipeline YAML (same ``name``), who and why."""

    model_config = ConfigDict(extra="forbid")
    yaml: Annotated[str, StringConstraints(max_length=60_000)]
    who: Short = "console"
    why: Text = ""
    dry_run: bool = False


class RollbackIn(BaseModel):
    """Body of ``POST /api/config/rollback``: the version to go back to (default: the previous one)."""

    model_config = ConfigDict(extra="forbid")
    version: Annotated[str, StringConstraints(max_length=16, pattern=r"^v\d{4,}$")] | None = None
    who: Short = "console"
    why: Text = ""


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



def create_app(*, store: AlertStore, manager: Any = None, runner: Any = None, recorder: Any = None, token: str,
               pipeline_name: str, clock: Callable[[], int] | None = None,
               search_budget_s: float | None = SEARCH_BUDGET_S, incidents: Any = None, remediation: Any = None,
               approve: Approver | None = None) -> FastAPI:  # fmt: skip
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
        search_budget_s: a search call stops looking once this much time has passed (and at 10,000 alerts),
            so that a loaded machine still answers within it; ``None``: only the 10,000 alerts bound it.
        incidents: an :class:`~vigil.incidents.store.IncidentStore`, for the incident pages.
        remediation: a :class:`~vigil.remediation.store.RemediationStore`: the playbook runs on them, approvals.
        approve: how a gate is approved (``vigil remediation approve``'s function, which also signals Temporal);
            default: recorded in ``remediation`` only.
    """
    ctx = _Console(store, manager, runner, recorder, pipeline_name, clock or (lambda: time.time_ns() // 1_000_000))
    ctx.search_budget_s = search_budget_s
    store.tune_for_reads()
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
               limit: Annotated[int, Query(ge=1, le=1000)] = 50,
               cursor: Annotated[str | None, Query(max_length=400)] = None) -> Any:  # fmt: skip
        return list_alerts(ctx, status=status, severity=severity, key=key, q=q, group=group, limit=limit,
                           cursor=cursor, budget_s=ctx.search_budget_s)  # fmt: skip

    @app.get("/api/alerts/{fingerprint}")
    def alert(fingerprint: FP) -> Any:
        row = ctx.find(fingerprint)
        fp = row["fingerprint"]
        view = ctx.views([row])[0]
        last = row.get("last_alert") or {}
        return {**view, "alert": last, "explanation": explain(last), "revisions": store.revisions(fp),
                "acks": store.acks(fp, active_only=False), "feedback": store.feedback(fp),
                "recorder": recorder is not None}  # fmt: skip

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

    def _control() -> Any:
        control = getattr(runner, "control", None)
        if control is None:
            raise ApiError(404, "no running pipeline with live reconfiguration attached", "config", None)
        return control

    @app.get("/api/config")
    def config() -> Any:
        c = _control()
        h = c.history
        return {"running": c.version, "current": h.current_version(), "applied": h.applied(),
                "history": h.entries(), "yaml": h.text(c.version)}  # fmt: skip

    @app.post("/api/config", status_code=201)
    def config_apply(body: ConfigIn) -> Any:
        """Validate a changed pipeline file against the running one; record it as the next version."""
        import yaml as _yaml

        from vigil.config.spec import parse_spec
        from vigil.control import plan_changes

        c = _control()
        try:
            doc = _yaml.safe_load(body.yaml)
        except _yaml.YAMLError as exc:
            raise ApiError(422, f"is not valid YAML: {exc}", "yaml", None) from None
        plan = plan_changes(c.spec, parse_spec(doc, origin="console"), c.base_dir)
        if not plan.ok:
            raise ApiError(422, "can't be applied live: " + "; ".join(plan.problems), "yaml", None)
        if body.dry_run or not plan.changes:
            return {"version": None, "changes": plan.changes}
        version = c.history.record(body.yaml, action="apply", who=body.who, why=body.why, changes=plan.changes)
        return {"version": version, "changes": plan.changes}

    @app.post("/api/config/rollback", status_code=201)
    def config_rollback(body: RollbackIn) -> Any:
        """Make an earlier version current again (checked like any change)."""
        import yaml as _yaml

        from vigil.config.spec import parse_spec
        from vigil.control import plan_changes

        c = _control()
        h = c.history
        target = body.version
        if target is None:
            cur = h.current_version() or c.version
            entries = [e["version"] for e in h.entries()]
            last = max((i for i, v in enumerate(entries) if v == cur), default=0)
            prior = [v for v in entries[:last] if v != cur]
            if not prior:
                raise ApiError(422, "has no earlier version to roll back to", "version", None)
            target = prior[-1]
        plan = plan_changes(c.spec, parse_spec(_yaml.safe_load(h.text(target)), origin=target), c.base_dir)
        if not plan.ok:
            raise ApiError(422, "can't be rolled back to live: " + "; ".join(plan.problems), "version", target)
        h.rollback(target, who=body.who, why=body.why)
        return {"version": target, "changes": plan.changes}

    @app.get("/api/fleet")
    def fleet() -> Any:
        if recorder is None:
            return {"ts_ms": [], "events": [], "flags": [], "recent_flags": []}
        return {**recorder.fleet(), "recent_flags": recorder.recent_flags(50)}

    def graph_steps(step: str | None) -> list[Any]:
        steps = [s for s in getattr(getattr(runner, "p", None), "steps", []) if hasattr(s, "graph_json")]
        return [s for s in steps if s.name == step] if step is not None else steps

    def read_graph(s: Any) -> dict[str, Any]:
        for _ in range(3):  # the engine thread may change the graph while it is read: retry
            try:
                return {"step": s.name, **s.graph_json()}
            except RuntimeError:
                continue
        raise ApiError(503, "the graph is changing too fast to read; retry", "step", s.name)

    @app.get("/api/services/graph")
    def services_graph(step: Annotated[str | None, Query(max_length=200)] = None) -> Any:
        steps = graph_steps(step)
        if not steps:
            raise ApiError(404, "no service_graph or services step in the running pipeline", "step", step)
        return read_graph(steps[0])

    def live_graph() -> dict[str, Any] | None:
        steps = graph_steps(None)
        try:
            return read_graph(steps[0]) if steps else None
        except ApiError:
            return None

    add_routes(app, IncidentsView(incidents, remediation, approve, ctx.clock, live_graph))

    return app


def _short(value: Any) -> Any:
    """A value small enough to echo in an error (long or odd inputs are cut down to a string)."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= 200 else text[:200] + "..."

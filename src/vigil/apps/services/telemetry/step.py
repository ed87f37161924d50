"""The ``service_graph`` step: span rows → RED windows per service and edge, the service graph, SLO verdicts.

It reads the span columns of the ``otlp`` source (:mod:`vigil.io.otlp.columns`) whatever the source's ``key``:

* **service RED** — SERVER and CONSUMER spans, and root spans of any kind, keyed by ``service``: the requests a
  service serves;
* **edge RED** — CLIENT and PRODUCER spans with a ``peer``, keyed ``"<service>-><peer>"``: the calls as the
  caller sees them (so a datastore or an uninstrumented service still has its latency and errors); calls known
  only from a SERVER span's parent (no ``peer.service``) count with the callee's duration;
* **the graph** (:class:`~vigil.apps.services.telemetry.graph.ServiceGraph`).

Closed windows go to the step's ``sink`` as rows (:data:`~vigil.apps.services.telemetry.red.RED_COLUMNS`, plus
``level``: ``service`` or ``edge``). A window of at least ``min_count`` spans whose error rate is over
``max_error_rate`` or whose p99 is over ``max_p99_ms`` is an alert (a verdict of the SLA layer; the detection
layers of the services app read the same rows), and marks its service anomalous in the graph. Everything — open windows,
graph, spans waiting to join — is the step's checkpointed state: a restart from a checkpoint keeps the graph.

Examples:
    >>> import numpy as np
    >>> from vigil.dataflow.outputs import CollectingOutputs
    >>> from vigil.types import Batch
    >>> step = ServiceTelemetryStep("svc", window_ms=1000, max_error_rate=0.5, min_count=1)
    >>> out = CollectingOutputs("shop")
    >>> b = Batch(np.zeros(2, np.int32), np.array([100, 200]), {"duration_ms": np.array([5.0, 7.0]),
    ...           "error": np.array([1.0, 1.0])}, {"service": np.array(["cart", "cart"], object),
    ...           "peer": np.array(["", ""], object), "kind": np.array([2, 2], np.int8),
    ...           "parent_span_id": np.array([0, 0], np.uint64), "span_id": np.array([1, 2], np.uint64),
    ...           "version": np.array(["v1", "v1"], object)})
    >>> step.on_batch(b, np.array(["cart", "cart"], object), np.array([0, 0]), out)
    >>> step.on_watermark(1000, out)
    >>> out.counts.alerts
    1
    >>> step.graph_json()["nodes"][0]["anomalous"]
    True
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from vigil.apps.services.telemetry.graph import CLIENT_KINDS, SERVER_KINDS, ServiceGraph
from vigil.apps.services.telemetry.red import RED_COLUMNS, RedWindows, factorize
from vigil.dataflow.kinds import BuildContext, LiveChange, StepKind
from vigil.dataflow.outputs import Outputs, make_alert
from vigil.dataflow.steps import params_hash
from vigil.errors import ConfigError
from vigil.types import Batch, BoolArray, Int32Array, Int64Array, parse_duration_ms

__all__ = ["READS", "STEP", "ServiceGraphSpec", "ServiceTelemetryStep"]

READS = ("duration_ms", "error", "service", "peer", "kind", "parent_span_id", "span_id", "version")


class ServiceTelemetryStep:
    """RED windows, the service graph and SLO verdicts (module docstring)."""

    kind: ClassVar[str] = "service_graph"

    def __init__(self, name: str, *, window_ms: int = 60_000, allowed_lateness_ms: int = 0,
                 max_error_rate: float | None = 0.05, max_p99_ms: float | None = None, min_count: int = 20,
                 sink: Any = None, severity: str = "warning") -> None:  # fmt: skip
        self.name, self.sink, self.severity = name, sink, severity
        self.window_ms, self.allowed_lateness_ms = int(window_ms), int(allowed_lateness_ms)
        self.max_error_rate, self.max_p99_ms, self.min_count = max_error_rate, max_p99_ms, int(min_count)
        self.services = RedWindows(window_ms, allowed_lateness_ms)
        self.edges = RedWindows(window_ms, allowed_lateness_ms)
        self.graph = ServiceGraph()
        self.watermark_ms = -(2**62)
        self.last_ts_ms = -(2**62)  # the latest event time seen
        self.windows_closed = 0

    def open(self) -> None:
        """Nothing to load."""

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Fold spans into the RED windows and the graph; spans of closed windows are counted late."""
        x, ts = batch.extra, batch.ts_ms
        kind, svc, parent = x["kind"], x["service"], x["parent_span_id"]
        dur, err = batch.cols["duration_ms"], batch.cols["error"]
        wm = int(wm_rows[-1]) if len(wm_rows) else self.watermark_ms
        if len(ts):
            self.last_ts_ms = max(self.last_ts_ms, int(ts.max()))
        inbound = np.isin(kind, SERVER_KINDS) | (parent == 0)
        rows = np.flatnonzero(inbound)
        late = self.services.add(self.services.slots(svc[rows]), ts[rows], dur[rows], err[rows], wm)
        peer = x["peer"]
        p_code, p_names = factorize(peer)
        has_peer = np.array([bool(p) for p in p_names], bool)[p_code] if len(p_names) else np.zeros(0, bool)
        rows = np.flatnonzero(np.isin(kind, CLIENT_KINDS) & has_peer)
        if len(rows):
            s_code, s_names = factorize(svc[rows])
            pc = p_code[rows]
            pair = s_code * (len(p_names) + 1) + pc
            uniq, inv = np.unique(pair, return_inverse=True)
            names = np.array([f"{s_names[u // (len(p_names) + 1)]}->{p_names[u % (len(p_names) + 1)]}"
                              for u in uniq.tolist()], object)  # fmt: skip
            self.edges.add(self.edges.slots(names[inv]), ts[rows], dur[rows], err[rows], wm)
        calls = self.graph.add(svc, peer, kind, err, dur, ts, x["version"], x["span_id"], parent)
        if len(calls["key"]):  # calls seen only as parent/child (no peer.service on the client span)
            # a join that completes after its window closed is dropped from RED (the graph still counts it)
            self.edges.add(self.edges.slots(calls["key"]), calls["ts_ms"], calls["duration_ms"], calls["error"], wm)
        if len(late):
            out.counts.late_events += len(late)

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs, expired: BoolArray) -> None:
        """Late spans are dropped from RED (their window is out) but still shape the graph."""
        x = late.extra
        self.graph.add(x["service"], x["peer"], x["kind"], late.cols["error"], late.cols["duration_ms"], late.ts_ms,
                       x["version"], x["span_id"], x["parent_span_id"])  # fmt: skip

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Close windows: rows to the sink, SLO breaches to the alerts."""
        self.watermark_ms = max(self.watermark_ms, int(watermark_ms))
        rows: list[dict[str, Any]] = []
        alerts = []
        for level, red in (("service", self.services), ("edge", self.edges)):
            w = red.close(watermark_ms)
            n = len(w["key"])
            if not n:
                continue
            self.windows_closed += n
            cols = {c: w[c].tolist() for c in RED_COLUMNS}
            for i in range(n):
                row = {"step": self.name, "level": level, **{c: cols[c][i] for c in RED_COLUMNS}}
                rows.append(row)
                self.graph.window(row["key"], {k: row[k] for k in ("start_ms", "count", "rate", "error_rate",
                                                                   "p50_ms", "p99_ms")})  # fmt: skip
                a = self._verdict(out, row)
                if a is not None:
                    alerts.append(a)
        if alerts:
            out.alerts(self.name, alerts)
        if rows and self.sink is not None:
            out.emit(self.sink, rows)

    def _verdict(self, out: Outputs, row: dict[str, Any]) -> Any:
        if row["count"] < self.min_count:
            return None
        why = []
        if self.max_error_rate is not None and row["error_rate"] > self.max_error_rate:
            why.append(("error_rate", row["error_rate"], self.max_error_rate))
        if self.max_p99_ms is not None and row["p99_ms"] > self.max_p99_ms:
            why.append(("p99_ms", row["p99_ms"], self.max_p99_ms))
        if not why:
            return None
        what, score, threshold = why[0]
        key = row["key"]
        service = key.split("->")[0] if row["level"] == "edge" else key
        self.graph.mark(service if row["level"] == "service" else key.split("->")[-1], row["end_ms"])
        text = ", ".join(f"{w} {s:.3g} > {t:.3g}" for w, s, t in why)
        return make_alert(out.pipeline, self.name, key, f"{key}@{row['start_ms']}", score=float(score),
                          threshold=float(threshold), event_ts_ms=int(row["end_ms"]),
                          detect_ts_ms=out.now_ns() // 1_000_000, severity=self.severity,
                          message=f"{row['level']} {key}: {text} in the window of {row['count']} spans "
                                  f"from {row['start_ms']}",
                          stats={k: row[k] for k in RED_COLUMNS if k != "key"},
                          labels={"level": row["level"], "service": service, "rule": what})  # fmt: skip

    def graph_json(self) -> dict[str, Any]:
        """The service graph: nodes and edges; services alerted in the last two windows are ``anomalous``.

        "Last" is counted back from the latest event time seen, not the watermark (which jumps to the end of
        time when a finite input ends).
        """
        doc = self.graph.to_json(anomalous_since_ms=self.last_ts_ms - 2 * self.window_ms)
        doc["watermark_ms"], doc["last_event_ms"] = self.watermark_ms, self.last_ts_ms
        return doc

    def reset_slots(self, slots: Int32Array) -> None:
        """The step keys its state by service and edge itself: nothing to reset."""

    def snapshot(self) -> dict[str, Any]:
        """Open RED windows, the graph, the watermark seen."""
        return {"services": self.services.snapshot(), "edges": self.edges.snapshot(), "graph": self.graph.snapshot(),
                "watermark_ms": self.watermark_ms, "last_ts_ms": self.last_ts_ms,
                "windows_closed": self.windows_closed}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Reload a snapshot."""
        self.services.restore(state["services"])
        self.edges.restore(state["edges"])
        self.graph.restore(state["graph"])
        self.watermark_ms, self.windows_closed = int(state["watermark_ms"]), int(state["windows_closed"])
        self.last_ts_ms = int(state["last_ts_ms"])

    def state_key(self) -> str:
        """The window shape: another window size starts fresh."""
        return f"service_graph/{params_hash([self.services.params()])}"

    def sinks(self) -> list[Any]:
        """Where closed windows go."""
        return [self.sink] if self.sink is not None else []


# -- the step kind: ``service_graph:`` in a pipeline file --------------------------------------------------


class _Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    window: str | int = "60s"
    allowed_lateness: str | int = 0
    max_error_rate: float | None = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)
    min_count: int = Field(default=20, ge=1)
    severity: str = "warning"


class ServiceGraphSpec(BaseModel):
    """``service_graph:`` RED windows per service and edge, the live service graph, SLO verdicts.

    In a pipeline file (the source is ``kind: otlp``)::

        steps:
          - name: red
            service_graph: {window: 60s, max_error_rate: 0.05, max_p99_ms: 800, min_count: 20}
            to: {kind: jsonl, path: red.jsonl}     # optional: every closed window, per service and edge
    """

    model_config = ConfigDict(extra="forbid")

    name: str
    service_graph: _Settings = Field(default_factory=_Settings)
    to: dict[str, Any] | None = None


def _ms(value: str | int, step: str, field: str) -> int:
    try:
        return value if isinstance(value, int) else parse_duration_ms(str(value))
    except ValueError:
        raise ConfigError("is not a duration", step=step, field=f"service_graph.{field}", value=value,
                          hint="use e.g. '60s'") from None  # fmt: skip


def build(s: ServiceGraphSpec, ctx: BuildContext, *, sink: Any = None) -> ServiceTelemetryStep:
    """The step of a spec (``sink``: keep a running one)."""
    g = s.service_graph
    window = _ms(g.window, s.name, "window")
    if window <= 0:
        raise ConfigError("must be > 0", step=s.name, field="service_graph.window", value=g.window)
    if sink is None and s.to is not None:
        sink = ctx.sink(s.to, step=s.name, field="to")
    return ServiceTelemetryStep(s.name, window_ms=window, allowed_lateness_ms=_ms(g.allowed_lateness, s.name,
                                "allowed_lateness"), max_error_rate=g.max_error_rate, max_p99_ms=g.max_p99_ms,
                                min_count=g.min_count, sink=sink, severity=g.severity)  # fmt: skip


def live(old: ServiceGraphSpec, new: ServiceGraphSpec, ctx: BuildContext, running: Any) -> LiveChange:
    """The SLO thresholds change live, carrying the state over; the window shape and ``to`` need a restart."""
    a, b = old.service_graph, new.service_graph
    problems = [
        f"step `{new.name}`: `service_graph.{k}` can't change on a running pipeline (it shapes the state)"
        for k in ("window", "allowed_lateness")
        if getattr(a, k) != getattr(b, k)
    ]
    if old.to != new.to:
        problems.append(f"step `{new.name}`: `to` can't change on a running pipeline; restart with the new file")
    if problems:
        return LiveChange(problems=problems)
    changed = [k for k in ("max_error_rate", "max_p99_ms", "min_count", "severity") if getattr(a, k) != getattr(b, k)]
    if not changed:
        return LiveChange()
    step = build(new, ctx, sink=running.sink) if running is not None else None
    return LiveChange(changes=[f"step `{new.name}`: service_graph.{k} {getattr(a, k)!r} -> {getattr(b, k)!r}"
                               for k in changed], step=step)  # fmt: skip


STEP = StepKind(
    "service_graph",
    ServiceGraphSpec,
    build,
    live=live,
    reads=lambda s: ["duration_ms", "error"],
    summary="RED windows per service and call edge, the live service graph, SLO verdicts",
)
"""The ``service_graph`` step kind, registered by :mod:`vigil.config.registry`."""

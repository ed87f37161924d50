"""Prometheus metrics of a running pipeline, read from the runner's live state when scraped.

:class:`PipelineMetrics` gives each pipeline a :class:`~prometheus_client.CollectorRegistry` with a custom
collector: counters and gauges are read from the runner's :class:`~vigil.engine.runner.RunStats`, readers and
detectors at scrape time, so they cost nothing per event. Only three histograms are observed as the run goes,
through cheap per-batch hooks of the runner (``runner.metrics.observe_step`` around each step,
``observe_checkpoint`` when a checkpoint completes or fails). :meth:`PipelineMetrics.tick`, called by the
engine loop, refreshes the runner's gauges, polls model health and input drift, and evaluates the
:mod:`self-watch <vigil.ops.selfwatch>` rules, at most once per ``interval_s``; it returns the self-alerts,
which the runner sends to the pipeline's alert sinks.

Metrics (every one labelled ``pipeline``; never a label whose values are unbounded, such as the event key):

===================================== ==============================================================
vigil_source_events_total             records read (decoded) from the source
vigil_step_events_total{step}         on-time events processed by each step
vigil_step_alerts_total{step}         alerts raised by each step
vigil_step_flagged_total{step}        events a detector step flagged (before alert suppression)
vigil_step_unscored_total{step}       events a step could not score for their value (<= 0 under a log transform)
vigil_late_events_total               events behind the watermark (sent to the late output)
vigil_dead_letters_total              unreadable records (sent to the dead-letter output)
vigil_batches_total                   micro-batches processed
vigil_source_pauses_total             times the source paused because the engine was behind
vigil_consumer_lag_messages{partition} Kafka messages not read yet, per partition
vigil_watermark_seconds               the stream's watermark (epoch seconds)
vigil_watermark_lag_seconds           wall clock minus watermark
vigil_state_keys                      live keys
vigil_state_bytes                     detector state in memory
vigil_checkpoints_total               completed checkpoints
vigil_checkpoint_failures_total       failed checkpoints
vigil_checkpoint_duration_seconds     histogram of completed checkpoints' durations
vigil_step_latency_seconds{step}      histogram of each step's processing time per micro-batch
vigil_batch_rows                      histogram of on-time rows per micro-batch
vigil_model_healthy{step}             1 while a model step serves its model, 0 in fallback
vigil_model_fallbacks_total{step}     times a model step fell back to its statistical detectors
vigil_input_drift_psi{step,feature}   PSI of recent inputs against the model's training data
vigil_alerts{state}                   alerts per state, as set by the alert manager (set_alert_states)
vigil_self_alerts{rule}               1 while a self-watch rule fires
vigil_build_info{version}             always 1
===================================== ==============================================================

Examples:
    >>> import tempfile
    >>> import numpy as np
    >>> from vigil.detectors import VelocityRule
    >>> from vigil.dataflow.pipeline import Pipeline
    >>> from vigil.engine.runner import EmbeddedRunner
    >>> from vigil.io.replay import ReplaySource
    >>> from vigil.io.sinks import MemorySink
    >>> src = ReplaySource(np.array(["a", "b", "a"], object), np.array([1, 2, 3]), {"amount": np.ones(3)})
    >>> p = Pipeline("demo").source(src).detect("burst", VelocityRule()).alerts_to(MemorySink())
    >>> runner = EmbeddedRunner(p, out_dir=tempfile.mkdtemp())
    >>> m = PipelineMetrics(runner)
    >>> _ = runner.run()
    >>> text = generate_latest(m.registry).decode()
    >>> 'vigil_source_events_total{pipeline="demo"} 3.0' in text
    True
    >>> 'vigil_step_events_total{pipeline="demo",step="burst"} 3.0' in text
    True
"""

from __future__ import annotations

import functools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

import vigil
from vigil.dataflow.capabilities import HealthReporter, LagReporter, ModelServer, having
from vigil.errors import ConfigError
from vigil.ops.drift import DriftMonitor
from vigil.ops.selfwatch import Sample, SelfWatch, SelfWatchConfig
from vigil.types import Alert

__all__ = ["PipelineMetrics", "generate_latest", "serve"]

LATENCY_BUCKETS_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                     10.0)  # fmt: skip
ROWS_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144)
CHECKPOINT_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_NO_WATERMARK_BELOW = -(2**62)  # NO_WATERMARK / MAX_WATERMARK are the int64 extremes
_NO_WATERMARK_ABOVE = 2**62
log = logging.getLogger("vigil.ops")


class PipelineMetrics:
    """The metrics and self-watch of one pipeline run (module docstring); attaches itself to ``runner``.

    Args:
        runner: an :class:`~vigil.engine.runner.EmbeddedRunner` (its ``metrics`` attribute is set to this object
            and a tap feeding the drift monitors is added to its ``taps``).
        registry: where to register (default: a new registry for this pipeline).
        selfwatch: ``True`` for the default rules, a :class:`~vigil.ops.selfwatch.SelfWatchConfig`, or ``False``.
        drift: extra drift monitors by step name (a step serving a registry model gets one from its metadata).
        drift_window: recent values per feature for the automatic drift monitors.
        interval_s: least seconds between two :meth:`tick` evaluations.
        clock: wall-clock seconds (injectable for tests).
    """

    def __init__(
        self,
        runner: Any,
        registry: CollectorRegistry | None = None,
        *,
        selfwatch: bool | SelfWatchConfig = True,
        drift: dict[str, DriftMonitor] | None = None,
        drift_window: int = 5000,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.runner = runner
        self.pipeline = str(runner.p.name)
        self.registry = registry if registry is not None else CollectorRegistry()
        self.interval_s = float(interval_s)
        self.clock = clock
        self.drift_window = int(drift_window)
        steps = [s.name for s in runner.p.steps]
        self._first_step = steps[0] if steps else None
        hist = functools.partial(Histogram, registry=self.registry)
        self.step_latency = hist("vigil_step_latency_seconds", "Processing time of one micro-batch by a step.",
                                 ["pipeline", "step"], buckets=LATENCY_BUCKETS_S)  # fmt: skip
        self.batch_rows = hist("vigil_batch_rows", "On-time rows per micro-batch.", ["pipeline"], buckets=ROWS_BUCKETS)
        self.checkpoint_duration = hist("vigil_checkpoint_duration_seconds", "Duration of completed checkpoints.",
                                        ["pipeline"], buckets=CHECKPOINT_BUCKETS_S)  # fmt: skip
        self._latency = {s: self.step_latency.labels(self.pipeline, s) for s in steps}
        self._rows = self.batch_rows.labels(self.pipeline)
        self._checkpoint = self.checkpoint_duration.labels(self.pipeline)
        self.step_events: dict[str, int] = dict.fromkeys(steps, 0)
        self.checkpoint_failures = 0
        self.checkpoint_failures_in_row = 0
        self.alert_states: dict[str, int] = {}
        if selfwatch is False:
            self.selfwatch: SelfWatch | None = None
        else:
            cfg = selfwatch if isinstance(selfwatch, SelfWatchConfig) else None
            self.selfwatch = SelfWatch(self.pipeline, cfg, clock=clock)
        self._fixed_drift = dict(drift or {})
        self._drift: dict[str, tuple[str | None, DriftMonitor]] = {s: (None, m) for s, m in self._fixed_drift.items()}
        self.drift_scores: dict[str, dict[str, float]] = {}
        self._lock = threading.Lock()
        self._healthy: dict[str, bool] = {}
        self.model_fallbacks: dict[str, int] = {}
        self._created: dict[tuple[str, str], float | None] = {}
        self._next_tick = -math.inf
        self._follow_models()  # monitors exist before the first batch, so the tap sees it
        self._collector = _RunnerCollector(self)
        self.registry.register(self._collector)
        runner.metrics = self
        runner.taps = (*runner.taps, self._tap)

    def close(self) -> None:
        """Take this run's metrics out of the registry (a restarted run registers its own in the same one)."""
        for c in (self.step_latency, self.batch_rows, self.checkpoint_duration, self._collector):
            self.registry.unregister(c)
        if self.runner.metrics is self:
            self.runner.metrics = None

    # ---- hooks (engine and sink threads) ----------------------------------------------------------------

    def observe_step(self, step: str, rows: int, seconds: float) -> None:
        """One step processed a micro-batch of ``rows`` on-time rows in ``seconds`` (engine thread)."""
        child = self._latency.get(step)
        if child is None:
            child = self._latency[step] = self.step_latency.labels(self.pipeline, step)
        child.observe(seconds)
        self.step_events[step] = self.step_events.get(step, 0) + rows
        if step == self._first_step:
            self._rows.observe(rows)

    def observe_checkpoint(self, seconds: float, ok: bool) -> None:
        """A checkpoint completed (``ok``) or failed after ``seconds`` (sink thread)."""
        if ok:
            self._checkpoint.observe(seconds)
            self.checkpoint_failures_in_row = 0
        else:
            self.checkpoint_failures += 1
            self.checkpoint_failures_in_row += 1

    def set_alert_states(self, states: dict[str, int]) -> None:
        """Alerts per state (``firing``, ``resolved`` ...), for the ``vigil_alerts{state}`` gauge."""
        self.alert_states = {str(k): int(v) for k, v in states.items()}

    def _tap(self, batch: Any, keys: Any, verdicts: Any) -> None:
        for _, mon in self._drift.values():
            mon.update(batch.cols)

    # ---- periodic (engine thread) -----------------------------------------------------------------------

    def tick(self) -> list[Alert]:
        """At most once per ``interval_s``: refresh gauges, models and drift; return the new self-alerts."""
        now = self.clock()
        if now < self._next_tick:
            return []
        self._next_tick = now + self.interval_s
        try:
            self.runner.refresh_gauges()  # keys, watermark, state bytes into RunStats (cheap, once a second)
            self._poll_models()
            self._follow_models()
            self.drift_scores = {step: mon.scores() for step, (_, mon) in self._drift.items()}
            return self.selfwatch.evaluate(self.sample(now)) if self.selfwatch is not None else []
        except Exception:  # watching must never stop the pipeline it watches
            log.warning("pipeline `%s`: self-monitoring failed; the pipeline goes on", self.pipeline, exc_info=True)
            return []

    def sample(self, now: float | None = None) -> Sample:
        """The runner's state as a self-watch :class:`~vigil.ops.selfwatch.Sample`."""
        now = self.clock() if now is None else now
        st = self.runner.stats
        health = self._health()
        ages = {}
        for step, det in self._model_steps():
            created = self._created_s(step, det)
            if created is not None:
                ages[step] = now - created
        drift: dict[str, float] = {}
        for scores in self.drift_scores.values():
            for feature, value in scores.items():
                drift[feature] = max(value, drift.get(feature, -math.inf))
        lag = self.lag()
        return Sample(events_in=st.events_in, dead_letters=st.dead_letters, watermark_ms=st.watermark_ms,
                      lag=lag or None, checkpoint_failures_in_row=self.checkpoint_failures_in_row,
                      model_health=health, model_age_s=ages, drift=drift)  # fmt: skip

    def lag(self) -> dict[str, int]:
        """Consumer lag per partition of every reader that has ``lag()`` (Kafka); empty otherwise."""
        readers = {part: r for part, r in self.runner.readers.items() if isinstance(r, LagReporter)}
        out: dict[str, int] = {}
        for part, reader in readers.items():
            try:
                lags = reader.lag()
            except Exception:  # noqa: BLE001 - a closed or failing client has no lag to report
                continue
            for p, n in lags.items():
                out[str(p) if len(readers) == 1 else f"{part}:{p}"] = int(n)
        return out

    def _model_steps(self) -> Iterator[tuple[str, Any]]:
        """Steps serving a model from the registry, and the model (``model_version``, ``name``, ``registry``)."""
        for step in having(self.runner.p.steps, ModelServer):
            model = step.served_model()
            if model is not None:
                yield step.name, model  # type: ignore[attr-defined]

    def _health(self) -> dict[str, dict[str, Any]]:
        out = {}
        for reporter in having(self.runner.p.steps, HealthReporter):
            step = reporter.name  # type: ignore[attr-defined]
            try:
                h = reporter.health()
            except Exception:  # noqa: BLE001 - a broken health() must not break the scrape
                log.warning("step `%s`: health() failed", step, exc_info=True)
                continue
            if h is not None:  # an operator that serves no model says None
                out[step] = dict(h)
        return out

    def _poll_models(self) -> dict[str, dict[str, Any]]:
        """Health of every model step; counts each turn from healthy (or unknown) to fallback."""
        health = self._health()
        with self._lock:
            for step, h in health.items():
                healthy = bool(h.get("healthy"))
                if not healthy and self._healthy.get(step, True):
                    self.model_fallbacks[step] = self.model_fallbacks.get(step, 0) + 1
                self._healthy[step] = healthy
        return health

    def _follow_models(self) -> None:
        """Give each model step a drift monitor from its served version's training stats (rebuilt on a swap)."""
        for step, det in self._model_steps():
            if step in self._fixed_drift:
                continue
            version = det.model_version
            current = self._drift.get(step)
            if current is not None and current[0] == version:
                continue
            stats = self._meta(det, version).get("training_stats") if version else None
            mon = DriftMonitor(stats or {}, window=self.drift_window, min_samples=min(500, self.drift_window))
            if mon.features:
                self._drift[step] = (version, mon)
            else:
                self._drift.pop(step, None)

    def _meta(self, det: Any, version: str) -> dict[str, Any]:
        try:
            meta = det.registry.meta(det.name, version)
        except Exception:  # noqa: BLE001 - the detector reports an unreadable registry through health()
            return {}
        return meta if isinstance(meta, dict) else {}

    def _created_s(self, step: str, det: Any) -> float | None:
        version = det.model_version
        if version is None:
            return None
        key = (step, str(version))
        if key not in self._created:
            created = self._meta(det, version).get("created")
            try:
                dt = datetime.fromisoformat(str(created))
                self._created[key] = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
            except ValueError:
                self._created[key] = None
        return self._created[key]


class _RunnerCollector(Collector):
    """Reads a :class:`PipelineMetrics`' runner at scrape time (scrape thread)."""

    def __init__(self, m: PipelineMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        m, pl = self.m, self.m.pipeline
        st = m.runner.stats
        yield _counter("vigil_source_events", "Records read (decoded) from the source.", pl, st.events_in)
        yield _counter("vigil_late_events", "Events behind the watermark, sent to the late output.", pl,
                       st.late_events)  # fmt: skip
        yield _counter("vigil_dead_letters", "Unreadable records, sent to the dead-letter output.", pl,
                       st.dead_letters)  # fmt: skip
        yield _counter("vigil_batches", "Micro-batches processed.", pl, st.batches)
        yield _counter("vigil_source_pauses", "Times the source paused because the engine was behind.", pl,
                       st.source_pauses)  # fmt: skip
        yield _counter("vigil_checkpoints", "Completed checkpoints.", pl, st.checkpoints)
        yield _counter("vigil_checkpoint_failures", "Failed checkpoints.", pl, m.checkpoint_failures)
        steps = [s.name for s in m.runner.p.steps]
        yield _per("step", CounterMetricFamily, "vigil_step_events", "On-time events processed by a step.", pl,
                   {s: m.step_events.get(s, 0) for s in steps})  # fmt: skip
        yield _per("step", CounterMetricFamily, "vigil_step_alerts", "Alerts raised by a step.", pl,
                   {s: st.fired.get(s, 0) for s in steps})  # fmt: skip
        yield _per("step", CounterMetricFamily, "vigil_step_flagged", "Events a detector step flagged.", pl,
                   {s: st.flagged.get(s, 0) for s in steps})  # fmt: skip
        yield _per("step", CounterMetricFamily, "vigil_step_unscored",
                   "Events a step could not score for their value (e.g. <= 0 under transform: log).", pl,
                   {s: st.unscored.get(s, 0) for s in steps})  # fmt: skip
        yield _per("partition", GaugeMetricFamily, "vigil_consumer_lag_messages",
                   "Messages in the source topic not read yet, per Kafka partition.", pl, m.lag())  # fmt: skip
        wm = st.watermark_ms
        has_wm = _NO_WATERMARK_BELOW < wm < _NO_WATERMARK_ABOVE
        yield _gauge("vigil_watermark_seconds", "The stream's watermark (epoch seconds).", pl,
                     wm / 1000 if has_wm else None)  # fmt: skip
        yield _gauge("vigil_watermark_lag_seconds", "Wall clock minus the watermark.", pl,
                     (m.runner.now_ns() / 1e9 - wm / 1000) if has_wm else None)  # fmt: skip
        yield _gauge("vigil_state_keys", "Live keys.", pl, st.keys)
        yield _gauge("vigil_state_bytes", "Detector state in memory (bytes).", pl, st.state_bytes)
        health = m._poll_models()
        healthy = {s: int(bool(h.get("healthy"))) for s, h in health.items()}
        yield _per("step", GaugeMetricFamily, "vigil_model_healthy", "1 while a model step serves its model, 0 "
                   "while its fallback scores.", pl, healthy)  # fmt: skip
        yield _per("step", CounterMetricFamily, "vigil_model_fallbacks", "Times a model step fell back to its "
                   "statistical detectors.", pl, {s: m.model_fallbacks.get(s, 0) for s in health})  # fmt: skip
        drift = GaugeMetricFamily("vigil_input_drift_psi", "PSI of recent inputs against the model's training data "
                                  "(> 0.25: significant).", labels=["pipeline", "step", "feature"])  # fmt: skip
        for step, scores in m.drift_scores.items():
            for feature, value in scores.items():
                drift.add_metric([pl, step, feature], value)
        yield drift
        yield _per("state", GaugeMetricFamily, "vigil_alerts", "Alerts per state (from the alert manager).", pl,
                   m.alert_states)  # fmt: skip
        yield _per("rule", GaugeMetricFamily, "vigil_self_alerts", "1 while a self-watch rule fires.", pl,
                   m.selfwatch.gauges() if m.selfwatch is not None else {})  # fmt: skip
        info = GaugeMetricFamily("vigil_build_info", "Vigil's version (always 1).", labels=["version"])
        info.add_metric([vigil.__version__], 1)
        yield info


def _counter(name: str, doc: str, pipeline: str, value: float) -> CounterMetricFamily:
    c = CounterMetricFamily(name, doc, labels=["pipeline"])
    c.add_metric([pipeline], value)
    return c


def _gauge(name: str, doc: str, pipeline: str, value: float | None) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc, labels=["pipeline"])
    if value is not None:
        g.add_metric([pipeline], value)
    return g


def _per(label: str, kind: Any, name: str, doc: str, pipeline: str, values: Mapping[str, float]) -> Metric:
    fam = kind(name, doc, labels=["pipeline", label])
    for k, v in values.items():
        fam.add_metric([pipeline, str(k)], v)
    return fam


def serve(registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0) -> tuple[Any, int]:
    """Serve ``registry`` at ``http://host:port/metrics`` from a daemon thread; return ``(server, port)``.

    ``port=0`` picks a free port; the returned port is the one bound. Stop with ``server.shutdown()`` and
    ``server.server_close()``.

    Examples:
        >>> import urllib.request
        >>> server, port = serve(CollectorRegistry())
        >>> urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").status
        200
        >>> server.shutdown(); server.server_close()
    """
    if not 0 <= int(port) <= 65535:
        raise ConfigError("must be in [0, 65535] (0: any free port)", field="metrics port", value=port)
    try:
        server, _thread = start_http_server(int(port), addr=host, registry=registry)
    except OSError as exc:
        raise ConfigError(f"can't be bound on {host} ({exc.strerror or exc})", field="metrics port", value=port,
                          hint="pick another one, 0 for any free port, or --no-metrics") from exc  # fmt: skip
    return server, int(server.server_port)

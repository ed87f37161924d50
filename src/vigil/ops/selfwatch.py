"""Vigil watching itself: rules over the pipeline's own health that raise ordinary alerts.

:class:`SelfWatch` is evaluated about once a second with a :class:`Sample` of the runner's state (the
:class:`~vigil.ops.metrics.PipelineMetrics` of a run builds the sample and sends the alerts to the pipeline's
alert sinks). Rules, each on by default and switched off by setting its limit to ``None``:

==================== =====================================================================================
rule                 fires when
==================== =====================================================================================
stalled_watermark    the watermark has not moved for ``stalled_watermark_s`` while events keep arriving
growing_lag          the consumer lag grew at each of the last ``growing_lag_samples`` samples and is above
                     ``growing_lag_floor`` messages
failing_checkpoints  ``failing_checkpoints`` checkpoints in a row failed
dead_letter_rate     more than ``dead_letter_fraction`` of the records read over ``dead_letter_interval_s``
                     were unreadable (with at least ``dead_letter_min_records`` read)
model_fallback       a model detector's ``health()`` is unhealthy (its fallback detectors are scoring)
stale_model          the served model version is older than ``stale_model_max_age_s``
input_drift          a feature's PSI against the model's training data is above ``input_drift_psi``
==================== =====================================================================================

Each rule raises one :class:`~vigil.types.Alert` per *episode* (detector ``vigil_self``, key
``<pipeline>/<rule>[/<step or feature>]``, a message that says what to do), not one per evaluation. When the
condition clears the episode ends: it is recorded in :attr:`SelfWatch.episodes` and, with ``notify_resolved``,
an ``info`` alert with ``stats["resolved"] == 1.0`` says so. :meth:`SelfWatch.gauges` gives 1/0 per rule for
the ``vigil_self_alerts{rule}`` gauge. Rules listed in ``quiet`` keep their gauge and episodes but send no
alerts: by default ``model_fallback``, because the embedded runner already raises a ``model_health`` alert
(detector ``model_health``, key ``<pipeline>/<step>``) when a model falls back and when it recovers.

Examples:
    >>> t = [0.0]
    >>> watch = SelfWatch("fraud", SelfWatchConfig(failing_checkpoints=2), clock=lambda: t[0])
    >>> watch.evaluate(Sample(checkpoint_failures_in_row=1))
    []
    >>> [a.key for a in watch.evaluate(Sample(checkpoint_failures_in_row=2))]
    ['fraud/failing_checkpoints']
    >>> watch.evaluate(Sample(checkpoint_failures_in_row=3)), watch.gauges()["failing_checkpoints"]
    ([], 1)
    >>> t[0] = 5.0
    >>> [a.stats["resolved"] for a in watch.evaluate(Sample(checkpoint_failures_in_row=0))]
    [1.0]
    >>> watch.gauges()["failing_checkpoints"], watch.episodes[0].duration_s
    (0, 5.0)
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from vigil.dataflow.outputs import make_alert
from vigil.errors import ConfigError
from vigil.ops.drift import DEFAULT_PSI_THRESHOLD
from vigil.types import Alert

DETECTOR = "vigil_self"
RULES = ("stalled_watermark", "growing_lag", "failing_checkpoints", "dead_letter_rate", "model_fallback",
         "stale_model", "input_drift")  # fmt: skip
_SEVERITY = {"stalled_watermark": "warning", "growing_lag": "warning", "failing_checkpoints": "critical",
             "dead_letter_rate": "warning", "model_fallback": "critical", "stale_model": "info",
             "input_drift": "warning"}  # fmt: skip


@dataclass
class SelfWatchConfig:
    """Limits of the self-watch rules (module docstring); ``None`` switches a rule off."""

    stalled_watermark_s: float | None = 60.0
    growing_lag_samples: int | None = 5
    growing_lag_floor: int = 10_000
    failing_checkpoints: int | None = 3
    dead_letter_fraction: float | None = 0.05
    dead_letter_interval_s: float = 60.0
    dead_letter_min_records: int = 100
    model_fallback: bool = True
    stale_model_max_age_s: float | None = 30 * 86_400.0
    input_drift_psi: float | None = DEFAULT_PSI_THRESHOLD
    notify_resolved: bool = True
    # the embedded runner raises its own `model_health` alert on a fallback: a second one would be noise
    quiet: tuple[str, ...] = ("model_fallback",)

    def __post_init__(self) -> None:
        for name in ("stalled_watermark_s", "stale_model_max_age_s", "input_drift_psi", "dead_letter_interval_s"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int | float) and v > 0):
                raise ConfigError("must be a number > 0 (or null to switch the rule off)", step="selfwatch",
                                  field=name, value=v)  # fmt: skip
        for name in ("growing_lag_samples", "failing_checkpoints"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, int) and v >= 1):
                raise ConfigError("must be an int >= 1 (or null)", step="selfwatch", field=name, value=v)
        self.quiet = tuple(self.quiet)
        bad = [r for r in self.quiet if r not in RULES]
        if bad:
            raise ConfigError("names no self-watch rule", step="selfwatch", field="quiet", value=bad[0],
                              hint=f"rules: {', '.join(RULES)}")  # fmt: skip
        f = self.dead_letter_fraction
        if f is not None and not (isinstance(f, int | float) and 0 < f < 1):
            raise ConfigError("must be in (0, 1) (or null)", step="selfwatch", field="dead_letter_fraction", value=f)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SelfWatchConfig:
        """Build from plain data (YAML); unknown names are an error that lists the known ones."""
        d = dict(d or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError("is not a self-watch setting", step="selfwatch", field=unknown[0], value=d[unknown[0]],
                              hint=f"known: {', '.join(sorted(known))}")  # fmt: skip
        return cls(**d)

    def enabled(self) -> list[str]:
        """The rules that are on."""
        off = {"stalled_watermark": self.stalled_watermark_s, "growing_lag": self.growing_lag_samples,
               "failing_checkpoints": self.failing_checkpoints, "dead_letter_rate": self.dead_letter_fraction,
               "model_fallback": self.model_fallback or None, "stale_model": self.stale_model_max_age_s,
               "input_drift": self.input_drift_psi}  # fmt: skip
        return [r for r in RULES if off[r] is not None]


@dataclass
class Sample:
    """The runner's state at one evaluation (plain data; :mod:`vigil.ops.metrics` builds it from a runner).

    Attributes:
        events_in: records read so far (a counter).
        dead_letters: unreadable records so far (a counter).
        watermark_ms: the stream's watermark (any value; only its changes matter), ``None`` if unknown.
        lag: consumer lag in messages per partition, ``None`` when the source has no lag.
        checkpoint_failures_in_row: failed checkpoints since the last successful one.
        model_health: per detector step with a ``health()``, its ``{healthy, version, reason, since}``.
        model_age_s: per model step, the age in seconds of the version it serves.
        drift: per feature, its PSI (the largest over model steps that see the feature).
    """

    events_in: int = 0
    dead_letters: int = 0
    watermark_ms: int | None = None
    lag: dict[str, int] | None = None
    checkpoint_failures_in_row: int = 0
    model_health: dict[str, dict[str, Any]] = field(default_factory=dict)
    model_age_s: dict[str, float] = field(default_factory=dict)
    drift: dict[str, float] = field(default_factory=dict)


@dataclass
class Episode:
    """One stretch of time during which a rule fired for one key."""

    rule: str
    key: str
    started_s: float
    ended_s: float | None = None

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (``None`` while it lasts)."""
        return None if self.ended_s is None else self.ended_s - self.started_s


@dataclass
class _Finding:
    rule: str
    suffix: str | None
    value: float
    limit: float
    message: str


class SelfWatch:
    """Evaluate the self-watch rules on successive samples (module docstring).

    Args:
        pipeline: the pipeline's name (first part of every alert key).
        config: the rules' limits (default: every rule on with the defaults of :class:`SelfWatchConfig`).
        clock: wall-clock seconds (injectable; tests use a manual one).
    """

    def __init__(self, pipeline: str, config: SelfWatchConfig | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.pipeline = pipeline
        self.config = config or SelfWatchConfig()
        self.clock = clock
        self.rules = self.config.enabled()
        self.active: dict[str, tuple[Episode, Alert]] = {}
        self.episodes: list[Episode] = []
        self._wm: int | None = None
        self._wm_moved_s: float | None = None
        self._events_seen = -1
        self._events_grew_s: float | None = None
        self._lag: deque[int] = deque(maxlen=(self.config.growing_lag_samples or 1) + 1)
        self._reads: deque[tuple[float, int, int]] = deque()

    def gauges(self) -> dict[str, int]:
        """1 for every enabled rule with an episode in progress, else 0."""
        firing = {ep.rule for ep, _ in tuple(self.active.values())}  # a scrape thread reads while the engine writes
        return {r: int(r in firing) for r in self.rules}

    def evaluate(self, s: Sample) -> list[Alert]:
        """Evaluate every rule on ``s``; return the alerts of episodes that start (and end) now."""
        now = self.clock()
        found: dict[str, _Finding] = {}
        checks: list[Callable[[Sample, float], list[_Finding]]] = [
            self._stalled_watermark, self._growing_lag, self._failing_checkpoints, self._dead_letter_rate,
            self._model_fallback, self._stale_model, self._input_drift,
        ]  # fmt: skip
        for check in checks:
            for f in check(s, now):
                if f.rule in self.rules:
                    found[self._key(f.rule, f.suffix)] = f
        out = []
        for key, f in found.items():
            if key not in self.active:
                ep = Episode(f.rule, key, now)
                alert = self._alert(key, f, now)
                self.active[key] = (ep, alert)
                self.episodes.append(ep)
                if f.rule not in self.config.quiet:
                    out.append(alert)
        for key in [k for k in self.active if k not in found]:
            ep, fired = self.active.pop(key)
            ep.ended_s = now
            if self.config.notify_resolved and ep.rule not in self.config.quiet:
                out.append(self._resolved(ep, fired, now))
        return out

    # ---- rules ------------------------------------------------------------------------------------------

    def _stalled_watermark(self, s: Sample, now: float) -> list[_Finding]:
        limit = self.config.stalled_watermark_s
        if self._wm_moved_s is None or s.watermark_ms != self._wm:
            self._wm, self._wm_moved_s = s.watermark_ms, now
        if s.events_in > self._events_seen:
            if self._events_seen >= 0:
                self._events_grew_s = now
            self._events_seen = s.events_in
        grew = self._events_grew_s
        if limit is None or grew is None or now - self._wm_moved_s < limit:
            return []
        if grew <= self._wm_moved_s or now - grew > limit:  # no events since it stopped, or none lately
            return []
        stalled = now - self._wm_moved_s
        return [_Finding("stalled_watermark", None, stalled, limit,
                         f"pipeline `{self.pipeline}`: the watermark has not moved for {stalled:.0f} s while events "
                         "keep arriving, so windows don't close and timers don't fire. Look for a partition that "
                         "sends nothing or only old timestamps (set an idle timeout), or a producer clock that "
                         "went backwards.")]  # fmt: skip

    def _growing_lag(self, s: Sample, now: float) -> list[_Finding]:
        k = self.config.growing_lag_samples
        if k is None or s.lag is None:
            return []
        self._lag.append(int(sum(s.lag.values())))
        lags = list(self._lag)
        key = self._key("growing_lag", None)
        floor = self.config.growing_lag_floor
        if key in self.active:  # hysteresis: lasts until below the floor or lower than K samples ago
            if lags[-1] > floor and lags[-1] >= lags[0]:
                return [_Finding("growing_lag", None, lags[-1], floor, "still growing")]
            return []
        if len(lags) < k + 1 or lags[-1] <= floor or any(b <= a for a, b in zip(lags, lags[1:], strict=False)):
            return []
        return [_Finding("growing_lag", None, lags[-1], floor,
                         f"pipeline `{self.pipeline}`: consumer lag grew at each of the last {k} samples and is "
                         f"{lags[-1]:,} messages (floor {floor:,}): the pipeline reads slower than producers write. "
                         "Check the step latency panel for a slow step, the sinks for backpressure, or add "
                         "partitions and scale out.")]  # fmt: skip

    def _failing_checkpoints(self, s: Sample, now: float) -> list[_Finding]:
        n = self.config.failing_checkpoints
        if n is None or s.checkpoint_failures_in_row < n:
            return []
        return [_Finding("failing_checkpoints", None, s.checkpoint_failures_in_row, n,
                         f"pipeline `{self.pipeline}`: {s.checkpoint_failures_in_row} checkpoints in a row failed, "
                         "so a restart would replay everything since the last good one. Check the checkpoint "
                         "directory (disk full, permissions) and the sinks' flush errors in the log.")]  # fmt: skip

    def _dead_letter_rate(self, s: Sample, now: float) -> list[_Finding]:
        frac = self.config.dead_letter_fraction
        reads = self._reads
        reads.append((now, s.events_in, s.dead_letters))
        while len(reads) > 2 and now - reads[1][0] >= self.config.dead_letter_interval_s:
            reads.popleft()  # keep the newest sample at least an interval old as the baseline
        if frac is None:
            return []
        _, ev0, dl0 = reads[0]
        dead = s.dead_letters - dl0
        total = (s.events_in - ev0) + dead
        if total < self.config.dead_letter_min_records or dead / total <= frac:
            return []
        share = dead / total
        return [_Finding("dead_letter_rate", None, share, frac,
                         f"pipeline `{self.pipeline}`: {share:.1%} of the last {total:,} records were unreadable "
                         f"(limit {frac:.1%}). Read the reasons in the dead-letter output: a producer probably "
                         "changed its format or the schema is out of date.")]  # fmt: skip

    def _model_fallback(self, s: Sample, now: float) -> list[_Finding]:
        return [_Finding("model_fallback", step, 0.0, 1.0,
                         f"pipeline `{self.pipeline}`, step `{step}`: the model is not served, the statistical "
                         f"fallback is scoring ({h.get('reason')}). Fix the registry: `vigil models rollback` or "
                         "promote a version that loads; the step heals without a restart.")
                for step, h in s.model_health.items() if not h.get("healthy", True)]  # fmt: skip

    def _stale_model(self, s: Sample, now: float) -> list[_Finding]:
        limit = self.config.stale_model_max_age_s
        if limit is None:
            return []
        return [_Finding("stale_model", step, age, limit,
                         f"pipeline `{self.pipeline}`, step `{step}`: the served model is {age / 86_400:.1f} days "
                         f"old (limit {limit / 86_400:.1f}). Retrain it on recent data (`vigil train`) and promote "
                         "the new version.")
                for step, age in s.model_age_s.items() if age > limit]  # fmt: skip

    def _input_drift(self, s: Sample, now: float) -> list[_Finding]:
        limit = self.config.input_drift_psi
        if limit is None:
            return []
        return [_Finding("input_drift", feature, score, limit,
                         f"pipeline `{self.pipeline}`: feature `{feature}` has drifted from the model's training "
                         f"data (PSI {score:.2f} > {limit:.2f}; < 0.1 is stable). Its scores are less trustworthy: "
                         "check the producer, then retrain on recent data and promote the new version.")
                for feature, score in s.drift.items() if score > limit]  # fmt: skip

    # ---- alerts -----------------------------------------------------------------------------------------

    def _key(self, rule: str, suffix: str | None) -> str:
        return f"{self.pipeline}/{rule}" if suffix is None else f"{self.pipeline}/{rule}/{suffix}"

    def _alert(self, key: str, f: _Finding, now: float) -> Alert:
        ms = int(now * 1000)
        event_id = f"{key}@{ms}"
        return make_alert(self.pipeline, DETECTOR, key, event_id, score=float(f.value), threshold=float(f.limit),
                          event_ts_ms=ms, detect_ts_ms=ms, stats={"rule": f.rule, "value": float(f.value),
                                                                  "resolved": 0.0},
                          event_ids=[event_id], severity=_SEVERITY[f.rule], message=f.message)  # fmt: skip

    def _resolved(self, ep: Episode, fired: Alert, now: float) -> Alert:
        ms = int(now * 1000)
        event_id = f"{ep.key}@{ms}/resolved"
        return make_alert(self.pipeline, DETECTOR, ep.key, event_id, score=0.0, threshold=fired.threshold,
                          event_ts_ms=ms, detect_ts_ms=ms,
                          stats={"rule": ep.rule, "resolved": 1.0, "duration_s": now - ep.started_s},
                          event_ids=[fired.event_id, event_id], severity="info",
                          message=f"resolved after {now - ep.started_s:.0f} s: {fired.message}")  # fmt: skip

"""The pipeline: a source, event-time settings, named steps and sinks — a description every runtime takes.

Every step has a unique ``name``: it namespaces the step's state, labels its metrics and prefixes
its log lines and alert ids (bytewax's ``step_id``). A pipeline only describes; it has no ``run()``
and knows no runtime. The embedded runner (:class:`~vigil.engine.runner.EmbeddedRunner`) or the Flink
runtime executes it.

Examples:
    >>> from vigil.detectors import SlidingZScore, VelocityRule
    >>> from vigil.io.replay import ReplaySource
    >>> from vigil.io.sinks import MemorySink
    >>> import numpy as np
    >>> src = ReplaySource(np.array(["a"] * 12, object), np.arange(12) * 1000,
    ...                     {"amount": np.array([10.0] * 5 + [11.0, 9.0] * 3 + [90.0])})
    >>> from vigil.engine import EmbeddedRunner
    >>> alerts = MemorySink()
    >>> p = (Pipeline("demo").source(src)
    ...      .detect("amount_z", SlidingZScore(field="amount", min_count=5, baseline_halflife=None))
    ...      .alerts_to(alerts))
    >>> stats = EmbeddedRunner(p).run()
    >>> [(a.key, a.detector, round(a.score, 1)) for a in alerts.items]
    [('a', 'amount_z', 103.3)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from vigil.dataflow.steps import ApplyStep, DetectStep, ProcessStep, Step, WindowStep
from vigil.errors import ConfigError
from vigil.types import parse_duration_ms


@dataclass
class EventTime:
    """Time settings: bounded out-of-orderness watermarks, idleness, lateness.

    ``mode="processing"`` replaces each record's time by the wall-clock time at which the engine
    reads it (for streams without a trustworthy timestamp); event time is the default.
    """

    max_delay_ms: int = 2000
    idle_timeout_ms: int | None = 5000
    allowed_lateness_ms: int = 0
    mode: Literal["event", "processing"] = "event"
    score_late: bool = True  # late events are scored (not learned); one that fires is an alert "raised late"


@dataclass
class Batching:
    """Micro-batch and queue bounds: a batch is flushed at ``max_rows`` or after ``max_delay_ms``."""

    max_rows: int = 65_536
    max_delay_ms: int = 5
    queue_batches: int = 4


@dataclass
class Pipeline:
    """A named pipeline description (see the module docstring)."""

    name: str
    source_: Any = None
    event_time: EventTime = field(default_factory=EventTime)
    batching: Batching = field(default_factory=Batching)
    steps: list[Step] = field(default_factory=list)
    alert_sinks: list[Any] = field(default_factory=list)
    late_sink: Any = None
    dead_letter_sink: Any = None
    score_sink: Any = None
    key_ttl_ms: int | None = None
    id_field: str | None = None
    checkpoint_dir: str | None = None
    checkpoint_interval_ms: int = 1000
    checkpoint_keep: int = 3
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"

    def source(self, src: Any) -> Pipeline:
        """Read from ``src`` (a :class:`~vigil.io.base.Source`)."""
        self.source_ = src
        return self

    def watermark(
        self,
        max_delay: str | int = "2s",
        *,
        idle_timeout: str | int | None = "5s",
        allowed_lateness: str | int = 0,
        score_late: bool = True,
    ) -> Pipeline:
        """Bounded-out-of-orderness watermarks; events later than the lateness go to the late output.

        With ``score_late`` (the default) every late event is also scored by the detector steps against its
        key's current state, without being learned (the state has moved on past it); one that fires becomes an
        alert marked ``raised late`` (``stats["revision"]``) instead of never being analysed.
        """
        self.event_time = EventTime(
            duration_arg(max_delay, "event_time", "max_delay", section=True),
            None if idle_timeout is None else duration_arg(idle_timeout, "event_time", "idle_timeout", section=True),
            duration_arg(allowed_lateness, "event_time", "allowed_lateness", section=True),
            score_late=bool(score_late),
        )
        return self

    def processing_time(self) -> Pipeline:
        """Stamp records with the wall-clock time they are read at, instead of their own event time."""
        self.event_time.mode = "processing"
        return self

    def micro_batches(self, max_rows: int = 65_536, max_delay: str | int = "5ms", queue_batches: int = 4) -> Pipeline:
        """Flush a micro-batch at ``max_rows`` or after ``max_delay``; at most ``queue_batches`` wait in a queue."""
        if max_rows < 1:
            raise ConfigError("must be >= 1", section="batching", field="max_rows", value=max_rows)
        if queue_batches < 1:
            raise ConfigError("must be >= 1", section="batching", field="queue_batches", value=queue_batches)
        delay = duration_arg(max_delay, "batching", "max_delay", section=True)
        self.batching = Batching(max_rows, delay, queue_batches)
        return self

    def checkpoints(self, directory: str, *, interval: str | int = "1s", keep: int = 3) -> Pipeline:
        """Checkpoint state and source positions into ``directory`` every ``interval``; resume from there.

        See :mod:`vigil.engine.checkpointing`.
        """
        self.checkpoint_dir = directory
        self.checkpoint_interval_ms = duration_arg(interval, "checkpoints", "interval", section=True)
        if self.checkpoint_interval_ms <= 0:
            raise ConfigError("must be > 0", section="checkpoints", field="interval", value=interval)
        if keep < 2:
            raise ConfigError("must be >= 2 (exactly-once falls back to the previous checkpoint)",
                              section="checkpoints", field="keep", value=keep)  # fmt: skip
        self.checkpoint_keep = keep
        return self

    def guarantee(self, delivery: Literal["at-least-once", "exactly-once"]) -> Pipeline:
        """Choose the delivery guarantee of Kafka outputs.

        ``exactly-once``: Kafka outputs and source offsets commit together in one transaction per
        checkpoint (outputs become visible at each checkpoint). ``at-least-once`` (default): outputs
        are sent at once; after a crash some are sent again, with the same deterministic ids.
        """
        if delivery not in ("at-least-once", "exactly-once"):
            raise ConfigError("must be 'at-least-once' or 'exactly-once'", section="delivery",
                              value=delivery)  # fmt: skip
        self.delivery = delivery
        return self

    def key_ttl(self, ttl: str | int | None) -> Pipeline:
        """Expire keys idle for ``ttl`` of event time (their state is dropped and slots reused)."""
        self.key_ttl_ms = None if ttl is None else duration_arg(ttl, "keys", "ttl", section=True)
        return self

    def event_ids(self, field_name: str) -> Pipeline:
        """Use this extra column as the event id in alerts (default: source position)."""
        self.id_field = field_name
        return self

    def detect(self, name: str, detector: Any, *, severity: str = "warning") -> Pipeline:
        """Add a detector step."""
        return self.step(DetectStep(name, detector, severity))

    def step(self, step: Step) -> Pipeline:
        """Add any :class:`~vigil.dataflow.steps.Step` (an app's step kind, a user's own)."""
        self._check_name(step.name)
        self.steps.append(step)
        return self

    def window(
        self, name: str, assigner: Any, *, field: str, to: Any,
        allowed_lateness: str | int = 0, emit: Literal["final", "current"] = "final",
    ) -> Pipeline:  # fmt: skip
        """Add a windowed aggregation of ``field`` (count, sum, mean, std, min, max) written to ``to``."""
        if emit not in ("final", "current"):
            raise ConfigError("must be 'final' or 'current'", step=name, field="emit", value=emit)
        lateness = duration_arg(allowed_lateness, name, "allowed_lateness")
        return self.step(WindowStep(name, assigner, field, to, lateness, emit))

    def process(self, name: str, operator: Any, *, to: Any = None) -> Pipeline:
        """Add a per-event keyed operator (outputs that are alerts join the alert stream)."""
        return self.step(ProcessStep(name, operator, to))

    def apply(self, name: str, op: Any, *, to: Any = None) -> Pipeline:
        """Add a vectorized batch operator (see :class:`ApplyStep`); its alerts join the alert stream."""
        for method in ("process_batch", "advance", "reset_slots", "params", "snapshot", "restore"):
            if not callable(getattr(op, method, None)):
                raise ConfigError(f"must have a `{method}` method", step=name, field="op", value=type(op).__name__)
        return self.step(ApplyStep(name, op, to))

    def alerts_to(self, *sinks: Any) -> Pipeline:
        """Send alerts to these sinks."""
        self.alert_sinks.extend(sinks)
        return self

    def scores_to(self, sink: Any) -> Pipeline:
        """Also send every event's verdict of every detector step (key, time, id, score, calibrated, flag).

        One record per event and step: for backtests, dashboards and model feedback; it costs far more
        than alerts at high rates, so it is off unless asked for.
        """
        self.score_sink = sink
        return self

    def late_to(self, sink: Any) -> Pipeline:
        """Send late events here (default: a JSON-lines file under ``vigil-out/<pipeline>/``)."""
        self.late_sink = sink
        return self

    def dead_letters_to(self, sink: Any) -> Pipeline:
        """Send unreadable records here (default: a JSON-lines file under ``vigil-out/<pipeline>/``)."""
        self.dead_letter_sink = sink
        return self

    def _check_name(self, name: str) -> None:
        if not name or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError("must be a non-empty word (letters, digits, _ or -)", step=name, field="name", value=name)
        if any(s.name == name for s in self.steps):
            raise ConfigError("is used by another step; step names must be unique", step=name, field="name",
                              value=name)  # fmt: skip

    def validate(self) -> None:
        """Fail early on an incomplete pipeline."""
        if self.source_ is None:
            raise ConfigError("has no source", section=f"pipeline `{self.name}`",
                              hint="call .source(...) or add `source:` to the YAML")
        if not self.steps:
            raise ConfigError("has no steps", section=f"pipeline `{self.name}`",
                              hint="add a detector with .detect(name, detector)")
        if self.delivery == "exactly-once" and self.checkpoint_dir is None:
            raise ConfigError("needs checkpoints", section=f"pipeline `{self.name}`", field="delivery",
                              value=self.delivery,
                              hint="exactly-once commits at each checkpoint: add .checkpoints(dir)")  # fmt: skip


def duration_arg(value: str | int, where: str, field_name: str, *, section: bool = False) -> int:
    """A duration (``"2s"`` or ms) >= 0 in ms; errors name the step (or the ``section``) and the field."""
    named: dict[str, str] = {"section": where} if section else {"step": where}
    try:
        ms = value if isinstance(value, int) and not isinstance(value, bool) else parse_duration_ms(value)
    except (ValueError, TypeError):
        raise ConfigError("is not a duration", field=field_name, value=value, hint="use e.g. '500ms', '2s', '1m'",
                          **named) from None  # fmt: skip
    if ms < 0:
        raise ConfigError("must be >= 0", field=field_name, value=value, **named)
    return ms

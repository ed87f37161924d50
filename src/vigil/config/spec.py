"""YAML pipeline specs: validated with pydantic at load, turned into a :class:`~vigil.engine.Pipeline`.

Everything is checked when the file is loaded, never mid-stream. A bad file fails with a
:class:`~vigil.errors.ConfigError` that names the step, the field and the offending value, and
gives a hint::

    pipelines/fraud.yaml: step `amount_z`: `window` must be > 0; got '0s' (hint: use e.g. '60s')

The shape (see ``pipelines/fraud.yaml`` for a complete example)::

    name: fraud
    source: {kind: jsonl, path: tx.jsonl, schema: {key: user, time: ts, fields: [amount]}}
    event_time: {max_delay: 2s, idle_timeout: 5s, allowed_lateness: 0s}
    keys: {ttl: 1h}
    steps:
      - {name: amount_z, detector: sliding_zscore, params: {field: amount, window: 60s}}
      - {name: per_minute, window: {kind: tumbling, size: 1m}, field: amount, to: {kind: jsonl, path: w.jsonl}}
    alerts: [{kind: console}, {kind: jsonl, path: alerts.jsonl}]
    late: {kind: jsonl, path: late.jsonl}
    dead_letters: {kind: jsonl, path: dead.jsonl}
"""

from __future__ import annotations

import difflib
import inspect
import os
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vigil.errors import ConfigError
from vigil.types import parse_duration_ms


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


Duration = str | int


class SchemaSpec(_Model):
    """What the source's records look like (see :class:`vigil.io.schema.Schema`)."""

    key: str
    time: str
    time_unit: Literal["ms", "s", "iso8601"] = "ms"
    fields: list[str] = Field(default_factory=list)
    extra: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)


class SourceSpec(_Model):
    """Where records come from: Kafka, a JSON-lines or CSV file, stdin, or the synthetic transaction stream."""

    kind: Literal["kafka", "jsonl", "csv", "stdin", "transactions", "influx", "telegraf"]
    path: str | None = None
    # kafka
    url: str | None = None
    group_id: str | None = None
    dead_letter_topic: str | None = None
    stop_at_end: bool = False
    metrics: Literal["influx", "telegraf"] | None = None  # kafka: values are host metrics in this format
    schema_: SchemaSpec | None = Field(default=None, alias="schema")
    pace: Literal["max", "original"] = "max"
    speed: float = 1.0
    format: Literal["jsonl", "csv"] = "jsonl"
    # synthetic transactions (kind: transactions)
    events: int = 1_000_000
    users: int = 20_000
    seed: int = 7
    rate: float | None = None

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        if self.kind in ("influx", "telegraf") and not self.path:
            raise ValueError(f"source of kind {self.kind!r} needs `path` (a file of host metrics)")
        if self.kind in ("jsonl", "csv") and not self.path:
            raise ValueError(f"source of kind {self.kind!r} needs `path`")
        if self.kind == "kafka" and not self.url:
            raise ValueError("a kafka source needs `url` (kafka://HOST:PORT/TOPIC)")
        if self.kind in ("kafka", "jsonl", "csv", "stdin") and self.schema_ is None and self.metrics is None:
            raise ValueError(f"source of kind {self.kind!r} needs `schema` (key, time, fields)"
                             + (", or `metrics: influx|telegraf` for host metrics" if self.kind == "kafka" else ""))
        if self.metrics is not None and self.kind != "kafka":
            raise ValueError("`metrics` is for kafka sources; files of host metrics are kind `influx` or `telegraf`")
        return self


class SinkSpec(_Model):
    """Where outputs go: the console, a JSON-lines file, a SQLite alert store or a Kafka topic."""

    kind: Literal["console", "jsonl", "sqlite", "kafka"]
    path: str | None = None
    url: str | None = None

    @model_validator(mode="after")
    def _check(self) -> SinkSpec:
        if self.kind in ("jsonl", "sqlite") and not self.path:
            raise ValueError(f"sink of kind {self.kind!r} needs `path`")
        if self.kind == "kafka" and not self.url:
            raise ValueError("a kafka sink needs `url` (kafka://HOST:PORT/TOPIC)")
        return self


class EventTimeSpec(_Model):
    """Watermark settings: bounded out-of-orderness, idleness, allowed lateness; or processing time."""

    mode: Literal["event", "processing"] = "event"
    max_delay: Duration = "2s"
    idle_timeout: Duration | None = "5s"
    allowed_lateness: Duration = 0
    score_late: bool = True  # late events are scored (not learned); one that fires is an alert "raised late"


class KeysSpec(_Model):
    """Keyed state: idle keys expire after ``ttl`` of event time."""

    ttl: Duration | None = None


class WindowSpec(_Model):
    """A window assigner: tumbling (``size``), sliding (``size``, ``slide``) or session (``gap``)."""

    kind: Literal["tumbling", "sliding", "session"]
    size: Duration | None = None
    slide: Duration | None = None
    gap: Duration | None = None


class ModelSpec(_Model):
    """A model served from the registry: its promoted version, followed live."""

    registry: str
    name: str
    check_interval: Duration = "5s"


class StepSpec(_Model):
    """One named step: a ``detector``, a ``window`` aggregation or the ``servers`` pipeline.

    ``detector`` with ``params`` scores every event; ``window`` aggregates ``field`` into ``to``; ``servers``
    is the multi-metric server pipeline (join per host and window, per-metric detectors, ``model``, k-of-n).
    """

    name: str
    detector: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["critical", "warning", "info"] = "warning"
    window: WindowSpec | None = None
    field: str | None = None
    to: SinkSpec | None = None
    allowed_lateness: Duration = 0
    emit: Literal["final", "current"] = "final"
    servers: dict[str, Any] | None = None
    model: ModelSpec | None = None

    @model_validator(mode="after")
    def _check(self) -> StepSpec:
        if sum(x is not None for x in (self.detector, self.window, self.servers)) != 1:
            raise ValueError("a step has exactly one of `detector` (scoring), `window` (aggregation) or `servers` "
                             "(the multi-metric server pipeline)")
        if self.model is not None and self.servers is None:
            raise ValueError("`model` belongs to a `servers` step")
        if self.window is not None and (self.field is None or self.to is None):
            raise ValueError("a window step needs `field` (what to aggregate) and `to` (a sink)")
        return self


class CheckpointSpec(_Model):
    """Where and how often state and source positions are checkpointed."""

    dir: str
    interval: Duration = "1s"
    keep: int = 3


class BatchingSpec(_Model):
    """Micro-batch bounds: rows, delay, and queued batches (backpressure)."""

    max_rows: int = 65_536
    max_delay: Duration = "5ms"
    queue_batches: int = 4


class PipelineSpec(_Model):
    """A whole pipeline file."""

    name: str = "pipeline"
    source: SourceSpec
    event_time: EventTimeSpec = Field(default_factory=EventTimeSpec)
    keys: KeysSpec = Field(default_factory=KeysSpec)
    event_ids: str | None = None
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    checkpoints: CheckpointSpec | None = None
    delivery: Literal["at-least-once", "exactly-once"] = "at-least-once"
    steps: list[StepSpec]
    alerts: list[SinkSpec] = Field(default_factory=lambda: [SinkSpec(kind="console")])
    scores: SinkSpec | None = None
    late: SinkSpec | None = None
    dead_letters: SinkSpec | None = None
    alerting: dict[str, Any] | None = None  # the alert manager's policy (vigil.alerting.policy), validated at build


# -- loading -------------------------------------------------------------------------------------


def load_spec(path: str) -> PipelineSpec:
    """Read and validate a YAML pipeline file (structure only; see :func:`load_pipeline`)."""
    from vigil.config.files import read_yaml

    return parse_spec(read_yaml(path, "pipeline file"), origin=path)


def parse_spec(raw: Any, origin: str = "<config>") -> PipelineSpec:
    """Validate a parsed YAML document, turning pydantic's errors into one readable :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError("must be a mapping with `source` and `steps`", field=origin, value=type(raw).__name__)
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = list(err["loc"])
        step = None
        if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
            steps = raw.get("steps") or []
            step = steps[loc[1]].get("name", f"#{loc[1] + 1}") if isinstance(steps[loc[1]], dict) else f"#{loc[1]}"
            loc = loc[2:]
        elif loc:
            step = str(loc[0])
            loc = loc[1:]
        field = ".".join(str(p) for p in loc) or None
        msg = err["msg"].removeprefix("Value error, ")
        hint = _hint(err, raw)
        value = err.get("input") if err["type"] not in ("missing",) and not isinstance(err.get("input"), dict) else None
        raise ConfigError(f"{msg} (in {origin})", step=step, field=field, value=value, hint=hint) from None


def _hint(err: dict[str, Any], raw: Any) -> str | None:
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        known = {
            "steps": StepSpec, "source": SourceSpec, "event_time": EventTimeSpec, "alerts": SinkSpec,
            "late": SinkSpec, "dead_letters": SinkSpec, "keys": KeysSpec, "batching": BatchingSpec,
            "checkpoints": CheckpointSpec, "model": ModelSpec,
        }.get(str(err["loc"][0]), PipelineSpec)  # fmt: skip
        names = [f.alias or n for n, f in known.model_fields.items()]
        close = difflib.get_close_matches(name, names, n=1)
        return f"did you mean `{close[0]}`?" if close else f"known fields: {', '.join(names)}"
    if err["type"] == "literal_error":
        return "allowed: " + str(err.get("ctx", {}).get("expected", ""))
    if err["type"] == "missing":
        return "this field is required"
    return None


def load_pipeline(path: str, *, overrides: dict[str, Any] | None = None) -> Any:
    """Load a YAML file into a ready-to-run :class:`~vigil.engine.Pipeline`; every error names step and field."""
    spec = load_spec(path)
    return build_pipeline(spec, base_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides)


def build_pipeline(spec: PipelineSpec, *, base_dir: str = ".", overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate sources, detectors and sinks of a validated spec."""
    from vigil.detectors import registry
    from vigil.engine.pipeline import Pipeline

    p = Pipeline(spec.name)
    p.source(_source(spec.source, base_dir, overrides or {}, spec.name))
    ctx = _SinkContext(spec.name, spec.delivery)
    et = spec.event_time
    p.watermark(et.max_delay, idle_timeout=et.idle_timeout, allowed_lateness=et.allowed_lateness,
                score_late=et.score_late)
    if et.mode == "processing":
        p.processing_time()
    b = spec.batching
    p.micro_batches(b.max_rows, b.max_delay, b.queue_batches)
    p.key_ttl(spec.keys.ttl)
    if spec.event_ids:
        p.event_ids(spec.event_ids)
    if spec.checkpoints is not None:
        c = spec.checkpoints
        p.checkpoints(_path(c.dir, base_dir), interval=c.interval, keep=c.keep)
    p.guarantee(spec.delivery)
    kinds = registry()
    for st in spec.steps:
        if st.servers is not None:
            p.apply(st.name, _servers_step(st, base_dir), to=_sink(st.to, base_dir, ctx) if st.to else None)
        elif st.detector is not None:
            cls = kinds.get(st.detector)
            if cls is None:
                close = difflib.get_close_matches(st.detector, list(kinds), n=1)
                raise ConfigError("is not a known detector", step=st.name, field="detector", value=st.detector,
                                  hint=f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(kinds))}")
            p.detect(st.name, _construct(cls, st.params, st.name), severity=st.severity)
        else:
            assert st.window is not None and st.field is not None and st.to is not None
            p.window(st.name, _assigner(st.window, st.name), field=st.field, to=_sink(st.to, base_dir, ctx),
                     allowed_lateness=st.allowed_lateness, emit=st.emit)  # fmt: skip
    p.alerts_to(*[_sink(s, base_dir, ctx) for s in spec.alerts])
    if spec.alerting is not None:
        from vigil.alerting.runtime import ManagedAlerts

        store = spec.alerting.get("store")
        p.alerts_to(ManagedAlerts(spec.alerting, pipeline=spec.name,
                                  store_path=_path(store, base_dir) if store else None,
                                  feedback=spec.alerting.get("feedback", True), feedback_base=_feedback_base(p)))
    if spec.scores:
        p.scores_to(_sink(spec.scores, base_dir, ctx))
    if spec.late:
        p.late_to(_sink(spec.late, base_dir, ctx))
    if spec.dead_letters:
        p.dead_letters_to(_sink(spec.dead_letters, base_dir, ctx))
    p.validate()
    return p


_FIELD_IN_MSG = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def _construct(cls: type[Any], params: dict[str, Any], step: str) -> Any:
    sig = inspect.signature(cls.__init__)
    known = [n for n in sig.parameters if n != "self"]
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError(f"is not a parameter of `{cls.kind}`", step=step, field=f"params.{name}",
                              value=params[name],
                              hint=f"did you mean `{close[0]}`?" if close else f"parameters: {', '.join(known)}")
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        m = _FIELD_IN_MSG.search(text)
        field = m.group(1) if m else None
        body = _FIELD_IN_MSG.sub("", text, count=1).strip() if m else text
        body = body.split("; got")[0].strip()
        value = params.get(field) if field else None
        raise ConfigError(body, step=step, field=f"params.{field}" if field else "params", value=value,
                          hint=_param_hint(field)) from None


def _param_hint(field: str | None) -> str | None:
    if field in ("window", "size", "slide", "gap", "max_delay"):
        return "use a duration such as '60s', '500ms' or '1m'"
    return None


def _dur(value: Duration | None, step: str, field: str) -> int:
    try:
        ms = value if isinstance(value, int) else parse_duration_ms(str(value))
    except ValueError:
        raise ConfigError("is not a duration", step=step, field=field, value=value,
                          hint="use e.g. '500ms', '2s', '1m'") from None
    if ms <= 0:
        raise ConfigError("must be > 0", step=step, field=field, value=value, hint="use e.g. '60s'")
    return ms


def _feedback_base(p: Any) -> dict[str, dict[str, float]]:
    """Base bars the feedback loop raises per key: the servers steps' per-metric thresholds."""
    from vigil.engine.pipeline import ApplyStep

    base: dict[str, dict[str, float]] = {}
    for step in p.steps:
        if isinstance(step, ApplyStep) and hasattr(getattr(step.op, "config", None), "per_metric"):
            from vigil.feedback.suppression import server_base

            for det, bars in server_base(step.op.config).items():
                base.setdefault(det, {}).update(bars)
    return base


def _servers_step(st: StepSpec, base_dir: str) -> Any:
    """The ``servers`` step: :class:`~vigil.apps.servers.ServerConfig` fields under ``servers``, plus ``model``."""
    from dataclasses import fields as dc_fields

    from vigil.apps.servers import ServerConfig, ServerStep

    params = dict(st.servers or {})
    aliases = params.pop("metric_aliases", None)
    known = [f.name for f in dc_fields(ServerConfig)] + ["metric_aliases"]
    for name in params:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            raise ConfigError("is not a setting of the servers pipeline", step=st.name, field=f"servers.{name}",
                              value=params[name],
                              hint=f"did you mean `{close[0]}`?" if close else f"settings: {', '.join(known)}")
    if "metrics" in params:
        params["metrics"] = tuple(params["metrics"])
    try:
        cfg = ServerConfig(**params)
        m = st.model
        if m is None:
            return ServerStep(cfg, metric_aliases=aliases)
        return ServerStep(cfg, registry=_path(m.registry, base_dir), model_name=m.name, metric_aliases=aliases,
                          check_interval_s=_dur(m.check_interval, st.name, "model.check_interval") / 1000)
    except (ValueError, TypeError) as exc:
        text = str(exc)
        found = _FIELD_IN_MSG.search(text)
        field = found.group(1) if found else None
        raise ConfigError(text.split("; got")[0], step=st.name, field=f"servers.{field}" if field else "servers",
                          value=params.get(field) if field else None) from None


def _assigner(w: WindowSpec, step: str) -> Any:
    from vigil.eventtime import SessionWindows, SlidingWindows, TumblingWindows

    if w.kind == "tumbling":
        return TumblingWindows(_dur(w.size, step, "window.size"))
    if w.kind == "sliding":
        return SlidingWindows(_dur(w.size, step, "window.size"), _dur(w.slide, step, "window.slide"))
    return SessionWindows(_dur(w.gap, step, "window.gap"))


def _schema(s: SchemaSpec) -> Any:
    from vigil.io.schema import Schema

    return Schema(s.key, s.time, s.time_unit, tuple(s.fields), tuple(s.extra), tuple(s.optional))


def _path(path: str, base_dir: str) -> str:
    return path if os.path.isabs(path) or path == "-" else os.path.join(base_dir, path)


def _source(s: SourceSpec, base_dir: str, overrides: dict[str, Any], pipeline: str) -> Any:
    from vigil.io import files

    if s.kind == "kafka":
        from vigil.io.kafka_source import KafkaSource

        assert s.url
        decoder = None
        if s.metrics is not None:
            from vigil.io.metrics import metric_decoder

            decoder = metric_decoder("influx" if s.metrics == "influx" else "json")
        return KafkaSource.from_url(
            s.url, _schema(s.schema_) if s.schema_ else None, group_id=s.group_id or f"vigil-{pipeline}",
            dead_letter_topic=s.dead_letter_topic, stop_at_end=overrides.get("stop_at_end", s.stop_at_end),
            decoder=decoder,
        )  # fmt: skip
    if s.kind in ("influx", "telegraf"):
        from vigil.io.metrics import InfluxLineFileSource, TelegrafJsonFileSource

        assert s.path
        cls = InfluxLineFileSource if s.kind == "influx" else TelegrafJsonFileSource
        return cls(_path(s.path, base_dir), pace=s.pace, speed=s.speed)
    if s.kind == "jsonl":
        assert s.path and s.schema_
        return files.JsonlFileSource(_path(s.path, base_dir), _schema(s.schema_), pace=s.pace, speed=s.speed)
    if s.kind == "csv":
        assert s.path and s.schema_
        return files.CsvFileSource(_path(s.path, base_dir), _schema(s.schema_), pace=s.pace, speed=s.speed)
    if s.kind == "stdin":
        assert s.schema_
        return files.StdinSource(_schema(s.schema_), format=s.format)
    from vigil.io.generators.transactions import TransactionSpec, transaction_source

    spec = TransactionSpec(events=s.events, users=s.users, seed=s.seed)
    return transaction_source(spec, rate=overrides.get("rate", s.rate))


class _SinkContext:
    """Kafka sinks of one pipeline share one producer, so exactly-once commits them in one transaction."""

    def __init__(self, pipeline: str, delivery: str) -> None:
        self.pipeline, self.delivery = pipeline, delivery
        self.producers: dict[str, Any] = {}

    def kafka(self, url: str) -> Any:
        from vigil.io.kafka import parse_kafka_url
        from vigil.io.kafka_sink import KafkaAlertSink, KafkaTopicView

        bootstrap, topic = parse_kafka_url(url)
        parent = self.producers.get(bootstrap)
        if parent is None:
            tx = f"vigil-{self.pipeline}-{topic}" if self.delivery == "exactly-once" else None
            parent = self.producers[bootstrap] = KafkaAlertSink(bootstrap, topic, transactional_id=tx)
            return parent
        return parent if parent.topic == topic else KafkaTopicView(parent, topic)


def _sink(s: SinkSpec, base_dir: str, ctx: _SinkContext | None = None) -> Any:
    from vigil.io import sinks

    if s.kind == "kafka":
        assert s.url
        return (ctx or _SinkContext("pipeline", "at-least-once")).kafka(s.url)
    if s.kind == "console":
        return sinks.ConsoleAlertSink()
    assert s.path
    if s.kind == "jsonl":
        return sinks.JsonlSink(_path(s.path, base_dir))
    return sinks.SqliteAlertSink(_path(s.path, base_dir))

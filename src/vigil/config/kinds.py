"""The built-in kinds of pipeline files: sources, sinks, and the ``detector`` and ``window`` steps.

Each kind is a spec model (validated at load), a builder, and for steps the rules of live change and the
record fields it reads. They register themselves with :mod:`vigil.config.registry` when this module is
imported (the registry does it on first use); apps register theirs from their own folders.
"""

from __future__ import annotations

import inspect
from typing import Any, Literal

from pydantic import Field, model_validator

from vigil.config.params import check_param_types, constructor_error
from vigil.config.registry import SinkKind, SourceKind, register_sink, register_source, register_step
from vigil.config.spec import Duration, Model, SchemaSpec, SinkSpec, close_hint, duration_ms, schema_of
from vigil.dataflow.kinds import BuildContext, LiveChange, StepKind
from vigil.dataflow.steps import DetectStep, WindowStep
from vigil.errors import ConfigError

MAX_RECORD_BYTES = 8 << 20  # the sources' default record size cap (vigil.io.lines.MAX_RECORD_BYTES; `too_large`)

# -- sources -------------------------------------------------------------------------------------------


class KafkaSourceSpec(Model):
    """A Kafka topic of JSON records (``schema``) or host metrics (``metrics: influx|telegraf``)."""

    kind: Literal["kafka"]
    url: str = Field(description="kafka://HOST:PORT/TOPIC")
    group_id: str | None = None
    dead_letter_topic: str | None = None
    stop_at_end: bool = False
    metrics: Literal["influx", "telegraf"] | None = None
    schema_: SchemaSpec | None = Field(default=None, alias="schema")
    max_record_bytes: int = Field(default=MAX_RECORD_BYTES, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> KafkaSourceSpec:
        if self.schema_ is None and self.metrics is None:
            raise ValueError("a kafka source needs `schema` (key, time, fields), or `metrics: influx|telegraf` for "
                             "host metrics")  # fmt: skip
        return self


class FileSourceSpec(Model):
    """A JSON-lines or CSV file of records, read as fast as possible or at its original pace."""

    kind: Literal["jsonl", "csv"]
    path: str
    schema_: SchemaSpec | None = Field(default=None, alias="schema")
    pace: Literal["max", "original"] = "max"
    speed: float = 1.0
    max_record_bytes: int = Field(default=MAX_RECORD_BYTES, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> FileSourceSpec:
        if self.schema_ is None:
            raise ValueError(f"a {self.kind} source needs `schema` (key, time, fields)")
        return self


class StdinSourceSpec(Model):
    """Records on standard input, as JSON lines or CSV."""

    kind: Literal["stdin"]
    schema_: SchemaSpec | None = Field(default=None, alias="schema")
    format: Literal["jsonl", "csv"] = "jsonl"
    max_record_bytes: int = Field(default=MAX_RECORD_BYTES, ge=1024)

    @model_validator(mode="after")
    def _check(self) -> StdinSourceSpec:
        if self.schema_ is None:
            raise ValueError("a stdin source needs `schema` (key, time, fields)")
        return self


class MetricsFileSourceSpec(Model):
    """A file of host metrics: Influx line protocol (``influx``) or Telegraf JSON (``telegraf``)."""

    kind: Literal["influx", "telegraf"]
    path: str
    pace: Literal["max", "original"] = "max"
    speed: float = 1.0
    max_record_bytes: int = Field(default=MAX_RECORD_BYTES, ge=1024)


class TransactionsSourceSpec(Model):
    """The synthetic card-transaction stream (``vigil generate transactions``)."""

    kind: Literal["transactions"]
    events: int = 1_000_000
    users: int = 20_000
    seed: int = 7
    rate: float | None = None


class OtlpSourceSpec(Model):
    """OpenTelemetry traces or metrics: an OTLP/HTTP receiver (``listen``) or the Collector's Kafka topic (``url``).

    Span rows and metric rows are described in :mod:`vigil.io.otlp.columns`.
    """

    kind: Literal["otlp"]
    listen: str | None = Field(default=None, description="HOST:PORT to serve OTLP/HTTP on (/v1/traces, /v1/metrics)")
    url: str | None = Field(default=None, description="kafka://HOST:PORT/TOPIC of otlp_proto messages")
    signal: Literal["traces", "metrics"] = "traces"
    key: Literal["service", "operation", "edge", "series"] = "service"
    event_time: Literal["end", "start"] = "end"
    resource_attributes: list[str] = Field(default_factory=list)
    span_attributes: list[str] = Field(default_factory=list)
    require_service: bool = False
    max_skew: Duration = "1h"
    max_body_bytes: int = Field(default=16 << 20, ge=1024)
    hex_ids: bool = False
    group_id: str | None = None
    dead_letter_topic: str | None = None
    stop_at_end: bool = False
    stop_after: int | None = Field(default=None, ge=1, description="HTTP: end after this many rows (tests, demos)")

    @model_validator(mode="after")
    def _check(self) -> OtlpSourceSpec:
        if (self.listen is None) == (self.url is None):
            raise ValueError("an otlp source needs exactly one of `listen` (HOST:PORT, OTLP/HTTP) or `url` "
                             "(kafka://HOST:PORT/TOPIC, the Collector's Kafka exporter with otlp_proto)")  # fmt: skip
        if self.listen is not None:
            host, _, port = self.listen.rpartition(":")
            if not host or not port.isdigit() or not 0 <= int(port) < 65536:
                raise ValueError(f"`listen` must be HOST:PORT (e.g. 127.0.0.1:4318); got {self.listen!r}")
        ok = ("service", "operation", "edge") if self.signal == "traces" else ("service", "series")
        if self.key not in ok:
            raise ValueError(f"`key` of a {self.signal} source must be one of {', '.join(ok)}; got {self.key!r}")
        return self


def _kafka_source(s: KafkaSourceSpec, ctx: BuildContext) -> Any:
    from vigil.io.kafka_source import KafkaSource

    decoder = None
    if s.metrics is not None:
        from vigil.io.metrics import metric_decoder

        decoder = metric_decoder("influx" if s.metrics == "influx" else "json")
    return KafkaSource.from_url(
        s.url, schema_of(s.schema_) if s.schema_ else None, group_id=s.group_id or f"vigil-{ctx.pipeline}",
        dead_letter_topic=s.dead_letter_topic, stop_at_end=ctx.overrides.get("stop_at_end", s.stop_at_end),
        decoder=decoder, max_record_bytes=s.max_record_bytes,
    )  # fmt: skip


def _otlp_decoder(s: OtlpSourceSpec) -> Any:
    if s.signal == "metrics":
        from vigil.io.otlp.metrics import MetricDecoder

        return MetricDecoder(key=s.key)  # type: ignore[arg-type]
    from vigil.io.otlp.traces import TraceDecoder

    return TraceDecoder(key=s.key, event_time=s.event_time, resource_attributes=s.resource_attributes,  # type: ignore[arg-type]
                        span_attributes=s.span_attributes, require_service=s.require_service,
                        max_skew_ms=duration_ms(s.max_skew, "source", "max_skew"), hex_ids=s.hex_ids)  # fmt: skip


def _otlp_source(s: OtlpSourceSpec, ctx: BuildContext) -> Any:
    decoder = _otlp_decoder(s)
    if s.url is not None:
        from vigil.io.kafka_source import KafkaSource

        return KafkaSource.from_url(
            s.url, None, group_id=s.group_id or f"vigil-{ctx.pipeline}", dead_letter_topic=s.dead_letter_topic,
            stop_at_end=ctx.overrides.get("stop_at_end", s.stop_at_end), decoder=decoder,
            max_record_bytes=s.max_body_bytes,
        )  # fmt: skip
    from vigil.io.otlp.receiver import OtlpHttpReceiver, OtlpHttpSource

    assert s.listen is not None
    host, _, port = s.listen.rpartition(":")
    kw: dict[str, Any] = {"traces" if s.signal == "traces" else "metrics": decoder}
    rx = OtlpHttpReceiver(host, int(port), signal=s.signal, max_body_bytes=s.max_body_bytes, name=f"otlp:{s.listen}",
                          **kw)  # fmt: skip
    return OtlpHttpSource(rx, stop_after=s.stop_after)


def _otlp_columns(s: OtlpSourceSpec) -> Any:
    from vigil.io.otlp.columns import METRIC_EXTRA, SPAN_EXTRA
    from vigil.io.schema import Schema

    if s.signal == "metrics":
        return Schema("key", "time", fields=("value",), extra=tuple(METRIC_EXTRA))
    more = [*s.resource_attributes, *s.span_attributes] + (["trace_id_hex", "span_id_hex"] if s.hex_ids else [])
    extra = tuple(dict.fromkeys([*SPAN_EXTRA, *more]))
    return Schema("key", "time", fields=("duration_ms", "error"), extra=extra)


def _file_source(s: FileSourceSpec, ctx: BuildContext) -> Any:
    from vigil.io import files

    assert s.schema_ is not None
    cls = files.JsonlFileSource if s.kind == "jsonl" else files.CsvFileSource
    return cls(ctx.path(s.path), schema_of(s.schema_), pace=s.pace, speed=s.speed, max_record_bytes=s.max_record_bytes)


def _stdin_source(s: StdinSourceSpec, ctx: BuildContext) -> Any:
    from vigil.io.files import StdinSource

    assert s.schema_ is not None
    return StdinSource(schema_of(s.schema_), format=s.format, max_record_bytes=s.max_record_bytes)


def _metrics_source(s: MetricsFileSourceSpec, ctx: BuildContext) -> Any:
    from vigil.io.metrics import InfluxLineFileSource, TelegrafJsonFileSource

    cls = InfluxLineFileSource if s.kind == "influx" else TelegrafJsonFileSource
    return cls(ctx.path(s.path), pace=s.pace, speed=s.speed, max_record_bytes=s.max_record_bytes)


def _transactions_source(s: TransactionsSourceSpec, ctx: BuildContext) -> Any:
    from vigil.io.generators.transactions import TransactionSpec, transaction_source

    spec = TransactionSpec(events=s.events, users=s.users, seed=s.seed)
    return transaction_source(spec, rate=ctx.overrides.get("rate", s.rate))


def _schema_columns(s: Any) -> Any:
    """The records' shape: the source's ``schema``, or that of metric samples (host, time, value, metric)."""
    schema = getattr(s, "schema_", None)
    if schema is not None:
        return schema_of(schema)
    from vigil.io.metrics import METRIC_SCHEMA

    return METRIC_SCHEMA


def _transaction_columns(s: TransactionsSourceSpec) -> Any:
    from vigil.io.schema import Schema

    return Schema("user", "ts", fields=("amount",),
                  extra=("txn_id", "merchant", "category", "country", "label", "pattern", "episode"))  # fmt: skip


register_source(SourceKind("kafka", KafkaSourceSpec, _kafka_source, _schema_columns))
register_source(SourceKind("jsonl", FileSourceSpec, _file_source, _schema_columns))
register_source(SourceKind("csv", FileSourceSpec, _file_source, _schema_columns))
register_source(SourceKind("stdin", StdinSourceSpec, _stdin_source, _schema_columns))
register_source(SourceKind("influx", MetricsFileSourceSpec, _metrics_source, _schema_columns))
register_source(SourceKind("telegraf", MetricsFileSourceSpec, _metrics_source, _schema_columns))
register_source(SourceKind("otlp", OtlpSourceSpec, _otlp_source, _otlp_columns))
register_source(SourceKind("transactions", TransactionsSourceSpec, _transactions_source, _transaction_columns))


# -- sinks -----------------------------------------------------------------------------------------------


class ConsoleSinkSpec(Model):
    """Alerts printed to the terminal."""

    kind: Literal["console"]


class FileSinkSpec(Model):
    """A JSON-lines file, or a SQLite alert table."""

    kind: Literal["jsonl", "sqlite"]
    path: str


class KafkaSinkSpec(Model):
    """A Kafka topic (``kafka://HOST:PORT/TOPIC``); every Kafka output of a pipeline shares one producer."""

    kind: Literal["kafka"]
    url: str


def _console_sink(s: ConsoleSinkSpec, ctx: BuildContext) -> Any:
    from vigil.io.sinks import ConsoleAlertSink

    return ConsoleAlertSink()


def _file_sink(s: FileSinkSpec, ctx: BuildContext) -> Any:
    """The file is made when the run first uses it: loading the pipeline (or failing to start) makes none."""
    from vigil.io.sinks import JsonlSink, OnFirstUse, SqliteAlertSink

    return OnFirstUse(JsonlSink if s.kind == "jsonl" else SqliteAlertSink, ctx.path(s.path))


def _kafka_sink(s: KafkaSinkSpec, ctx: BuildContext) -> Any:
    """Kafka sinks of one pipeline share one producer, so exactly-once commits them in one transaction."""
    from vigil.io.kafka import parse_kafka_url
    from vigil.io.kafka_sink import KafkaAlertSink, KafkaTopicView

    bootstrap, topic = parse_kafka_url(s.url)
    producers: dict[str, Any] = ctx.shared.setdefault("kafka_producers", {})
    parent = producers.get(bootstrap)
    if parent is None:
        tx = f"vigil-{ctx.pipeline}-{topic}" if ctx.delivery == "exactly-once" else None
        parent = producers[bootstrap] = KafkaAlertSink(bootstrap, topic, transactional_id=tx)
        return parent
    return parent if parent.topic == topic else KafkaTopicView(parent, topic)


register_sink(SinkKind("console", ConsoleSinkSpec, _console_sink))
register_sink(SinkKind("jsonl", FileSinkSpec, _file_sink))
register_sink(SinkKind("sqlite", FileSinkSpec, _file_sink))
register_sink(SinkKind("kafka", KafkaSinkSpec, _kafka_sink))


# -- the detector step -----------------------------------------------------------------------------------


class DetectorStepSpec(Model):
    """``detector:`` a registered detector kind with its ``params``; fired rows become alerts of ``severity``."""

    name: str
    detector: str
    params: dict[str, Any] = Field(default_factory=dict)
    severity: Literal["critical", "warning", "info"] = "warning"


def detector_class(kind: str, step: str) -> type[Any]:
    """The registered detector class of ``kind``; an unknown one fails naming the step."""
    import vigil.models.serving  # noqa: F401  (registers `registry_model`, the model served from the registry)
    from vigil.detectors import registry

    kinds = registry()
    cls = kinds.get(kind)
    if cls is None:
        import difflib

        close = difflib.get_close_matches(kind, list(kinds), n=1)
        raise ConfigError("is not a known detector", step=step, field="detector", value=kind,
                          hint=f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(kinds))}")
    return cls


def construct(cls: type[Any], params: dict[str, Any], step: str) -> Any:
    """Build a detector from YAML params; unknown params and bad values fail naming the step and field."""
    known = [n for n in inspect.signature(cls.__init__).parameters if n != "self"]
    for name in params:
        if name not in known:
            raise ConfigError(f"is not a parameter of `{cls.kind}`", step=step, field=f"params.{name}",
                              value=params[name], hint=close_hint(name, known, "parameters"))  # fmt: skip
    check_param_types(cls, params, step=step)
    try:
        return cls(**params)
    except (ValueError, TypeError) as exc:
        raise constructor_error(exc, params, step=step) from None


def _build_detector(s: DetectorStepSpec, ctx: BuildContext) -> DetectStep:
    return DetectStep(s.name, construct(detector_class(s.detector, s.name), s.params, s.name), s.severity)


def _defaults(cls: type[Any]) -> dict[str, Any]:
    sig = inspect.signature(cls.__init__)
    return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _detector_live(old: DetectorStepSpec, new: DetectorStepSpec, ctx: BuildContext, running: Any) -> LiveChange:
    """A detector's ``live_params`` (threshold, warm-up) and the step's severity change live; the rest can't."""
    if old.detector != new.detector:
        return LiveChange(problems=[f"step `{new.name}`: its detector can't change on a running pipeline; restart "
                                    "with the new file"])  # fmt: skip
    cls = detector_class(new.detector, new.name)
    defaults = _defaults(cls)
    pa, pb = {**defaults, **old.params}, {**defaults, **new.params}
    changed = sorted(k for k in set(pa) | set(pb) if pa.get(k) != pb.get(k))
    live: frozenset[str] = getattr(cls, "live_params", frozenset())
    problems = [f"step `{new.name}`: `params.{k}` can't change on a running pipeline (it shapes the state); got "
                f"{pb.get(k)!r} (was {pa.get(k)!r})" for k in changed if k not in live]  # fmt: skip
    if problems:
        return LiveChange(problems=problems)
    changes = [f"step `{new.name}`: severity {old.severity} -> {new.severity}"] if old.severity != new.severity else []
    changes += [f"step `{new.name}`: params.{k} {pa.get(k)!r} -> {pb.get(k)!r}" for k in changed]
    return LiveChange(changes=changes, step=_build_detector(new, ctx) if changes else None)


def _detector_reads(s: DetectorStepSpec) -> list[str]:
    return list(construct(detector_class(s.detector, s.name), s.params, s.name).fields)


register_step(StepKind("detector", DetectorStepSpec, _build_detector, live=_detector_live, reads=_detector_reads,
                       summary="scoring"))  # fmt: skip


# -- the window step -------------------------------------------------------------------------------------


class WindowSpec(Model):
    """A window assigner: tumbling (``size``), sliding (``size``, ``slide``) or session (``gap``)."""

    kind: Literal["tumbling", "sliding", "session"]
    size: Duration | None = None
    slide: Duration | None = None
    gap: Duration | None = None


class WindowStepSpec(Model):
    """``window:`` aggregate ``field`` per key and event-time window (count, sum, mean, std, min, max) into ``to``."""

    name: str
    window: WindowSpec
    field: str
    to: SinkSpec
    allowed_lateness: Duration = 0
    emit: Literal["final", "current"] = "final"


def _assigner(w: WindowSpec, step: str) -> Any:
    from vigil.eventtime import SessionWindows, SlidingWindows, TumblingWindows

    if w.kind == "tumbling":
        return TumblingWindows(duration_ms(w.size, step, "window.size"))
    if w.kind == "sliding":
        return SlidingWindows(duration_ms(w.size, step, "window.size"), duration_ms(w.slide, step, "window.slide"))
    return SessionWindows(duration_ms(w.gap, step, "window.gap"))


def _build_window(s: WindowStepSpec, ctx: BuildContext) -> WindowStep:
    from vigil.dataflow.pipeline import duration_arg

    return WindowStep(s.name, _assigner(s.window, s.name), s.field, ctx.build_sink(s.to),
                      duration_arg(s.allowed_lateness, s.name, "allowed_lateness"), s.emit)  # fmt: skip


def _window_live(old: WindowStepSpec, new: WindowStepSpec, ctx: BuildContext, running: Any) -> LiveChange:
    if old.model_dump() == new.model_dump():
        return LiveChange()
    return LiveChange(problems=[f"step `{new.name}`: its window can't change on a running pipeline; restart with "
                                "the new file"])  # fmt: skip


register_step(StepKind("window", WindowStepSpec, _build_window, live=_window_live, reads=lambda s: [s.field],
                       summary="aggregation"))  # fmt: skip

"""A pipeline file as a Flink job: what it reads, what it writes, and the steps it runs.

The file is the one the embedded runtime runs (read with :mod:`vigil.config`); the Flink runtime needs
more of it spelled out: the Kafka source as a table (topic, group, format, where the key and the event time
are), and every output as a Kafka topic — alerts, late events, dead letters, the steps' own outputs — since
a Flink job has no local files. Outputs that aren't Kafka topics are left out and listed in
:attr:`JobSpec.notices` (the console, SQLite and JSON-lines alert sinks: run the alert manager beside
Flink, consuming the alerts topic, for those).

Steps are built from the file exactly as the embedded runtime builds them, except that sinks are not
opened: each step's sink is a :class:`SinkRef` naming its spec (a Kafka step output becomes a topic of the
job). Nothing here imports pyflink.

Examples:
    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "p.yaml")
    >>> _ = open(path, "w").write('''
    ... name: fraud
    ... source: {kind: kafka, url: kafka://127.0.0.1:9092/txns, dead_letter_topic: txns-dead,
    ...          schema: {key: user, time: ts, fields: [amount], extra: [txn_id]}}
    ... event_time: {max_delay: 2s, idle_timeout: 60s}
    ... keys: {ttl: 6h}
    ... event_ids: txn_id
    ... delivery: exactly-once
    ... steps:
    ...   - {name: velocity, detector: velocity, params: {window: 60s, max_count: 5}}
    ...   - {name: spend, window: {kind: tumbling, size: 1m}, field: amount, to: {kind: kafka, url: kafka://127.0.0.1:9092/spend}}
    ... alerts: [{kind: kafka, url: kafka://127.0.0.1:9092/alerts}, {kind: console}]
    ... ''')
    >>> job = load_job(path)
    >>> job.source.topic, job.source.key, job.event_time.max_delay_ms, job.key_ttl_ms
    ('txns', 'user', 2000, 21600000)
    >>> [(o.role, o.topic) for o in job.outputs]
    [('alerts', 'alerts'), ('late', 'txns-late'), ('dead_letters', 'txns-dead'), ('step:spend', 'spend')]
    >>> job.notices
    ['alert sink `console` is not a Kafka topic: not written by the Flink job (consume the alerts topic instead)']
    >>> [s.name for s in build_steps(job)]
    ['velocity', 'spend']
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal

from vigil.config.registry import step_kind_of
from vigil.config.spec import PipelineSpec, parse_sink, parse_spec, resolve_path
from vigil.dataflow.pipeline import EventTime, Pipeline
from vigil.errors import ConfigError
from vigil.io.schema import MAX_TS_MS_DEFAULT, MIN_TS_MS_DEFAULT


@dataclass(frozen=True)
class SinkRef:
    """A sink a step writes to, not opened: its validated spec (Kafka ones become topics of the job)."""

    spec: Any

    @property
    def kind(self) -> str:
        """The sink's kind (``kafka``, ``jsonl``, ...)."""
        return str(self.spec.kind)

    def write_batch(self, items: list[Any]) -> None:
        """Never called: the Flink runtime routes a step's outputs itself."""
        raise RuntimeError("a SinkRef is not written to; the Flink runtime routes outputs by topic")

    def flush(self) -> None:
        """Nothing to flush."""

    def close(self) -> None:
        """Nothing to close."""


class _RefContext:
    """The build context of a pipeline file on Flink: like the embedded one, but sinks are :class:`SinkRef`."""

    def __init__(self, base_dir: str, pipeline: str, delivery: str) -> None:
        self.base_dir, self.pipeline, self.delivery = base_dir, pipeline, delivery
        self.overrides: dict[str, Any] = {}
        self.shared: dict[str, Any] = {}

    def path(self, path: str) -> str:
        return resolve_path(path, self.base_dir)

    def build_sink(self, spec: Any) -> SinkRef:
        return SinkRef(spec)

    def sink(self, raw: Any, *, step: str, field: str) -> SinkRef:
        return SinkRef(parse_sink(raw, step=step, field=field))


@dataclass(frozen=True)
class KafkaSourceSpec:
    """The Kafka source of the job: where records are and how to read their key and event time."""

    bootstrap: str
    topic: str
    group_id: str
    format: Literal["json", "influx", "telegraf"]
    key: str  # the JSON field (json), or the tag (influx) holding the key
    time: str  # the JSON field holding the event time, or "@timestamp" (the Kafka record timestamp)
    time_unit: str = "ms"
    min_ts_ms: int = MIN_TS_MS_DEFAULT
    max_ts_ms: int = MAX_TS_MS_DEFAULT
    dead_letter_topic: str | None = None
    stop_at_end: bool = False


@dataclass(frozen=True)
class Output:
    """One Kafka topic the job writes: its role (``alerts``, ``late``, ``dead_letters``, ``step:<name>``)."""

    role: str
    bootstrap: str
    topic: str


@dataclass
class JobSpec:
    """Everything the Flink job needs from a pipeline file (see the module docstring)."""

    name: str
    yaml_text: str
    base_dir: str
    origin: str
    spec: PipelineSpec
    source: KafkaSourceSpec
    event_time: EventTime
    key_ttl_ms: int | None
    id_field: str | None
    delivery: str
    checkpoint_interval_ms: int | None
    outputs: list[Output] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)

    def output(self, role: str) -> Output | None:
        """The first output with this role."""
        return next((o for o in self.outputs if o.role == role), None)

    def outputs_of(self, role: str) -> list[Output]:
        """Every output with this role (alerts may go to several topics)."""
        return [o for o in self.outputs if o.role == role]


def load_job(path: str, *, late_topic: str | None = None) -> JobSpec:
    """Read a pipeline file as a Flink job (raises :class:`ConfigError` naming the section and field)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return job_from_text(text, base_dir=os.path.dirname(os.path.abspath(path)), origin=path, late_topic=late_topic)


def job_from_text(text: str, *, base_dir: str, origin: str = "<pipeline>", late_topic: str | None = None) -> JobSpec:
    """:func:`load_job` from the file's text (what the job carries to the TaskManagers)."""
    import yaml

    from vigil.io.kafka import parse_kafka_url

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"is not valid YAML: {exc}", field=origin) from None
    spec = parse_spec(raw, origin=origin)
    src = spec.source
    if src.kind != "kafka":
        raise ConfigError("must be a Kafka topic to run on Flink", section="source", field="kind", value=src.kind,
                          hint="use `kind: kafka` with `url: kafka://HOST:PORT/TOPIC`")  # fmt: skip
    bootstrap, topic = parse_kafka_url(src.url)
    if src.metrics is not None:
        source = KafkaSourceSpec(bootstrap, topic, src.group_id or f"vigil-{spec.name}",
                                 "influx" if src.metrics == "influx" else "telegraf", "host", "time",
                                 dead_letter_topic=src.dead_letter_topic, stop_at_end=src.stop_at_end)  # fmt: skip
    else:
        s = src.schema_
        assert s is not None
        source = KafkaSourceSpec(bootstrap, topic, src.group_id or f"vigil-{spec.name}", "json", s.key, s.time,
                                 s.time_unit, dead_letter_topic=src.dead_letter_topic,
                                 stop_at_end=src.stop_at_end)  # fmt: skip
    p = Pipeline(spec.name)
    et = spec.event_time
    p.watermark(et.max_delay, idle_timeout=et.idle_timeout, allowed_lateness=et.allowed_lateness,
                score_late=et.score_late)  # fmt: skip
    if et.mode == "processing":
        raise ConfigError("can't be `processing` on Flink: the Flink runtime works in event time", section="event_time",
                          field="mode", value=et.mode)  # fmt: skip
    p.key_ttl(spec.keys.ttl)
    interval = None
    if spec.checkpoints is not None:
        p.checkpoints(spec.checkpoints.dir, interval=spec.checkpoints.interval, keep=spec.checkpoints.keep)
        interval = p.checkpoint_interval_ms
    job = JobSpec(spec.name, text, base_dir, origin, spec, source, p.event_time, p.key_ttl_ms, spec.event_ids,
                  spec.delivery, interval)  # fmt: skip
    for sink in spec.alerts:
        _route(job, "alerts", sink, "alert sink", "consume the alerts topic instead")
    if not job.outputs_of("alerts"):
        raise ConfigError("has no Kafka topic: the Flink job writes alerts to Kafka only", section="alerts",
                          hint="add `- {kind: kafka, url: kafka://HOST:PORT/alerts}`")  # fmt: skip
    if spec.late is not None:
        _route(job, "late", spec.late, "late sink", "late events go to the late topic")
    if job.output("late") is None:
        job.outputs.append(Output("late", bootstrap, late_topic or f"{topic}-late"))
    if source.dead_letter_topic is not None:
        job.outputs.append(Output("dead_letters", bootstrap, source.dead_letter_topic))
    elif spec.dead_letters is not None:
        _route(job, "dead_letters", spec.dead_letters, "dead-letter sink", "set the source's `dead_letter_topic`")
    if job.output("dead_letters") is None:
        job.notices.append("no dead-letter topic: undecodable records are counted and dropped (set the source's "
                           "`dead_letter_topic`)")  # fmt: skip
    if spec.scores is not None:
        job.notices.append("`scores` is not written by the Flink job (one record per event and step)")
    if spec.alerting is not None:
        job.notices.append("`alerting` (the alert manager) does not run inside the Flink job: run it beside Flink, "
                           "consuming the alerts topic")  # fmt: skip
    for step in build_steps(job):
        for sink in step.sinks():
            if isinstance(sink, SinkRef):
                _route(job, f"step:{step.name}", sink.spec, f"step `{step.name}`'s sink", "its outputs are dropped")
    return job


def _route(job: JobSpec, role: str, sink: Any, what: str, instead: str) -> None:
    from vigil.io.kafka import parse_kafka_url

    if sink.kind == "kafka":
        bootstrap, topic = parse_kafka_url(sink.url)
        job.outputs.append(Output(role, bootstrap, topic))
    else:
        job.notices.append(f"{what} `{sink.kind}` is not a Kafka topic: not written by the Flink job ({instead})")


def with_bootstrap(job: JobSpec, bootstrap: str) -> JobSpec:
    """The job with every topic (source and outputs) on the brokers at ``bootstrap`` instead of the file's."""
    from dataclasses import replace

    job.source = replace(job.source, bootstrap=bootstrap)
    job.outputs = [replace(o, bootstrap=bootstrap) for o in job.outputs]
    return job


def build_steps(job: JobSpec) -> list[Any]:
    """The pipeline's steps, built from the file as the embedded runtime builds them (sinks as :class:`SinkRef`)."""
    ctx = _RefContext(job.base_dir, job.name, job.delivery)
    names: set[str] = set()
    steps = []
    for st in job.spec.steps:
        step = step_kind_of(st).build(st, ctx)
        if step.name in names:
            raise ConfigError("is used by another step; step names must be unique", step=step.name, field="name",
                              value=step.name)  # fmt: skip
        names.add(step.name)
        steps.append(step)
    return steps


__all__ = ["JobSpec", "KafkaSourceSpec", "Output", "SinkRef", "build_steps", "job_from_text", "load_job",
           "with_bootstrap"]

"""YAML pipeline specs: validated with pydantic at load, built into a :class:`~vigil.dataflow.pipeline.Pipeline`.

Everything is checked when the file is loaded, never mid-stream. A bad file fails with a
:class:`~vigil.errors.ConfigError` that names the step (or section), the field and the offending value,
and gives a hint::

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

This module knows the pipeline's own settings only. Source, sink and step *kinds* are looked up in
:mod:`vigil.config.registry`: the built-ins come from :mod:`vigil.config.kinds`, an app's from its folder.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, create_model

from vigil.config.registry import sink_kind, sink_kinds, source_kind, source_kinds, step_kind_of, step_kinds
from vigil.errors import ConfigError
from vigil.types import parse_duration_ms


class Model(BaseModel):
    """Base of every spec model: unknown fields are errors (with a did-you-mean hint)."""

    model_config = ConfigDict(extra="forbid")


Duration = str | int

#: the sections of a pipeline file (errors in them name the section, not a step)
SECTIONS = ("source", "event_time", "keys", "event_ids", "batching", "checkpoints", "delivery", "alerts",
            "scores", "late", "dead_letters", "alerting", "name")  # fmt: skip


class SchemaSpec(Model):
    """What the source's records look like (see :class:`vigil.io.schema.Schema`)."""

    key: str
    time: str
    time_unit: Literal["ms", "s", "iso8601"] = "ms"
    fields: list[str] = Field(default_factory=list)
    extra: list[str] = Field(default_factory=list)
    optional: list[str] = Field(default_factory=list)


class EventTimeSpec(Model):
    """Watermark settings: bounded out-of-orderness, idleness, allowed lateness; or processing time."""

    mode: Literal["event", "processing"] = "event"
    max_delay: Duration = "2s"
    idle_timeout: Duration | None = "5s"
    allowed_lateness: Duration = 0
    score_late: bool = True  # late events are scored (not learned); one that fires is an alert "raised late"


class KeysSpec(Model):
    """Keyed state: idle keys expire after ``ttl`` of event time."""

    ttl: Duration | None = None


class CheckpointSpec(Model):
    """Where and how often state and source positions are checkpointed."""

    dir: str
    interval: Duration = "1s"
    keep: int = 3


class BatchingSpec(Model):
    """Micro-batch bounds: rows, delay, and queued batches (backpressure)."""

    max_rows: int = 65_536
    max_delay: Duration = "5ms"
    queue_batches: int = 4


# -- kinds, looked up in the registry -------------------------------------------------------------------


def _kind_error(what: str, known: list[str], raw: Any) -> None:
    """Validate ``{kind: ...}`` against the known kinds, so the error is pydantic's, located at ``kind``."""
    model = create_model(f"{what.title()}Kind", __config__=ConfigDict(extra="ignore"),
                         kind=(Literal[tuple(sorted(known))], ...))  # type: ignore[call-overload,arg-type]  # fmt: skip
    model.model_validate(raw)


def _validate_source(raw: Any) -> Any:
    if isinstance(raw, BaseModel):
        return raw
    if not isinstance(raw, dict):
        raise ValueError("a source is a mapping with `kind` (and its settings)")
    kinds = source_kinds()
    if raw.get("kind") not in kinds:
        _kind_error("source", list(kinds), raw)
    return kinds[raw["kind"]].spec.model_validate(raw)


def _validate_sink(raw: Any) -> Any:
    if isinstance(raw, BaseModel):
        return raw
    if not isinstance(raw, dict):
        raise ValueError("a sink is a mapping with `kind` (and its settings)")
    kinds = sink_kinds()
    if raw.get("kind") not in kinds:
        _kind_error("sink", list(kinds), raw)
    return kinds[raw["kind"]].spec.model_validate(raw)


def _validate_step(raw: Any) -> Any:
    if isinstance(raw, BaseModel):
        return raw
    kinds = step_kinds()
    tags = [t for t in kinds if isinstance(raw, dict) and t in raw]
    if len(tags) != 1:
        known = ", ".join(f"`{t}` ({k.summary})" if k.summary else f"`{t}`" for t, k in kinds.items())
        raise ValueError(f"a step has a `name` and exactly one of {known}")
    return kinds[tags[0]].spec.model_validate(raw)


SourceSpec = Annotated[Any, BeforeValidator(_validate_source)]
"""A source mapping, validated by its kind's model."""
SinkSpec = Annotated[Any, BeforeValidator(_validate_sink)]
"""A sink mapping, validated by its kind's model."""
StepSpec = Annotated[Any, BeforeValidator(_validate_step)]
"""A step mapping, validated by the model of the step kind its key names."""


class PipelineSpec(Model):
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
    alerts: list[SinkSpec] = Field(default_factory=lambda: [{"kind": "console"}], validate_default=True)
    scores: SinkSpec | None = None
    late: SinkSpec | None = None
    dead_letters: SinkSpec | None = None
    alerting: dict[str, Any] | None = None  # the alert manager's policy (vigil.alerting.policy), validated at build


# -- loading -------------------------------------------------------------------------------------


def load_spec(path: str) -> PipelineSpec:
    """Read and validate a YAML pipeline file (structure only; see :func:`load_pipeline`)."""
    from vigil.yamlfile import read_yaml

    return parse_spec(read_yaml(path, "pipeline file"), origin=path)


def parse_spec(raw: Any, origin: str = "<config>") -> PipelineSpec:
    """Validate a parsed YAML document, turning pydantic's errors into one readable :class:`ConfigError`."""
    if not isinstance(raw, dict):
        raise ConfigError("must be a mapping with `source` and `steps`", field=origin, value=type(raw).__name__)
    try:
        return PipelineSpec.model_validate(raw)
    except ValidationError as exc:
        raise _config_error(exc, raw, origin) from None


def parse_sink(raw: Any, *, step: str, field: str) -> Any:
    """Validate a sink mapping a step writes to (``to:``); errors name the step and field."""
    try:
        return _validate_sink(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        sub = ".".join(str(p) for p in err["loc"])
        raise ConfigError(_msg(err), step=step, field=f"{field}.{sub}" if sub else field,
                          value=_shown(err), hint=_hint(err, None)) from None  # fmt: skip
    except ValueError as exc:
        raise ConfigError(str(exc), step=step, field=field, value=raw) from None


def _config_error(exc: ValidationError, raw: dict[str, Any], origin: str) -> ConfigError:
    err = exc.errors()[0]
    loc = list(err["loc"])
    step = section = None
    if len(loc) >= 2 and loc[0] == "steps" and isinstance(loc[1], int):
        steps = raw.get("steps") or []
        item = steps[loc[1]] if loc[1] < len(steps) else None
        step = str(item.get("name", f"#{loc[1] + 1}")) if isinstance(item, dict) else f"#{loc[1] + 1}"
        loc = loc[2:]
    elif loc and loc[0] in SECTIONS:
        section = str(loc[0])
        loc = loc[1:]
        if section in ("alerts",) and loc and isinstance(loc[0], int):
            section, loc = f"alerts[{loc[0]}]", loc[1:]
    field = ".".join(str(p) for p in loc) or None
    return ConfigError(f"{_msg(err)} (in {origin})", step=step, section=section, field=field, value=_shown(err),
                       hint=_hint(err, raw))  # fmt: skip


def _msg(err: Any) -> str:
    return str(err["msg"]).removeprefix("Value error, ")


def _shown(err: Any) -> Any:
    value = err.get("input")
    return None if err["type"] == "missing" or isinstance(value, dict) else value


def _hint(err: Any, raw: Any) -> str | None:
    if err["type"] == "extra_forbidden":
        name = str(err["loc"][-1])
        known = _fields_at(err["loc"][:-1], raw)
        close = difflib.get_close_matches(name, known, n=1)
        return f"did you mean `{close[0]}`?" if close else (f"known fields: {', '.join(known)}" if known else None)
    if err["type"] == "literal_error":
        return "allowed: " + str(err.get("ctx", {}).get("expected", ""))
    if err["type"] == "missing":
        return "this field is required"
    return None


def _fields_at(loc: tuple[Any, ...], raw: Any) -> list[str]:
    """The field names allowed at ``loc`` of the document (for did-you-mean hints)."""
    model: Any = PipelineSpec
    node: Any = raw
    parts = list(loc)
    while parts and model is not None:
        part = parts.pop(0)
        node = _child(node, part)
        if part in ("steps", "alerts") and model is PipelineSpec:
            if parts and isinstance(parts[0], int):
                node = _child(node, parts.pop(0))
            model = _step_model(node) if part == "steps" else _kind_model(sink_kinds(), node)
        elif part == "source" and model is PipelineSpec:
            model = _kind_model(source_kinds(), node)
        elif part in ("scores", "late", "dead_letters", "to"):
            model = _kind_model(sink_kinds(), node)
        else:
            field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
            model = _model_of(field.annotation) if field is not None else None
    if model is None or not hasattr(model, "model_fields"):
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def _child(node: Any, part: Any) -> Any:
    if isinstance(node, dict):
        return node.get(part)
    if isinstance(node, list) and isinstance(part, int) and part < len(node):
        return node[part]
    return None


def _kind_model(kinds: dict[str, Any], node: Any) -> Any:
    kind = kinds.get(str(node.get("kind"))) if isinstance(node, dict) else None
    return kind.spec if kind is not None else None


def _step_model(node: Any) -> Any:
    tags = [t for t in step_kinds() if isinstance(node, dict) and t in node]
    return step_kinds()[tags[0]].spec if len(tags) == 1 else None


def _model_of(annotation: Any) -> Any:
    for t in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(t, type) and issubclass(t, BaseModel):
            return t
    return None


# -- building ------------------------------------------------------------------------------------


class PipelineContext:
    """The :class:`~vigil.dataflow.kinds.BuildContext` of one pipeline file being built.

    Attributes:
        base_dir: the pipeline file's folder (relative paths resolve against it).
        pipeline: the pipeline's name.
        delivery: ``at-least-once`` or ``exactly-once`` (Kafka sinks share one transactional producer).
        overrides: run-time overrides (``stop_at_end``, ``rate``).
        shared: per-pipeline state kinds keep between builds (e.g. the Kafka producer all Kafka sinks share).
    """

    def __init__(self, base_dir: str = ".", pipeline: str = "pipeline", delivery: str = "at-least-once",
                 overrides: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.base_dir, self.pipeline, self.delivery = base_dir, pipeline, delivery
        self.overrides: dict[str, Any] = dict(overrides or {})
        self.shared: dict[str, Any] = {}

    def path(self, path: str) -> str:
        """``path`` resolved against the pipeline file's folder."""
        return resolve_path(path, self.base_dir)

    def build_sink(self, spec: Any) -> Any:
        """Build a validated sink spec."""
        return sink_kind(spec.kind).build(spec, self)

    def sink(self, raw: Any, *, step: str, field: str) -> Any:
        """Validate a sink mapping a step writes to (errors name the step and field), then build it."""
        return self.build_sink(parse_sink(raw, step=step, field=field))


def resolve_path(path: str, base_dir: str) -> str:
    """``path`` resolved against ``base_dir`` (absolute paths and ``-`` as they are)."""
    return path if os.path.isabs(path) or path == "-" else os.path.join(base_dir, path)


def load_pipeline(path: str, *, overrides: dict[str, Any] | None = None) -> Any:
    """Load a YAML file into a ready-to-run :class:`~vigil.dataflow.pipeline.Pipeline`; errors name step and field."""
    spec = load_spec(path)
    return build_pipeline(spec, base_dir=os.path.dirname(os.path.abspath(path)), overrides=overrides)


def build_pipeline(spec: PipelineSpec, *, base_dir: str = ".", overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate sources, steps and sinks of a validated spec."""
    from vigil.dataflow.pipeline import Pipeline

    check_fields(spec)  # before anything is built: a bad field touches no file
    ctx = PipelineContext(base_dir, spec.name, spec.delivery, overrides)
    p = Pipeline(spec.name)
    with located(section="source"):
        p.source(source_kind(spec.source.kind).build(spec.source, ctx))
    et = spec.event_time
    with located(section="event_time"):
        p.watermark(et.max_delay, idle_timeout=et.idle_timeout, allowed_lateness=et.allowed_lateness,
                    score_late=et.score_late)  # fmt: skip
    if et.mode == "processing":
        p.processing_time()
    b = spec.batching
    with located(section="batching"):
        p.micro_batches(b.max_rows, b.max_delay, b.queue_batches)
    with located(section="keys"):
        p.key_ttl(spec.keys.ttl)
    if spec.event_ids:
        p.event_ids(spec.event_ids)
    if spec.checkpoints is not None:
        c = spec.checkpoints
        with located(section="checkpoints"):
            p.checkpoints(ctx.path(c.dir), interval=c.interval, keep=c.keep)
    p.guarantee(spec.delivery)
    for st in spec.steps:
        with located(step=st.name):
            p.step(step_kind_of(st).build(st, ctx))
    for i, sink in enumerate(spec.alerts):
        with located(section=f"alerts[{i}]"):
            p.alerts_to(ctx.build_sink(sink))
    if spec.alerting is not None:
        with located(section="alerting"):
            p.alerts_to(managed_alerts(spec.alerting, p, store=spec.alerting.get("store"), base_dir=base_dir,
                                       base=feedback_base(spec, p)))  # fmt: skip
    if spec.scores:
        with located(section="scores"):
            p.scores_to(ctx.build_sink(spec.scores))
    if spec.late:
        with located(section="late"):
            p.late_to(ctx.build_sink(spec.late))
    if spec.dead_letters:
        with located(section="dead_letters"):
            p.dead_letters_to(ctx.build_sink(spec.dead_letters))
    p.validate()
    return p


@contextmanager
def located(*, section: str | None = None, step: str | None = None) -> Iterator[None]:
    """A :class:`ConfigError` raised inside names ``section`` (or ``step``) unless it already names one."""
    try:
        yield
    except ConfigError as exc:
        raise exc.within(section=section, step=step) from None


def source_columns(spec: PipelineSpec) -> Any:
    """The :class:`~vigil.io.schema.Schema` of the source's records, or ``None`` when its kind can't tell."""
    kind = source_kind(spec.source.kind)
    if kind.columns is None:
        return None
    try:
        return kind.columns(spec.source)
    except ConfigError as exc:  # e.g. a schema naming one field twice
        raise exc.within(section="source", prefix="schema") from None


def check_fields(spec: PipelineSpec) -> None:
    """Every field a step reads is a numeric field of the source, and ``event_ids`` one of its extra columns.

    Checked at load against the source's schema (or the fixed shape of its records, e.g. metric samples),
    with what each step kind declares it reads (``StepKind.reads``): a misspelled field fails here, naming the
    step, the field and the value, instead of in the middle of the run.
    """
    schema = source_columns(spec)
    if schema is None:
        return
    numeric, extra = list(schema.fields), list(schema.extra_columns)
    for st in spec.steps:
        kind = step_kind_of(st)
        for name in kind.reads(st) if kind.reads is not None else ():
            if name in numeric:
                continue
            where = _path_of(st.model_dump(by_alias=True), name) or "field"
            if name in extra:
                raise ConfigError("is a passthrough column of the source (`schema.extra`), not a numeric field",
                                  step=st.name, field=where, value=name,
                                  hint=f"list `{name}` in the source's `schema.fields`")  # fmt: skip
            if name in (schema.key, schema.time):
                raise ConfigError("is the source's key or time field, not a numeric field", step=st.name,
                                  field=where, value=name, hint=_fields_hint(name, numeric))  # fmt: skip
            raise ConfigError("is not a field of the source's records", step=st.name, field=where, value=name,
                              hint=_fields_hint(name, numeric))  # fmt: skip
    if spec.event_ids is not None and spec.event_ids not in extra:
        ids = spec.event_ids
        if ids in numeric or ids in (schema.key, schema.time):
            hint = f"event ids come from a passthrough column: list `{ids}` in the source's `schema.extra`"
        elif extra:
            hint = close_hint(ids, extra, "the source's extra columns")
        else:
            hint = f"the source has no extra columns: add `{ids}` to its `schema.extra`"
        raise ConfigError("is not an extra column of the source's records", field="event_ids", value=ids, hint=hint)


def _fields_hint(name: str, numeric: list[str]) -> str:
    if not numeric:
        return f"the source has no numeric fields: add `{name}` to its `schema.fields`"
    close = difflib.get_close_matches(name, numeric, n=1)
    known = ", ".join(f"`{f}`" for f in numeric)
    return f"did you mean `{close[0]}`?" if close else f"the source's numeric fields: {known}"


def _path_of(node: Any, value: str, prefix: str = "") -> str | None:
    """The dotted path of the first place ``value`` appears in a step's plain data (for error messages)."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "name":
                continue
            found = _path_of(v, value, f"{prefix}.{k}" if prefix else str(k))
            if found:
                return found
    elif isinstance(node, list):
        for i, v in enumerate(node):
            if v == value:
                return prefix
            found = _path_of(v, value, f"{prefix}[{i}]")
            if found:
                return found
    elif node == value:
        return prefix
    return None


def feedback_base(spec: PipelineSpec, pipeline: Any) -> dict[str, dict[str, float]]:
    """Base bars the feedback loop may raise per detector and feature, from every step kind that declares them."""
    base: dict[str, dict[str, float]] = {}
    for st, step in zip(spec.steps, pipeline.steps, strict=True):
        kind = step_kind_of(st)
        if kind.feedback_base is not None:
            for det, bars in kind.feedback_base(step).items():
                base.setdefault(det, {}).update(bars)
    return base


def managed_alerts(policy: dict[str, Any], pipeline: Any, *, store: str | os.PathLike[str] | None,
                   base_dir: str = ".", base: dict[str, dict[str, float]] | None = None) -> Any:  # fmt: skip
    """The pipeline's alert manager, with the operators' feedback loop unless ``feedback: false``."""
    from vigil.alerting.runtime import ManagedAlerts

    path = resolve_path(os.fspath(store), base_dir) if store else os.path.join("vigil-out", pipeline.name, "alerts.db")
    managed = ManagedAlerts(policy, pipeline=pipeline.name, store_path=path)
    feedback = policy.get("feedback", True)
    if feedback not in (None, False):
        from vigil.feedback.loop import FeedbackLoop

        managed.suppressor = FeedbackLoop(managed.store_path.parent / "feedback", base=base,
                                          learn_every=feedback)  # fmt: skip
    return managed


def duration_ms(value: Duration | None, step: str, field: str) -> int:
    """A positive duration in ms; errors name the step and field."""
    try:
        ms = value if isinstance(value, int) else parse_duration_ms(str(value))
    except ValueError:
        raise ConfigError("is not a duration", step=step, field=field, value=value,
                          hint="use e.g. '500ms', '2s', '1m'") from None  # fmt: skip
    if ms <= 0:
        raise ConfigError("must be > 0", step=step, field=field, value=value, hint="use e.g. '60s'")
    return ms


def close_hint(name: str, known: list[str], what: str = "known") -> str:
    """``did you mean `x`?``, or the list of what is known."""
    close = difflib.get_close_matches(name, known, n=1)
    return f"did you mean `{close[0]}`?" if close else f"{what}: {', '.join(known)}"


def schema_of(s: SchemaSpec) -> Any:
    """The :class:`~vigil.io.schema.Schema` of a schema spec."""
    from vigil.io.schema import Schema

    return Schema(s.key, s.time, s.time_unit, tuple(s.fields), tuple(s.extra), tuple(s.optional))

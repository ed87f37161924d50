r"""Server metrics as records: Influx line protocol and Telegraf JSON, from files or Kafka.

A fleet's collectors (Telegraf, collectd, node_exporter, ``vigil collect host``) each emit their own
set of metrics, so metric samples travel in a **long** layout, one row per (host, metric, value)
sample — :data:`METRIC_SCHEMA`:

- ``keys``: the host (the ``host`` tag by default);
- ``ts_ms``: the sample time;
- ``cols["value"]``: the sample value (float64, finite);
- ``extra["metric"]``: the metric name, ``measurement.field`` (``cpu.usage_user``), followed by the
  other tags when there are any, sorted by key: ``cpu.usage_user:cpu=cpu0``. Folding the tags in keeps
  per-CPU, per-disk and per-interface series apart (set ``fold_tags=False`` to drop them, and list
  fleet-wide tags such as ``dc`` in ``ignore_tags``).

The parsers are plain functions of a list of raw lines (:func:`parse_influx_lines`,
:func:`parse_telegraf_json`) and, for sources, decoder objects with the ``decode_indexed`` method that
the line readers (files, stdin) and the Kafka source call (:func:`metric_decoder`). One raw item may
hold several newline-separated lines (a Kafka message in Telegraf's batch format): all its rows and
dead letters then carry the item's position.

**Influx line protocol** (``measurement,tag=v field=1.2,n=3i 1700000000000000000``): tag keys and
values, field keys and measurement escape ``,``, `` `` and ``=`` with a backslash; integer (``3i``)
and unsigned (``3u``) fields become floats; string (``"..."``) and boolean fields are skipped, and a
line with no numeric field is a dead letter (``no_numeric_field``): counted, never silently gone. Timestamps are in
``precision`` units (``"ns"`` by default, as InfluxDB). A line without a timestamp is a dead letter
unless ``default_time_ms`` (an injected clock) stamps it. ``#`` starts a comment line.

**Telegraf JSON** (``data_format = "json"``): ``{"fields":{...},"name":"cpu","tags":{"host":"h1"},
"timestamp":1700000000}``, with timestamps in ``json_timestamp_units`` (``"1s"`` by default, as
Telegraf), one metric per line or a batch ``{"metrics":[...]}``.

Bad lines become dead letters with the reason; their position is the line number (files) or the
item's ``first_position + index``.

Examples:
    >>> recs = parse_influx_lines([
    ...     b"cpu,host=web1 usage_user=12.5,usage_system=3i 1700000000000000000",
    ...     b"mem,host=web1 used_percent=41.2,state=\"ok\" 1700000000000000000",
    ...     b"cpu,host=web1 usage_user=oops 1700000000000000000",
    ... ], source="demo", first_position=1)
    >>> list(zip(recs.keys, recs.extra["metric"], recs.cols["value"].tolist()))
    [('web1', 'cpu.usage_user', 12.5), ('web1', 'cpu.usage_system', 3.0), ('web1', 'mem.used_percent', 41.2)]
    >>> int(recs.ts_ms[0]), [(d.position, d.reason, d.message) for d in recs.dead]  # doctest: +NORMALIZE_WHITESPACE
    (1700000000000, [(3, 'wrong_type',
                      "field `usage_user` value 'oops' is not a number (1.5, 12i, 12u), a string or a boolean")])
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import msgspec
import numpy as np

from vigil.errors import ConfigError, SourceError
from vigil.io.base import DeadLetter, Records
from vigil.io.decode import raw_text, utf8_error
from vigil.io.files import CHUNK_BYTES, Pace, _FileReader, _FileSource
from vigil.io.lines import MAX_RECORD_BYTES
from vigil.io.schema import MAX_TS_MS_DEFAULT, MIN_TS_MS_DEFAULT, Schema

METRIC_SCHEMA = Schema("host", "time", fields=("value",), extra=("metric",))
"""The shape of metric samples: key = host, one ``value`` column, the ``metric`` name as an extra column."""

MetricFormat = Literal["influx", "json"]
_PRECISION_NS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_JSON_UNITS_MS = {"1ns": 1e-6, "1us": 1e-3, "1ms": 1.0, "1s": 1000.0}
_BOOLS = frozenset({"t", "T", "true", "True", "TRUE", "f", "F", "false", "False", "FALSE"})
_UNESCAPE = re.compile(r"\\([ ,=])")


class _Bad(Exception):
    """A line that can't be read: ``_Bad(message)`` or ``_Bad(message, code)`` (default ``invalid_line``)."""

    def __init__(self, message: str, code: str = "invalid_line") -> None:
        super().__init__(message)
        self.code = code


class _Rows:
    """Columns being built, plus dead letters; shared by both parsers."""

    def __init__(self, opts: _Options, source: str, first_position: int) -> None:
        self.opts, self.source, self.first_position = opts, source, first_position
        self.hosts: list[str] = []
        self.ts: list[int] = []
        self.values: list[float] = []
        self.metrics: list[str] = []
        self.lines: list[int] = []
        self.dead: list[DeadLetter] = []

    def add(self, index: int, measurement: str, tags: dict[str, str], fields: list[tuple[str, float]],
            ts_ms: int) -> None:
        o = self.opts
        host = tags.pop(o.host_tag, None) or o.default_host
        if host is None:
            raise _Bad(f"no `{o.host_tag}` tag (set default_host to accept untagged samples)", "missing_field")
        if not o.min_ts_ms <= ts_ms <= o.max_ts_ms:
            raise _Bad(f"time {ts_ms} ms is outside [{o.min_ts_ms}, {o.max_ts_ms}] (min_ts_ms, max_ts_ms); "
                       f"wrong precision / json_timestamp_units?", "absurd_timestamp")
        suffix = ""
        if o.fold_tags and tags:
            folded = sorted((k, v) for k, v in tags.items() if k not in o.ignore_tags)
            if folded:
                suffix = ":" + ",".join(f"{k}={v}" for k, v in folded)
        for name, value in fields:
            self.hosts.append(host)
            self.ts.append(ts_ms)
            self.values.append(value)
            self.metrics.append(f"{measurement}.{name}{suffix}")
            self.lines.append(index)

    def bad(self, index: int, code: str, message: str, raw: bytes | str) -> None:
        self.dead.append(DeadLetter(code, message, raw_text(raw), self.source, self.first_position + index))

    def records(self) -> tuple[Records, np.ndarray]:
        n = len(self.ts)
        keys = np.empty(n, object)
        keys[:] = self.hosts
        metric = np.empty(n, object)
        metric[:] = self.metrics
        recs = Records(
            keys,
            np.asarray(self.ts, np.int64).reshape(n),
            {"value": np.asarray(self.values, np.float64).reshape(n)},
            {"metric": metric},
            self.dead,
        )
        return recs, np.asarray(self.lines, np.int64).reshape(n)


class _Options:
    def __init__(
        self,
        host_tag: str,
        default_host: str | None,
        fold_tags: bool,
        ignore_tags: Sequence[str],
        default_time_ms: Callable[[], int] | None,
        min_ts_ms: int,
        max_ts_ms: int,
    ) -> None:
        if not isinstance(host_tag, str) or not host_tag:
            raise ConfigError("must be a non-empty tag name", field="host_tag", value=host_tag)
        if isinstance(ignore_tags, str):
            raise ConfigError("must be a list of tag names", field="ignore_tags", value=ignore_tags)
        self.host_tag, self.default_host, self.fold_tags = host_tag, default_host, fold_tags
        self.ignore_tags = frozenset(ignore_tags)
        self.default_time_ms = default_time_ms
        self.min_ts_ms, self.max_ts_ms = min_ts_ms, max_ts_ms


# -- Influx line protocol ------------------------------------------------------------------------


def _scan(s: str, sep: str, quotes: bool) -> list[str]:
    """Split ``s`` on ``sep`` not escaped by a backslash (nor, with ``quotes``, inside a quoted string)."""
    parts: list[str] = []
    start, i, n, in_q = 0, 0, len(s), False
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if quotes and c == '"':
            in_q = not in_q
        elif c == sep and not in_q:
            parts.append(s[start:i])
            start = i + 1
        i += 1
    if in_q:
        raise _Bad("unterminated string field value")
    parts.append(s[start:])
    return parts


def _pair(item: str, escaped: bool, what: str) -> tuple[str, str]:
    """``key=value`` split at the first unescaped ``=``; tag values are unescaped, field values kept raw."""
    if escaped:
        i, n = 0, len(item)
        while i < n and item[i] != "=":
            i += 2 if item[i] == "\\" else 1
        k, v = _UNESCAPE.sub(r"\1", item[:i]), item[i + 1 :]
        if what == "tag":
            v = _UNESCAPE.sub(r"\1", v)
    else:
        k, _, v = item.partition("=")
    if not k or not v:
        raise _Bad(f"{what} {item!r} is not key=value")
    return k, v


def _number(key: str, v: str) -> float | None:
    """A field value as a float; ``None`` for strings and booleans (skipped)."""
    if v[0] == '"':
        return None
    if v in _BOOLS:
        return None
    try:
        if "_" in v:
            raise ValueError
        x = float(int(v[:-1])) if v[-1] in "iu" else float(v)
    except (ValueError, OverflowError):
        raise _Bad(f"field `{key}` value {v!r} is not a number (1.5, 12i, 12u), a string or a boolean",
                   "wrong_type") from None
    if not math.isfinite(x):
        raise _Bad(f"field `{key}` value {v!r} is not finite", "not_finite")
    return x


def _influx_line(text: str, rows: _Rows, index: int, precision_ns: int) -> None:
    escaped = "\\" in text or '"' in text
    if escaped:
        head = _scan(text, " ", False)
        series = head[0]
        rest = [p for p in _scan(" ".join(head[1:]), " ", True) if p]
    else:
        parts = text.split()
        series, rest = parts[0], parts[1:]
    if not rest:
        raise _Bad("no field set (expected `measurement[,tag=v] field=1.2 [timestamp]`)")
    if len(rest) > 2:
        raise _Bad(f"expected `measurement[,tags] fields [timestamp]`; found {len(rest) + 1} space-separated parts")
    tag_items = _scan(series, ",", False) if escaped else series.split(",")
    measurement = _UNESCAPE.sub(r"\1", tag_items[0]) if escaped else tag_items[0]
    if not measurement:
        raise _Bad("empty measurement name")
    tags = dict(_pair(t, escaped, "tag") for t in tag_items[1:])
    fields: list[tuple[str, float]] = []
    skipped: list[str] = []
    for item in _scan(rest[0], ",", True) if escaped else rest[0].split(","):
        k, v = _pair(item, escaped, "field")
        x = _number(k, v)
        if x is not None:
            fields.append((k, x))
        else:
            skipped.append(k)
    if len(rest) == 2:
        stamp = rest[1]
        if not stamp.lstrip("-").isdigit():
            raise _Bad(f"timestamp {stamp!r} is not an integer", "invalid_timestamp")
        ts_ms = int(stamp) * precision_ns // 1_000_000
    elif rows.opts.default_time_ms is not None:
        ts_ms = int(rows.opts.default_time_ms())
    else:
        raise _Bad("no timestamp (pass default_time_ms to stamp samples with their arrival time)", "missing_field")
    if not fields:
        raise _Bad(f"no numeric field (only text or booleans: {', '.join(f'`{k}`' for k in skipped)}): nothing "
                   "to score", "no_numeric_field")  # fmt: skip
    rows.add(index, measurement, tags, fields, ts_ms)


class InfluxDecoder:
    """Decodes Influx line protocol into metric :class:`Records`; see the module docstring.

    Args:
        precision: unit of the timestamps: ``"ns"`` (default), ``"us"``, ``"ms"`` or ``"s"``.
        host_tag: the tag holding the host (the key).
        default_host: host of lines without ``host_tag`` (``None``: such lines are dead letters).
        fold_tags: append the other tags to the metric name (``cpu.usage_user:cpu=cpu0``).
        ignore_tags: tags never folded into the name (fleet-wide ones such as ``dc``).
        default_time_ms: clock stamping lines that have no timestamp (``None``: dead letters).
        min_ts_ms, max_ts_ms: sample times outside this range are dead letters (wrong precision).
    """

    def __init__(
        self,
        precision: str = "ns",
        *,
        host_tag: str = "host",
        default_host: str | None = None,
        fold_tags: bool = True,
        ignore_tags: Sequence[str] = (),
        default_time_ms: Callable[[], int] | None = None,
        min_ts_ms: int = MIN_TS_MS_DEFAULT,
        max_ts_ms: int = MAX_TS_MS_DEFAULT,
    ) -> None:
        if precision not in _PRECISION_NS:
            raise ConfigError(f"must be one of {sorted(_PRECISION_NS)}", field="precision", value=precision)
        self.precision_ns = _PRECISION_NS[precision]
        self._opts = _Options(host_tag, default_host, fold_tags, ignore_tags, default_time_ms, min_ts_ms, max_ts_ms)

    def decode(self, lines: Sequence[bytes | str], source: str = "", first_position: int = 0) -> Records:
        """Decode lines; bad lines become ``Records.dead`` with positions ``first_position + index``."""
        return self.decode_indexed(lines, source, first_position)[0]

    def decode_indexed(
        self, lines: Sequence[bytes | str], source: str = "", first_position: int = 0
    ) -> tuple[Records, np.ndarray]:
        """Like :meth:`decode`, plus the index in ``lines`` of each row (several rows per line)."""
        rows = _Rows(self._opts, source, first_position)
        prec = self.precision_ns
        for i, raw in enumerate(lines):
            try:
                text = raw.decode("utf-8") if isinstance(raw, bytes | bytearray) else raw
            except UnicodeDecodeError as e:
                rows.bad(i, "invalid_utf8", f"invalid UTF-8 at byte {e.start}", raw)
                continue
            for line in text.split("\n") if "\n" in text else (text,):
                line = line.strip()
                if not line or line[0] == "#":
                    continue
                try:
                    _influx_line(line, rows, i, prec)
                except _Bad as e:
                    rows.bad(i, e.code, str(e), line)
        return rows.records()


# -- Telegraf JSON -------------------------------------------------------------------------------


class _TelegrafMetric(msgspec.Struct, gc=False):
    name: str | None = None
    timestamp: int | float | None = None
    fields: dict[str, Any] | None = None
    tags: dict[str, str] = msgspec.field(default_factory=dict)
    metrics: list[_TelegrafMetric] | None = None


class TelegrafJsonDecoder:
    """Decodes Telegraf's JSON output (``data_format = "json"``) into metric :class:`Records`.

    Numeric fields become rows; string and boolean fields are skipped. Options as
    :class:`InfluxDecoder`, with ``json_timestamp_units`` (``"1s"``, ``"1ms"``, ``"1us"``, ``"1ns"``)
    instead of ``precision``.

    Examples:
        >>> dec = TelegrafJsonDecoder()
        >>> r = dec.decode([b'{"fields":{"load1":0.5,"n_users":2},"name":"system","tags":{"host":"h1"},'
        ...                 b'"timestamp":1700000000}', b'{"name":"cpu"}'], first_position=1)
        >>> r.extra["metric"].tolist(), r.ts_ms.tolist()
        (['system.load1', 'system.n_users'], [1700000000000, 1700000000000])
        >>> [(d.position, d.reason, d.message) for d in r.dead]
        [(2, 'missing_field', 'missing `timestamp`')]
    """

    def __init__(
        self,
        json_timestamp_units: str = "1s",
        *,
        host_tag: str = "host",
        default_host: str | None = None,
        fold_tags: bool = True,
        ignore_tags: Sequence[str] = (),
        min_ts_ms: int = MIN_TS_MS_DEFAULT,
        max_ts_ms: int = MAX_TS_MS_DEFAULT,
    ) -> None:
        units = json_timestamp_units if json_timestamp_units[:1].isdigit() else "1" + json_timestamp_units
        if units not in _JSON_UNITS_MS:
            raise ConfigError(f"must be one of {list(_JSON_UNITS_MS)}", field="json_timestamp_units",
                              value=json_timestamp_units)
        self._ms_per_unit = _JSON_UNITS_MS[units]
        self._opts = _Options(host_tag, default_host, fold_tags, ignore_tags, None, min_ts_ms, max_ts_ms)
        self._decode_one = msgspec.json.Decoder(_TelegrafMetric).decode

    def decode(self, lines: Sequence[bytes | str], source: str = "", first_position: int = 0) -> Records:
        """Decode lines; bad lines become ``Records.dead`` with positions ``first_position + index``."""
        return self.decode_indexed(lines, source, first_position)[0]

    def decode_indexed(
        self, lines: Sequence[bytes | str], source: str = "", first_position: int = 0
    ) -> tuple[Records, np.ndarray]:
        """Like :meth:`decode`, plus the index in ``lines`` of each row."""
        rows = _Rows(self._opts, source, first_position)
        for i, raw in enumerate(lines):
            items = raw.split(b"\n" if isinstance(raw, bytes | bytearray) else "\n")  # type: ignore[arg-type]
            for line in items:
                if not line.strip():
                    continue
                try:
                    m = self._decode_one(line)
                except Exception as e:  # noqa: BLE001 - every failure is data
                    rows.bad(i, *self._why(line, e), line)
                    continue
                for j, metric in enumerate(m.metrics if m.metrics is not None else (m,)):
                    try:
                        self._metric(metric, rows, i)
                    except _Bad as e:
                        where = f"metrics[{j}]: " if m.metrics is not None else ""
                        rows.bad(i, e.code, where + str(e), line)
        return rows.records()

    @staticmethod
    def _why(line: bytes | str, exc: Exception) -> tuple[str, str]:
        """Why a Telegraf JSON line failed to decode, worked out from the line itself."""
        bad_utf8 = utf8_error(line)
        if bad_utf8 is not None:
            return bad_utf8
        try:
            obj = msgspec.json.decode(line)
        except msgspec.DecodeError as e:
            return "invalid_json", f"not valid JSON (parser: {e})"
        if not isinstance(obj, dict):
            return "not_an_object", "expected a JSON object ({...}) as Telegraf writes"
        expected: dict[str, tuple[type | tuple[type, ...], str]] = {
            "name": (str, "text"), "timestamp": ((int, float), "a number"), "fields": (dict, "an object"),
            "tags": (dict, "an object of text values"), "metrics": (list, "an array of metrics"),
        }
        for key, (types, words) in expected.items():
            v = obj.get(key)
            if v is not None and (not isinstance(v, types) or isinstance(v, bool)):
                return "wrong_type", f"`{key}` must be {words}; got {v!r:.60}"
        tags = obj.get("tags") or {}
        if any(not isinstance(v, str) for v in tags.values()):
            return "wrong_type", "`tags` values must be text"
        return "undecodable", f"not a Telegraf metric ({type(exc).__name__}: {exc})"

    def _metric(self, m: _TelegrafMetric, rows: _Rows, index: int) -> None:
        for name in ("name", "timestamp", "fields"):
            if getattr(m, name) is None:
                raise _Bad(f"missing `{name}`", "missing_field")
        assert m.name is not None and m.fields is not None and m.timestamp is not None
        ts = m.timestamp
        if isinstance(ts, int) and self._ms_per_unit >= 1:
            ts_ms = ts * int(self._ms_per_unit)
        elif isinstance(ts, int):
            ts_ms = ts // round(1 / self._ms_per_unit)
        else:
            if not math.isfinite(ts):
                raise _Bad(f"`timestamp` {ts!r} is not finite", "not_finite")
            ts_ms = round(ts * self._ms_per_unit)
        fields = [
            (k, float(v)) for k, v in m.fields.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
        ]
        if not fields:
            others = ", ".join(f"`{k}`" for k in m.fields) or "none"
            raise _Bad(f"no finite numeric field (fields: {others}): nothing to score", "no_numeric_field")
        rows.add(index, m.name, dict(m.tags), fields, ts_ms)


# -- functions, Kafka ----------------------------------------------------------------------------


def parse_influx_lines(
    lines: Sequence[bytes | str],
    *,
    host_tag: str = "host",
    source: str = "",
    first_position: int = 0,
    precision: str = "ns",
    **options: Any,
) -> Records:
    """Influx line protocol → metric :class:`Records` (see :class:`InfluxDecoder` for ``options``)."""
    return InfluxDecoder(precision, host_tag=host_tag, **options).decode(lines, source, first_position)


def parse_telegraf_json(
    lines: Sequence[bytes | str],
    *,
    host_tag: str = "host",
    source: str = "",
    first_position: int = 0,
    json_timestamp_units: str = "1s",
    **options: Any,
) -> Records:
    """Telegraf JSON lines → metric :class:`Records` (see :class:`TelegrafJsonDecoder` for ``options``)."""
    dec = TelegrafJsonDecoder(json_timestamp_units, host_tag=host_tag, **options)
    return dec.decode(lines, source, first_position)


def metric_decoder(format: MetricFormat = "influx", **options: Any) -> InfluxDecoder | TelegrafJsonDecoder:
    """The decoder of a format (``"influx"`` or ``"json"``), with its options; for sources to plug in."""
    if format == "influx":
        return InfluxDecoder(**options)
    if format == "json":
        return TelegrafJsonDecoder(**options)
    raise ConfigError("must be 'influx' or 'json'", field="format", value=format)


def decode_kafka_values(
    values: Sequence[bytes | None],
    format: MetricFormat = "influx",
    *,
    source: str = "kafka",
    decoder: InfluxDecoder | TelegrafJsonDecoder | None = None,
    **options: Any,
) -> tuple[Records, np.ndarray]:
    """Decode Kafka message values (one or several newline-separated samples each).

    Returns the records and, per row, the index of its message (to attach partitions and offsets).
    Dead-letter positions are message indices; a null (tombstone) or blank value is a dead letter.

    How :class:`~vigil.io.kafka_source.KafkaSource` can use it: the reader's ``_decode`` calls
    ``self._decoder.decode_indexed(values, name, 0)``; a ``decoder=metric_decoder("influx")`` option
    on the source plugs these formats in, provided its blank-value check counts messages through
    ``row_line`` (a message yields zero, one or many rows) rather than comparing row counts.

    Examples:
        >>> recs, msg = decode_kafka_values([b"cpu,host=a x=1,y=2 1700000000000000000", None])
        >>> recs.extra["metric"].tolist(), msg.tolist(), [(d.position, d.reason) for d in recs.dead]
        (['cpu.x', 'cpu.y'], [0, 0], [(1, 'empty_value')])
    """
    dec = decoder if decoder is not None else metric_decoder(format, **options)
    raw = [b"" if v is None else v for v in values]
    recs, row_msg = dec.decode_indexed(raw, source, 0)
    blank = [i for i, v in enumerate(raw) if not v.strip()]
    if blank:
        recs.dead += [DeadLetter("empty_value", "empty message value (null or blank)", "", source, i) for i in blank]
        recs.dead.sort(key=lambda d: d.position)
    return recs, row_msg


# -- file sources --------------------------------------------------------------------------------


class _MetricFileReader(_FileReader):
    """A file reader whose lines give several rows each; positions may fall inside a line.

    ``position()`` is the byte offset after the last fully handed-out line, or ``[offset, rows]``
    when only the first ``rows`` rows of the next line were handed out (``max_items`` cut a line).
    """

    def __init__(self, path: Path, decoder: Any, source: str, resume: Any, chunk_bytes: int, **pace: Any) -> None:
        skip = 0
        if isinstance(resume, list | tuple):
            ok = len(resume) == 2 and all(isinstance(x, int) and not isinstance(x, bool) for x in resume)
            if not ok or resume[1] < 0:
                raise SourceError(f"source `{source}`: resume must be a byte offset or [offset, rows]; got {resume!r}")
            resume, skip = resume
        super().__init__(path, decoder, source, resume, chunk_bytes, **pace)
        self._skip_rows = self._partial = skip

    def _next_block(self, max_items: int, deadline: float) -> Any:
        block = super()._next_block(max_items, deadline)
        if block is not None and self._skip_rows:
            block.row = min(self._skip_rows, int(np.searchsorted(block.row_line, 0, side="right")))
            self._skip_rows = 0
        return block

    def _emit(self, block: Any, end: int) -> Records:
        out = super()._emit(block, end)
        rl = block.row_line
        if 0 < end < len(rl) and rl[end] == rl[end - 1]:
            self._partial = end - int(np.searchsorted(rl, rl[end], side="left"))
        else:
            self._partial = 0
        return out

    def position(self) -> Any:
        """Byte offset after the last handed-out line, or ``[offset, rows of the next line handed out]``."""
        return [self._offset, self._partial] if self._partial else self._offset


class _MetricFileSource(_FileSource):
    _reader = _MetricFileReader
    _decoder_cls: Any = None  # InfluxDecoder or TelegrafJsonDecoder; ``**options`` are its options

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        pace: Pace = "max",
        speed: float = 1.0,
        name: str | None = None,
        chunk_bytes: int = CHUNK_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_record_bytes: int = MAX_RECORD_BYTES,
        **options: Any,
    ) -> None:
        super().__init__(path, METRIC_SCHEMA, pace, speed, name, chunk_bytes, clock, sleep, max_record_bytes)
        self._options = options
        self._decoder()  # validate the options now, not at open

    def _decoder(self) -> Any:
        return self._decoder_cls(**self._options)


class InfluxLineFileSource(_MetricFileSource):
    r"""A file of Influx line protocol, as metric samples (see the module docstring).

    Read like :class:`~vigil.io.files.JsonlFileSource` (4 MiB chunks, ``pace``, byte-offset
    positions), except that a line gives one row per numeric field: when ``max_items`` cuts a line,
    the position is ``[offset, rows already handed out]`` so that a restart neither repeats nor loses
    a sample. ``options`` go to :class:`InfluxDecoder` (``precision``, ``host_tag``, ...).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "m.influx")
        >>> _ = open(p, "w").write("cpu,host=a user=1,sys=2 1700000000000000000\nbad\n")
        >>> r = InfluxLineFileSource(p).open()
        >>> b = r.read_batch(1, 10)
        >>> b.extra["metric"].tolist(), r.position()
        (['cpu.user'], [0, 1])
        >>> b = r.read_batch(100, 10)
        >>> b.extra["metric"].tolist(), r.position()
        (['cpu.sys'], 44)
        >>> b = r.read_batch(100, 10)
        >>> len(b), [(d.position, d.reason, d.message) for d in b.dead], r.position(), r.at_end
        (0, [(2, 'invalid_line', 'no field set (expected `measurement[,tag=v] field=1.2 [timestamp]`)')], 48, True)
    """

    _decoder_cls = InfluxDecoder


class TelegrafJsonFileSource(_MetricFileSource):
    """A file of Telegraf JSON metrics; like :class:`InfluxLineFileSource`, options for :class:`TelegrafJsonDecoder`."""

    _decoder_cls = TelegrafJsonDecoder

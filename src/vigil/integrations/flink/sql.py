r"""The Flink SQL half of the job: the JVM reads Kafka and makes the micro-batches.

It finds each record's bucket and event time; Python then runs once per batch (see ``job.py``).

One source, one plan::

    vigil_src    Kafka (raw key, raw value, timestamp/partition/offset metadata); the event time `et` and its
                 watermark (bounded out-of-orderness, per partition, inside the source)
    vigil_rows   + bucket (a hash of the key, modulo the buckets) and the watermark each record met (wm)
    batches      on time (et > wm): TUMBLE(et, batch window) GROUP BY bucket -> one row per (bucket, window),
                 the records joined in `body`;  UNION ALL  behind the watermark: one row per record, at once

A record travels in ``body`` as ``<partition> <offset> <record ts> <et> <wm> <key length> <key><value>``
(records separated by ``\x1e``); Python sorts a batch by (event time, partition, offset) and decodes it with
Vigil's own decoders, so undecodable records become dead letters with Vigil's reason codes. A record whose key
or time can't be found in the JVM still gets a bucket (of the empty key) and a time (its Kafka timestamp), and
becomes a dead letter there.

Every output is a Kafka table (raw key, raw value, headers) written by Flink's Kafka sink: exactly-once
(transactions committed with each checkpoint) when the pipeline says ``delivery: exactly-once``.

Examples:
    >>> from vigil.integrations.flink.spec import KafkaSourceSpec
    >>> src = KafkaSourceSpec("127.0.0.1:9092", "txns", "g", "json", "user", "ts")
    >>> key_expr(src, "value")
    "COALESCE(JSON_VALUE(`line`, '$.user'), '')"
    >>> print(time_ms_expr(src, "record"))
    TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), `rts`) * 1000 + EXTRACT(MILLISECOND FROM `rts`)
"""

from __future__ import annotations

import re

from vigil.errors import ConfigError
from vigil.integrations.flink.options import FlinkOptions
from vigil.integrations.flink.spec import JobSpec, KafkaSourceSpec, Output

SEP = "\x1e"
"""Between two records of a batch's body (no JSON or Influx line holds a raw record separator)."""

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _q(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def _json_path(name: str, what: str) -> str:
    if not _NAME.match(name):
        raise ConfigError("must be a plain field name (letters, digits, _) to be read in Flink SQL",
                          section="source.schema", field=what, value=name)  # fmt: skip
    return f"$.{name}"


def _ms(col: str) -> str:
    """Epoch milliseconds of a TIMESTAMP_LTZ column (Flink SQL has no direct cast)."""
    return f"TIMESTAMPDIFF(SECOND, TO_TIMESTAMP_LTZ(0, 3), {col}) * 1000 + EXTRACT(MILLISECOND FROM {col})"


def key_expr(src: KafkaSourceSpec, key_from: str) -> str:
    """The SQL expression of a record's key (never NULL: a record without one is bucketed as the empty key)."""
    if src.format == "json":
        found = f"JSON_VALUE(`line`, {_q(_json_path(src.key, 'key'))})"
    elif src.format == "telegraf":
        found = "JSON_VALUE(`line`, '$.tags.host')"
    else:
        found = f"REGEXP_EXTRACT(`line`, {_q('[, ]' + re.escape(src.key) + '=([^, ]+)')}, 1)"
    if key_from == "record":
        return f"COALESCE(`k`, {found}, '')"
    return f"COALESCE({found}, '')"


def time_ms_expr(src: KafkaSourceSpec, time_from: str) -> str:
    """The SQL expression of a record's event time in epoch ms.

    Its own, or its Kafka timestamp when that can't be read or is out of the schema's range (it then becomes a
    dead letter in Python, which checks the same).
    """
    rts = _ms("`rts`")
    if time_from == "record" or src.time == "@timestamp":
        return rts
    if src.format == "json":
        raw = f"JSON_VALUE(`line`, {_q(_json_path(src.time, 'time'))})"
        if src.time_unit == "ms":
            ms = f"TRY_CAST({raw} AS BIGINT)"
        elif src.time_unit == "s":
            ms = f"CAST(ROUND(TRY_CAST({raw} AS DOUBLE) * 1000, 0) AS BIGINT)"
        else:  # iso8601 text: the record timestamp orders the batches, Python reads the real time
            return rts
    elif src.format == "telegraf":
        ms = "CAST(ROUND(TRY_CAST(JSON_VALUE(`line`, '$.timestamp') AS DOUBLE) * 1000, 0) AS BIGINT)"
    else:  # influx line protocol: the last token is the time, in ns
        ms = r"TRY_CAST(REGEXP_EXTRACT(`line`, ' (-?[0-9]+)\s*$', 1) AS BIGINT) / 1000000"
    return f"CASE WHEN {ms} BETWEEN {src.min_ts_ms} AND {src.max_ts_ms} THEN {ms} ELSE {rts} END"


def _seconds(ms: int) -> str:
    return f"INTERVAL '{ms / 1000:.3f}' SECOND"


def source_ddl(job: JobSpec, opt: FlinkOptions) -> str:
    """The Kafka source table, with the event time and its watermark."""
    src = job.source
    bounded = "'scan.bounded.mode' = 'latest-offset'," if opt.bounded or src.stop_at_end else ""
    return f"""CREATE TEMPORARY TABLE vigil_src (
  `k` STRING,
  `line` STRING,
  `rts` TIMESTAMP_LTZ(3) METADATA FROM 'timestamp',
  `part` INT METADATA FROM 'partition' VIRTUAL,
  `off` BIGINT METADATA FROM 'offset' VIRTUAL,
  `et` AS TO_TIMESTAMP_LTZ({time_ms_expr(src, opt.time_from)}, 3),
  WATERMARK FOR `et` AS `et` - {_seconds(job.event_time.max_delay_ms)}
) WITH (
  'connector' = 'kafka',
  'topic' = {_q(src.topic)},
  'properties.bootstrap.servers' = {_q(src.bootstrap)},
  'properties.group.id' = {_q(src.group_id)},
  'properties.auto.offset.reset' = 'earliest',
  'properties.isolation.level' = 'read_committed',
  'scan.startup.mode' = 'group-offsets',
  {bounded}
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY'
)"""


def rows_view(job: JobSpec, opt: FlinkOptions) -> str:
    """Each record with its bucket, the watermark it met, and its transport line for Python."""
    key = key_expr(job.source, opt.key_from)
    b = opt.buckets
    line = ("CONCAT(CAST(`part` AS STRING), ' ', CAST(`off` AS STRING), ' ', "
            "CAST(" + _ms("`rts`") + " AS STRING), ' ', "
            "CAST(" + _ms("`et`") + " AS STRING), ' ', "
            "CAST(COALESCE(" + _ms("CURRENT_WATERMARK(`et`)") + ", -9223372036854775808) AS STRING), ' ', "
            "CAST(COALESCE(CHAR_LENGTH(`k`), -1) AS STRING), ' ', COALESCE(`k`, ''), COALESCE(`line`, ''))")
    return f"""CREATE TEMPORARY VIEW vigil_rows AS
SELECT MOD(MOD(HASH_CODE({key}), {b}) + {b}, {b}) AS bucket, `et`, CURRENT_WATERMARK(`et`) AS wm, {line} AS rec
FROM vigil_src"""


def batches_query(opt: FlinkOptions) -> str:
    """On-time records grouped per (bucket, batch window); records behind the watermark one by one, at once."""
    w = opt.batch_window_ms
    last = f"MAX({_ms('`et`')})"  # window_end is a TIMESTAMP, not an instant: the window's end from its records
    return f"""SELECT bucket, 0 AS behind, {last} - MOD({last}, {w}) + {w - 1} AS t, CAST(COUNT(*) AS INT) AS n,
       LISTAGG(rec, '{SEP}') AS body, window_time AS rt
FROM TABLE(TUMBLE(TABLE vigil_rows, DESCRIPTOR(`et`), {_seconds(opt.batch_window_ms)}))
WHERE wm IS NULL OR `et` > wm
GROUP BY bucket, window_start, window_end, window_time
UNION ALL
SELECT bucket, 1 AS behind, {_ms('wm')} AS t, 1 AS n, rec AS body, `et` AS rt
FROM vigil_rows
WHERE wm IS NOT NULL AND `et` <= wm"""


#: the Row the Python function emits for every output record: key, value, and up to five header values
OUT_FIELDS = ("k", "v", "h0", "h1", "h2", "h3", "h4")

DEAD_LETTER_HEADERS = ("vigil.reason", "vigil.message", "vigil.source.topic", "vigil.source.partition",
                       "vigil.source.offset")  # fmt: skip
"""The headers of a dead letter (as the embedded Kafka source writes them), from h0..h4."""


def sink_ddl(table: str, out: Output, job: JobSpec, opt: FlinkOptions) -> str:
    """A Kafka output table: raw key, raw value, headers; exactly-once when the pipeline asks for it."""
    guarantee = "exactly-once" if job.delivery == "exactly-once" else "at-least-once"
    prefix = re.sub(r"[^A-Za-z0-9._-]", "-", f"vigil-{job.name}-{out.role}-{out.topic}")
    return f"""CREATE TEMPORARY TABLE {table} (
  `k` STRING,
  `v` STRING,
  `headers` MAP<STRING, BYTES> METADATA
) WITH (
  'connector' = 'kafka',
  'topic' = {_q(out.topic)},
  'properties.bootstrap.servers' = {_q(out.bootstrap)},
  'key.format' = 'raw',
  'key.fields' = 'k',
  'value.format' = 'raw',
  'value.fields-include' = 'EXCEPT_KEY',
  'sink.delivery-guarantee' = '{guarantee}',
  'sink.transactional-id-prefix' = {_q(prefix)},
  'properties.transaction.timeout.ms' = '{opt.txn_timeout_ms}',
  'properties.compression.type' = 'lz4'
)"""


def insert_sql(table: str, out: Output, view: str) -> str:
    """Copy the Python function's rows for ``out`` into its table, building the headers."""
    if out.role == "dead_letters":
        pairs = ", ".join(f"{_q(h)}, ENCODE(COALESCE(h{i}, ''), 'UTF-8')" for i, h in enumerate(DEAD_LETTER_HEADERS))
        headers = f"MAP[{pairs}]"
    else:  # an alert carries its id (as the embedded Kafka sink writes it); other rows no header
        headers = ("CASE WHEN h0 IS NULL THEN CAST(NULL AS MAP<STRING, BYTES>) "
                   "ELSE MAP['vigil.alert_id', ENCODE(h0, 'UTF-8')] END")
    return f"INSERT INTO {table} SELECT k, v, {headers} FROM {view}"


__all__ = ["DEAD_LETTER_HEADERS", "OUT_FIELDS", "SEP", "batches_query", "insert_sql", "key_expr", "rows_view",
           "sink_ddl", "source_ddl", "time_ms_expr"]

"""A micro-batch made by the JVM (see ``sql.py``) back into Vigil's columnar records, dead letters apart.

The body holds the batch's records in whatever order the JVM aggregated them; they are sorted by (event time,
Kafka partition, offset) — each key's events in event-time order — and decoded with the decoder the
embedded Kafka source uses for the same pipeline file, so a record becomes the same row, or the same dead
letter with the same reason code, on both runtimes. Rows carry ``_partition``, ``_offset`` and ``emit_ns``
(the record's Kafka timestamp) as the embedded source gives them, and each row the watermark its record met.

Examples:
    >>> from vigil.integrations.flink.spec import KafkaSourceSpec
    >>> dec = BatchDecoder(KafkaSourceSpec("h:1", "txns", "g", "json", "user", "ts",
    ...                                    ), fields=("amount",))
    >>> body = SEP.join(["0 7 1700000002000 1700000002000 1699999990000 2 u1"
    ...                  '{"user":"u1","ts":1700000002000,"amount":5}',
    ...                  "1 3 1700000001000 1700000001000 1699999990000 -1 {bad"])
    >>> b = dec.decode(body)
    >>> b.recs.keys.tolist(), b.recs.ts_ms.tolist(), b.recs.extra["_offset"].tolist(), b.wm.tolist()
    (['u1'], [1700000002000], [7], [1699999990000])
    >>> [(d.reason, d.position, k) for d, k, _ in b.dead]
    [('invalid_json', {'partition': 1, 'offset': 3}, None)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.integrations.flink.spec import KafkaSourceSpec
from vigil.io.base import DeadLetter, Records
from vigil.io.decode import JsonDecoder, raw_text
from vigil.io.schema import Schema

SEP = "\x1e"


@dataclass
class Decoded:
    """A decoded batch.

    Rows (``recs``, sorted), the watermark each row's record met (``wm``), and the dead letters as
    ``(dead letter, record key, record value)``.
    """

    recs: Records
    wm: np.ndarray
    dead: list[tuple[DeadLetter, str | None, str]]


class BatchDecoder:
    """Decodes micro-batch bodies of one pipeline's source (module docstring).

    Args:
        src: the job's Kafka source.
        fields, extra, optional: the schema's numeric, passthrough and optional fields (JSON sources).
    """

    def __init__(self, src: KafkaSourceSpec, *, fields: tuple[str, ...] = (), extra: tuple[str, ...] = (),
                 optional: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.src = src
        self.name = f"kafka:{src.topic}"
        self._kafka_time: Any = None
        self._decoder: Any = None
        if src.format == "json":
            schema = Schema(src.key, src.time, src.time_unit, fields, extra, optional)  # type: ignore[arg-type]
            if src.time == "@timestamp":
                from vigil.io.kafka import KafkaTimeDecoder

                self._kafka_time = KafkaTimeDecoder(schema)
            else:
                self._decoder = JsonDecoder(schema)
            self._metrics = False
        else:
            from vigil.io.metrics import metric_decoder

            self._decoder = metric_decoder("influx" if src.format == "influx" else "json")
            self._metrics = True

    @classmethod
    def for_job(cls, job: Any) -> BatchDecoder:
        """The decoder of a :class:`~vigil.integrations.flink.spec.JobSpec`'s source."""
        s = job.spec.source.schema_
        if s is None:
            return cls(job.source)
        return cls(job.source, fields=tuple(s.fields), extra=tuple(s.extra), optional=tuple(s.optional))

    def decode(self, body: str) -> Decoded:
        """Split, sort and decode one body (module docstring)."""
        recs = body.split(SEP)
        heads = [r.split(" ", 6) for r in recs]
        n = len(heads)
        num = np.array([h[:6] for h in heads], np.int64).reshape(n, 6)
        order = np.lexsort((num[:, 1], num[:, 0], num[:, 3]))  # event time, then partition, then offset
        num = num[order]
        keys: list[str | None] = []
        values: list[str] = []
        klens = num[:, 5].tolist()
        for j, i in enumerate(order.tolist()):
            klen = klens[j]
            rest = heads[i][6] if len(heads[i]) > 6 else ""
            if klen >= 0:
                keys.append(rest[:klen])
                values.append(rest[klen:])
            else:
                keys.append(None)
                values.append(rest)
        if self._kafka_time is not None:
            out, row_line = self._kafka_time.decode_indexed(values, num[:, 2].tolist(), self.name)
        else:
            out, row_line = self._decoder.decode_indexed(values, self.name, 0)
        # blank values are skipped silently by the decoders: here a record is a message, so they are dead letters
        if len(out) + len(out.dead) < n or self._metrics:
            seen = set(row_line.tolist() if row_line is not None else range(len(out)))
            seen.update(d.position for d in out.dead)
            out.dead += [DeadLetter("empty_value", "empty message value (null or blank)", raw_text(values[i]),
                                    self.name, i) for i in range(n) if i not in seen]  # fmt: skip
            out.dead.sort(key=lambda d: d.position)
        dead = []
        for d in out.dead:
            i = d.position
            d.position = {"partition": int(num[i, 0]), "offset": int(num[i, 1])}
            dead.append((d, keys[i], values[i]))
        rows = num[row_line] if row_line is not None else num  # row i came from record row_line[i]
        out.extra["_partition"] = rows[:, 0].copy()
        out.extra["_offset"] = rows[:, 1].copy()
        out.extra["emit_ns"] = rows[:, 2] * 1_000_000
        return Decoded(out, rows[:, 4].copy(), dead)


__all__ = ["BatchDecoder", "Decoded", "SEP"]

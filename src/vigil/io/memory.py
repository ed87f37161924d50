"""An in-memory source, for tests, notebooks and replays of data already loaded.

Positions are row indices in the input (the next row to hand out), so ``resume=n`` starts at row
``n``. Input can be:

- a :class:`~vigil.io.base.Records` (trusted as is; its ``dead`` letters are handed out with the
  batch that starts at row 0);
- a mapping of columns. With a ``schema`` the columns are named by it and validated batch by batch
  like decoded data (non-finite numbers and absurd times become dead letters); without one they need
  ``key`` and ``ts_ms`` columns, numeric columns become ``cols`` and the rest ``extra``, unchecked;
- a sequence of dicts (needs a ``schema``), decoded batch by batch with
  :meth:`~vigil.io.decode.JsonDecoder.decode_dicts`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vigil.errors import ConfigError, SourceError
from vigil.io.base import Records
from vigil.io.decode import JsonDecoder, _objects, _raw_dict, _Validator
from vigil.io.lines import slice_records
from vigil.io.schema import Schema


def _records_from_columns(columns: Mapping[str, Any]) -> Records:
    if "key" not in columns or "ts_ms" not in columns:
        raise ConfigError(
            "needs `key` and `ts_ms` columns without a schema", field="records", value=sorted(columns),
            hint="pass schema=Schema(key=..., time=..., fields=...)",
        )
    cols: dict[str, np.ndarray] = {}
    extra: dict[str, np.ndarray] = {}
    for name, values in columns.items():
        if name in ("key", "ts_ms"):
            continue
        arr = np.asarray(values)
        if arr.dtype.kind in "fiu":
            cols[name] = arr.astype(np.float64)
        else:
            extra[name] = _objects(list(values))
    keys = _objects([str(k) for k in columns["key"]])
    return Records(keys, np.asarray(columns["ts_ms"], np.int64), cols, extra)


class MemorySource:
    """Rows held in memory, handed out ``batch_size`` at a time (see the module docstring).

    Examples:
        >>> cols = {"key": ["a", "b", "a"], "ts_ms": [1, 2, 3], "x": [1.0, 2.0, 3.0]}
        >>> src = MemorySource(cols, batch_size=2)
        >>> r = src.open("0")
        >>> r.read_batch(10, 0).keys.tolist(), r.position(), r.read_batch(10, 0).keys.tolist(), r.at_end
        (['a', 'b'], 2, ['a'], True)
    """

    def __init__(
        self,
        records: Records | Mapping[str, Any] | Sequence[Mapping[str, Any]],
        batch_size: int = 1024,
        schema: Schema | None = None,
        name: str = "memory",
    ) -> None:
        if batch_size < 1:
            raise ConfigError("must be >= 1", field="batch_size", value=batch_size)
        self.name, self.batch_size, self.schema = name, batch_size, schema
        self._records: Records | None = None
        self._columns: dict[str, Any] | None = None
        self._dicts: Sequence[Mapping[str, Any]] | None = None
        if isinstance(records, Records):
            self._records, self._n = records, len(records)
        elif isinstance(records, Mapping):
            if schema is None:
                self._records = _records_from_columns(records)
                self._n = len(self._records)
            else:
                self._columns = self._load_columns(records, schema)
                self._n = len(self._columns["ts"])
        else:
            if schema is None:
                raise ConfigError("a list of dicts needs a schema", field="schema")
            self._dicts, self._n = records, len(records)
            self._decoder = JsonDecoder(schema)
        if schema is not None:
            self._validator = _Validator(schema)

    @staticmethod
    def _load_columns(columns: Mapping[str, Any], schema: Schema) -> dict[str, Any]:
        need = [schema.key, schema.time, *schema.fields, *schema.extra]
        missing = [n for n in need if n not in columns]
        if missing:
            raise ConfigError("lacks columns required by the schema", field="records", value=missing)
        out: dict[str, Any] = {"key": _objects(list(columns[schema.key]))}
        try:
            if schema.time_unit == "iso8601":
                out["ts"] = _objects(list(columns[schema.time]))
            else:
                dtype = np.int64 if schema.time_unit == "ms" else np.float64
                out["ts"] = np.asarray(columns[schema.time], dtype)
            out["nums"] = [np.asarray(columns[f], np.float64) for f in schema.fields]
        except (TypeError, ValueError) as e:
            raise ConfigError(f"holds a column that isn't numeric: {e}", field="records") from e
        n = len(out["ts"])
        out["extras"] = [
            _objects(list(columns[name])) if name in columns else _objects([None] * n)
            for name in schema.extra_columns
        ]
        lengths = {len(out["key"]), n, *(len(c) for c in out["nums"]), *(len(c) for c in out["extras"])}
        if len(lengths) != 1:
            raise ConfigError("columns must all have the same length", field="records", value=sorted(lengths))
        return out

    def partitions(self) -> list[str]:
        """One partition, ``"0"``."""
        return ["0"]

    def open(self, partition: str = "0", resume: Any = None) -> _MemoryReader:
        """Open; ``resume`` is the row index to start at."""
        if partition != "0":
            raise SourceError(f"source `{self.name}` has one partition, '0'; got {partition!r}")
        start = 0 if resume is None else resume
        if isinstance(start, bool) or not isinstance(start, int) or not 0 <= start <= self._n:
            raise SourceError(
                f"source `{self.name}`: resume must be a row index in [0, {self._n}]; got {resume!r}"
            )
        return _MemoryReader(self, start)

    def _rows(self, a: int, b: int) -> Records:
        if self._records is not None:
            return slice_records(self._records, a, b, list(self._records.dead) if a == 0 else [])
        if self._dicts is not None:
            return self._decoder.decode_dicts(self._dicts[a:b], self.name, a)
        c = self._columns
        assert c is not None
        names = [self.schema.key, self.schema.time, *self.schema.fields, *self.schema.extra_columns]  # type: ignore[union-attr]

        def raw_of(i: int) -> str:
            values = [c["key"][a + i], c["ts"][a + i], *(x[a + i] for x in c["nums"]),
                      *(x[a + i] for x in c["extras"])]
            return _raw_dict(dict(zip(names, values, strict=True)))

        recs, _ = self._validator.assemble(
            c["key"][a:b].tolist(), c["ts"][a:b], [x[a:b] for x in c["nums"]],
            [x[a:b].tolist() for x in c["extras"]], None, raw_of, self.name, a, [],
        )
        return recs


class _MemoryReader:
    def __init__(self, src: MemorySource, start: int) -> None:
        self._src, self._pos, self._closed = src, start, False

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        if self._closed:
            raise SourceError(f"source `{self._src.name}` is closed")
        a = self._pos
        if a >= self._src._n or max_items < 1:
            return None
        b = min(self._src._n, a + min(max_items, self._src.batch_size))
        self._pos = b
        return self._src._rows(a, b)

    def position(self) -> int:
        return self._pos

    @property
    def at_end(self) -> bool:
        return self._pos >= self._src._n

    def close(self) -> None:
        self._closed = True

"""Decoding raw lines into columnar :class:`~vigil.io.base.Records`, with dead letters.

Every decoder turns a list of raw lines into columns in two passes, so that no Python code runs per
event beyond the decode itself:

1. **Decode.** JSON lines go through a msgspec ``Decoder`` of a Struct type compiled from the
   :class:`~vigil.io.schema.Schema` (typed, so type errors are found in C). The loop is
   ``rows.extend(map(decode, lines))``: when a line fails, the rows decoded so far are kept, the line
   becomes a dead letter, and decoding resumes after it. Why it failed is worked out by Vigil itself
   (the line is parsed again, untyped, and checked field by field), never taken from the decoding
   library's message: each dead letter has a stable reason code (:mod:`vigil.io.reasons`) and a message.
   Column extraction is generated code (one list comprehension per field).
2. **Validate, vectorized.** Numeric fields must be finite; event times must lie within
   ``[min_ts_ms, max_ts_ms]``. Failing rows leave the columns and become dead letters whose message
   names the field, the value and a likely cause.

Blank (empty or whitespace-only) lines are not records: they are skipped silently and are neither
rows nor dead letters, but they still count for positions (line numbers) so that dead-letter
positions point at the right line of the file.

A dead letter's ``position`` is ``first_position + index of the line in the list``; sources pass
1-based line numbers. Its ``raw`` is the line as text (invalid UTF-8 replaced), cut to 1,000
characters.

Examples:
    >>> from vigil.io.schema import Schema
    >>> dec = JsonDecoder(Schema("user", "ts", fields=("amount",)))
    >>> lines = [b'{"user":"u1","ts":1700000000123,"amount":2.5}', b'{"user":"u2","ts":42,"amount":1}',
    ...          b'', b'{"user":7,"ts":1700000000456,"amount":"x"}']
    >>> recs = dec.decode(lines, source="demo", first_position=1)
    >>> recs.keys.tolist(), recs.ts_ms.tolist(), recs.cols["amount"].tolist()
    (['u1'], [1700000000123], [2.5])
    >>> [(d.position, d.reason, d.message) for d in recs.dead]  # doctest: +NORMALIZE_WHITESPACE
    [(2, 'absurd_timestamp', '`ts` 42 is absurd: before 2000-01-01 (min_ts_ms); seconds instead of ms?'),
     (4, 'wrong_type', "`amount` must be a number; got 'x' (text)")]
"""

from __future__ import annotations

import csv
import functools
import json
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import Any

import msgspec
import numpy as np

from vigil.errors import SourceError
from vigil.io.base import DeadLetter, Records
from vigil.io.schema import Schema

RAW_MAX_CHARS = 1000
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
_Scalar = str | int | float | bool
Why = tuple[str, str]
"""A dead letter's reason code (:mod:`vigil.io.reasons`) and message."""
Reasons = dict[int, list[Why]]
"""Row index → what is wrong with that row (a row may have several problems)."""


def raw_text(line: bytes | str) -> str:
    """A raw line as readable text for a dead letter: invalid UTF-8 replaced, cut to 1,000 chars."""
    if isinstance(line, str):
        return line[:RAW_MAX_CHARS].rstrip("\r\n")
    return line[: RAW_MAX_CHARS * 4].decode("utf-8", "replace")[:RAW_MAX_CHARS].rstrip("\r\n")


def _raw_dict(row: Any) -> str:
    try:
        import orjson

        text = orjson.dumps(row, default=str, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS)
        return raw_text(text)
    except Exception:  # noqa: BLE001 - a raw rendering must never fail
        return raw_text(repr(row))


def _iso_ms(text: str) -> int | None:
    """Epoch ms of an ISO 8601 time (no offset = UTC), or ``None`` if it isn't one."""
    try:
        dt = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH) // _MS


def _day(ms: int) -> str:
    dt = _EPOCH + timedelta(milliseconds=ms)
    return dt.date().isoformat() if dt.time() == datetime.min.time() else dt.isoformat()


def _show(value: Any) -> str:
    return repr(value.item() if isinstance(value, np.generic) else value)


def _objects(values: Sequence[Any]) -> np.ndarray:
    out = np.empty(len(values), object)
    out[:] = values
    return out


def _make_extractor(n_num: int, n_extra: int) -> Callable[[list[Any], int], tuple[Any, ...]]:
    """Generated column extraction: one comprehension per field (about 4x faster than getattr loops).

    Only the internal attribute names ``f0 … fN`` appear in the generated source, never user text.
    """
    num = ", ".join(f"fromiter((r.f{2 + i} for r in rows), f64, n)" for i in range(n_num))
    extra = ", ".join(f"[r.f{2 + n_num + i} for r in rows]" for i in range(n_extra))
    src = (
        "def extract(rows, n):\n"
        f"    return [r.f0 for r in rows], [r.f1 for r in rows], [{num}], [{extra}]\n"
    )
    namespace: dict[str, Any] = {"fromiter": np.fromiter, "f64": np.float64}
    exec(src, namespace)  # noqa: S102 - generated from integers only
    return namespace["extract"]  # type: ignore[no-any-return]


class _Validator:
    """Turns raw column values into validated arrays; shared by every decoder."""

    def __init__(self, schema: Schema) -> None:
        self.schema = schema

    def absurd_reason(self, value: Any, ms: float) -> Why:
        """Why an event time outside ``[min_ts_ms, max_ts_ms]`` is rejected, with a likely cause."""
        s = self.schema
        if ms < s.min_ts_ms:
            if ms == 0:
                hint = "zeroed clock?"
            elif ms < 0:
                hint = "negative time?"
            else:
                hint = "seconds instead of ms?" if s.time_unit == "ms" else "wrong unit or zeroed clock?"
            before = f"before {_day(s.min_ts_ms)} (min_ts_ms)"
            return "absurd_timestamp", f"`{s.time}` {_show(value)} is absurd: {before}; {hint}"
        hint = "corrupt value?"
        if s.time_unit == "ms" and s.min_ts_ms <= ms / 1e3 <= s.max_ts_ms:
            hint = "microseconds instead of ms?"
        elif s.time_unit == "ms" and s.min_ts_ms <= ms / 1e6 <= s.max_ts_ms:
            hint = "nanoseconds instead of ms?"
        elif s.time_unit == "s" and s.min_ts_ms <= ms / 1e3 <= s.max_ts_ms:
            hint = "milliseconds instead of seconds?"
        return "absurd_timestamp", f"`{s.time}` {_show(value)} is absurd: after {_day(s.max_ts_ms)} (max_ts_ms); {hint}"

    def times(self, values: Any, reasons: Reasons) -> np.ndarray:
        """Event times in epoch ms from decoded values (ints for ms, numbers for s, text for ISO)."""
        s = self.schema
        lo, hi = s.min_ts_ms, s.max_ts_ms
        n = len(values)
        if s.time_unit == "ms":
            try:
                ts = np.asarray(values, np.int64)
            except OverflowError:  # integers beyond int64: clamp, the range check rejects them
                ts = np.array([min(max(v, _I64_MIN), _I64_MAX) for v in values], np.int64)
            bad = (ts < lo) | (ts > hi)
            if bad.any():
                for r in np.flatnonzero(bad).tolist():
                    reasons.setdefault(r, []).append(self.absurd_reason(values[r], int(ts[r])))
                ts[bad] = lo
            return ts
        if s.time_unit == "s":
            try:
                ms_f = np.asarray(values, np.float64) * 1000.0
            except OverflowError:
                ms_f = np.array([min(max(v, -1e300), 1e300) for v in values], np.float64) * 1000.0
        else:
            parsed = [_iso_ms(v) for v in values]
            ms_f = np.array([np.nan if p is None else p for p in parsed], np.float64)
        with np.errstate(invalid="ignore"):
            bad = ~((ms_f >= lo) & (ms_f <= hi))
        if bad.any():
            for r in np.flatnonzero(bad).tolist():
                v = ms_f[r]
                if s.time_unit == "iso8601" and np.isnan(v):
                    why: Why = "invalid_timestamp", f"`{s.time}` {_show(values[r])} is not an ISO 8601 time"
                elif not np.isfinite(v):
                    why = "not_finite", f"`{s.time}` is not finite: {_show(values[r])}"
                else:
                    why = self.absurd_reason(values[r], float(v))
                reasons.setdefault(r, []).append(why)
            ms_f[bad] = lo
        return np.rint(ms_f).astype(np.int64) if n else np.empty(0, np.int64)

    def assemble(
        self,
        keys: list[Any],
        ts_values: Any,
        nums: list[np.ndarray],
        extras: list[list[Any]],
        row_line: np.ndarray | None,
        raw_of: Callable[[int], str],
        source: str,
        first_position: int,
        dead: list[DeadLetter],
        reasons: Reasons | None = None,
    ) -> tuple[Records, np.ndarray | None]:
        """Validate columns, move failing rows to dead letters; returns records and row → line index."""
        s = self.schema
        reasons = {} if reasons is None else reasons
        if keys and int in set(map(type, keys)):
            keys = [k if k.__class__ is str else str(k) for k in keys]
        ts = self.times(ts_values, reasons)
        cols = dict(zip(s.fields, nums, strict=True))
        for name, col in cols.items():
            finite = np.isfinite(col)
            if not finite.all():
                for r in np.flatnonzero(~finite).tolist():
                    reasons.setdefault(r, []).append(("not_finite", f"`{name}` is not finite: {_show(col[r])}"))
        key_arr = _objects(keys)
        extra = {name: _objects(vals) for name, vals in zip(s.extra_columns, extras, strict=True)}
        if reasons:
            bad_rows = sorted(reasons)
            for r in bad_rows:
                li = r if row_line is None else int(row_line[r])
                whys = reasons[r]
                dead.append(DeadLetter(whys[0][0], "; ".join(m for _, m in whys), raw_of(li), source,
                                       first_position + li))
            keep = np.ones(len(ts), bool)
            keep[bad_rows] = False
            key_arr, ts = key_arr[keep], ts[keep]
            cols = {k: v[keep] for k, v in cols.items()}
            extra = {k: v[keep] for k, v in extra.items()}
            row_line = (np.arange(len(keep)) if row_line is None else row_line)[keep]
            dead.sort(key=attrgetter("position"))
        return Records(key_arr, ts, cols, extra, dead), row_line


def _decode_all(
    items: Sequence[Any],
    decode: Callable[[Any], Any],
    reason: Callable[[Any, Exception], Why | None],
    raw_of: Callable[[int], str],
    source: str,
    first_position: int,
) -> tuple[list[Any], np.ndarray | None, list[DeadLetter]]:
    """Decode every item; a failing item becomes a dead letter (or is skipped if ``reason`` is None).

    ``list.extend(map(...))`` keeps the rows decoded before an exception, and the shared iterator
    has moved past the failing item, so a bad item costs one restart of the C-level loop, not a
    re-decode or copy of the batch.
    """
    rows: list[Any] = []
    dead: list[DeadLetter] = []
    segments: list[tuple[int, int]] = []  # (first item index, rows) of each contiguous run of good items
    items_iter = iter(items)  # shared by every restart: map() has consumed the failing item
    start = 0
    while True:
        before = len(rows)
        try:
            rows.extend(map(decode, items_iter))
        except Exception as exc:  # noqa: BLE001 - every failure is data, routed to dead letters
            bad = start + len(rows) - before
            segments.append((start, len(rows) - before))
            why = reason(items[bad], exc)
            if why is not None:
                dead.append(DeadLetter(why[0], why[1], raw_of(bad), source, first_position + bad))
            start = bad + 1
            continue
        segments.append((start, len(rows) - before))
        break
    n = len(items)
    if len(segments) == 1 and segments[0] == (0, n):
        return rows, None, dead
    row_line = np.concatenate([np.arange(a, a + c) for a, c in segments]) if segments else np.empty(0, int)
    return rows, row_line, dead


_MISSING = object()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON value (write null, or leave the field out)")


def _kind(value: Any) -> str:
    """What a JSON value is, in words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float | np.number):
        return "a number"
    if isinstance(value, str):
        return "text"
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list | tuple):
        return "an array"
    return type(value).__name__


def _short(value: Any) -> str:
    text = _show(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and _I64_MIN <= v <= 2**64 - 1


def _is_number(v: Any) -> bool:
    return _is_int(v) or isinstance(v, float)


def _is_scalar(v: Any) -> bool:
    return isinstance(v, str | bool | float) or _is_int(v)


def utf8_error(line: Any) -> Why | None:
    """``("invalid_utf8", message)`` if ``line`` is bytes that aren't valid UTF-8, else ``None``."""
    if isinstance(line, bytes | bytearray | memoryview):
        data = bytes(line)
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as e:
            return "invalid_utf8", f"invalid UTF-8 at byte {e.start} (0x{data[e.start]:02x})"
    return None


class RecordChecker:
    """Works out why a record doesn't fit a schema, from the record itself — never from a library's message.

    Used only on records that failed to decode (the slow path), so it can afford plain Python.

    Examples:
        >>> from vigil.io.schema import Schema
        >>> c = RecordChecker(Schema("user", "ts", fields=("amount",)))
        >>> c.why({"user": "u1", "amount": "12"})
        ('missing_field', "`ts` is missing; `amount` must be a number; got '12' (text)")
        >>> c.why([1, 2])
        ('not_an_object', 'expected a JSON object ({...}); got an array')
    """

    def __init__(self, schema: Schema, time_in_record: bool = True) -> None:
        time_rule: tuple[Callable[[Any], bool], str] = {
            "ms": (_is_int, "an integer (epoch ms)"),
            "s": (_is_number, "a number (epoch seconds)"),
            "iso8601": (lambda v: isinstance(v, str), "an ISO 8601 time (text)"),
        }[schema.time_unit]
        rules: list[tuple[str, Callable[[Any], bool], str, bool]] = [
            (schema.key, lambda v: isinstance(v, str) or _is_int(v), "text or an integer", False)
        ]
        if time_in_record:
            rules.append((schema.time, *time_rule, False))
        rules += [(name, _is_number, "a number", False) for name in schema.fields]
        rules += [(name, _is_scalar, "text, a number or a boolean", name in schema.optional)
                  for name in schema.extra_columns]
        self._rules = rules

    def why(self, record: Any, exc: Exception | None = None) -> Why:
        """The reason code and message for a record that failed to decode."""
        if not isinstance(record, dict):
            return "not_an_object", f"expected a JSON object ({{...}}); got {_kind(record)}"
        problems: list[Why] = []
        for name, ok, expected, optional in self._rules:
            value = record.get(name, _MISSING)
            if value is _MISSING or value is None:
                if not optional:
                    what = "missing" if value is _MISSING else "null"
                    problems.append(("missing_field", f"`{name}` is {what}"))
            elif not ok(value):
                problems.append(("wrong_type", f"`{name}` must be {expected}; got {_short(value)} ({_kind(value)})"))
            elif isinstance(value, float) and not np.isfinite(value):
                problems.append(("not_finite", f"`{name}` is not finite: {_short(value)}"))
        if problems:
            return problems[0][0], "; ".join(m for _, m in problems)
        detail = f" ({type(exc).__name__}: {exc})" if exc is not None else ""
        return "undecodable", f"the record doesn't fit the schema{detail}"


def json_reason(checker: RecordChecker) -> Callable[[Any, Exception], Why | None]:
    """Why a JSON line failed to decode (``None`` for a blank line, which is not a record)."""

    def reason(line: Any, exc: Exception) -> Why | None:
        if not line.strip():
            return None
        bad_utf8 = utf8_error(line)
        if bad_utf8 is not None:
            return bad_utf8
        try:  # the standard library's parser, for its structured errors (message and position)
            record = json.loads(line, parse_constant=_no_constant)
        except json.JSONDecodeError as e:
            return "invalid_json", f"not valid JSON: {e.msg} at character {e.pos}"
        except (ValueError, RecursionError) as e:
            return "invalid_json", f"not valid JSON: {e}"
        return checker.why(record, exc)

    return reason


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


class JsonDecoder:
    """Decodes JSON lines (one object per line) into :class:`Records`; see the module docstring.

    Unknown fields are ignored. Dead letters carry the reason codes of :mod:`vigil.io.reasons`
    (``invalid_utf8``, ``invalid_json``, ``not_an_object``, ``missing_field``, ``wrong_type``,
    ``not_finite``, ``absurd_timestamp``, ...), worked out by :class:`RecordChecker`.

    Args:
        schema: what to extract.
    """

    def __init__(self, schema: Schema) -> None:
        self.schema = schema
        time_type: Any = {"ms": int, "s": int | float, "iso8601": str}[schema.time_unit]
        spec: list[tuple[Any, ...]] = [("f0", str | int), ("f1", time_type)]
        spec += [(f"f{2 + i}", float) for i in range(len(schema.fields))]
        for i, name in enumerate(schema.extra_columns):
            attr = f"f{2 + len(schema.fields) + i}"
            spec.append((attr, _Scalar | None, None) if name in schema.optional else (attr, _Scalar))
        # Required fields must precede defaulted ones in a Struct; kw_only lifts that rule.
        names = [schema.key, schema.time, *schema.fields, *schema.extra_columns]
        # gc=False: rows hold only scalars (no cycles) and skipping GC tracking is ~35% faster.
        self.row_type = msgspec.defstruct(
            "Row", spec, rename={f"f{i}": n for i, n in enumerate(names)}, gc=False, kw_only=True
        )
        self._decode_line = msgspec.json.Decoder(self.row_type).decode
        self._extract = _make_extractor(len(schema.fields), len(schema.extra_columns))
        self._validator = _Validator(schema)
        self._checker = RecordChecker(schema)
        self._reason = json_reason(self._checker)

    def decode(self, lines: Sequence[bytes], source: str = "", first_position: int = 0) -> Records:
        """Decode lines; bad lines become ``Records.dead`` with positions ``first_position + index``."""
        return self.decode_indexed(lines, source, first_position)[0]

    def decode_indexed(
        self, lines: Sequence[bytes], source: str = "", first_position: int = 0
    ) -> tuple[Records, np.ndarray | None]:
        """Like :meth:`decode`, plus the index in ``lines`` of each row (``None`` = row i is line i)."""
        rows, row_line, dead = _decode_all(
            lines, self._decode_line, self._reason, lambda i: raw_text(lines[i]), source, first_position
        )
        return self._columns(rows, row_line, dead, lambda i: raw_text(lines[i]), source, first_position)

    def decode_dicts(self, rows: Sequence[Any], source: str = "", first_position: int = 0) -> Records:
        """Decode already-parsed rows (dicts of plain values or numpy scalars), e.g. from memory."""
        return self.decode_dicts_indexed(rows, source, first_position)[0]

    def decode_dicts_indexed(
        self, rows: Sequence[Any], source: str = "", first_position: int = 0
    ) -> tuple[Records, np.ndarray | None]:
        """Like :meth:`decode_dicts`, plus the index in ``rows`` of each decoded row."""
        row_type = self.row_type
        convert = functools.partial(msgspec.convert, type=row_type)
        fixed: dict[int, Any] = {}

        def reason(row: Any, exc: Exception) -> Why | None:
            # msgspec.convert rejects numpy scalars; retry once with them made plain.
            if isinstance(row, dict) and any(isinstance(v, np.generic) for v in row.values()):
                plain = {k: _plain(v) for k, v in row.items()}
                try:
                    fixed[id(row)] = convert(plain)
                    return None
                except Exception as exc2:  # noqa: BLE001 - every failure is data
                    return self._checker.why(plain, exc2)
            return self._checker.why(row, exc)

        def raw_of(i: int) -> str:
            return _raw_dict(rows[i])

        good, row_line, dead = _decode_all(rows, convert, reason, raw_of, source, first_position)
        if fixed:  # put the retried rows back in input order
            idx = [] if row_line is None else row_line.tolist()
            pairs = list(zip(idx, good, strict=True))
            pairs += [(i, fixed[id(r)]) for i, r in enumerate(rows) if id(r) in fixed]
            pairs.sort(key=lambda p: p[0])
            good = [p[1] for p in pairs]
            row_line = np.array([p[0] for p in pairs], np.int64)
        return self._columns(good, row_line, dead, raw_of, source, first_position)

    def _columns(
        self,
        rows: list[Any],
        row_line: np.ndarray | None,
        dead: list[DeadLetter],
        raw_of: Callable[[int], str],
        source: str,
        first_position: int,
    ) -> tuple[Records, np.ndarray | None]:
        keys, ts_values, nums, extras = self._extract(rows, len(rows))
        return self._validator.assemble(
            keys, ts_values, nums, extras, row_line, raw_of, source, first_position, dead
        )


class CsvDecoder:
    """Decodes CSV lines (one record per line; quoted fields may not span lines) into :class:`Records`.

    The header names the columns: pass it to the constructor or to :meth:`set_header` (file sources
    do this with the file's first line). Cells are text: numeric and time cells are parsed; an empty
    optional cell becomes ``None``.

    Examples:
        >>> from vigil.io.schema import Schema
        >>> dec = CsvDecoder(Schema("user", "ts", fields=("amount",)), header=["ts", "user", "amount"])
        >>> r = dec.decode([b"1700000000000,u1,2.5", b"1700000000001,u2", b"1700000000002,u3,abc"])
        >>> r.keys.tolist(), [(d.reason, d.message) for d in r.dead]
        (['u1'], [('invalid_csv', 'expected 3 columns, got 2'), ('wrong_type', "`amount` 'abc' is not a number")])
    """

    def __init__(self, schema: Schema, header: Sequence[str] | None = None, delimiter: str = ",") -> None:
        self.schema = schema
        self.delimiter = delimiter
        self._validator = _Validator(schema)
        self._index: dict[str, int] = {}
        self._ncols = 0
        if header is not None:
            self.set_header(header)

    def set_header(self, header: Sequence[str] | bytes | str) -> None:
        """Set the column names (a sequence, or the raw header line).

        Raises:
            SourceError: if a required column is missing.
        """
        if isinstance(header, bytes):
            header = header.decode("utf-8-sig", "replace")
        if isinstance(header, str):
            header = next(csv.reader([header.strip("\r\n")], delimiter=self.delimiter), [])
        names = [h.strip() for h in header]
        s = self.schema
        required = [s.key, s.time, *s.fields, *(n for n in s.extra_columns if n not in s.optional)]
        missing = [n for n in required if n not in names]
        if missing:
            raise SourceError(f"CSV header {names} lacks column(s) {missing} required by the schema")
        self._index = {n: i for i, n in enumerate(names)}
        self._ncols = len(names)

    @property
    def has_header(self) -> bool:
        """True once the column names are known."""
        return bool(self._ncols)

    def decode(self, lines: Sequence[bytes], source: str = "", first_position: int = 0) -> Records:
        """Decode data lines (not the header); bad lines become dead letters."""
        return self.decode_indexed(lines, source, first_position)[0]

    def decode_indexed(
        self, lines: Sequence[bytes], source: str = "", first_position: int = 0
    ) -> tuple[Records, np.ndarray | None]:
        """Like :meth:`decode`, plus the index in ``lines`` of each row."""
        if not self.has_header:
            raise SourceError("CsvDecoder needs a header before decoding rows")
        s, ncols, delim = self.schema, self._ncols, self.delimiter

        def parse(line: Any) -> list[str]:
            text = line.decode("utf-8") if isinstance(line, bytes) else line
            if not text.strip():
                raise _Blank
            row = next(csv.reader([text.rstrip("\r\n")], delimiter=delim, strict=True))
            if len(row) != ncols:
                raise _BadColumns(f"expected {ncols} columns, got {len(row)}")
            return row

        def reason(line: Any, exc: Exception) -> Why | None:
            if isinstance(exc, _Blank):
                return None
            bad_utf8 = utf8_error(line)
            if bad_utf8 is not None:
                return bad_utf8
            if isinstance(exc, _BadColumns):
                return "invalid_csv", str(exc)
            if isinstance(exc, csv.Error):
                return "invalid_csv", f"can't be split into columns (csv: {exc})"
            return "undecodable", f"can't be read ({type(exc).__name__}: {exc})"

        def raw_of(i: int) -> str:
            return raw_text(lines[i])

        rows, row_line, dead = _decode_all(lines, parse, reason, raw_of, source, first_position)
        reasons: Reasons = {}
        ix = self._index

        def column(name: str) -> list[Any]:
            j = ix.get(name)
            return [None] * len(rows) if j is None else [r[j] for r in rows]

        keys = column(s.key)
        nums = [self._numbers(name, column(name), reasons) for name in s.fields]
        ts_text = column(s.time)
        if s.time_unit == "iso8601":
            ts_values: Any = ts_text
        else:
            ts_values = self._numbers(s.time, ts_text, reasons, integer=s.time_unit == "ms")
        extras = []
        for name in s.extra_columns:
            vals = column(name)
            if name in s.optional:
                vals = [v if v else None for v in vals]
            extras.append(vals)
        return self._validator.assemble(
            keys, ts_values, nums, extras, row_line, raw_of, source, first_position, dead, reasons
        )

    def _numbers(
        self, name: str, texts: list[str], reasons: Reasons, integer: bool = False
    ) -> np.ndarray:
        dtype = np.int64 if integer else np.float64
        try:
            return np.array(texts, dtype=dtype) if texts else np.empty(0, dtype)
        except (ValueError, OverflowError):
            pass
        out = np.empty(len(texts), dtype)
        what = "an integer (epoch ms)" if integer else "a number"
        filler = self.schema.min_ts_ms if integer else 0.0
        for r, text in enumerate(texts):  # slow path only when some cell is malformed
            try:
                out[r] = int(text) if integer else float(text)
            except (ValueError, OverflowError):
                out[r] = filler
                reasons.setdefault(r, []).append(("wrong_type", f"`{name}` {text!r} is not {what}"))
        return out


class _Blank(Exception):
    """A blank line: skipped, not a record."""


class _BadColumns(ValueError):
    """A CSV line with the wrong number of columns."""

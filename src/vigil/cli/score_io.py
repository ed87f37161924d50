"""Files in and out of ``vigil score``: read a table into detector columns, write verdict tables.

Reading turns a ``.csv``, ``.jsonl`` / ``.ndjson`` or ``.parquet`` file into a :class:`Frame`: event times
(int64 epoch ms), float64 value columns, the key column, and per row whether it is readable and, if not,
why. Nothing here raises for a bad *row*; only a missing file or a missing *column* is an error.

* CSV is read with ``pyarrow.csv`` (types inferred; the key column always as text, so ``007`` stays
  ``007``). If that fails (a value column turns non-numeric after the first block, a line with the wrong
  number of fields), the file is re-read with every column as text, and failing that with Python's
  ``csv`` module, which reports malformed lines row by row.
* JSON lines are decoded one line at a time (``orjson``); blank lines are skipped (not rows).
* Parquet is read with ``pyarrow.parquet`` (only the needed columns).

Event time: ``auto`` reads text as ISO 8601 (no offset = UTC) and numbers as epoch ms when their median
magnitude is >= 1e11 (1e11 ms is March 1973; 1e11 s is the year 5138), else epoch seconds.
"""

from __future__ import annotations

import csv
import difflib
import fnmatch
import os
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from vigil.config.detector import ColumnsConfig, is_column_pattern
from vigil.errors import ConfigError, SourceError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ABS_MS = 1e15  # about the year 33658: beyond it an event time is corrupt (and near int64 trouble)
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".parquet": "parquet",
           ".pq": "parquet"}  # fmt: skip


@dataclass
class Frame:
    """A file's rows as detector columns (all arrays have one entry per input row).

    Attributes:
        n: rows.
        ts_ms: event times (meaningless where not ``ok``).
        values: float64 value columns (NaN = missing).
        keys: the key column (int64 ids or ``str`` objects), or ``None`` for a single series.
        ok: readable rows.
        reasons: why each unreadable row was rejected, by input row.
        raw: the time, key and value columns as read (pyarrow arrays), echoed into the output.
        time_unit: the event-time unit used (``ms``, ``s``, ``iso8601`` or ``timestamp``).
    """

    n: int
    ts_ms: np.ndarray
    values: dict[str, np.ndarray]
    keys: np.ndarray | None
    ok: np.ndarray
    reasons: dict[int, str]
    raw: dict[str, Any]
    time_unit: str


def file_format(path: str | os.PathLike[str]) -> str:
    """``csv``, ``jsonl`` or ``parquet`` from a file name's extension."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ConfigError("has an unknown extension", field="file", value=os.fspath(path),
                          hint="use .csv, .jsonl (or .ndjson) or .parquet")  # fmt: skip
    return FORMATS[ext]


def read_frame(path: str | os.PathLike[str], cols: ColumnsConfig) -> Frame:
    """Read a file into a :class:`Frame` (see the module docstring).

    Value columns given as globs (``*``, ``cpu_*``) are expanded here against the file's columns: each
    glob stands for the **numeric** columns it matches (file order), never the time or key column; ``*``
    is every numeric column. A column counts as numeric when it has a finite number and no more unreadable
    cells than finite ones (its few bad cells then make their rows unreadable, as for a named column).
    The expanded names are the keys of :attr:`Frame.values`. A glob that matches no numeric column, or an
    expansion missing the detector's own fields, is a :class:`~vigil.errors.ConfigError`.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise SourceError(f"input file does not exist: {path!r}")
    fmt = file_format(path)
    fixed = [cols.time_column, *([cols.key_column] if cols.key_column else [])]
    globbed: list[str] = []
    header: list[str] = []
    if cols.has_patterns:
        header = _header(path, fmt)
        globbed = [h for h in header if h not in fixed and any(fnmatch.fnmatchcase(h, p) for p in cols.value_columns
                                                                   if is_column_pattern(p))]  # fmt: skip
    named = [c for c in cols.value_columns if not is_column_pattern(c)]
    needed = list(dict.fromkeys([*fixed, *named, *globbed]))
    reasons: dict[int, str] = {}
    if fmt == "csv":
        n, columns = _read_csv(path, needed, cols.key_column, reasons)
    elif fmt == "jsonl":
        n, columns = _read_jsonl(path, needed, reasons)
    else:
        n, columns = _read_parquet(path, needed)
    ok = np.ones(n, bool)
    for r in reasons:
        ok[r] = False
    ts, unit = _times(columns[cols.time_column], cols.time_unit, cols.time_column, reasons)
    if cols.has_patterns:
        names = _expand(cols, columns, header, globbed, path)
        needed = [*fixed, *names]
    else:
        names = list(cols.value_columns)
    values = {c: _floats(columns[c], c, reasons) for c in names}
    keys = _keys(columns[cols.key_column], cols.key_column, reasons) if cols.key_column else None
    for r in reasons:
        ok[r] = False
    raw = {c: _as_arrow(columns[c]) for c in dict.fromkeys(needed)}
    return Frame(n, ts, values, keys, ok, reasons, raw, unit)


def _header(path: str, fmt: str) -> list[str]:
    """A file's column names, in file order (JSON lines: keys of its first objects, first seen first)."""
    if fmt == "csv":
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            return [h.strip() for h in next(csv.reader(f), [])]
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    import orjson

    return list(dict.fromkeys(k for obj in _first_objects(path, orjson.loads) for k in obj))


def _is_numeric(col: Any, name: str) -> bool:
    """At least one finite number and no more unreadable cells than finite ones."""
    bad: dict[int, str] = {}
    good = int(np.isfinite(_floats(col, name, bad)).sum())
    return good > 0 and good >= len(bad)


def _expand(
    cols: ColumnsConfig, columns: dict[str, Any], header: list[str], globbed: list[str], path: str
) -> list[str]:
    """The value columns with every glob replaced by the numeric columns it matches (see :func:`read_frame`)."""
    numeric = {c for c in globbed if _is_numeric(columns[c], c)}
    names: list[str] = []
    for p in cols.value_columns:
        if not is_column_pattern(p):
            names.append(p)
            continue
        hits = [c for c in globbed if c in numeric and fnmatch.fnmatchcase(c, p)]
        if not hits:
            matched = [c for c in globbed if fnmatch.fnmatchcase(c, p)]
            others = [c for c in header if c not in (cols.time_column, cols.key_column)]
            hint = f"it matches only non-numeric {', '.join(matched)}" if matched else f"columns: {', '.join(others)}"
            raise ConfigError(f"matches no numeric column of {os.path.basename(path)}", field="value_columns",
                              value=p, hint=hint)  # fmt: skip
        names.extend(hits)
    names = list(dict.fromkeys(names))
    missing = [f for f in cols.required if f not in names]
    if missing:
        raise ConfigError(f"must include the detector's fields {missing} (expanded from {list(cols.value_columns)} "
                          f"in {os.path.basename(path)})", field="value_columns", value=names)  # fmt: skip
    return names


def _missing_columns(header: list[str], needed: list[str], path: str) -> None:
    for c in needed:
        if c not in header:
            close = difflib.get_close_matches(c, header, n=1)
            raise ConfigError(
                f"is not a column of {os.path.basename(path)}",
                field="column",
                value=c,
                hint=f"did you mean {close[0]!r}?" if close else f"columns: {', '.join(header)}",
            )


def _read_csv(path: str, needed: list[str], key: str | None, reasons: dict[int, str]) -> tuple[int, dict[str, Any]]:
    import pyarrow as pa
    import pyarrow.csv as pacsv

    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        header = next(csv.reader(f), [])
    _missing_columns([h.strip() for h in header], needed, path)
    for as_text in (False, True):
        types = {c: pa.string() for c in needed} if as_text else ({key: pa.string()} if key else {})
        conv = pacsv.ConvertOptions(include_columns=needed, column_types=types, strings_can_be_null=True)
        try:
            t = pacsv.read_csv(path, convert_options=conv)
        except pa.ArrowInvalid:
            continue
        return t.num_rows, {c: t.column(c).combine_chunks() for c in needed}
    # malformed lines: Python's csv module, row by row
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f)
        head = [h.strip() for h in next(rows)]
        where = [head.index(c) for c in needed]
        out: dict[str, list[Any]] = {c: [] for c in needed}
        i = 0
        for row in rows:
            if not row:
                continue
            if len(row) != len(head):
                reasons[i] = f"malformed line: expected {len(head)} fields, got {len(row)}"
                for c in needed:
                    out[c].append(None)
            else:
                for c, j in zip(needed, where, strict=True):
                    v = row[j]
                    out[c].append(v if v.strip() != "" else None)
            i += 1
    return i, out


def _read_jsonl(path: str, needed: list[str], reasons: dict[int, str]) -> tuple[int, dict[str, Any]]:
    try:
        import orjson

        loads: Any = orjson.loads
        errors: tuple[type[Exception], ...] = (orjson.JSONDecodeError,)
    except ImportError:  # pragma: no cover - orjson is a dependency
        import json

        loads, errors = json.loads, (ValueError,)
    out: dict[str, list[Any]] = {c: [] for c in needed}
    i = 0
    with open(path, "rb") as f:
        for line in f:
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except errors as exc:
                reasons[i] = f"invalid JSON: {str(exc)[:120]}"
                obj = None
            if obj is not None and not isinstance(obj, dict):
                reasons[i] = f"not a JSON object: {type(obj).__name__}"
                obj = None
            for c in needed:
                out[c].append(obj.get(c) if obj is not None else None)
            i += 1
    if i and all(v is None for v in out[needed[0]]) and len(reasons) < i:
        _missing_columns(sorted({k for line in _first_objects(path, loads) for k in line}), needed, path)
    return i, out


def _first_objects(path: str, loads: Any, n: int = 20) -> list[dict[str, Any]]:
    objs: list[dict[str, Any]] = []
    with open(path, "rb") as f:
        for line in f:
            try:
                obj = loads(line)
            except Exception:  # noqa: BLE001 - only used for a hint
                continue
            if isinstance(obj, dict):
                objs.append(obj)
            if len(objs) >= n:
                break
    return objs


def _read_parquet(path: str, needed: list[str]) -> tuple[int, dict[str, Any]]:
    import pyarrow.parquet as pq

    _missing_columns(list(pq.read_schema(path).names), needed, path)
    t = pq.read_table(path, columns=list(dict.fromkeys(needed)))
    return t.num_rows, {c: t.column(c).combine_chunks() for c in needed}


def _is_arrow(col: Any) -> bool:
    return hasattr(col, "type") and hasattr(col, "to_pylist")


def _as_arrow(col: Any) -> Any:
    import pyarrow as pa

    if _is_arrow(col):
        return col
    try:
        return pa.array(col)
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return pa.array([None if v is None else str(v) for v in col], pa.string())


def _floats(col: Any, name: str, reasons: dict[int, str]) -> np.ndarray:
    """A value column as float64; unreadable cells (text, infinity) get a reason; missing cells are NaN."""
    import pyarrow as pa
    import pyarrow.compute as pc

    x: np.ndarray | None = None
    if _is_arrow(col):
        t = col.type
        if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
            x = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
        elif pa.types.is_null(t):
            x = np.full(len(col), np.nan)
        elif pa.types.is_string(t) or pa.types.is_large_string(t):
            try:
                x = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                x = None
        col = col.to_pylist() if x is None else col
    if x is None:
        try:
            if any(isinstance(v, bool) for v in col):
                raise TypeError("booleans are not numbers")
            x = np.asarray(col, np.float64)
        except (ValueError, TypeError):
            x = np.empty(len(col), np.float64)
            for i, v in enumerate(col):
                x[i] = _float_cell(v, name, i, reasons)
    bad = np.isinf(x)
    for i in np.flatnonzero(bad).tolist():
        reasons.setdefault(i, f"`{name}` is not finite: {float(x[i])!r}")  # the value, not numpy's repr of it
    return x


def _float_cell(v: Any, name: str, i: int, reasons: dict[int, str]) -> float:
    if v is None or (isinstance(v, str) and v.strip() == ""):
        return np.nan
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    reasons.setdefault(i, f"`{name}` is not a number: {str(v)[:80]!r}")
    return np.nan


def _times(col: Any, unit: str, name: str, reasons: dict[int, str]) -> tuple[np.ndarray, str]:
    """Event times in epoch ms and the unit used; unreadable or missing times get a reason."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(col)
    if _is_arrow(col):
        t = col.type
        if pa.types.is_timestamp(t) or pa.types.is_date(t):
            ms = pc.cast(pc.cast(col, pa.timestamp("ms", getattr(t, "tz", None))), pa.int64())
            ms_f = np.asarray(ms.to_numpy(zero_copy_only=False), np.float64)
            return _checked_ms(ms_f, col.to_pylist, name, "timestamp", reasons)
        if pa.types.is_floating(t) or pa.types.is_decimal(t) or (pa.types.is_integer(t) and unit == "s"):
            col = np.asarray(pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False), np.float64)
        elif pa.types.is_integer(t) and unit in ("ms", "auto"):
            ints = np.asarray(pc.fill_null(col, 0).to_numpy(zero_copy_only=False), np.int64)
            u = unit if unit != "auto" else _numeric_unit(ints.astype(np.float64))
            if u == "ms":
                for i in np.flatnonzero(col.is_null().to_numpy(zero_copy_only=False)).tolist():
                    reasons.setdefault(i, f"`{name}` is missing")
                return ints, "ms"
        if _is_arrow(col):
            col = col.to_pylist()
    numeric: np.ndarray | None = None
    if unit in ("ms", "s", "auto"):
        try:
            if not isinstance(col, np.ndarray) and any(isinstance(v, bool) for v in col):
                raise TypeError("booleans are not times")
            numeric = np.asarray(col, np.float64)
        except (ValueError, TypeError):
            if unit != "auto":
                numeric = np.array([_float_cell(v, name, i, {}) for i, v in enumerate(col)], np.float64)
    if numeric is not None:
        u = unit if unit != "auto" else _numeric_unit(numeric)
        return _checked_ms(numeric * (1000.0 if u == "s" else 1.0), lambda: col, name, u, reasons)
    texts = [v if isinstance(v, str) else None for v in col]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            dt = np.array(texts, dtype="datetime64[ms]")
        ms_f = np.where(np.isnat(dt), np.nan, dt.astype(np.int64).astype(np.float64))
    except (ValueError, TypeError, Warning):
        ms_f = np.array([_iso_ms(v) for v in texts], np.float64) if n else np.empty(0)
    return _checked_ms(ms_f, lambda: col, name, "iso8601", reasons)


def _numeric_unit(x: np.ndarray) -> str:
    finite = np.abs(x[np.isfinite(x)])
    return "ms" if finite.size and float(np.median(finite)) >= 1e11 else "s"


def _checked_ms(ms_f: np.ndarray, originals: Any, name: str, unit: str, reasons: dict[int, str]) -> tuple[Any, str]:
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(ms_f) <= _MAX_ABS_MS)
    if bad.any():
        orig = originals()
        for i in np.flatnonzero(bad).tolist():
            v = orig[i]
            v = v.item() if isinstance(v, np.generic) else v  # shown as 1e+20, not np.float64(1e+20)
            if v is None or (isinstance(v, str) and not v.strip()):
                why = f"`{name}` is missing"
            elif unit == "iso8601":
                why = f"`{name}` is not an ISO 8601 time: {str(v)[:80]!r}"
            elif isinstance(v, (int, float)) and np.isfinite(v):
                why = f"`{name}` is out of range: {v!r}"
            else:
                why = f"`{name}` is not a time: {str(v)[:80]!r}"
            reasons.setdefault(i, why)
        ms_f = np.where(bad, 0.0, ms_f)
    return np.rint(ms_f).astype(np.int64), unit


def _iso_ms(text: str | None) -> float:
    """Epoch ms of an ISO 8601 time (no offset = UTC), NaN if it isn't one."""
    if text is None:
        return np.nan
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        return np.nan
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return (dt - _EPOCH).total_seconds() * 1000.0


def _keys(col: Any, name: str, reasons: dict[int, str]) -> np.ndarray:
    """Keys as int64 ids (integer columns without nulls) or ``str`` objects; a missing key is unreadable."""
    import pyarrow as pa

    if _is_arrow(col):
        if pa.types.is_integer(col.type) and col.null_count == 0:
            return np.asarray(col.to_numpy(zero_copy_only=False), np.int64)
        col = col.to_pylist()
    out = np.empty(len(col), object)
    for i, v in enumerate(col):
        if v is None or (isinstance(v, str) and not v.strip()):
            reasons.setdefault(i, f"`{name}` is missing")
            out[i] = ""
        else:
            out[i] = v if isinstance(v, str) else str(v)
    return out


def check_output(path: str | os.PathLike[str], field: str = "output") -> None:
    """The output file can be written where it is named: its folder exists (none is made), it isn't a folder.

    Examples:
        >>> check_output("/no/such/folder/out.csv")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `output` is in a folder that does not exist (/no/such/folder); ...
    """
    from vigil.cli.common import check_output_file

    file_format(path)
    check_output_file(path, field)


def write_table(columns: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """Write columns (pyarrow arrays) as ``.csv``, ``.jsonl`` or ``.parquet`` (by extension)."""
    import pyarrow as pa

    path = os.fspath(path)
    fmt = file_format(path)
    check_output(path)
    table = pa.table(columns)
    if fmt == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    elif fmt == "csv":
        import pyarrow.csv as pacsv

        pacsv.write_csv(table, path)
    else:
        import orjson

        with open(path, "wb") as f:
            for batch in table.to_batches(max_chunksize=65_536):
                f.write(b"".join(orjson.dumps(r, option=orjson.OPT_NAIVE_UTC) + b"\n" for r in batch.to_pylist()))

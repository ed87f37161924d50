"""Sinks: the console, JSON-lines files, SQLite, dead letters and memory.

Every sink has ``write_batch(items)`` (may buffer), ``flush()`` (the durability point: everything
written before it survives a crash once it returns; a failure raises
:class:`~vigil.errors.SinkError`, which aborts the checkpoint) and ``close()`` (flush, release,
idempotent). Writing after ``close()`` raises :class:`~vigil.errors.SinkError`.

Items are objects with ``to_dict()`` (:class:`~vigil.types.Alert`,
:class:`~vigil.io.base.DeadLetter`) or plain dicts.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vigil.errors import ConfigError, SinkError
from vigil.io.display import visible
from vigil.types import Alert

if TYPE_CHECKING:
    from rich.console import Console
    from rich.text import Text

_JSON_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _as_dict(item: Any) -> dict[str, Any]:
    to_dict = getattr(item, "to_dict", None)
    if to_dict is not None:
        return to_dict()  # type: ignore[no-any-return]
    if isinstance(item, dict):
        return item
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    raise SinkError(f"can't write {type(item).__name__}: expected a dict or an object with to_dict()")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    return str(obj)  # a sink must not fail on an odd value: keep its text


class _Closable:
    _closed = False
    _what = "sink"

    def _check_open(self) -> None:
        if self._closed:
            raise SinkError(f"{self._what} is closed; can't write")


class JsonlSink(_Closable):
    r"""Items as JSON lines appended to a file (orjson), buffered; ``flush()`` writes and fsyncs.

    Args:
        path: the file (created with its directory; appended to if it exists). A last line without
            its newline — the torn write of a process killed mid-write, never flushed, so never part
            of a checkpoint — is cut off before appending, so the file stays valid JSON lines.
        buffer_bytes: buffered bytes beyond which a write goes to the OS (not yet durable).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "out.jsonl")
        >>> s = JsonlSink(p); s.write_batch([{"a": 1}, {"b": [1, 2]}]); s.close()
        >>> open(p).read()
        '{"a":1}\n{"b":[1,2]}\n'
    """

    _what = "JSON-lines sink"

    def __init__(self, path: str | os.PathLike[str], buffer_bytes: int = 1 << 20) -> None:
        self.path = Path(path)
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._buffer_bytes = buffer_bytes
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            existed = self.path.exists()
            if existed:
                _drop_torn_tail(self.path)
            # Unbuffered: our own buffer is the only one, so a write-out really reaches the OS.
            self._f = open(self.path, "ab", buffering=0)  # noqa: SIM115 - closed in close()
            if not existed:  # make the new directory entry durable too
                _fsync_dir(self.path.parent)
        except OSError as e:
            raise SinkError(f"can't open {self.path}: {e}") from e

    def write_batch(self, items: list[Any]) -> None:
        """Buffer the items (written to the OS when the buffer is full)."""
        self._check_open()
        dumps, opts = orjson.dumps, _JSON_OPTS | orjson.OPT_APPEND_NEWLINE
        # plain dicts (window rows, late rows) skip the to_dict() probe: they are most of the volume
        blob = b"".join([dumps(x if type(x) is dict else _as_dict(x), default=_json_default, option=opts)
                         for x in items])  # fmt: skip
        self._buffer.append(blob)
        self._buffered += len(blob)
        if self._buffered >= self._buffer_bytes:
            self._write_out()

    def _write_out(self) -> None:
        if not self._buffer:
            return
        data = memoryview(b"".join(self._buffer))
        try:
            while data:
                written = self._f.write(data)
                if not written:
                    raise OSError("write made no progress")
                data = data[written:]
        except OSError as e:
            raise SinkError(f"write to {self.path} failed: {e}") from e
        self._buffer, self._buffered = [], 0

    def flush(self) -> None:
        """Write everything buffered and fsync it."""
        self._check_open()
        self._write_out()
        try:
            self._f.flush()
            os.fsync(self._f.fileno())
        except OSError as e:
            raise SinkError(f"flush of {self.path} failed: {e}") from e

    def close(self) -> None:
        """Flush and close; idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._f.close()


def _drop_torn_tail(path: Path) -> None:
    """Truncate a file after its last newline (a crash can leave half a line at the end)."""
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        pos = size
        while pos > 0:
            step = min(65536, pos)
            f.seek(pos - step)
            chunk = f.read(step)
            nl = chunk.rfind(b"\n")
            if nl >= 0:
                f.truncate(pos - step + nl + 1)
                return
            pos -= step
        f.truncate(0)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return  # not supported here (e.g. Windows); the file itself is still fsynced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LazyJsonlSink:
    """A :class:`JsonlSink` whose file (and folder) is made only when something is written: no empty files.

    The engine's default late and dead-letter outputs are these: a clean run leaves no ``late.jsonl``.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._sink: JsonlSink | None = None

    def write_batch(self, items: list[Any]) -> None:
        """Make the file on the first write, then append."""
        if self._sink is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._sink = JsonlSink(self.path)
        self._sink.write_batch(items)

    def flush(self) -> None:
        """Flush, if anything was written."""
        if self._sink is not None:
            self._sink.flush()

    def close(self) -> None:
        """Close, if anything was written."""
        if self._sink is not None:
            self._sink.close()


class OnFirstUse:
    """A file sink made on first use — a write, a flush or a close — rather than when the pipeline is built.

    Building a pipeline (``vigil validate``, a run that fails before it starts, e.g. on a missing input)
    creates no file and no folder; a run that starts and ends creates every output, empty ones included. A
    path that could never be created (under a file, in a folder that can't be written) fails at once, naming
    the ``path`` field.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "out", "a.jsonl")
        >>> s = OnFirstUse(JsonlSink, p); os.path.exists(p)
        False
        >>> s.close(); os.path.getsize(p)
        0
    """

    def __init__(self, make: Callable[[Path], Any], path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        check_creatable(self.path)
        self._make = make
        self._sink: Any = None

    def _get(self) -> Any:
        if self._sink is None:
            self._sink = self._make(self.path)
        return self._sink

    def write_batch(self, items: list[Any]) -> None:
        """Write to the sink (made now if this is the first use)."""
        self._get().write_batch(items)

    def flush(self) -> None:
        """Flush the sink (made now if this is the first use)."""
        self._get().flush()

    def close(self) -> None:
        """Close the sink (made now if this is the first use: a finished run leaves every output)."""
        self._get().close()


def check_creatable(path: Path) -> None:
    """Fail (a ConfigError naming ``path``) if a file could never be made there; create nothing.

    Examples:
        >>> check_creatable(Path("/etc/passwd/x.jsonl"))
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `path` can't be created: /etc/passwd is a file, not a folder; got '/etc/passwd/...'
    """
    if path.is_dir():
        raise ConfigError("is a folder; name a file in it", field="path", value=str(path))
    parent = path.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"can't be created: {parent} is a file, not a folder", field="path", value=str(path))
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ConfigError(f"can't be written (no permission in {parent})", field="path", value=str(path))


class DeadLetterSink(JsonlSink):
    """Dead letters (:class:`~vigil.io.base.DeadLetter` or dicts) as JSON lines; ``count`` = written."""

    _what = "dead-letter sink"

    def __init__(self, path: str | os.PathLike[str], buffer_bytes: int = 1 << 20) -> None:
        super().__init__(path, buffer_bytes)
        self.count = 0

    def write_batch(self, items: list[Any]) -> None:
        """Buffer the dead letters."""
        super().write_batch(items)
        self.count += len(items)


def _alert_columns() -> tuple[list[tuple[str, str]], set[str]]:
    """(name, SQL type) of every :class:`Alert` field, and the names stored as JSON text."""
    columns, json_columns = [], set()
    for f in dataclasses.fields(Alert):
        text = str(f.type)
        if "dict" in text or "list" in text:
            sql_type = "TEXT"
            json_columns.add(f.name)
        elif "float" in text:
            sql_type = "REAL"
        elif "int" in text:
            sql_type = "INTEGER"
        else:
            sql_type = "TEXT"
        columns.append((f.name, sql_type))
    return columns, json_columns


class SqliteAlertSink(_Closable):
    """Alerts in the SQLite table ``alerts``: one column per :class:`Alert` field, keyed by ``id``.

    Writes are ``INSERT OR REPLACE`` (re-writing an alert after a restart is harmless); ``stats``
    and ``event_ids`` are JSON text. ``flush()`` commits (WAL, ``synchronous=FULL``).
    Columns added to :class:`Alert` later are added to an existing table on open.

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "alerts.db")
        >>> s = SqliteAlertSink(p)
        >>> from vigil.types import Alert
        >>> s.write_batch([Alert("a1", "u1", "e1", "amount_z", 7.5, 3.0, 1, 2, stats={"n": 9})]); s.close()
        >>> [(a["id"], a["stats"]) for a in SqliteAlertSink.read(p)]
        [('a1', {'n': 9})]
    """

    _what = "SQLite alert sink"

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        columns, self._json_columns = _alert_columns()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            cols = ", ".join(f"{n} {t}{' PRIMARY KEY' if n == 'id' else ''}" for n, t in columns)
            self._db.execute(f"CREATE TABLE IF NOT EXISTS alerts ({cols})")
            have = {row[1] for row in self._db.execute("PRAGMA table_info(alerts)")}
            for name, sql_type in columns:
                if name not in have:
                    self._db.execute(f"ALTER TABLE alerts ADD COLUMN {name} {sql_type}")
            self._db.commit()
        except sqlite3.Error as e:
            raise SinkError(f"can't open alert store {self.path}: {e}") from e
        names = [n for n, _ in columns]
        marks = ", ".join("?" * len(names))
        self._insert = f"INSERT OR REPLACE INTO alerts ({', '.join(names)}) VALUES ({marks})"
        self._names = names

    def _row(self, item: Any) -> tuple[Any, ...]:
        d = _as_dict(item)
        return tuple(
            orjson.dumps(d.get(n), default=_json_default, option=_JSON_OPTS).decode()
            if n in self._json_columns else d.get(n)
            for n in self._names
        )

    def write_batch(self, items: list[Any]) -> None:
        """Insert (or replace) the alerts in the open transaction."""
        self._check_open()
        try:
            self._db.executemany(self._insert, [self._row(i) for i in items])
        except sqlite3.Error as e:
            raise SinkError(f"write to {self.path} failed: {e}") from e

    def flush(self) -> None:
        """Commit."""
        self._check_open()
        try:
            self._db.commit()
        except sqlite3.Error as e:
            raise SinkError(f"commit to {self.path} failed: {e}") from e

    def close(self) -> None:
        """Commit and close; idempotent."""
        if self._closed:
            return
        try:
            self.flush()
        finally:
            self._closed = True
            self._db.close()

    @staticmethod
    def read(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
        """Every stored alert as a dict (JSON columns parsed), in insertion order."""
        json_columns = _alert_columns()[1]
        db = sqlite3.connect(path)
        try:
            cur = db.execute("SELECT * FROM alerts ORDER BY rowid")
            names = [c[0] for c in cur.description]
            rows = [dict(zip(names, row, strict=True)) for row in cur]
        finally:
            db.close()
        for row in rows:
            for n in json_columns:
                if row.get(n) is not None:
                    row[n] = json.loads(row[n])
        return rows


class MemorySink(_Closable):
    """Keeps items in a list, for tests.

    Attributes:
        items: everything written.
        durable: the items written before the last ``flush()``.
        fail_flush: set to make ``flush()`` raise :class:`SinkError` (to test checkpoint aborts).
    """

    _what = "memory sink"

    def __init__(self) -> None:
        self.items: list[Any] = []
        self.flushes = 0
        self.fail_flush = False
        self._durable = 0

    def write_batch(self, items: list[Any]) -> None:
        """Append the items."""
        self._check_open()
        self.items.extend(items)

    def flush(self) -> None:
        """Mark everything written as durable (or fail if ``fail_flush``)."""
        self._check_open()
        if self.fail_flush:
            raise SinkError("memory sink: flush failed (fail_flush is set)")
        self._durable = len(self.items)
        self.flushes += 1

    @property
    def durable(self) -> list[Any]:
        """Items made durable by the last flush."""
        return self.items[: self._durable]

    def close(self) -> None:
        """Flush and close; idempotent."""
        if not self._closed:
            self._durable = len(self.items)
            self._closed = True


class ConsoleAlertSink(_Closable):
    """One coloured line per alert on a rich console, rate-limited so the terminal is never flooded.

    At most ``limit_per_s`` alerts are printed per second of wall clock; the rest are counted and
    summarised as ``(N more alerts not shown)`` when the second ends (or on flush/close).

    A line reads: event time (UTC), severity, key, detector, score vs threshold, the alert's message
    (or its window statistics when it has none), latency from the producer::

        2026-01-01 13:56:42.274 WARN  u0003393  amount_z  score 18.60 (threshold 3.00)  amount 412.5 is 18.6 sd
        above the usual 14.87 (sd x1.22, long baseline)  1 ms
    """

    _what = "console sink"
    _STATS_FIRST = ("count", "n", "mean", "expected", "std", "median", "mad", "window", "baseline")
    _SEVERITY = {"critical": ("CRIT", "bold red"), "warning": ("WARN", "yellow"), "info": ("INFO", "blue")}

    def __init__(
        self,
        console: Console | None = None,
        limit_per_s: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if console is None:
            from rich.console import Console

            console = Console(highlight=False)
        self.console = console
        self.limit_per_s = limit_per_s
        self._clock = clock
        self._window = -1
        self._shown = 0
        self.suppressed = 0  # not shown in the current second
        self.printed = 0

    def write_batch(self, items: list[Any]) -> None:
        """Print the alerts that fit in this second's budget; count the rest."""
        self._check_open()
        for item in items:
            window = int(self._clock())
            if window != self._window:
                self._report_suppressed()
                self._window, self._shown = window, 0
            if self._shown < self.limit_per_s:
                self.console.print(self.format(item), soft_wrap=True)
                self._shown += 1
                self.printed += 1
            else:
                self.suppressed += 1

    def _report_suppressed(self) -> None:
        if self.suppressed:
            from rich.text import Text

            self.console.print(Text(f"({self.suppressed} more alerts not shown)", style="dim italic"))
            self.suppressed = 0

    @classmethod
    def format(cls, item: Any) -> Text:
        """The line shown for one alert (an :class:`Alert` or its dict form)."""
        from rich.text import Text

        a = item.to_dict() if hasattr(item, "to_dict") else dict(item)
        label, style = cls._SEVERITY.get(str(a.get("severity", "warning")), ("NOTE", "white"))
        ts = a.get("event_ts_ms")
        when = (
            datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
            if isinstance(ts, (int, float)) else "?"
        )
        line = Text()
        line.append(when, style="dim")
        line.append(f" {label:<5} ", style=style)
        line.append(visible(a.get("key", "?")), style="bold cyan")  # a key shows what it is (no bidi tricks)
        line.append(f"  {visible(a.get('detector', '?'))}", style="magenta")
        line.append(f"  score {_fixed(a.get('score'))} (threshold {_fixed(a.get('threshold'))})", style=style)
        stats = a.get("stats") or {}
        if a.get("message"):
            line.append(f"  {visible(a['message'])}")
        elif stats:
            first = cls._STATS_FIRST
            ordered = [k for k in first if k in stats] + [k for k in stats if k not in first]
            line.append("  " + " ".join(f"{k}={_num(stats[k])}" for k in ordered[:5]), style="dim")
        lat = a.get("latency_ms")
        if isinstance(lat, (int, float)):
            line.append(f"  {lat:.0f} ms", style="green" if lat < 100 else "yellow" if lat < 1000 else "red")
        return line

    def flush(self) -> None:
        """Report suppressed alerts and flush the console's stream."""
        self._check_open()
        self._report_suppressed()
        file = getattr(self.console, "file", None)
        if file is not None and hasattr(file, "flush"):
            file.flush()

    def close(self) -> None:
        """Flush; idempotent (the console itself stays open)."""
        if not self._closed:
            self.flush()
            self._closed = True


def _fixed(value: Any) -> str:
    return f"{value:.2f}" if isinstance(value, (int, float)) else str(value)


def _num(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

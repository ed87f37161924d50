"""Conformance checks for sources and sinks.

``check_source(factory)`` reads a finite source once as the reference, then, for several cut points,
reads part of it, restarts from ``position()`` (round-tripped through JSON, as a checkpoint would)
and checks that the two parts together are exactly the reference: no duplicate, no gap — for records
and dead letters alike. Along the way every ``read_batch`` must honour ``max_items`` and return
within its timeout (plus a scheduling slack), and ``close()`` must be idempotent.

``check_sink(factory)`` writes items in batches, checks they are durable after ``flush()`` (through
a ``read_back`` function that reads them independently), that ``close()`` is idempotent and that
writing after close raises :class:`~vigil.errors.SinkError`.

Examples:
    >>> from vigil.io.memory import MemorySource
    >>> from vigil.io.sinks import MemorySink
    >>> cols = {"key": list("abcab"), "ts_ms": [1, 2, 3, 4, 5], "x": [1.0, 2, 3, 4, 5]}
    >>> check_source(lambda: MemorySource(cols, batch_size=2))["records"]
    5
    >>> check_sink(MemorySink, read_back=lambda s: s.durable)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from typing import Any

from vigil.errors import SinkError, SourceError
from vigil.io.base import Records, Sink, Source, SourceReader

Row = tuple[Any, ...]


def _rows(recs: Records) -> list[Row]:
    columns = [recs.keys.tolist(), recs.ts_ms.tolist()]
    columns += [recs.cols[k].tolist() for k in sorted(recs.cols)]
    columns += [recs.extra[k].tolist() for k in sorted(recs.extra)]
    return list(zip(*columns, strict=True))


def _dead(recs: Records) -> list[Row]:
    return [(d.reason, d.message, d.raw, d.source, json.dumps(d.position)) for d in recs.dead]


class _Run:
    """Reads one partition, checking each read; keeps what it read."""

    def __init__(
        self, reader: SourceReader, max_items: Sequence[int], timeout_ms: int, slack_ms: int, stall_s: float
    ) -> None:
        assert isinstance(reader, SourceReader), f"{type(reader).__name__} is not a SourceReader"
        self.reader, self.max_items = reader, max_items
        self.timeout_ms, self.slack_ms, self.stall_s = timeout_ms, slack_ms, stall_s
        self.rows: list[Row] = []
        self.dead: list[Row] = []
        self.reads = 0
        self._last_progress = time.monotonic()

    def read(self) -> bool:
        """One read; False once the source is at its end."""
        if self.reader.at_end:
            return False
        limit = self.max_items[self.reads % len(self.max_items)]
        t0 = time.monotonic()
        recs = self.reader.read_batch(limit, self.timeout_ms)
        took_ms = (time.monotonic() - t0) * 1000
        self.reads += 1
        assert took_ms <= self.timeout_ms + self.slack_ms, (
            f"read_batch({limit}, timeout_ms={self.timeout_ms}) took {took_ms:.0f} ms"
        )
        if recs is not None:
            assert isinstance(recs, Records), f"read_batch returned {type(recs).__name__}, not Records"
            assert len(recs) <= limit, f"read_batch({limit}) returned {len(recs)} records"
            n = len(recs)
            assert all(len(c) == n for c in (recs.keys, *recs.cols.values(), *recs.extra.values()))
            self.rows += _rows(recs)
            self.dead += _dead(recs)
            if n or recs.dead:
                self._last_progress = time.monotonic()
        assert time.monotonic() - self._last_progress < self.stall_s, (
            f"no progress for {self.stall_s} s and not at_end (a finite source must reach at_end)"
        )
        return True

    def position(self) -> Any:
        pos = self.reader.position()
        try:
            return json.loads(json.dumps(pos))
        except TypeError as e:
            raise AssertionError(f"position() must be plain data (JSON-ready); got {pos!r}") from e


def check_source(
    factory: Callable[[], Source],
    *,
    max_items: Sequence[int] = (1, 7, 64, 1000),
    timeout_ms: int = 50,
    slack_ms: int = 500,
    cuts: int = 6,
    stall_s: float = 30.0,
) -> dict[str, int]:
    """Check a finite source's contract (see the module docstring); returns counts read.

    Args:
        factory: makes a fresh source over the same finite data on every call.
        max_items: ``max_items`` values used in turn, read after read.
        timeout_ms: timeout passed to every ``read_batch``.
        slack_ms: tolerance over the timeout (scheduling, decoding a batch).
        cuts: number of restart points tried per partition.
        stall_s: fail if no record arrives for this long and the source isn't at its end.

    Raises:
        AssertionError: naming the broken rule.
    """
    source = factory()
    assert isinstance(source, Source), f"{type(source).__name__} is not a Source"
    parts = source.partitions()
    assert parts and all(isinstance(p, str) for p in parts), f"partitions() must be names; got {parts!r}"
    totals = {"records": 0, "dead": 0, "reads": 0}
    for part in parts:
        ref = _Run(factory().open(part), max_items, timeout_ms, slack_ms, stall_s)
        while ref.read():
            pass
        assert ref.reader.at_end
        again = ref.reader.read_batch(max_items[0], timeout_ms)
        assert again is None or (len(again) == 0 and not again.dead), "read after at_end returned data"
        ref.reader.close()
        ref.reader.close()  # idempotent
        totals["records"] += len(ref.rows)
        totals["dead"] += len(ref.dead)
        totals["reads"] += ref.reads
        step = max(1, ref.reads // max(1, cuts))
        for cut in sorted({0, *range(1, ref.reads + 1, step), ref.reads}):
            first = _Run(factory().open(part), max_items, timeout_ms, slack_ms, stall_s)
            for _ in range(cut):
                if not first.read():
                    break
            pos = first.position()
            first.reader.close()
            rest = _Run(factory().open(part, resume=pos), max_items[::-1], timeout_ms, slack_ms, stall_s)
            while rest.read():
                pass
            rest.reader.close()
            where = f"partition {part!r}, restart after {cut} reads at position {pos!r}"
            _same(first.rows + rest.rows, ref.rows, "records", where)
            _same(first.dead + rest.dead, ref.dead, "dead letters", where)
    return totals


def _same(got: list[Row], want: list[Row], what: str, where: str) -> None:
    if got == want:
        return
    seen, dup = set(), None
    for r in got:
        if r in seen:
            dup = r
            break
        seen.add(r)
    missing = next((r for r in want if r not in seen), None)
    raise AssertionError(
        f"{where}: {what} differ from an uninterrupted read ({len(got)} vs {len(want)}); "
        f"first duplicate {dup!r}, first missing {missing!r}"
    )


def _plain(item: Any) -> Any:
    data = item.to_dict() if hasattr(item, "to_dict") else item
    return json.loads(json.dumps(data, default=str))


def _sample_alerts() -> list[Any]:
    from vigil.types import Alert, alert_id

    return [
        Alert(
            alert_id("step", "amount_z", f"u{i}", f"e{i}"), f"u{i}", f"e{i}", "amount_z", 6.0 + i, 4.0,
            1_700_000_000_000 + i, 1_700_000_000_500 + i, latency_ms=12.5 if i % 2 else None,
            stats={"n": 100 + i, "mean": 20.5, "std": 2.25}, event_ids=[f"e{i}"],
            severity="critical" if i % 3 == 0 else "warning", message=f"amount spike for u{i}",
        )
        for i in range(7)
    ]


def check_sink(
    factory: Callable[[], Sink],
    items: Sequence[Any] | None = None,
    read_back: Callable[[Any], list[Any]] | None = None,
) -> None:
    """Check a sink's contract (see the module docstring).

    Args:
        factory: makes a fresh, empty sink.
        items: what to write (default: a few alerts).
        read_back: reads what the sink made durable, independently of it (e.g. re-reading the file);
            compared with the items' ``to_dict()`` forms, in order. ``None`` skips that check.

    Raises:
        AssertionError: naming the broken rule.
    """
    items = list(_sample_alerts() if items is None else items)
    sink = factory()
    assert isinstance(sink, Sink), f"{type(sink).__name__} is not a Sink"
    half = len(items) // 2
    sink.write_batch(items[:half])
    sink.write_batch([])
    sink.write_batch(items[half:])
    sink.flush()
    want = [_plain(i) for i in items]
    if read_back is not None:
        got = [_plain(i) for i in read_back(sink)]
        assert got == want, f"after flush, read back {len(got)} items; wrote {len(want)}: {got[:2]!r}"
    sink.close()
    sink.close()  # idempotent
    try:
        sink.write_batch(items[:1])
    except SinkError:
        pass
    else:
        raise AssertionError("write_batch after close() must raise SinkError")
    if read_back is not None:
        got = [_plain(i) for i in read_back(sink)]
        assert got == want, "items lost by close()"


# -- a list source with crash and end markers (bytewax's TestingSource) ------------------------------------


class ABORT:
    """In a :class:`ListSource`: the reader raises :class:`Aborted` here — once per source object, like a crash."""


class EOF:
    """In a :class:`ListSource`: the input ends here; a run resumed from a later checkpoint goes on past it."""


class Aborted(SourceError):
    """The crash a :class:`ListSource` simulates at an :class:`ABORT` marker."""


class ListSource:
    """Records from a list, with :class:`ABORT` and :class:`EOF` markers, for deterministic crash tests.

    Positions are indices into ``items`` (resume after the last item handed out). A batch never crosses a
    marker, so an abort happens at exactly the same point of the stream whatever the batch size. The abort
    fires only the first time it is reached (per source object): reuse the object for the run that resumes.

    Args:
        items: record dicts (decoded with ``schema``, bad ones become dead letters) and markers.
        schema: the records' shape.
        batch_size: at most this many records per read.

    Examples:
        >>> from vigil.io.schema import Schema
        >>> rows = [{"k": "a", "t": 1_700_000_000_000 + i, "x": 1.0} for i in range(5)]
        >>> src = ListSource([*rows[:3], ABORT(), *rows[3:]], Schema("k", "t", fields=("x",)), batch_size=2)
        >>> r = src.open()
        >>> len(r.read_batch(10, 0)), len(r.read_batch(10, 0)), r.position()
        (2, 1, 3)
        >>> r.read_batch(10, 0)
        Traceback (most recent call last):
        ...
        vigil.testing.sources.Aborted: list source `list`: ABORT at item 3
        >>> r2 = src.open(resume=3)
        >>> len(r2.read_batch(10, 0)), r2.at_end
        (2, True)
    """

    def __init__(self, items: Sequence[Any], schema: Any, batch_size: int = 1024, name: str = "list") -> None:
        from vigil.io.decode import JsonDecoder

        self.items, self.name, self.batch_size = list(items), name, batch_size
        self._decoder = JsonDecoder(schema)
        self._fired: set[int] = set()

    def partitions(self) -> list[str]:
        """One partition, ``"0"``."""
        return ["0"]

    def open(self, partition: str = "0", resume: Any = None) -> _ListReader:
        """Open; ``resume`` is the index of the next item."""
        start = 0 if resume is None else int(resume)
        if start < len(self.items) and isinstance(self.items[start], EOF):
            start += 1  # the EOF a previous run stopped at
        return _ListReader(self, start)


class _ListReader:
    def __init__(self, src: ListSource, start: int) -> None:
        self._src, self._pos = src, start

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        items, a = self._src.items, self._pos
        if a >= len(items) or isinstance(items[a], EOF):
            return None
        if isinstance(items[a], ABORT):
            if a not in self._src._fired:
                self._src._fired.add(a)
                raise Aborted(f"list source `{self._src.name}`: ABORT at item {a}")
            a = self._pos = a + 1
        b = a
        limit = min(max_items, self._src.batch_size)
        while b < len(items) and b - a < limit and not isinstance(items[b], ABORT | EOF):
            b += 1
        self._pos = b
        return self._src._decoder.decode_dicts(items[a:b], self._src.name, a)

    def position(self) -> int:
        return self._pos

    @property
    def at_end(self) -> bool:
        items = self._src.items
        return self._pos >= len(items) or isinstance(items[self._pos], EOF)

    def close(self) -> None:
        """Nothing to release."""

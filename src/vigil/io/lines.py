"""The reader shared by line-oriented sources (files, stdin): chunked reads, decode, pacing, positions.

A reader pulls big binary chunks from a stream (:meth:`_LineReader._read_chunk`), splits them into
lines, decodes up to ``max_items`` lines per block and hands the block out. In ``pace="original"``
mode a block is handed out piecewise: only the records whose event time is due (event time advances
at ``speed`` × wall clock, measured from the first event) — and the dead letters that precede the
first record still held back. Positions always point just after the last line handed out, so a held
back line is read again after a restart rather than lost.

Positions are counted two ways and each source picks one: the byte offset after the last handed out
line (files, seekable) or the number of data lines handed out (stdin, not seekable).

A line longer than ``max_record_bytes`` (default :data:`MAX_RECORD_BYTES`, 8 MiB) is never held in memory
whole: the reader keeps its first kilobyte, skips the rest up to its newline, and hands it out as a dead
letter with the reason code ``too_large`` (positions and offsets count its real length).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vigil.errors import SourceError
from vigil.io.base import DeadLetter, Records
from vigil.io.decode import raw_text

MAX_RECORD_BYTES = 8 << 20
"""The largest record (line) a file or stdin source reads, by default; a longer one is a ``too_large`` dead letter."""
_EXCERPT_BYTES = 4096


class _TooLarge(bytes):
    """A line over the size cap: its first bytes, but the length of the whole line (offsets stay right)."""

    size: int

    def __len__(self) -> int:
        return self.size


def _too_large(head: bytes, size: int) -> _TooLarge:
    line = _TooLarge(head[:_EXCERPT_BYTES])
    line.size = size
    return line


class LineDecoder(Protocol):
    """What a line reader needs from a decoder (:class:`~vigil.io.decode.JsonDecoder` and CSV)."""

    def decode_indexed(
        self, lines: list[bytes], source: str = "", first_position: int = 0
    ) -> tuple[Records, np.ndarray | None]:
        """Records of ``lines`` plus each row's index in ``lines`` (``None``: row i is line i)."""
        ...


def slice_records(recs: Records, a: int, b: int, dead: list[DeadLetter]) -> Records:
    """Rows ``a:b`` of ``recs`` with the given dead letters."""
    if a == 0 and b == len(recs):
        return Records(recs.keys, recs.ts_ms, recs.cols, recs.extra, dead)
    return Records(
        recs.keys[a:b],
        recs.ts_ms[a:b],
        {k: v[a:b] for k, v in recs.cols.items()},
        {k: v[a:b] for k, v in recs.extra.items()},
        dead,
    )


@dataclass(slots=True)
class _Block:
    recs: Records
    row_line: np.ndarray  # index (within the block) of the line of each row
    lines: list[bytes]
    end_offset: int  # absolute byte offset after the block's last line
    dead_pos: list[int]  # position (line number) of each dead letter, ascending
    start_offset: int
    first_lineno: int
    first_count: int  # data lines handed out before this block
    n_lines: int
    bytes_end: int = 0
    cummax: np.ndarray | None = None
    row: int = 0
    dead: int = 0
    _line_ends: np.ndarray | None = None

    def offset_after(self, line: int) -> int:
        """Absolute byte offset after line ``line`` (0-based) of the block."""
        if line == self.n_lines - 1:
            return self.end_offset
        if self._line_ends is None:  # only needed when a block is handed out piecewise
            lens = np.fromiter(map(len, self.lines), np.int64, self.n_lines) + 1
            self._line_ends = np.minimum(self.start_offset + np.cumsum(lens), self.bytes_end)
        return int(self._line_ends[line])


class _LineReader:
    """Base of the file and stdin readers (see the module docstring)."""

    def __init__(
        self,
        decoder: LineDecoder,
        source: str,
        *,
        offset: int = 0,
        lineno: int = 1,
        pace: str = "max",
        speed: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        self._decoder = decoder
        self._max_record = max_record_bytes
        self._skipping: _TooLarge | None = None  # the line over the cap being skipped, up to its newline
        self._big = 0  # lines over the cap not yet handed out
        self._source = source
        self._pace, self._speed = pace, speed
        self._clock, self._sleep = clock, sleep
        self._lines: list[bytes] = []
        self._li = 0
        self._tail = b""
        self._eof = False
        self._closed = False
        self._take_offset = offset  # byte offset of the next line to take from the buffer
        self._bytes_end = offset  # byte offset after everything read from the stream
        self._take_lineno = lineno
        self._take_count = 0
        self._offset = offset  # position: byte offset after the last handed out line
        self._count = 0  # position: data lines handed out
        self._block: _Block | None = None
        self._t0: tuple[float, int] | None = None  # (wall clock s, event ms) of the first paced event

    # -- to implement ----------------------------------------------------------------------------
    def _read_chunk(self, deadline: float) -> bytes | None:
        """Next chunk of bytes; ``b""`` at end of stream; ``None`` if nothing came before ``deadline``."""
        raise NotImplementedError

    def _before_block(self, deadline: float) -> bool:
        """Hook run before decoding a block (e.g. read a header); False = not ready yet."""
        return True

    # -- lines -----------------------------------------------------------------------------------
    def _more(self, deadline: float) -> bool:
        if self._eof:
            return False
        chunk = self._read_chunk(deadline)
        if chunk is None:
            return False
        if not chunk:
            self._eof = True
            last = self._skipping if self._skipping is not None else self._tail
            self._skipping, self._tail = None, b""
            self._lines, self._li = ([last] if len(last) else []), 0
            self._big += type(last) is _TooLarge
            return bool(self._lines)
        self._bytes_end += len(chunk)
        first: list[bytes] = []
        if self._skipping is not None:  # inside a line over the cap: drop its bytes up to its newline
            nl = chunk.find(b"\n")
            if nl < 0:
                self._skipping.size += len(chunk)
                self._lines, self._li = [], 0
                return True
            self._skipping.size += nl
            first, self._skipping = [self._skipping], None
            chunk = chunk[nl + 1 :]
        cap = self._max_record
        checked = len(self._tail) + len(chunk) > cap  # only then can a line be over the cap
        parts = (self._tail + chunk).split(b"\n") if self._tail else chunk.split(b"\n")
        if checked:
            parts = [p if len(p) <= cap else _too_large(p, len(p)) for p in parts]
        self._tail = parts.pop()
        if len(self._tail) > cap:
            self._skipping, self._tail = _too_large(self._tail, len(self._tail)), b""
        if first:
            parts = first + parts
        if first or checked:
            self._big += sum(type(p) is _TooLarge for p in parts)
        self._lines, self._li = parts, 0
        return True

    def _take(self, n: int, deadline: float) -> list[bytes]:
        out: list[bytes] = []
        while len(out) < n:
            if self._li >= len(self._lines):
                if not self._more(deadline):
                    break
                continue
            got = self._lines[self._li : self._li + n - len(out)]
            self._li += len(got)
            out = got if not out else out + got
        return out

    def _buffered(self) -> bool:
        return self._li < len(self._lines) or bool(self._tail)

    # -- blocks ----------------------------------------------------------------------------------
    def _next_block(self, max_items: int, deadline: float) -> _Block | None:
        if not self._before_block(deadline):
            return None
        lines = self._take(max_items, deadline)
        if not lines:
            return None
        # The stream's last line may lack its newline: no offset may pass the bytes actually read.
        end = min(self._take_offset + sum(map(len, lines)) + len(lines), self._bytes_end)
        big = [i for i, line in enumerate(lines) if type(line) is _TooLarge] if self._big else []
        if big:  # decoded as blank lines (no row), reported as `too_large` below, in line order
            clean = list(lines)
            for i in big:
                clean[i] = b""
            recs, row_line = self._decoder.decode_indexed(clean, self._source, self._take_lineno)
            recs.dead += [DeadLetter("too_large", f"a record of {len(lines[i]):,} bytes, over the source's "
                                     f"max_record_bytes ({self._max_record:,}); its start is kept here",
                                     raw_text(bytes(lines[i])), self._source, self._take_lineno + i) for i in big]
            recs.dead.sort(key=lambda d: d.position)
            self._big -= len(big)
        else:
            recs, row_line = self._decoder.decode_indexed(lines, self._source, self._take_lineno)
        block = _Block(
            recs,
            np.arange(len(recs)) if row_line is None else row_line,
            lines,
            end,
            [d.position for d in recs.dead],
            self._take_offset,
            self._take_lineno,
            self._take_count,
            len(lines),
            self._bytes_end,
        )
        if self._pace == "original":
            block.cummax = np.maximum.accumulate(recs.ts_ms)
        self._take_offset = end
        self._take_lineno += len(lines)
        self._take_count += len(lines)
        return block

    def _due(self, block: _Block, now: float) -> int:
        """Index after the last row of ``block`` whose event time is due at wall time ``now``."""
        if self._pace != "original" or block.row >= len(block.recs):
            return len(block.recs)
        assert block.cummax is not None
        if self._t0 is None:
            self._t0 = (now, int(block.recs.ts_ms[block.row]))
        wall0, event0 = self._t0
        limit = event0 + (now - wall0) * 1000.0 * self._speed
        return int(np.searchsorted(block.cummax, limit, side="right"))

    def _wait_s(self, block: _Block, now: float) -> float:
        assert block.cummax is not None and self._t0 is not None
        wall0, event0 = self._t0
        return wall0 + (float(block.cummax[block.row]) - event0) / 1000.0 / self._speed - now

    def _emit(self, block: _Block, end: int) -> Records:
        n = len(block.recs)
        cut_line = int(block.row_line[end]) if end < n else block.n_lines
        dead_end = bisect_left(block.dead_pos, block.first_lineno + cut_line, lo=block.dead)
        out = slice_records(block.recs, block.row, end, block.recs.dead[block.dead : dead_end])
        block.row, block.dead = end, dead_end
        self._offset = block.offset_after(cut_line - 1) if cut_line else block.start_offset
        self._count = block.first_count + cut_line
        if cut_line == block.n_lines:
            self._block = None
        return out

    # -- SourceReader ----------------------------------------------------------------------------
    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        """Up to ``max_items`` records (plus dead letters); ``None`` when nothing is ready."""
        if self._closed:
            raise SourceError(f"source `{self._source}` is closed")
        if max_items < 1:
            return None
        deadline = self._clock() + max(timeout_ms, 0) / 1000.0
        while True:
            block = self._block
            if block is None:
                block = self._block = self._next_block(max_items, deadline)
                if block is None:
                    return None
            now = self._clock()
            end = min(self._due(block, now), block.row + max_items)
            if end > block.row or end == len(block.recs):
                return self._emit(block, end)
            cut = block.first_lineno + int(block.row_line[end])
            if bisect_left(block.dead_pos, cut, lo=block.dead) > block.dead:
                return self._emit(block, end)  # dead letters before the next held-back record
            remaining = deadline - now
            if remaining <= 0:
                return None
            self._sleep(max(0.0, min(self._wait_s(block, now), remaining)))

    def position(self) -> Any:
        """Byte offset after the last handed out line (subclasses may count lines instead)."""
        return self._offset

    @property
    def at_end(self) -> bool:
        """True once every line has been handed out."""
        if self._block is not None or self._buffered():
            return False
        if not self._eof:
            self._more(self._clock())  # peek without waiting; a finite source knows at once
        return self._eof and self._block is None and not self._buffered()

    def close(self) -> None:
        """Release the stream; idempotent."""
        self._closed = True

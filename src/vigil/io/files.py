"""File and stdin sources of JSON lines or CSV.

Positions:

- **Files**: the byte offset just after the last line handed out (an ``int``); ``open(resume=n)``
  seeks there. The offset must be at a line start (as every position this source returns is).
  Line numbers in dead letters stay right after a resume (the prefix's newlines are counted).
- **Stdin**: the number of data lines handed out; stdin can't seek, so ``resume=n`` skips the
  first ``n`` data lines (meaningful when the same input is piped again).

Lines are read in 4 MiB chunks; each ``read_batch`` decodes at most ``max_items`` lines. A file is
read up to its end as it is when reached (no "follow" mode). A line longer than ``max_record_bytes``
(8 MiB by default) is a dead letter with the reason ``too_large``, never read into memory whole. CSV
files start with a header line; quoted CSV fields may not span lines.

``pace="original"`` replays a file at its original event-time pace: event time advances at
``speed`` × wall clock, measured from the first event (``speed=60`` replays an hour in a minute).
``read_batch`` never blocks past its timeout: it returns what is due, or ``None``.
"""

from __future__ import annotations

import os
import queue
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Literal

from vigil.errors import ConfigError, SourceError
from vigil.io.decode import CsvDecoder, JsonDecoder
from vigil.io.lines import MAX_RECORD_BYTES, _LineReader
from vigil.io.schema import Schema

CHUNK_BYTES = 4 << 20
Pace = Literal["max", "original"]


def _check_pace(pace: str, speed: float) -> None:
    if pace not in ("max", "original"):
        raise ConfigError("must be 'max' or 'original'", field="pace", value=pace)
    if not speed > 0:
        raise ConfigError("must be > 0", field="speed", value=speed, hint="1.0 = real time, 60 = 1 h per min")


def _check_max_record(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1024:
        raise ConfigError("must be an integer of bytes >= 1024", field="max_record_bytes", value=n,
                          hint=f"default {MAX_RECORD_BYTES:,} (8 MiB)")  # fmt: skip


def _count_newlines(f: IO[bytes], end: int) -> int:
    f.seek(0)
    n, left = 0, end
    while left > 0:
        chunk = f.read(min(CHUNK_BYTES, left))
        if not chunk:
            break
        n += chunk.count(b"\n")
        left -= len(chunk)
    return n


class _FileReader(_LineReader):
    def __init__(
        self,
        path: Path,
        decoder: JsonDecoder | CsvDecoder,
        source: str,
        resume: Any,
        chunk_bytes: int,
        **pace: Any,
    ) -> None:
        try:
            f = open(path, "rb")  # noqa: SIM115 - closed in close()
        except OSError as e:
            raise SourceError(f"source `{source}`: can't open {path}: {e.strerror}") from e
        self._f, self._chunk_bytes = f, chunk_bytes
        size = os.fstat(f.fileno()).st_size
        start, lineno = 0, 1
        if isinstance(decoder, CsvDecoder):
            header = f.readline()
            if header.strip():
                decoder.set_header(header)
            elif header:
                f.close()
                raise SourceError(f"source `{source}`: the first line of {path} must be the CSV header")
            start, lineno = f.tell(), 2
        if resume is not None:
            if isinstance(resume, bool) or not isinstance(resume, int) or not 0 <= resume <= size:
                f.close()
                raise SourceError(f"source `{source}`: resume position must be a byte offset in [0, {size}]; "
                                  f"got {resume!r}")
            if resume > start:
                f.seek(resume - 1)
                if f.read(1) != b"\n" and resume != size:
                    f.close()
                    raise SourceError(f"source `{source}`: resume offset {resume} is not at a line start")
                lineno = _count_newlines(f, resume) + 1
                start = resume
        f.seek(start)
        super().__init__(decoder, source, offset=start, lineno=lineno, **pace)

    def _read_chunk(self, deadline: float) -> bytes:
        try:
            return self._f.read(self._chunk_bytes)
        except OSError as e:
            raise SourceError(f"source `{self._source}`: read failed: {e}") from e

    def close(self) -> None:
        super().close()
        self._f.close()


class _FileSource:
    _reader = _FileReader  # the reader class (a metric file source reads lines into several rows)

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        pace: Pace,
        speed: float,
        name: str | None,
        chunk_bytes: int,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        _check_pace(pace, speed)
        _check_max_record(max_record_bytes)
        self.max_record_bytes = max_record_bytes
        self.path = Path(path)
        self.schema = schema
        self.name = name or self.path.name
        self.pace, self.speed = pace, speed
        self._chunk_bytes = chunk_bytes
        self._clock, self._sleep = clock, sleep

    def partitions(self) -> list[str]:
        """One partition, ``"0"``."""
        return ["0"]

    def check(self) -> None:
        """Fail now, with a :class:`~vigil.errors.SourceError`, if the file can't be read (a run checks first)."""
        try:
            with open(self.path, "rb"):
                pass
        except OSError as e:
            raise SourceError(f"source `{self.name}`: can't open {self.path}: {e.strerror}") from None

    def _decoder(self) -> JsonDecoder | CsvDecoder:
        raise NotImplementedError

    def open(self, partition: str = "0", resume: Any = None) -> _FileReader:
        """Open the file, resuming after byte offset ``resume`` if given."""
        if partition != "0":
            raise SourceError(f"source `{self.name}` has one partition, '0'; got {partition!r}")
        return self._reader(
            self.path, self._decoder(), self.name, resume, self._chunk_bytes,
            pace=self.pace, speed=self.speed, clock=self._clock, sleep=self._sleep,
            max_record_bytes=self.max_record_bytes,
        )


class JsonlFileSource(_FileSource):
    r"""A file of JSON lines (one object per line), read in 4 MiB chunks.

    Args:
        path: the file.
        schema: fields to decode.
        pace: ``"max"`` (as fast as possible) or ``"original"`` (replay at event-time pace).
        speed: replay speed for ``pace="original"`` (2.0 = twice real time).
        name: source name (dead letters carry it); defaults to the file name.
        clock, sleep: injectable wall clock and sleep (tests use manual ones).

    Examples:
        >>> import tempfile, os
        >>> p = os.path.join(tempfile.mkdtemp(), "ev.jsonl")
        >>> _ = open(p, "w").write('{"user":"a","ts":1700000000000,"amount":1}\nnot json\n')
        >>> r = JsonlFileSource(p, Schema("user", "ts", fields=("amount",))).open("0")
        >>> b = r.read_batch(100, 10)
        >>> b.keys.tolist(), [(d.position, d.reason) for d in b.dead], r.position(), r.at_end
        (['a'], [(2, 'invalid_json')], 52, True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        pace: Pace = "max",
        speed: float = 1.0,
        name: str | None = None,
        *,
        chunk_bytes: int = CHUNK_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        super().__init__(path, schema, pace, speed, name, chunk_bytes, clock, sleep, max_record_bytes)

    def _decoder(self) -> JsonDecoder:
        return JsonDecoder(self.schema)


class CsvFileSource(_FileSource):
    """A CSV file whose first line is the header; otherwise like :class:`JsonlFileSource`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        schema: Schema,
        pace: Pace = "max",
        speed: float = 1.0,
        name: str | None = None,
        *,
        delimiter: str = ",",
        chunk_bytes: int = CHUNK_BYTES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        super().__init__(path, schema, pace, speed, name, chunk_bytes, clock, sleep, max_record_bytes)
        self.delimiter = delimiter

    def _decoder(self) -> CsvDecoder:
        return CsvDecoder(self.schema, delimiter=self.delimiter)


_EOF = b""


def _fd_reader(stream: IO[bytes]) -> Callable[[int], bytes | None] | None:
    """Reads of ``stream``'s file descriptor that wait at most 0.1 s (``None``: nothing yet), or ``None``.

    Reading the descriptor directly (``select`` then ``os.read``) rather than the buffered stream means the
    pumping thread never holds the stream's lock while it waits: a run that stops while stdin is still open
    (an error, Ctrl-C) then ends normally instead of the interpreter aborting at exit ("could not acquire
    lock for <stdin> at interpreter shutdown, possibly due to daemon threads"), and the thread ends with
    :meth:`close`. Streams without a descriptor (``BytesIO``) and platforms without ``select`` on pipes
    are read through the stream. Nothing else may have read from the stream before (its buffer is bypassed).
    """
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    if os.name != "posix":
        return None
    import select

    def read(n: int) -> bytes | None:
        ready, _, _ = select.select([fd], [], [], 0.1)
        if not ready:
            return None
        return os.read(fd, n)

    return read


class _StreamReader(_LineReader):
    """Reads a blocking binary stream through a daemon thread, so read_batch can honour timeouts."""

    def __init__(self, stream: IO[bytes], decoder: JsonDecoder | CsvDecoder, source: str, skip: int,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> None:  # fmt: skip
        super().__init__(decoder, source, max_record_bytes=max_record_bytes)
        self._csv = decoder if isinstance(decoder, CsvDecoder) else None
        self._skip = skip
        self._queue: queue.Queue[bytes] = queue.Queue(maxsize=64)  # bounded: backpressure on the producer
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=self._pump, args=(stream,), name=f"vigil-{source}", daemon=True
        )
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        read: Callable[[int], bytes | None] = _fd_reader(stream) or getattr(stream, "read1", None) or stream.read
        try:
            while not self._closed:
                chunk = read(1 << 20)
                if chunk is None:  # nothing yet; look at _closed again
                    continue
                if not chunk:
                    break
                while not self._closed:
                    try:
                        self._queue.put(chunk, timeout=0.1)
                        break
                    except queue.Full:
                        pass
        except BaseException as e:  # noqa: BLE001 - re-raised in the reading thread
            self._error = e
        finally:
            while True:  # the end goes in behind the last chunk, however long the reader takes to get there
                try:
                    self._queue.put(_EOF, timeout=0.1)
                    break
                except queue.Full:
                    if self._closed:  # nobody reads the queue any more
                        break

    def _read_chunk(self, deadline: float) -> bytes | None:
        try:
            chunk = self._queue.get(timeout=max(0.0, deadline - self._clock()))
        except queue.Empty:
            return None
        if not chunk and self._error is not None:
            raise SourceError(f"source `{self._source}`: read failed: {self._error}") from self._error
        return chunk

    def _before_block(self, deadline: float) -> bool:
        if self._csv is not None and not self._csv.has_header:
            header = self._take(1, deadline)
            if not header:
                return False
            self._csv.set_header(header[0])
            self._take_lineno += 1
        while self._skip:
            got = len(self._take(min(self._skip, 65536), deadline))
            if not got:
                return False
            self._skip -= got
            self._take_lineno += got
            self._take_count += got
            self._count = self._take_count
        return True

    def position(self) -> int:
        """Number of data lines handed out."""
        return self._count


class StdinSource:
    """JSON lines or CSV (header first) from standard input, or any binary stream.

    Args:
        schema: fields to decode.
        format: ``"jsonl"`` or ``"csv"``.
        stream: a binary stream to read instead of ``sys.stdin.buffer``.
        name: source name.

    A daemon thread does the blocking reads; if the stream never ends, that thread outlives
    :meth:`close` until the process exits (a blocked read can't be interrupted portably).
    """

    def __init__(
        self,
        schema: Schema,
        format: Literal["jsonl", "csv"] = "jsonl",
        stream: IO[bytes] | None = None,
        name: str = "stdin",
        max_record_bytes: int = MAX_RECORD_BYTES,
    ) -> None:
        if format not in ("jsonl", "csv"):
            raise ConfigError("must be 'jsonl' or 'csv'", field="format", value=format)
        _check_max_record(max_record_bytes)
        self.max_record_bytes = max_record_bytes
        self.schema, self.format, self.name = schema, format, name
        self._stream = stream
        self._opened = False

    def partitions(self) -> list[str]:
        """One partition, ``"0"``."""
        return ["0"]

    def open(self, partition: str = "0", resume: Any = None) -> _StreamReader:
        """Start reading; ``resume=n`` skips the first ``n`` data lines. Stdin can be opened once."""
        if partition != "0":
            raise SourceError(f"source `{self.name}` has one partition, '0'; got {partition!r}")
        if self._opened:
            raise SourceError(f"source `{self.name}` can be opened once (a stream can't be re-read)")
        if resume is not None and (isinstance(resume, bool) or not isinstance(resume, int) or resume < 0):
            raise SourceError(f"source `{self.name}`: resume must be a line count >= 0; got {resume!r}")
        self._opened = True
        stream = self._stream if self._stream is not None else sys.stdin.buffer
        decoder: JsonDecoder | CsvDecoder = (
            JsonDecoder(self.schema) if self.format == "jsonl" else CsvDecoder(self.schema)
        )
        return _StreamReader(stream, decoder, self.name, resume or 0, self.max_record_bytes)

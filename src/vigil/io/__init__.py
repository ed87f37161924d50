"""Sources and sinks: where records come from and where alerts and dead letters go.

The contract (see :mod:`vigil.io.base`): a :class:`Source` has partitions; each opened
:class:`SourceReader` returns columnar :class:`Records` from ``read_batch(max_items, timeout_ms)``
(never more than ``max_items`` records, never blocking past the timeout) and a ``position()`` to
resume *after* the last record returned — plain data, stored in checkpoints. Records that can't be
read never raise: they travel beside the records as :class:`DeadLetter` entries with the reason, the
raw text and their position (line number). A :class:`Sink` buffers in ``write_batch``, makes
everything durable in ``flush()`` (the checkpoint's commit point; failures raise
:class:`~vigil.errors.SinkError`) and closes idempotently; writing after close raises.

Decoding (:mod:`vigil.io.decode`) is driven by a :class:`Schema` and runs at several million JSON
lines per second: typed msgspec decoding, then vectorized validation, no per-event Python beyond the
decode. ``vigil.testing.sources`` holds the conformance checks (``check_source``, ``check_sink``).
"""

from vigil.io.base import DeadLetter, Records, Sink, Source, SourceReader
from vigil.io.decode import CsvDecoder, JsonDecoder
from vigil.io.files import CsvFileSource, JsonlFileSource, StdinSource
from vigil.io.memory import MemorySource
from vigil.io.schema import Schema
from vigil.io.sinks import ConsoleAlertSink, DeadLetterSink, JsonlSink, MemorySink, SqliteAlertSink

__all__ = [
    "ConsoleAlertSink",
    "CsvDecoder",
    "CsvFileSource",
    "DeadLetter",
    "DeadLetterSink",
    "JsonDecoder",
    "JsonlFileSource",
    "JsonlSink",
    "MemorySink",
    "MemorySource",
    "Records",
    "Schema",
    "Sink",
    "Source",
    "SourceReader",
    "SqliteAlertSink",
    "StdinSource",
]

"""Contracts of sources and sinks, and the columnar record type that sources produce.

A source yields :class:`Records`: decoded rows as columns, with keys still as strings (the engine
maps them to slots). Rows that could not be read never reach the engine: they travel beside the
records as :class:`DeadLetter` entries, each with the reason, and end in the dead-letter output.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from vigil.io.reasons import check as check_reason
from vigil.types import Float64Array, Int64Array


@dataclass(slots=True)
class DeadLetter:
    """A record that could not be read, and why.

    Attributes:
        reason: a stable reason code (:mod:`vigil.io.reasons`), e.g. ``"absurd_timestamp"``.
        message: what is wrong, for people: the field, the value, a likely cause.
        raw: the record as text (cut to 1,000 characters).
        source: where it came from (source name, topic).
        position: where in the source (line number, message index, offset).
    """

    reason: str
    message: str
    raw: str
    source: str = ""
    position: Any = None

    def __post_init__(self) -> None:
        check_reason(self.reason)

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON-ready)."""
        return {"reason": self.reason, "message": self.message, "raw": self.raw, "source": self.source,
                "position": self.position}


@dataclass(slots=True)
class Records:
    """Decoded rows, as columns, in arrival order.

    Attributes:
        keys: the key of each row (object array of str).
        ts_ms: event time per row, int64 epoch ms.
        cols: numeric fields (float64, finite).
        extra: other columns (string ids, labels, ``emit_ns`` ...).
        dead: rows of this read that could not be decoded.
    """

    keys: np.ndarray
    ts_ms: Int64Array
    cols: dict[str, Float64Array]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    dead: list[DeadLetter] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])


@runtime_checkable
class SourceReader(Protocol):
    """Reads one partition of a source in batches.

    ``position()`` is where to resume *after* the last record returned — not the position of that
    record (an off-by-one here duplicates or loses one record per restart).
    """

    def read_batch(self, max_items: int, timeout_ms: int) -> Records | None:
        """Up to ``max_items`` records; ``None`` or empty when nothing is ready. Never blocks past the timeout."""
        ...

    def position(self) -> Any:
        """Resume point after the last returned record (plain data)."""
        ...

    @property
    def at_end(self) -> bool:
        """True once a finite source has returned everything."""
        ...

    def close(self) -> None:
        """Release resources; idempotent."""
        ...


@runtime_checkable
class Source(Protocol):
    """A partitioned source of records."""

    name: str

    def partitions(self) -> list[str]:
        """Names of the partitions."""
        ...

    def open(self, partition: str, resume: Any = None) -> SourceReader:
        """Open one partition, resuming after ``resume`` if given."""
        ...


@runtime_checkable
class Sink(Protocol):
    """Receives items (alerts, dead letters, late events) in batches.

    ``flush()`` is the durability point: the checkpoint calls it before committing source positions,
    and a failing flush aborts the checkpoint.
    """

    def write_batch(self, items: list[Any]) -> None:
        """Accept items (may buffer)."""
        ...

    def flush(self) -> None:
        """Make everything written so far durable."""
        ...

    def close(self) -> None:
        """Flush and release resources; idempotent. Writing after close raises."""
        ...

"""The data that flows through Vigil: columnar micro-batches.

A :class:`Batch` is a struct of numpy arrays of equal length: integer key slots (see
:class:`vigil.state.KeyIndex`), event times as int64 epoch milliseconds, and one array per
numeric field. Optional columns carry event ids, labels or the wall-clock time at which the
producer emitted each event (for latency measurement). There is no Python object per event.

Single events (:class:`Event`) exist only at the edges: a demo print, an API call, a test.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Int64Array = npt.NDArray[np.int64]
Int32Array = npt.NDArray[np.int32]
Float64Array = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

MS_PER_S = 1000


@dataclass(frozen=True, slots=True)
class Event:
    """One event, for the edges of the system (tests, demos, single-event APIs)."""

    key: str
    ts: int
    fields: Mapping[str, float]
    attrs: Mapping[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Batch:
    """A columnar micro-batch.

    Attributes:
        slots: int32 key slot per row (index into the pipeline's :class:`~vigil.state.KeyIndex`).
        ts_ms: int64 event time per row, epoch milliseconds.
        cols: numeric fields, one float64 array per name.
        extra: other per-row arrays (event ids as strings or ints, labels, ``emit_ns`` ...).

    Examples:
        >>> import numpy as np
        >>> b = Batch(np.array([0, 1, 0], np.int32), np.array([10, 20, 30]), {"amount": np.array([1.0, 2.0, 3.0])})
        >>> len(b), b.take(np.array([True, False, True])).cols["amount"].tolist()
        (3, [1.0, 3.0])
    """

    slots: Int32Array
    ts_ms: Int64Array
    cols: dict[str, Float64Array]
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.ts_ms.shape[0])

    def take(self, index: np.ndarray) -> Batch:
        """Rows selected by a boolean mask or an integer index array."""
        return Batch(
            self.slots[index],
            self.ts_ms[index],
            {k: v[index] for k, v in self.cols.items()},
            {k: v[index] for k, v in self.extra.items()},
        )

    @staticmethod
    def concat(batches: list[Batch]) -> Batch:
        """One batch holding the rows of ``batches`` in order (all must have the same columns)."""
        if len(batches) == 1:
            return batches[0]
        first = batches[0]
        return Batch(
            np.concatenate([b.slots for b in batches]),
            np.concatenate([b.ts_ms for b in batches]),
            {k: np.concatenate([b.cols[k] for b in batches]) for k in first.cols},
            {k: np.concatenate([b.extra[k] for b in batches]) for k in first.extra},
        )

    @staticmethod
    def empty(cols: tuple[str, ...] = (), extra: tuple[str, ...] = ()) -> Batch:
        """A batch with no rows."""
        return Batch(
            np.empty(0, np.int32),
            np.empty(0, np.int64),
            {k: np.empty(0, np.float64) for k in cols},
            {k: np.empty(0, object) for k in extra},
        )


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, None: 1000}


def parse_duration_ms(value: str | int | float) -> int:
    """Parse a duration such as ``"2s"``, ``"500ms"``, ``"1m"`` or a number of seconds into milliseconds.

    Examples:
        >>> parse_duration_ms("2s"), parse_duration_ms("500ms"), parse_duration_ms("1m"), parse_duration_ms(1.5)
        (2000, 500, 60000, 1500)

    Raises:
        ValueError: if the text is not a duration.
    """
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, (int, float)):
        return int(round(float(value) * 1000))
    m = _DURATION.match(value)
    if not m:
        raise ValueError(f"not a duration: {value!r} (use e.g. '500ms', '2s', '1m', '1h')")
    return int(round(float(m.group(1)) * _UNIT_MS[m.group(2)]))

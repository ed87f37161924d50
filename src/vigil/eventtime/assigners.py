"""Window assigners: map event times to the windows that contain them, vectorized.

Windows are half-open event-time intervals ``[start_ms, end_ms)``. Fixed-size assigners map a column
of event times to ``(row_index, start_ms)`` pairs with numpy, no per-event Python. Sessions depend on
the data, so :class:`SessionWindows` is only a description; :class:`~vigil.eventtime.windows.WindowAggregator`
computes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from vigil.errors import ConfigError
from vigil.types import Int64Array


def _positive(value: int, name: str) -> None:
    if int(value) <= 0:
        raise ConfigError("must be > 0", field=name, value=value, hint="e.g. 60000 (one minute)")


class WindowAssigner(Protocol):
    """What :class:`WindowAggregator` needs from a fixed-size window assigner."""

    size_ms: int

    def assign(self, ts_ms: Int64Array) -> tuple[Int64Array, Int64Array]:
        """``(row_index, start_ms)`` for every (row, window) pair, rows in order."""
        ...

    def to_params(self) -> dict[str, Any]:
        """Plain-data description, inverse of :func:`assigner_from_params`."""
        ...


@dataclass(frozen=True, slots=True)
class TumblingWindows:
    """Fixed, non-overlapping windows: each row belongs to exactly one.

    ``start = floor((ts - offset_ms) / size_ms) * size_ms + offset_ms`` (floor, so negative times work).

    Examples:
        >>> rows, starts = TumblingWindows(10).assign(np.array([3, 10, -1]))
        >>> rows.tolist(), starts.tolist()
        ([0, 1, 2], [0, 10, -10])
    """

    size_ms: int
    offset_ms: int = 0

    def __post_init__(self) -> None:
        _positive(self.size_ms, "size_ms")

    def assign(self, ts_ms: Int64Array) -> tuple[Int64Array, Int64Array]:
        """``(row_index, start_ms)``: one window per row."""
        ts = np.asarray(ts_ms, np.int64)
        size, off = np.int64(self.size_ms), np.int64(self.offset_ms)
        return np.arange(ts.shape[0], dtype=np.int64), (ts - off) // size * size + off

    def to_params(self) -> dict[str, Any]:
        """Plain-data description."""
        return {"kind": "tumbling", "size_ms": self.size_ms, "offset_ms": self.offset_ms}


@dataclass(frozen=True, slots=True)
class SlidingWindows:
    """Hopping windows of ``size_ms`` starting every ``slide_ms``; a row is in each window containing it.

    A row belongs to the windows with ``start <= ts < start + size_ms``: ``ceil(size_ms / slide_ms)``
    of them when ``slide_ms`` divides ``size_ms`` (otherwise that many or one fewer; none for a row in
    a gap when ``slide_ms > size_ms``). Pairs come row by row, oldest window first.

    Examples:
        >>> rows, starts = SlidingWindows(size_ms=10, slide_ms=5).assign(np.array([7, 12]))
        >>> rows.tolist(), starts.tolist()
        ([0, 0, 1, 1], [0, 5, 5, 10])
    """

    size_ms: int
    slide_ms: int
    offset_ms: int = 0

    def __post_init__(self) -> None:
        _positive(self.size_ms, "size_ms")
        _positive(self.slide_ms, "slide_ms")

    def assign(self, ts_ms: Int64Array) -> tuple[Int64Array, Int64Array]:
        """``(row_index, start_ms)`` for every window containing each row."""
        ts = np.asarray(ts_ms, np.int64)
        slide, off = np.int64(self.slide_ms), np.int64(self.offset_ms)
        k = -(-self.size_ms // self.slide_ms)
        last = (ts - off) // slide * slide + off
        starts = last[:, None] - np.arange(k - 1, -1, -1, dtype=np.int64)[None, :] * slide
        inside = starts > (ts - np.int64(self.size_ms))[:, None]
        rows = np.broadcast_to(np.arange(ts.shape[0], dtype=np.int64)[:, None], starts.shape)
        return rows[inside], starts[inside]

    def to_params(self) -> dict[str, Any]:
        """Plain-data description."""
        return {
            "kind": "sliding",
            "size_ms": self.size_ms,
            "slide_ms": self.slide_ms,
            "offset_ms": self.offset_ms,
        }


@dataclass(frozen=True, slots=True)
class SessionWindows:
    """Per-key sessions: events less than or exactly ``gap_ms`` apart share a session.

    A session is ``[first_ts, last_ts + gap_ms)``; sessions need state, so they are computed by
    :class:`WindowAggregator` (which also merges two sessions bridged by a new event).

    Examples:
        >>> SessionWindows(gap_ms=30_000).to_params()
        {'kind': 'session', 'gap_ms': 30000}
    """

    gap_ms: int

    def __post_init__(self) -> None:
        _positive(self.gap_ms, "gap_ms")

    def to_params(self) -> dict[str, Any]:
        """Plain-data description."""
        return {"kind": "session", "gap_ms": self.gap_ms}


AnyAssigner = TumblingWindows | SlidingWindows | SessionWindows


def assigner_from_params(params: dict[str, Any]) -> AnyAssigner:
    """Rebuild an assigner from its :meth:`to_params` output.

    Examples:
        >>> assigner_from_params(SlidingWindows(10, 5).to_params())
        SlidingWindows(size_ms=10, slide_ms=5, offset_ms=0)
    """
    kinds: dict[str, type[AnyAssigner]] = {
        "tumbling": TumblingWindows,
        "sliding": SlidingWindows,
        "session": SessionWindows,
    }
    p = dict(params)
    kind = p.pop("kind", None)
    if kind not in kinds:
        raise ConfigError("must be tumbling, sliding or session", field="kind", value=kind)
    return kinds[kind](**p)

"""Late data: what counts as late, what to do with it, and counting it.

An event is *late* when its event time is behind the watermark in force before it, by more than the
allowed lateness: ``ts_ms < watermark_before - allowed_lateness_ms``. Late events are outputs, never
silently dropped: whatever the policy, they are counted in a :class:`LateCounter`.

Policies (:data:`LatePolicy`):

- ``"side_output"`` (default): late rows go to the step's late side output, with their data intact.
- ``"drop"``: late rows are discarded, but still counted.
- ``"update"``: windows stay open for ``allowed_lateness_ms`` after the watermark passes their end and
  late rows within that bound update them (each update re-emitted, as with
  :class:`~vigil.eventtime.windows.WindowAggregator` ``emit="current"``); rows later than that go to
  the side output as with ``"side_output"``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast, get_args

import numpy as np

from vigil.errors import ConfigError
from vigil.eventtime.watermarks import sub_ms_array
from vigil.types import BoolArray, Int64Array

LatePolicy = Literal["side_output", "drop", "update"]
"""What a step does with late rows (see the module docstring)."""

LATE_POLICIES: tuple[str, ...] = get_args(LatePolicy)


def check_late_policy(value: str, *, step: str | None = None) -> LatePolicy:
    """Validate a late-data policy name (at config load).

    Examples:
        >>> check_late_policy("drop")
        'drop'
        >>> check_late_policy("ignore")
        Traceback (most recent call last):
        ...
        vigil.errors.ConfigError: `late_policy` must be one of side_output, drop, update; got 'ignore'
    """
    if value not in LATE_POLICIES:
        raise ConfigError(
            f"must be one of {', '.join(LATE_POLICIES)}", step=step, field="late_policy", value=value
        )
    return cast(LatePolicy, value)


def split_late(
    ts_ms: Int64Array, watermark_before: Int64Array | int, allowed_lateness_ms: int = 0
) -> BoolArray:
    """Mask of late rows: ``ts_ms < watermark_before - allowed_lateness_ms`` (saturating).

    Args:
        ts_ms: event time per row.
        watermark_before: watermark in force before each row (an array, or one value for all rows).
        allowed_lateness_ms: extra slack after the watermark (>= 0).

    Examples:
        >>> split_late(np.array([5, 10, 20]), np.array([12, 12, 12])).tolist()
        [True, True, False]
        >>> split_late(np.array([5, 10, 20]), 12, allowed_lateness_ms=5).tolist()
        [True, False, False]
    """
    if allowed_lateness_ms < 0:
        raise ConfigError("must be >= 0", field="allowed_lateness_ms", value=allowed_lateness_ms)
    wm = np.broadcast_to(np.asarray(watermark_before, np.int64), np.shape(ts_ms))
    return np.asarray(ts_ms, np.int64) < sub_ms_array(wm, allowed_lateness_ms)


@dataclass(slots=True)
class LateCounter:
    """Running count of late rows (for metrics such as ``vigil_eventtime_late_events_total``).

    Examples:
        >>> c = LateCounter()
        >>> c.add(np.array([True, False, True])), c.add(np.array([4, 7])), c.add(1)
        (2, 4, 5)
    """

    count: int = 0

    def add(self, late: BoolArray | Int64Array | int) -> int:
        """Count late rows given as a boolean mask, an index array or a number; return the total."""
        if isinstance(late, (int, np.integer)):
            self.count += int(late)
        else:
            arr = np.asarray(late)
            self.count += int(arr.sum()) if arr.dtype == np.bool_ else int(arr.shape[0])
        return self.count

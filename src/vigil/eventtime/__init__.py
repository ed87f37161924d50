"""Event time: watermarks, window assigners, windowed aggregation and late data.

Contract: event time is int64 epoch milliseconds and every duration ends in ``_ms``; a watermark ``W``
means "no event with ``ts_ms < W`` is expected" (Flink's watermark plus one, so windows ``[start, end)``
close when ``end_ms <= W``), starts at :data:`NO_WATERMARK` and never goes back; trackers return the
watermark in force *before each row*, so results never depend on how a stream is cut into micro-batches;
all of it is pure logic over numpy arrays (numba kernels where sequential semantics need a loop) that
reads no clock -- processing time (``now_ms``) is an argument -- and snapshots to plain data; late rows
(``end_ms + allowed_lateness_ms <= W`` for their window, or ``ts_ms < W - allowed_lateness_ms`` for a
row on its own) are returned to the caller as a side output and counted, never silently dropped.

Examples:
    >>> import numpy as np
    >>> tracker = BoundedOutOfOrderness(max_delay_ms=5).build()
    >>> agg = WindowAggregator(TumblingWindows(size_ms=10))
    >>> ts = np.array([1, 12, 3, 30, 8])
    >>> before = tracker.on_batch(ts, now_ms=0)
    >>> agg.add(np.zeros(5, np.int32), ts, np.ones(5), before).late.tolist()   # 8 < W=25 and [0,10) closed
    [4]
    >>> r = agg.advance(tracker.watermark)
    >>> r.start_ms.tolist(), r.count.tolist()
    ([0, 10], [2, 1])
"""

from vigil.eventtime.assigners import (
    SessionWindows,
    SlidingWindows,
    TumblingWindows,
    WindowAssigner,
    assigner_from_params,
)
from vigil.eventtime.late import LATE_POLICIES, LateCounter, LatePolicy, check_late_policy, split_late
from vigil.eventtime.watermarks import (
    MAX_WATERMARK,
    NO_WATERMARK,
    BoundedOutOfOrderness,
    MultiPartitionWatermark,
    WatermarkTracker,
    sub_ms,
    sub_ms_array,
)
from vigil.eventtime.windows import Emit, LateSplit, WindowAggregator, WindowResults

__all__ = [
    "LATE_POLICIES",
    "MAX_WATERMARK",
    "NO_WATERMARK",
    "BoundedOutOfOrderness",
    "Emit",
    "LateCounter",
    "LatePolicy",
    "LateSplit",
    "MultiPartitionWatermark",
    "SessionWindows",
    "SlidingWindows",
    "TumblingWindows",
    "WatermarkTracker",
    "WindowAggregator",
    "WindowAssigner",
    "WindowResults",
    "assigner_from_params",
    "check_late_policy",
    "split_late",
    "sub_ms",
    "sub_ms_array",
]

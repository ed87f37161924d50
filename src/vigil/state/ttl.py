"""Key expiry as a function of event time alone: which rows find their key's state expired.

A key's state expires when the watermark passes its last on-time event + the TTL. The rule is applied at
the row: a row whose watermark (the one in force before it) is beyond its key's last on-time event + TTL
sees the key as new — an on-time row resets the state before it is scored, a late row is scored against
empty state. Nothing here depends on how the stream is cut into micro-batches, so neither do the results:
freeing the slots of idle keys (memory) can then happen whenever is convenient, since a freed key's next
row would have found its state expired anyway.

Examples:
    >>> last = np.zeros(2, np.int64)
    >>> slots = np.array([0, 1, 0, 0], np.int32)
    >>> ts = np.array([1_000, 1_000, 2_000, 9_000])
    >>> wm = np.array([0, 0, 1_500, 8_000])
    >>> expired, mid = expired_rows(slots, ts, np.ones(4, bool), wm, last, ttl_ms=5_000)
    >>> expired.tolist(), mid.tolist(), last.tolist()   # key 0: last event 2 000, watermark 8 000 > 7 000
    ([False, False, False, True], [False, False, False, True], [9000, 1000])

    Before the first watermark (int64's minimum) nothing has expired:

    >>> no_wm = np.full(4, np.iinfo(np.int64).min)
    >>> expired_rows(slots, ts, np.ones(4, bool), no_wm, last, ttl_ms=5_000)[0].tolist()
    [False, False, False, False]
"""

from __future__ import annotations

import numba
import numpy as np

from vigil.types import BoolArray, Int32Array, Int64Array


@numba.njit(cache=True)
def _timeline(slots, ts, on_time, wm, last_seen, ttl_ms, expired, mid, seen):  # type: ignore[no-untyped-def]  # noqa: ANN001
    for i in range(slots.shape[0]):
        s = slots[i]
        last = last_seen[s]
        if last > 0 and wm[i] > last + ttl_ms:  # not wm - ttl: no watermark yet is int64's minimum
            expired[i] = True
            mid[i] = on_time[i] and seen[s]
        if on_time[i] and (expired[i] or ts[i] > last):
            last_seen[s] = ts[i]
        seen[s] = True  # late rows too: one before an expiry is scored against the state before the reset
    for i in range(slots.shape[0]):  # leave the scratch marks clean for the next batch
        seen[slots[i]] = False


def expired_rows(slots: Int32Array, ts_ms: Int64Array, on_time: BoolArray, watermark_before: Int64Array,
                 last_seen: Int64Array, ttl_ms: int) -> tuple[BoolArray, BoolArray]:  # fmt: skip
    """Rows that find their key's state expired; and the on-time ones among them that need the batch cut.

    An expired on-time row whose key already had a row (on time or late) earlier in the batch needs the batch
    cut there, so that the reset happens between the two rows. ``last_seen`` (per slot, 0 = never seen) is updated with
    the on-time rows' times: after an expiry the row's time, else the maximum. Late rows don't count as
    activity: they are not learned.
    """
    n = slots.shape[0]
    expired = np.zeros(n, np.bool_)
    mid = np.zeros(n, np.bool_)
    if n:
        seen = np.zeros(last_seen.shape[0], np.bool_)
        _timeline(slots, np.asarray(ts_ms, np.int64), np.asarray(on_time, np.bool_),
                  np.asarray(watermark_before, np.int64), last_seen, int(ttl_ms), expired, mid, seen)  # fmt: skip
    return expired, mid

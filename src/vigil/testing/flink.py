"""A Flink-shaped fake keyed context, and ``check_operator``: a detector per key equals the batch path.

:class:`FakeFlinkContext` mirrors what PyFlink gives a ``KeyedProcessFunction``: ``get_current_key()``,
``timestamp()``, ``timer_service()`` (``current_watermark()``, ``current_processing_time()``,
``register_event_time_timer()``, ``delete_event_time_timer()``) and keyed ``ValueState`` (``value()``,
``update()``, ``clear()``; from ``get_state(name)``, which in PyFlink is the runtime context's, scoped to the
current key). State values must be what Flink can hold: ``check_operator`` insists on bytes. Tests drive it:
``set_current(key, ts)`` before an element, ``advance_watermark(wm)`` to get the timers due.

:func:`run_keyed` feeds events to a :class:`~vigil.dataflow.operators.KeyedOperator` through it (each key in its
own fake task, like Flink's parallel subtasks), :func:`check_operator` compares
:class:`~vigil.dataflow.keyed.KeyedDetector` with the detector's batch path, event by event.

Examples:
    >>> from vigil.detectors import CUSUM
    >>> check_operator(lambda: CUSUM(field="value", halflife=30, min_count=8))
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from vigil.dataflow.keyed import FlinkContextAdapter, KeyedDetector
from vigil.dataflow.operators import KeyedOperatorHost
from vigil.eventtime import MAX_WATERMARK, NO_WATERMARK
from vigil.types import Alert, Event


class FakeValueState:
    """PyFlink's ``ValueState`` of the context's current key (one per state name)."""

    def __init__(self, ctx: FakeFlinkContext, name: str) -> None:
        self._ctx = ctx
        self.name = name

    def value(self) -> Any:
        """The current key's value, or ``None``."""
        return self._ctx.store.get((self.name, self._ctx.get_current_key()))

    def update(self, value: Any) -> None:
        """Set the current key's value (bytes-like only when the context is ``strict``)."""
        if self._ctx.strict and not isinstance(value, bytes | bytearray):
            raise TypeError(f"ValueState `{self.name}` holds bytes here (as a Flink byte-array state); "
                            f"got {type(value).__name__}")  # fmt: skip
        self._ctx.store[(self.name, self._ctx.get_current_key())] = value

    def clear(self) -> None:
        """Forget the current key's value."""
        self._ctx.store.pop((self.name, self._ctx.get_current_key()), None)


class FakeTimerService:
    """PyFlink's ``TimerService`` of a keyed context (event-time timers per key; processing time is fixed)."""

    def __init__(self, ctx: FakeFlinkContext) -> None:
        self._ctx = ctx
        self._heap: list[tuple[int, str]] = []
        self._live: set[tuple[int, str]] = set()
        self.watermark = int(NO_WATERMARK)

    def current_watermark(self) -> int:
        """The current event-time watermark."""
        return self.watermark

    def current_processing_time(self) -> int:
        """Processing time (fixed at 0: logic must not depend on it)."""
        return 0

    def register_event_time_timer(self, timestamp: int) -> None:
        """Fire ``on_timer(timestamp)`` for the current key once the watermark reaches it (deduplicated)."""
        item = (int(timestamp), self._ctx.get_current_key())
        if item not in self._live:
            self._live.add(item)
            heapq.heappush(self._heap, item)

    def delete_event_time_timer(self, timestamp: int) -> None:
        """Cancel an event-time timer of the current key."""
        self._live.discard((int(timestamp), self._ctx.get_current_key()))

    def register_processing_time_timer(self, timestamp: int) -> None:
        """Not supported: Vigil's operators work in event time."""
        raise NotImplementedError("Vigil operators use event-time timers only")

    def due(self, watermark: int) -> list[tuple[int, str]]:
        """Pop the live timers at or before ``watermark`` in time order."""
        out = []
        while self._heap and self._heap[0][0] <= watermark:
            item = heapq.heappop(self._heap)
            if item in self._live:
                self._live.discard(item)
                out.append(item)
        return out


class FakeFlinkContext:
    """A keyed ``KeyedProcessFunction.Context`` stand-in (module docstring) that tests drive.

    Args:
        strict: state values must be bytes (as in a Flink byte-array ``ValueState``).
    """

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict
        self.store: dict[tuple[str, str], Any] = {}
        self._key: str | None = None
        self._ts: int | None = None
        self._timers = FakeTimerService(self)

    def get_current_key(self) -> str:
        """The key of the element (or timer) being processed."""
        if self._key is None:
            raise RuntimeError("no current key: call set_current(key, ts) first")
        return self._key

    def timestamp(self) -> int | None:
        """The element's event time (or the timer's time in ``on_timer``)."""
        return self._ts

    def timer_service(self) -> FakeTimerService:
        """Timers and the watermark."""
        return self._timers

    def get_state(self, name: str) -> FakeValueState:
        """The ``ValueState`` called ``name`` (scoped to the current key, as Flink's keyed state is)."""
        return FakeValueState(self, name)

    # -- what a test does --------------------------------------------------------------------------------

    def set_current(self, key: str, ts: int | None) -> None:
        """Make ``key`` current (before an element or a timer)."""
        self._key, self._ts = str(key), ts

    def advance_watermark(self, watermark: int) -> list[tuple[int, str]]:
        """Move the watermark forward (never back); the ``(ts, key)`` timers now due, in time order."""
        self._timers.watermark = max(self._timers.watermark, int(watermark))
        return self._timers.due(self._timers.watermark)


def run_keyed(operator: Any, events: Sequence[Event], watermarks: Sequence[int], *, strict: bool = True) -> list[Any]:
    """Feed ``events`` to ``operator`` through :class:`FakeFlinkContext`, each key in its own fake task.

    ``watermarks[i]`` is the watermark in force before event ``i``; a task sees the watermarks of its own key's
    events (a subsequence, so it never goes back) and finally :data:`MAX_WATERMARK`. Returns every output.
    """
    out: list[Any] = []
    keys = dict.fromkeys(e.key for e in events)
    for key in keys:
        ctx = FakeFlinkContext(strict=strict)
        state_of = ctx.get_state
        mine = [i for i, e in enumerate(events) if e.key == key]
        for i in [*mine, None]:
            wm = MAX_WATERMARK if i is None else int(watermarks[i])
            for ts, k in ctx.advance_watermark(wm):
                ctx.set_current(k, ts)
                out.extend(operator.on_timer(ts, FlinkContextAdapter(ctx, state_of, ts)))
            if i is not None:
                ctx.set_current(key, events[i].ts)
                out.extend(operator.process(events[i], FlinkContextAdapter(ctx, state_of)))
    return out


def stream_events(n: int = 600, keys: int = 5, seed: int = 0) -> tuple[list[Event], list[int]]:
    """The conformance suite's synthetic stream as events (key ``k<slot>``, attr ``id`` = row) and watermarks."""
    from vigil.testing.detectors import synthetic_stream

    slots, ts, X, _ = synthetic_stream(n=n, keys=keys, seed=seed)
    events = [Event(f"k{s}", int(t), {f: float(X[f][i]) for f in X}, {"id": str(i)})
              for i, (s, t) in enumerate(zip(slots.tolist(), ts.tolist(), strict=True))]  # fmt: skip
    seen = np.maximum.accumulate(ts)
    watermarks = np.r_[np.int64(NO_WATERMARK), seen[:-1] - 1_000].tolist()  # bounded out-of-orderness, 1 s
    return events, watermarks


def check_operator(make_detector: Callable[[], Any], events: Sequence[Event] | None = None,
                   watermarks: Sequence[int] | None = None, *, buffer: int = 1) -> None:  # fmt: skip
    """A detector as :class:`~vigil.dataflow.keyed.KeyedDetector` gives the batch path's verdicts, event by event.

    The events (default: :func:`stream_events`) run once through ``process_many`` on the whole stream, and
    through ``KeyedDetector`` twice: key by key over :class:`FakeFlinkContext` with bytes state, and interleaved
    through the embedded :class:`~vigil.dataflow.operators.KeyedOperatorHost` with plain state. Scores,
    calibrated scores, flags and readiness must be identical, and alerts raised exactly on the fired rows.
    A detector whose ``slice_caveat()`` is set must be refused instead.
    """
    if events is None:
        events, watermarks = stream_events()
    assert watermarks is not None and len(watermarks) == len(events), "one watermark per event"
    det = make_detector()
    caveat = det.slice_caveat()
    if caveat is not None:
        try:
            KeyedDetector(det)
        except ValueError as exc:
            assert caveat in str(exc), f"refused for another reason: {exc}"
            return
        raise AssertionError(f"KeyedDetector accepted {det.kind} although {caveat}")
    slot_of = {k: i for i, k in enumerate(dict.fromkeys(e.key for e in events))}
    fields = tuple(det.fields)
    v = det.process_many(np.array([slot_of[e.key] for e in events], np.int32), np.array([e.ts for e in events]),
                         {f: np.array([e.fields.get(f, np.nan) for e in events], np.float64) for f in fields})
    keyed = KeyedDetector(make_detector(), emit=("scores", "alerts"), buffer=buffer)
    _compare(v, run_keyed(keyed, events, watermarks), events, "Flink-shaped, key by key, bytes state")
    host = KeyedOperatorHost(KeyedDetector(make_detector(), emit=("scores", "alerts"), state_format="plain",
                                           buffer=buffer))  # fmt: skip
    out = host.process([e.key for e in events], [e.ts for e in events],
                       {f: [e.fields.get(f, np.nan) for e in events] for f in fields}, list(watermarks))
    _compare(v, out + host.advance(MAX_WATERMARK), events, "embedded host, interleaved, plain state")


def _compare(v: Any, outputs: Iterable[Any], events: Sequence[Event], what: str) -> None:
    """Outputs against batch verdicts, matched per key by position (a key's outputs keep its events' order)."""
    rows: dict[str, list[dict[str, Any]]] = {}
    fired: dict[str, list[int]] = {}
    for o in outputs:
        if isinstance(o, Alert):
            fired.setdefault(o.key, []).append(o.event_ts_ms)
        else:
            rows.setdefault(o["key"], []).append(o)
    for key in dict.fromkeys(e.key for e in events):
        idx = np.array([i for i, e in enumerate(events) if e.key == key])
        got_rows = rows.get(key, [])
        assert len(got_rows) == len(idx), f"{what}: {len(got_rows)} score rows for key {key}'s {len(idx)} events"
        for name in ("score", "calibrated", "flag", "ready"):
            got = np.array([r[name] for r in got_rows])
            want = getattr(v, name)[idx]
            same = (got == want) | (np.isnan(got) & np.isnan(want)) if want.dtype.kind == "f" else got == want
            if not same.all():
                bad = int(np.flatnonzero(~same)[0])
                raise AssertionError(f"{what}: `{name}` differs first at event {idx[bad]} (key {key}): "
                                     f"{got[bad]!r} != {want[bad]!r}")  # fmt: skip
        want_fired = [events[i].ts for i in idx[v.fire[idx]].tolist()]
        assert fired.get(key, []) == want_fired, f"{what}: key {key}'s alerts at {fired.get(key)}, fired {want_fired}"


# -- the Flink job's Python half without a cluster ---------------------------------------------------------


class DictStore:
    """A bucket's keyed state as a dict (what a Flink ``MapState[str, bytes]`` holds for the current key)."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        """The key's record, or ``None``."""
        return self.data.get(key)

    def put(self, key: str, blob: bytes) -> None:
        """Store the key's record (bytes only, as Flink holds them)."""
        assert isinstance(blob, bytes), type(blob)
        self.data[key] = blob

    def remove(self, key: str) -> None:
        """Forget the key."""
        self.data.pop(key, None)

    def items(self) -> list[tuple[str, bytes]]:
        """Every key with its record."""
        return list(self.data.items())


def simulate_job(job: Any, records: Sequence[tuple[int, str | None, str, int]], *, batch_window_ms: int = 1000,
                 buckets: int = 8, restart_every: int = 0) -> list[tuple[str, tuple[Any, ...]]]:  # fmt: skip
    """Run a pipeline's Flink job without Flink: the JVM's part simulated in Python, the Python part as is.

    ``records`` are Kafka records ``(partition, key, value, record timestamp)`` in the order one source subtask
    reads them. Each record gets the event time and watermark Flink SQL would give it (bounded out-of-orderness
    per partition, the minimum over partitions, exact rather than periodic), on-time records are grouped per
    (bucket, batch window) and handed over when the watermark passes the window, records behind the watermark at
    once, and the buckets' timers fire as the watermark passes them; the input ends with the maximum watermark.
    With ``restart_every`` > 0 the Python half is rebuilt (its memory lost, its keyed state kept) every that many
    batches, as after a failure and restore. Returns ``(output role, row)`` in output order.
    """
    import json
    import zlib

    from vigil.integrations.flink.batches import SEP
    from vigil.integrations.flink.runner import NEVER, TaskRunner

    roles = [o.role for o in job.outputs]
    runner = TaskRunner(job, roles)
    stores: dict[int, DictStore] = {}
    delay = job.event_time.max_delay_ms
    src = job.source
    part_max: dict[int, int] = {p: NO_WATERMARK for p in {r[0] for r in records}}
    pending: dict[tuple[int, int], list[str]] = {}
    timers: list[tuple[int, int]] = []
    out: list[tuple[str, tuple[Any, ...]]] = []
    calls = 0
    op_wm = NO_WATERMARK
    offsets: dict[int, int] = {}

    def bucket_of(key: str) -> int:
        return zlib.crc32(key.encode()) % buckets

    def event_time(value: str, rts: int) -> tuple[str, int]:
        key, ts = "", rts
        try:
            d = json.loads(value)
            key = str(d.get(src.key, "")) if d.get(src.key) is not None else ""
            t = d.get(src.time) if src.time != "@timestamp" else None
            if isinstance(t, int) and not isinstance(t, bool) and src.min_ts_ms <= t <= src.max_ts_ms:
                ts = t
        except (ValueError, AttributeError):
            pass
        return key, ts

    def deliver(result: tuple[list[Any], int], bucket: int) -> None:
        nonlocal runner, calls
        recs, wake = result
        out.extend((roles[i], row) for i, row in recs)
        if wake != NEVER:
            heapq.heappush(timers, (wake, bucket))
        calls += 1
        if restart_every and calls % restart_every == 0:
            runner = TaskRunner(job, roles)

    def store(bucket: int) -> DictStore:
        return stores.setdefault(bucket, DictStore())

    def advance(wm: int) -> None:
        nonlocal op_wm
        for (w_end, bucket) in sorted(k for k in pending if k[0] - 1 <= wm):
            body = SEP.join(pending.pop((w_end, bucket)))
            deliver(runner.on_batch(bucket, False, w_end - 1, body, store(bucket), op_wm), bucket)
        op_wm = max(op_wm, wm)
        while timers and timers[0][0] <= op_wm:
            t, bucket = heapq.heappop(timers)
            deliver(runner.on_timer(bucket, t, store(bucket), op_wm), bucket)

    for part, key, value, rts in records:
        found_key, et = event_time(value, rts)
        bucket_key = key if key is not None else found_key
        wm = min(part_max.values())
        wm = NO_WATERMARK if wm == NO_WATERMARK else wm - delay - 1
        offset = offsets[part] = offsets.get(part, -1) + 1
        head = " ".join(map(str, (part, offset, rts, et, wm, -1 if key is None else len(key))))
        rec = head + " " + (key or "") + value
        bucket = bucket_of(bucket_key)
        if wm != NO_WATERMARK and et <= wm:
            deliver(runner.on_batch(bucket, True, wm, rec, store(bucket), op_wm), bucket)
        else:
            w_end = (et // batch_window_ms + 1) * batch_window_ms
            pending.setdefault((w_end, bucket), []).append(rec)
        part_max[part] = max(part_max[part], et)
        new_wm = min(part_max.values())
        if new_wm != NO_WATERMARK:
            advance(new_wm - delay - 1)
    advance(MAX_WATERMARK)
    return out

"""The per-event operator seam, shaped like PyFlink's ``KeyedProcessFunction``.

Vigil's own detectors run vectorized over micro-batches. A user operator that needs arbitrary
per-key logic implements :class:`KeyedOperator` instead: ``process(event, ctx)`` for every event
of a key and ``on_timer(ts_ms, ctx)`` when an event-time timer it registered is passed by the
watermark. ``ctx`` exposes the key, the event's timestamp, the watermark, timers and named
per-key state handles (``get``/``set``/``clear``) — the same shape as Flink's ``Context``,
``TimerService`` and ``ValueState``, so the Flink runtime can host the same operator by mapping
the handles onto ``ValueState`` (a later issue). As in Flink, ``ctx`` is valid only during the call.

This path creates one Python object per event; it is for logic that can't be vectorized, and the
embedded engine documents it as the slow path.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from typing import Any, Protocol, runtime_checkable

from vigil.types import Event


class ValueHandle:
    """One named piece of state of the current key (Flink's ``ValueState``)."""

    __slots__ = ("_store", "_id")

    def __init__(self, store: dict[tuple[str, str], Any], ident: tuple[str, str]) -> None:
        self._store = store
        self._id = ident

    def get(self, default: Any = None) -> Any:
        """The value, or ``default`` when unset."""
        return self._store.get(self._id, default)

    def set(self, value: Any) -> None:
        """Replace the value (plain data only: it is snapshotted with the codec)."""
        self._store[self._id] = value

    def clear(self) -> None:
        """Forget the value."""
        self._store.pop(self._id, None)


class Context:
    """What an operator sees during ``process`` / ``on_timer`` (valid only during the call)."""

    __slots__ = ("key", "timestamp", "watermark", "_state", "_timers")

    def __init__(self, state: dict[tuple[str, str], Any], timers: TimerService) -> None:
        self.key = ""
        self.timestamp = 0
        self.watermark = 0
        self._state = state
        self._timers = timers

    def state(self, name: str) -> ValueHandle:
        """The handle of state ``name`` for the current key."""
        return ValueHandle(self._state, (name, self.key))

    def register_timer(self, ts_ms: int) -> None:
        """Call ``on_timer(ts_ms)`` for the current key once the watermark reaches ``ts_ms``."""
        self._timers.register(self.key, ts_ms)

    def delete_timer(self, ts_ms: int) -> None:
        """Cancel a timer of the current key."""
        self._timers.delete(self.key, ts_ms)


class TimerService:
    """Event-time timers per key, fired in time order as the watermark passes them."""

    def __init__(self) -> None:
        self._heap: list[tuple[int, str]] = []
        self._live: set[tuple[int, str]] = set()

    def register(self, key: str, ts_ms: int) -> None:
        """Add a timer (registering the same one twice fires it once)."""
        item = (int(ts_ms), key)
        if item not in self._live:
            self._live.add(item)
            heapq.heappush(self._heap, item)

    def delete(self, key: str, ts_ms: int) -> None:
        """Remove a timer."""
        self._live.discard((int(ts_ms), key))

    def due(self, watermark_ms: int) -> Iterable[tuple[int, str]]:
        """Pop the timers at or before the watermark, in time order."""
        while self._heap and self._heap[0][0] <= watermark_ms:
            item = heapq.heappop(self._heap)
            if item in self._live:
                self._live.discard(item)
                yield item

    def snapshot(self) -> list[list[Any]]:
        """Pending timers as plain data."""
        return [[ts, key] for ts, key in sorted(self._live)]

    def restore(self, timers: list[list[Any]]) -> None:
        """Reload pending timers."""
        for ts, key in timers:
            self.register(key, ts)


@runtime_checkable
class KeyedOperator(Protocol):
    """A per-key, per-event operator (PyFlink's ``KeyedProcessFunction``)."""

    def process(self, event: Event, ctx: Context) -> Iterable[Any]:
        """Handle one event of ``ctx.key``; yield outputs (alerts or other records)."""
        ...

    def on_timer(self, ts_ms: int, ctx: Context) -> Iterable[Any]:
        """Handle a timer of ``ctx.key`` that the watermark has passed; yield outputs."""
        ...


class KeyedOperatorHost:
    """Runs a :class:`KeyedOperator` inside the embedded engine (per event; the slow path)."""

    def __init__(self, operator: KeyedOperator) -> None:
        self.operator = operator
        self.state: dict[tuple[str, str], Any] = {}
        self.timers = TimerService()
        self._ctx = Context(self.state, self.timers)

    def process(
        self, keys: list[str], ts_ms: list[int], fields: dict[str, list[float]], watermarks: list[int]
    ) -> list[Any]:
        """Feed events in arrival order; before each event, fire the timers its watermark has passed.

        ``watermarks[i]`` is the watermark in force before event ``i``, so timers fire at the same
        point of the stream however it is cut into micro-batches.
        """
        out: list[Any] = []
        ctx = self._ctx
        names = list(fields)
        cols = [fields[n] for n in names]
        for i, key in enumerate(keys):
            wm = watermarks[i]
            if wm != ctx.watermark:
                out.extend(self.advance(wm))
            ctx.key = key
            ctx.timestamp = ts_ms[i]
            event = Event(key, ts_ms[i], {n: c[i] for n, c in zip(names, cols, strict=True)})
            out.extend(self.operator.process(event, ctx))
        return out

    def advance(self, watermark_ms: int) -> list[Any]:
        """Fire due timers."""
        out: list[Any] = []
        ctx = self._ctx
        ctx.watermark = watermark_ms
        for ts, key in self.timers.due(watermark_ms):
            ctx.key = key
            ctx.timestamp = ts
            out.extend(self.operator.on_timer(ts, ctx))
        return out

    def snapshot(self) -> dict[str, Any]:
        """State and timers as plain data."""
        return {
            "state": [[name, key, value] for (name, key), value in sorted(self.state.items())],
            "timers": self.timers.snapshot(),
        }

    def restore(self, snap: dict[str, Any]) -> None:
        """Reload :meth:`snapshot` output."""
        self.state.clear()
        for name, key, value in snap["state"]:
            self.state[(name, key)] = value
        self.timers = TimerService()
        self.timers.restore(snap["timers"])
        self._ctx = Context(self.state, self.timers)

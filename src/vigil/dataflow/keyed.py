"""Any registered detector as a :class:`~vigil.dataflow.operators.KeyedOperator` over one key's slice.

Keyed runtimes (Flink's ``KeyedProcessFunction``, the embedded :class:`~vigil.dataflow.operators.KeyedOperatorHost`)
hand an operator one key at a time and keep that key's state for it. :class:`KeyedDetector` keeps a detector's
per-key slice (:meth:`~vigil.detectors.base.BaseDetector.export_slots`) in the key's ``ctx.state("detector")``
and, for each event:

1. imports the slice into slot 0 of a scratch instance (``detector.fresh()``: heavy parts such as a loaded model
   are shared, never reloaded);
2. runs the same ``process_many`` the embedded runner runs, on that one event (or on a micro-batch of the key's
   buffered events);
3. exports slot 0 back into the key's state, and yields the verdicts as alerts (and score rows), built by
   :mod:`vigil.dataflow.outputs` — the code every runtime uses.

Verdicts are those of the batch path, key for key (``vigil.testing.flink.check_operator`` checks it for every
registered detector). A detector whose verdicts depend on other keys' events (``slice_caveat()``: rank
ensembles, global models with state, River models) is refused at construction.

State format: ``"bytes"`` (default) stores the slice encoded with the snapshot codec — what a Flink
``ValueState`` of bytes holds, checked for kind and version when read back; ``"plain"`` stores the plain-data
dict (cheaper, for the embedded host, whose snapshots encode it anyway).

Buffering (``buffer > 1``): events are appended to ``ctx.state("buffer")`` and scored together when the key has
``buffer`` of them or the watermark advances (an event-time timer at ``watermark + 1``), which keeps Flink
vectorized; results are the same, only later.

:class:`FlinkContextAdapter` presents a PyFlink-shaped context (``get_current_key()``, ``timestamp()``,
``timer_service()``, ``ValueState.value/update/clear``) as the :class:`~vigil.dataflow.operators.Context` an
operator expects; it needs no pyflink import, so the Flink adapter stays thin.

Examples:
    >>> from vigil.detectors import EWZScore
    >>> from vigil.dataflow.operators import KeyedOperatorHost
    >>> op = KeyedDetector(EWZScore(field="ms", halflife=20, min_count=5, threshold=4), step="latency")
    >>> host = KeyedOperatorHost(op)
    >>> ms = [10.0, 11, 9, 10, 11, 10, 9, 30, 10]
    >>> alerts = host.process(["api"] * 9, list(range(9)), {"ms": ms}, [0] * 9)
    >>> [(a.key, a.event_ts_ms, round(a.score, 1)) for a in alerts], sorted(k for _, k in host.state)
    ([('api', 7, 24.4)], ['api'])
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from vigil.dataflow.outputs import CollectingOutputs, score_rows, verdict_alerts
from vigil.state import codec
from vigil.types import Batch, Event

_MAX_WM = np.iinfo(np.int64).max
_EMITS = ("alerts", "scores")


class KeyedDetector:
    """A registered detector run per key as a keyed operator (see the module docstring).

    Args:
        detector: the configured detector (a template: it is never fed; a ``fresh()`` twin does the scoring).
        step: the step's name (in alert ids, score rows and the state's kind).
        pipeline: the pipeline's name (in alert ids and default event ids).
        severity: severity of the alerts.
        emit: what to yield: ``"alerts"`` (fired rows, as :class:`~vigil.types.Alert`) and/or ``"scores"``
            (one row per event, as :func:`~vigil.dataflow.outputs.score_rows` builds them).
        state_format: ``"bytes"`` (codec-encoded slice) or ``"plain"`` (the plain-data dict).
        buffer: events of a key scored together (1: each event at once).
        id_attr: the event attribute holding its id (default event id: ``<pipeline>@<ts_ms>``).
        now_ns: wall clock for the alerts' detection time and latency (never used for logic).

    Raises:
        ValueError: the detector's verdicts depend on more than a key's slice, or a bad argument.
    """

    state_name = "detector"
    buffer_name = "buffer"

    def __init__(self, detector: Any, *, step: str = "detect", pipeline: str = "vigil", severity: str = "warning",
                 emit: Iterable[str] = ("alerts",), state_format: str = "bytes", buffer: int = 1,
                 id_attr: str = "id", now_ns: Callable[[], int] | None = None) -> None:  # fmt: skip
        caveat = detector.slice_caveat()
        if caveat is not None:
            raise ValueError(f"step `{step}`: detector {detector.kind} can't run per key: {caveat}")
        emit = tuple(emit)
        if not emit or any(e not in _EMITS for e in emit):
            raise ValueError(f"step `{step}`: `emit` must name some of {list(_EMITS)}; got {list(emit)!r}")
        if state_format not in ("bytes", "plain"):
            raise ValueError(f"step `{step}`: `state_format` must be 'bytes' or 'plain'; got {state_format!r}")
        if int(buffer) != buffer or buffer < 1:
            raise ValueError(f"step `{step}`: `buffer` must be an int >= 1; got {buffer!r}")
        self.detector = detector
        self.step, self.pipeline, self.severity = step, pipeline, severity
        self.emit, self.state_format, self.buffer, self.id_attr = emit, state_format, int(buffer), id_attr
        self.fields = tuple(detector.fields)
        self._scratch = detector.fresh()
        self._kind = f"detector/{detector.kind}/slot"
        self._buf_kind = "keyed/buffer"
        self._out = CollectingOutputs(pipeline, now_ns=now_ns)
        self._slot0 = np.zeros(1, np.int32)

    # -- KeyedOperator ---------------------------------------------------------------------------------

    def process(self, event: Event, ctx: Any) -> Iterator[Any]:
        """Score one event of ``ctx.key`` against the key's slice (or buffer it); yield alerts / score rows."""
        row = [int(event.ts), [float(event.fields.get(f, np.nan)) for f in self.fields],
               event.attrs.get(self.id_attr)]  # fmt: skip
        if self.buffer == 1:
            yield from self._score(ctx, [row])
            return
        handle = ctx.state(self.buffer_name)
        rows = [*self._rows(handle.get()), row]
        if len(rows) >= self.buffer:
            handle.clear()
            yield from self._score(ctx, rows)
        else:
            handle.set(rows if self.state_format == "plain" else codec.encode(self._buf_kind, 1, {}, rows))
            ctx.register_timer(min(int(ctx.watermark), _MAX_WM - 1) + 1)  # flush when the watermark moves

    def on_timer(self, ts_ms: int, ctx: Any) -> Iterator[Any]:
        """Score the key's buffered events (the watermark advanced)."""
        handle = ctx.state(self.buffer_name)
        rows = self._rows(handle.get())
        if rows:
            handle.clear()
            yield from self._score(ctx, rows)

    # -- the slice round trip --------------------------------------------------------------------------

    def _score(self, ctx: Any, rows: list[list[Any]]) -> Iterator[Any]:
        n = len(rows)
        ts = np.array([r[0] for r in rows], np.int64)
        values = np.array([r[1] for r in rows], np.float64).reshape(n, len(self.fields))
        cols = {f: values[:, j].copy() for j, f in enumerate(self.fields)}
        ids = [r[2] for r in rows]
        extra = {"id": np.array([str(i) for i in ids], object)} if all(i is not None for i in ids) else {}
        batch = Batch(np.zeros(n, np.int32), ts, cols, extra)
        det = self._scratch
        state = ctx.state(self.state_name)
        det.import_slots(self._slot0, [self._decode(state.get())])
        v = det.process_many(batch.slots, batch.ts_ms, batch.cols)
        state.set(self._encode(det.export_slots(self._slot0)[0]))
        keys = np.full(n, str(ctx.key), object)
        if "scores" in self.emit:
            yield from score_rows(self._out, self.step, batch, keys, v)
        if "alerts" in self.emit:
            yield from verdict_alerts(self._out, self.step, det, self.severity, batch, keys, v)

    def _rows(self, stored: Any) -> list[list[Any]]:
        if stored is None:
            return []
        return stored if self.state_format == "plain" else codec.decode(stored, kind=self._buf_kind)["state"]

    def _encode(self, state: dict[str, Any]) -> Any:
        if self.state_format == "plain":
            return state
        return codec.encode(self._kind, self.detector.state_version, {}, state)

    def _decode(self, stored: Any) -> dict[str, Any] | None:
        if stored is None or self.state_format == "plain":
            return stored  # type: ignore[no-any-return]
        return codec.decode(stored, kind=self._kind, version=self.detector.state_version)["state"]  # type: ignore


class _StateHandle:
    """A Flink ``ValueState`` seen as a Vigil :class:`~vigil.dataflow.operators.ValueHandle`."""

    __slots__ = ("_state",)

    def __init__(self, state: Any) -> None:
        self._state = state

    def get(self, default: Any = None) -> Any:
        value = self._state.value()
        return default if value is None else value

    def set(self, value: Any) -> None:
        self._state.update(value)

    def clear(self) -> None:
        self._state.clear()


class FlinkContextAdapter:
    """A PyFlink-shaped ``KeyedProcessFunction`` context as the :class:`~vigil.dataflow.operators.Context` of Vigil.

    Args:
        ctx: the Flink context (``get_current_key()``, ``timestamp()``, ``timer_service()`` with
            ``current_watermark()`` and ``register_event_time_timer()`` / ``delete_event_time_timer()``).
        get_state: state name → the ``ValueState`` (``value()`` / ``update()`` / ``clear()``) of the current key,
            e.g. ``lambda name: states[name]`` over states declared in the function's ``open()``.
        timestamp: the timer's time in ``on_timer`` (Flink passes it beside the context).
    """

    __slots__ = ("_ctx", "_get_state", "_ts")

    def __init__(self, ctx: Any, get_state: Callable[[str], Any], timestamp: int | None = None) -> None:
        self._ctx = ctx
        self._get_state = get_state
        self._ts = timestamp

    @property
    def key(self) -> str:
        """The current key."""
        return str(self._ctx.get_current_key())

    @property
    def timestamp(self) -> int:
        """The event's (or timer's) time in ms."""
        return int(self._ts if self._ts is not None else self._ctx.timestamp())

    @property
    def watermark(self) -> int:
        """The operator's current event-time watermark."""
        return int(self._ctx.timer_service().current_watermark())

    def state(self, name: str) -> _StateHandle:
        """The handle of state ``name`` for the current key."""
        return _StateHandle(self._get_state(name))

    def register_timer(self, ts_ms: int) -> None:
        """An event-time timer for the current key."""
        self._ctx.timer_service().register_event_time_timer(int(ts_ms))

    def delete_timer(self, ts_ms: int) -> None:
        """Cancel an event-time timer of the current key."""
        self._ctx.timer_service().delete_event_time_timer(int(ts_ms))

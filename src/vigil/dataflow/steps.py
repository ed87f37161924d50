"""The :class:`Step` protocol, and the step kinds every runtime runs the same way: detect, window, apply, process.

A step is runtime-neutral logic over columnar micro-batches (after bytewax's ``StatefulBatchLogic``). A
runtime calls, for each micro-batch of on-time rows, :meth:`Step.on_batch`; for rows behind the watermark,
:meth:`Step.on_late`; when the watermark advances, :meth:`Step.on_watermark`; when idle keys expire,
:meth:`Step.reset_slots`; and at checkpoints :meth:`Step.snapshot` / :meth:`Step.restore`, guarded by
:meth:`Step.state_key` (a step whose key changed starts fresh instead of misreading old state). Results go
to the :class:`~vigil.dataflow.outputs.Outputs` the runtime passes in. The runtime never asks what kind of
step it holds.

Examples:
    >>> import numpy as np
    >>> from vigil.dataflow.outputs import CollectingOutputs
    >>> from vigil.detectors import VelocityRule
    >>> from vigil.types import Batch, BoolArray
    >>> step = DetectStep("burst", VelocityRule(window="10s", max_count=3))
    >>> out = CollectingOutputs("demo", alert_sinks=["alerts"])
    >>> b = Batch(np.zeros(5, np.int32), np.arange(5) * 1000, {})
    >>> _ = step.on_batch(b, np.array(["u1"] * 5, object), np.full(5, -1), out)
    >>> [(a.key, a.detector) for a in out.collected("alerts")], out.counts.fired
    ([('u1', 'burst')], {'burst': 1})
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import orjson

from vigil.dataflow.capabilities import HealthReporter, ServedModel, SlicedState, SlicedStep, StateSizer, WatermarkDue
from vigil.dataflow.operators import KeyedOperatorHost
from vigil.dataflow.outputs import Outputs, late_rows, score_rows, verdict_alerts, window_rows
from vigil.detectors.base import UNSCORABLE
from vigil.eventtime.windows import WindowAggregator
from vigil.types import Batch, BoolArray, Int32Array, Int64Array

log = logging.getLogger("vigil.dataflow")
_NEVER = np.iinfo(np.int64).max


@runtime_checkable
class Step(Protocol):
    """A named, stateful piece of logic over micro-batches (see the module docstring)."""

    name: str
    kind: ClassVar[str]

    def open(self) -> None:
        """Called once before the first batch (load compiled kernels, models)."""
        ...

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> Any:
        """On-time rows; ``wm_rows[i]`` is the watermark in force before row ``i``. May return verdicts (taps)."""
        ...

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs,
                expired: BoolArray) -> None:
        """Rows behind the watermark by more than the allowed lateness (``behind_ms`` per row).

        ``expired`` marks the rows whose key's state had expired by then (they see the key as new).
        """
        ...

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """The watermark advanced: close windows, fire timers."""
        ...

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget the state of expired key slots."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """The step's state as plain data (codec-encodable)."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output (only called when :meth:`state_key` matches the checkpoint's)."""
        ...

    def state_key(self) -> str:
        """What the state's layout depends on (kind, version, shaping parameters), as a short string."""
        ...

    def sinks(self) -> list[Any]:
        """The step's own outputs (to flush and close with the others)."""
        ...


def params_hash(params: Any) -> str:
    """A short, stable hash of plain-data parameters (for :meth:`Step.state_key`).

    Examples:
        >>> params_hash({"a": 1, "b": [1, 2]}) == params_hash({"b": [1, 2], "a": 1})
        True
    """
    text = orjson.dumps(params, option=orjson.OPT_SORT_KEYS | orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS,
                        default=repr)  # fmt: skip
    return hashlib.blake2b(text, digest_size=6).hexdigest()


class _NoLate:
    """Steps that have nothing to do with late rows."""

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs,
                expired: BoolArray) -> None:
        """Nothing."""

    def open(self) -> None:
        """Nothing to load."""


class DetectStep:
    """Score every event with a detector; fired rows become alerts.

    Late rows are scored against a copy of their keys' state (nothing is learned) when the pipeline scores
    late events; one that fires is an alert raised late.
    """

    kind: ClassVar[str] = "detect"

    def __init__(self, name: str, detector: Any, severity: str = "warning") -> None:
        self.name, self.detector, self.severity = name, detector, severity
        self._roles()

    def _roles(self) -> None:
        """What the detector can do besides scoring, sorted once (and again when it is replaced)."""
        det = self.detector
        self._health = det if isinstance(det, HealthReporter) else None
        self._sliced = isinstance(det, SlicedState) and det.slice_caveat() is None

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the detector reads."""
        return tuple(self.detector.fields)

    def open(self) -> None:
        """Run the detector on an empty batch: compiled kernels load now, not on the first real events."""
        empty = (np.empty(0, np.int32), np.empty(0, np.int64))
        self.detector.process_many(*empty, {f: np.empty(0, np.float64) for f in self.detector.fields})

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> Any:
        """Score the rows; fired rows become alerts; verdict rows go to the score sink if there is one."""
        v = self.detector.process_many(batch.slots, batch.ts_ms, batch.cols)
        out.count_flagged(self.name, int(v.flag.sum()))
        unscorable = v.stats.get(UNSCORABLE)
        if unscorable is not None:
            out.count_unscored(self.name, int(np.count_nonzero(unscorable)))
        out.alerts(self.name, verdict_alerts(out, self.name, self.detector, self.severity, batch, keys, v))
        if out.score_sink is not None:
            out.emit(out.score_sink, score_rows(out, self.name, batch, keys, v))
        return v

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs,
                expired: BoolArray) -> None:
        """Score late rows against a copy of their keys' state; fired ones are alerts raised late.

        Each row is scored on its own against the state as it stands (nothing is learned, not even from another
        late row of the same key): rows of one key go in separate rounds. A row whose key had expired is scored
        against empty state.
        """
        det = self.detector
        if any(f not in late.cols for f in det.fields):
            return
        rounds = _rounds(late.slots)
        for r in range(int(rounds.max()) + 1 if len(rounds) else 0):
            rows = np.flatnonzero(rounds == r)
            part = late.take(rows)
            slots = part.slots
            if self._sliced:  # copy only these keys' state, not every key's
                twin = det.fresh()
                states = det.export_slots(slots)
                twin.import_slots(slots, [None if e else s for s, e in zip(states, expired[rows].tolist(),
                                                                           strict=True)])  # fmt: skip
            else:  # state that no key's slice holds (e.g. one model over all keys): copy the whole detector
                twin = type(det).from_snapshot(det.params(), det.snapshot())
                if expired[rows].any():
                    twin.reset_slots(slots[expired[rows]])
            v = twin.process_many(slots, part.ts_ms, part.cols)
            out.alerts(self.name, verdict_alerts(out, self.name, det, self.severity, part, keys[rows], v,
                                                 late_behind_ms=behind_ms[rows].tolist()))  # fmt: skip

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Nothing: detectors score on arrival."""

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget expired keys."""
        self.detector.reset_slots(slots)

    def snapshot(self) -> dict[str, Any]:
        """The detector's state."""
        return {"detector": self.detector.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Rebuild the detector from the checkpoint's state."""
        det = self.detector
        self.detector = type(det).from_snapshot(det.params(), state["detector"])
        self._roles()

    def state_key(self) -> str:
        """Kind, state version and the parameters that shape the state (not the live ones, e.g. ``threshold``)."""
        det = self.detector
        live: frozenset[str] = getattr(type(det), "live_params", frozenset())
        shaping = {k: v for k, v in det.params().items() if k not in live}
        return f"detect/{det.kind}/v{det.state_version}/{params_hash(shaping)}"

    def sinks(self) -> list[Any]:
        """None of its own: alerts go to the pipeline's alert sinks."""
        return []

    def health(self) -> dict[str, Any] | None:
        """The served model's health, if the detector serves one."""
        return self._health.health() if self._health is not None else None

    def state_bytes(self) -> int:
        """Bytes of the detector's arrays."""
        return _nbytes(self.detector)

    def served_model(self) -> Any:
        """The detector when it serves a model from the registry, else ``None``."""
        return self.detector if isinstance(self.detector, ServedModel) else None

    # -- per-key slices (a keyed runtime's state; see capabilities.SlicedStep) -------------------------

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        """The detector's slices of ``slots``."""
        return self.detector.export_slots(slots)  # type: ignore[no-any-return]

    def import_slots(self, slots: Int32Array, states: list[dict[str, Any] | None]) -> None:
        """Load slices into ``slots`` (``None`` resets one)."""
        self.detector.import_slots(slots, states)

    def twin(self) -> DetectStep:
        """The same step over an empty detector (a loaded model is shared, not reloaded)."""
        return DetectStep(self.name, self.detector.fresh(), self.severity)

    def slice_caveat(self) -> str | None:
        """The detector's caveat (``None``: a key's slice is all its later verdicts depend on)."""
        if not isinstance(self.detector, SlicedState):
            return f"detector {getattr(self.detector, 'kind', type(self.detector).__name__)} keeps no per-key slices"
        return self.detector.slice_caveat()

    def due_ms(self, slots: Int32Array) -> Int64Array:
        """Never: a detector does nothing when the watermark moves."""
        return np.full(len(slots), _NEVER, np.int64)


class WindowStep(_NoLate):
    """Aggregate a field per key and event-time window; closed windows go to ``sink``."""

    kind: ClassVar[str] = "window"

    def __init__(self, name: str, assigner: Any, field: str, sink: Any, allowed_lateness_ms: int = 0,
                 emit: Literal["final", "current"] = "final") -> None:  # fmt: skip
        self.name, self.assigner, self.field, self.sink = name, assigner, field, sink
        self.allowed_lateness_ms, self.emit = allowed_lateness_ms, emit
        self.agg = WindowAggregator(assigner, allowed_lateness_ms, emit)

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Fold the rows into their windows; rows for closed windows are late (to the late output)."""
        split = self.agg.add(batch.slots, batch.ts_ms, batch.cols[self.field], wm_rows)
        if len(split.late):
            out.counts.late_events += len(split.late)
            out.emit(out.late_sink, late_rows(self.name, keys, batch.ts_ms, batch.cols, split.late, wm_rows))
        if split.updated is not None:
            self._emit(split.updated, out)

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Emit the windows the watermark closed."""
        self._emit(self.agg.advance(watermark_ms), out)

    def _emit(self, res: Any, out: Outputs) -> None:
        if not len(res):
            return
        out.counts.windows_emitted += len(res)
        out.emit(self.sink, window_rows(self.name, res, out.keys_of(res.slot)))

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget expired keys' open windows."""
        self.agg.reset_slots(slots)

    def snapshot(self) -> dict[str, Any]:
        """Open windows."""
        return {"agg": self.agg.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Reload open windows."""
        self.agg = WindowAggregator.from_snapshot(state["agg"])

    def state_key(self) -> str:
        """The window shape."""
        return f"window/{params_hash([repr(self.assigner), self.allowed_lateness_ms, self.emit])}"

    def sinks(self) -> list[Any]:
        """Where closed windows go."""
        return [self.sink] if self.sink is not None else []

    # -- per-key slices (a keyed runtime's state; see capabilities.SlicedStep) -------------------------

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        """The open windows of ``slots``."""
        return self.agg.export_slots(slots)

    def import_slots(self, slots: Int32Array, states: list[dict[str, Any] | None]) -> None:
        """Replace the open windows of ``slots`` (``None``: none open)."""
        self.agg.import_slots(slots, states)

    def twin(self) -> WindowStep:
        """The same step with no open window, writing to the same sink."""
        return WindowStep(self.name, self.assigner, self.field, self.sink, self.allowed_lateness_ms, self.emit)

    def slice_caveat(self) -> str | None:
        """None: a key's open windows are all its later windows depend on."""
        return None

    def due_ms(self, slots: Int32Array) -> Int64Array:
        """When each key's oldest open window closes."""
        return self.agg.next_close_ms(slots)


class ApplyStep(_NoLate):
    """Run a vectorized operator over whole micro-batches.

    The operator has ``process_batch(slots, ts_ms, cols, extra, watermarks) -> late row indices`` and
    ``advance(watermark_ms) -> outputs``, ``reset_slots(slots)``, ``params()``, ``snapshot()`` and
    ``restore(state)``. Alerts among its outputs join the alert stream; the rest go to ``sink``.
    """

    kind: ClassVar[str] = "apply"

    def __init__(self, name: str, op: Any, sink: Any = None) -> None:
        self.name, self.op, self.sink = name, op, sink
        self._health = op if isinstance(op, HealthReporter) else None

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Fold the batch in; rows the operator calls late go to the late output."""
        late = self.op.process_batch(batch.slots, batch.ts_ms, batch.cols, batch.extra, wm_rows)
        if len(late):
            out.counts.late_events += len(late)
            out.emit(out.late_sink, late_rows(self.name, keys, batch.ts_ms, batch.cols, late, wm_rows))

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """What the operator produces as the watermark passes."""
        out.route(self.name, self.op.advance(watermark_ms), self.sink)

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget expired keys."""
        self.op.reset_slots(slots)

    def snapshot(self) -> dict[str, Any]:
        """The operator's state."""
        return {"op": self.op.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Reload the operator's state."""
        self.op.restore(state["op"])

    def state_key(self) -> str:
        """The operator's type and parameters."""
        return f"apply/{type(self.op).__name__}/{params_hash(self.op.params())}"

    def sinks(self) -> list[Any]:
        """The operator's other outputs."""
        return [self.sink] if self.sink is not None else []

    def health(self) -> dict[str, Any] | None:
        """The operator's health, if it reports one."""
        return self._health.health() if self._health is not None else None


class ProcessStep(_NoLate):
    """Run a per-event :class:`~vigil.dataflow.operators.KeyedOperator` (the slow path); outputs go to ``sink``."""

    kind: ClassVar[str] = "process"

    def __init__(self, name: str, operator: Any, sink: Any = None) -> None:
        self.name, self.operator, self.sink = name, operator, sink
        self.host = KeyedOperatorHost(operator)

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Feed the events one by one, firing timers as their watermark passes them."""
        res = self.host.process(keys.tolist(), batch.ts_ms.tolist(), {k: v.tolist() for k, v in batch.cols.items()},
                                wm_rows.tolist())  # fmt: skip
        out.route(self.name, res, self.sink)

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Fire the timers the watermark passed."""
        out.route(self.name, self.host.advance(watermark_ms), self.sink)

    def reset_slots(self, slots: Int32Array) -> None:
        """Per-event operators keep state by key string; they clear it themselves (timers)."""

    def snapshot(self) -> dict[str, Any]:
        """State handles and pending timers."""
        return {"host": self.host.snapshot()}

    def restore(self, state: dict[str, Any]) -> None:
        """Reload state handles and timers."""
        self.host.restore(state["host"])

    def state_key(self) -> str:
        """The operator's type."""
        return f"process/{type(self.operator).__name__}"

    def sinks(self) -> list[Any]:
        """The operator's outputs."""
        return [self.sink] if self.sink is not None else []


def _rounds(slots: np.ndarray) -> np.ndarray:
    """Per row, how many earlier rows share its slot (the n-th row of a key goes in round n).

    Examples:
        >>> _rounds(np.array([3, 1, 3, 3, 1])).tolist()
        [0, 0, 1, 2, 1]
    """
    order = np.argsort(slots, kind="stable")
    s = slots[order]
    starts = np.r_[0, np.flatnonzero(s[1:] != s[:-1]) + 1] if len(s) else np.empty(0, np.int64)
    first = np.zeros(len(s), np.int64)
    first[starts] = starts
    out = np.empty(len(s), np.int64)
    out[order] = np.arange(len(s)) - np.maximum.accumulate(first)
    return out


def _nbytes(obj: Any) -> int:
    total = 0
    for v in vars(obj).values():
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif hasattr(v, "nbytes") and isinstance(getattr(type(v), "nbytes", None), property):
            total += int(v.nbytes)
    return total


__all__ = ["ApplyStep", "DetectStep", "ProcessStep", "SlicedStep", "StateSizer", "Step", "WatermarkDue", "WindowStep",
           "params_hash"]

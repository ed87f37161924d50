"""Velocity rule: too many events of one key within a sliding event-time window.

The classic card-fraud rule ("more than 5 transactions in a minute"). It counts, per key, the
events in the last ``window`` of event time (exact: the same sorted per-key window as the
z-score), including the current one, and flags the row when the count exceeds ``max_count``.

A burst keeps the rule true for many rows in a row. Every such row is flagged, but only the row
where the rule *becomes* true fires an alert (``fire``); the alert covers the whole window, so the
burst's earlier events are part of it. The rule fires again only after the key's count has fallen
back to ``max_count`` or below.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, duration_param, register
from vigil.detectors.explain import one_feature
from vigil.detectors.zscore import _fmt_ms
from vigil.stats.timewindow import TimeWindowState, evict, insert, load, reserve, store
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array


@numba.njit(cache=True)
def _velocity_kernel(
    slots: Any, ts: Any, start: int, window_ms: int, max_count: int,
    ist: Any, fst: Any, meta: Any, pool_ts: Any, pool_x: Any, firing: Any,
    out_count: Any, out_fire: Any,
) -> int:  # fmt: skip
    for i in range(start, slots.shape[0]):
        k = slots[i]
        off, c, h, n, newest, sh, a, b, ev = load(k, ist, fst)
        ok, off, c, h = reserve(off, c, h, n, meta, pool_ts, pool_x)
        if not ok:
            return i
        h, n, newest, sh, a, b, ev = evict(off, c, h, n, newest, sh, a, b, ev, ts[i], window_ms, pool_ts, pool_x)
        if n <= max_count:
            firing[k] = False  # the key calmed down before this event: a new burst may fire again
        n, sh, a, b, ev = insert(off, c, h, n, newest, sh, a, b, ev, ts[i], 1.0, window_ms, pool_ts, pool_x)
        store(k, ist, fst, off, c, h, n, newest, sh, a, b, ev)
        out_count[i] = n
        if n > max_count and not firing[k]:
            firing[k] = True
            out_fire[i] = True
        else:
            out_fire[i] = False
    return slots.shape[0]


@register
class VelocityRule(BaseDetector):
    """Flag a key with more than ``max_count`` events in the last ``window`` of event time.

    Args:
        window: window length, e.g. ``"60s"``.
        max_count: the most events allowed in a window.

    Score: the count in the window including this event; calibrated: ``1 - max_count / count``
    above the limit, else 0. Always ready.

    Examples:
        >>> rule = VelocityRule(window="60s", max_count=3)
        >>> v = rule.process_many(np.zeros(5, np.int32), np.arange(5) * 1000, {})
        >>> v.score.tolist(), v.flag.tolist(), v.fire.tolist()
        ([1.0, 2.0, 3.0, 4.0, 5.0], [False, False, False, True, True], [False, False, False, True, False])
    """

    kind: ClassVar[str] = "velocity"
    live_params: ClassVar[frozenset[str]] = frozenset({"max_count"})
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("firing",)
    _slot_parts: ClassVar[tuple[str, ...]] = ("win",)

    def __init__(self, *, window: str | int = "60s", max_count: int = 5) -> None:
        self.window = window
        self.window_ms = duration_param("window", window)
        if max_count < 1:
            raise ValueError(f"`max_count` must be >= 1; got {max_count!r}")
        self.max_count = int(max_count)
        self.threshold = float(max_count)
        self.fields = ()
        self.win = TimeWindowState(self.window_ms)
        self.firing = np.zeros(self.win.capacity, np.bool_)

    def params(self) -> dict[str, Any]:
        return {"window": self.window, "max_count": self.max_count}

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"window": "5s", "max_count": 3}]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        count = np.empty(m, np.int64)
        fire = np.empty(m, np.bool_)
        w = self.win
        done = 0
        while True:
            done = _velocity_kernel(
                slots, ts_ms, done, self.window_ms, self.max_count,
                w.ist, w.fst, w.meta, w.pool_ts, w.pool_x, self.firing, count, fire,
            )  # fmt: skip
            if done >= m:
                break
            w.grow_pool()
        score = count.astype(np.float64)
        flag = count > self.max_count
        calibrated = np.where(flag, 1.0 - self.max_count / np.maximum(score, 1.0), 0.0)
        return Verdicts(
            score, calibrated, flag, fire, np.ones(m, np.bool_),
            {"count": score, "window_ms": np.full(m, float(self.window_ms))},
        )  # fmt: skip

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """``count`` (events in the window), scored and valued by the count; expected: at most ``max_count``."""
        c = v.stats["count"]
        return one_feature("count", rows, c, c, np.full(len(c), float(self.max_count)), v.flag)

    def _grow_slots(self, top: int) -> None:
        self.win.ensure_capacity(top)
        if self.firing.shape[0] < self.win.capacity:
            grown = np.zeros(self.win.capacity, np.bool_)
            grown[: self.firing.shape[0]] = self.firing
            self.firing = grown

    def describe(self, stats: dict[str, Any]) -> str:
        return f"{int(stats.get('count', 0))} events in the last {_fmt_ms(self.window_ms)} (limit {self.max_count})"

    def reset_slots(self, slots: Int32Array) -> None:
        self.win.reset_slots(slots)
        self.firing[slots[slots < self.firing.shape[0]]] = False

    def snapshot(self) -> dict[str, Any]:
        return {"window": self.win.snapshot(), "firing": self.firing.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.win = TimeWindowState.from_snapshot(state["window"])
        firing = np.asarray(state["firing"], np.bool_)
        self.firing = np.zeros(max(self.win.capacity, len(firing)), np.bool_)
        self.firing[: len(firing)] = firing

"""Pattern rule (CEP): a sequence of conditions on one key's events within a time bound.

Flink's CEP ``begin(...).times(n).followedBy(...).within(...)``, as a detector, so it runs the same on both
runtimes, keeps per-key slices and checkpoints like any other. Example — card testing: three or more payments
under 2.00 followed by one over 200 within 10 minutes::

    detector: pattern
    params:
      within: 10m
      sequence:
        - {field: amount, below: 2.0, at_least: 3}
        - {field: amount, above: 200}

Semantics: *relaxed contiguity* (``followedBy``): events that match no step are skipped, they don't break the
sequence. Each step needs ``at_least`` matching events (after the previous step was met). The whole match —
from its first event to the last step's last event — must fit in ``within``; of the possible matches the
latest-starting one counts, so old events never block a new match. A completed match fires once and is
consumed (the key starts over). An event can match several steps; it counts for each, the later steps first.

How: per key and step, a small ring of the match starts that the step's last ``at_least`` events continue; the
step is met when its ring is full, with the start of its oldest entry. O(steps) per event, in a numba kernel.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, duration_param, register
from vigil.detectors.zscore import _fmt_ms
from vigil.stats.slots import grow_rows, reset_rows
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_NONE = np.iinfo(np.int64).min  # no start: the step is not met


@numba.njit(cache=True)
def _pattern_kernel(
    slots: Any, ts: Any, match: Any, within: int, need: Any, offset: Any, rings: Any, count: Any, head: Any,
    best: Any, out_fire: Any, out_stage: Any, out_span: Any,
) -> None:  # fmt: skip
    n_steps = need.shape[0]
    for i in range(slots.shape[0]):
        k = slots[i]
        t = ts[i]
        for s in range(n_steps):  # starts too old to fit the bound are useless
            if best[k, s] != _NONE and t - best[k, s] > within:
                best[k, s] = _NONE
        fired = False
        for s in range(n_steps - 1, -1, -1):  # the later steps first: one event may serve several steps
            if not match[i, s]:
                continue
            start = t if s == 0 else best[k, s - 1]
            if start == _NONE:
                continue
            size = need[s]
            base = offset[s]
            rings[k, base + head[k, s]] = start
            head[k, s] = (head[k, s] + 1) % size
            if count[k, s] < size:
                count[k, s] += 1
            if count[k, s] == size:
                oldest = rings[k, base + head[k, s]] if size > 1 else start
                if t - oldest <= within:
                    best[k, s] = oldest
            if s == n_steps - 1 and best[k, s] != _NONE:
                fired = True
                out_span[i] = t - best[k, s]
        stage = 0
        for s in range(n_steps):
            if best[k, s] != _NONE:
                stage = s + 1
        out_stage[i] = stage
        out_fire[i] = fired
        if fired:  # the match is consumed: the key starts over
            for s in range(n_steps):
                count[k, s] = 0
                head[k, s] = 0
                best[k, s] = _NONE


@register
class PatternRule(BaseDetector):
    """Fire when a key's events match a sequence of conditions within a time bound (module docstring).

    Args:
        sequence: the steps, in order: ``{field, below?, above?, at_least?}`` (``below``/``above`` strict;
            ``at_least`` events, default 1).
        within: the whole match fits in this much event time, e.g. ``"10m"``.
        name: what the pattern is called in alerts (default: the steps, described).

    Score: 1 on the event that completes a match; calibrated: 1 there. Ready unless a field it reads is missing
    (such a row matches no step). ``stats``: ``stage``
    (steps met after the event) and ``span_ms`` (the completed match's duration).

    Examples:
        >>> rule = PatternRule(sequence=[{"field": "amount", "below": 2.0, "at_least": 3},
        ...                              {"field": "amount", "above": 200}], within="10m")
        >>> amounts = np.array([1.0, 50.0, 1.5, 0.9, 300.0, 1.0])
        >>> v = rule.process_many(np.zeros(6, np.int32), np.arange(6) * 60_000, {"amount": amounts})
        >>> v.fire.tolist(), v.stats["stage"].tolist()
        ([False, False, False, False, True, False], [0.0, 0.0, 0.0, 1.0, 2.0, 0.0])
    """

    kind: ClassVar[str] = "pattern"
    state_version: ClassVar[int] = 1
    live_params: ClassVar[frozenset[str]] = frozenset({"name"})
    _slot_arrays: ClassVar[tuple[str, ...]] = ("rings", "count", "head", "best")

    def __init__(self, *, sequence: list[dict[str, Any]], within: str | int = "10m", name: str | None = None) -> None:
        if not isinstance(sequence, list | tuple) or not sequence:
            raise ValueError(f"`sequence` must be a non-empty list of steps; got {sequence!r}")
        steps = []
        for j, raw in enumerate(sequence):
            if not isinstance(raw, dict) or not isinstance(raw.get("field"), str):
                raise ValueError(f"`sequence` step {j + 1} must be a mapping with `field`; got {raw!r}")
            unknown = sorted(set(raw) - {"field", "below", "above", "at_least"})
            if unknown:
                raise ValueError(f"`sequence` step {j + 1} has unknown keys {unknown} (field, below, above, at_least)")
            if "below" not in raw and "above" not in raw:
                raise ValueError(f"`sequence` step {j + 1} needs `below` or `above`; got {raw!r}")
            for bound in ("below", "above"):
                if bound in raw and (isinstance(raw[bound], bool) or not isinstance(raw[bound], int | float)):
                    raise ValueError(f"`sequence` step {j + 1}: `{bound}` must be a number; got {raw[bound]!r}")
            at_least = raw.get("at_least", 1)
            if isinstance(at_least, bool) or not isinstance(at_least, int) or not 1 <= at_least <= 64:
                raise ValueError(f"`sequence` step {j + 1}: `at_least` must be an integer in [1, 64]; got {at_least!r}")
            steps.append({"field": raw["field"], "below": raw.get("below"), "above": raw.get("above"),
                          "at_least": int(at_least)})  # fmt: skip
        self.sequence = steps
        self.within = within
        self.within_ms = duration_param("within", within)
        self.name = name
        self.fields = tuple(dict.fromkeys(s["field"] for s in steps))
        self.threshold = 1.0
        self._need = np.array([s["at_least"] for s in steps], np.int64)
        self._offset = np.concatenate([[0], np.cumsum(self._need)[:-1]]).astype(np.int64)
        width, n = int(self._need.sum()), len(steps)
        self.rings = np.zeros((0, width), np.int64)
        self.count = np.zeros((0, n), np.int64)
        self.head = np.zeros((0, n), np.int64)
        self.best = np.zeros((0, n), np.int64)

    def params(self) -> dict[str, Any]:
        steps = [{k: v for k, v in s.items() if v is not None} for s in self.sequence]
        return {"sequence": steps, "within": self.within, "name": self.name}

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"sequence": [{"field": "value", "below": 0.0, "at_least": 2}, {"field": "value", "above": 1.0}],
                 "within": "20s"}]  # fmt: skip

    def _grow_slots(self, top: int) -> None:
        old = self.best.shape[0]
        self.rings = grow_rows(self.rings, top)
        self.count = grow_rows(self.count, top)
        self.head = grow_rows(self.head, top)
        self.best = grow_rows(self.best, top, fill=_NONE)
        if self.best.shape[0] > old:
            self.best[old:] = _NONE

    def _matches(self, X: dict[str, Float64Array], m: int) -> np.ndarray:
        match = np.zeros((m, len(self.sequence)), np.bool_)
        for j, s in enumerate(self.sequence):
            x = np.asarray(X[s["field"]], np.float64)
            ok = np.isfinite(x)
            if s["below"] is not None:
                ok &= x < s["below"]
            if s["above"] is not None:
                ok &= x > s["above"]
            match[:, j] = ok
        return match

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        fire = np.zeros(m, np.bool_)
        stage = np.zeros(m, np.int64)
        span = np.full(m, np.nan)
        if m:
            _pattern_kernel(slots, np.asarray(ts_ms, np.int64), self._matches(X, m), self.within_ms, self._need,
                            self._offset, self.rings, self.count, self.head, self.best, fire, stage, span)  # fmt: skip
        score = fire.astype(np.float64)
        ready = np.ones(m, np.bool_)
        for f in self.fields:  # a missing value matches no step: the row is skipped, not scored
            ready &= np.isfinite(np.asarray(X[f], np.float64))
        return Verdicts(score, score.copy(), fire, fire.copy(), ready,
                        {"stage": stage.astype(np.float64), "span_ms": span})  # fmt: skip

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The completing event's value of each field the pattern reads (score: 1 for the fields it tested)."""
        out = []
        for i in rows.tolist():
            out.append([Contribution(f, 1.0, float(X[f][i]) if f in X else None, flag=True) for f in self.fields])
        return out

    def _skip_checks(self) -> dict[str, str]:
        return {**super()._skip_checks(),
                "check_quality_floor": "a sequence rule finds its sequence, not spikes in one value"}  # fmt: skip

    def reset_slots(self, slots: Int32Array) -> None:
        for arr in (self.rings, self.count, self.head):
            reset_rows(arr, np.asarray(slots))
        s = np.asarray(slots)
        self.best[s[(s >= 0) & (s < self.best.shape[0])]] = _NONE

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name).copy() for name in self._slot_arrays}

    def _restore(self, state: dict[str, Any]) -> None:
        for name in self._slot_arrays:
            setattr(self, name, np.asarray(state[name], np.int64))

    def describe(self, stats: dict[str, Any]) -> str:
        steps = ", then ".join(
            f"{'≥' + str(s['at_least']) + ' ' if s['at_least'] > 1 else ''}{s['field']}"
            + (f" < {s['below']:g}" if s["below"] is not None else "") + (f" > {s['above']:g}" if s["above"] is not None
                                                                          else "")
            for s in self.sequence
        )  # fmt: skip
        span = stats.get("span_ms")
        took = f" in {_fmt_ms(int(span))}" if isinstance(span, int | float) and math.isfinite(span) else ""
        what = f"{self.name}: " if self.name else "pattern: "
        return f"{what}{steps}{took} (within {_fmt_ms(self.within_ms)})"

"""``tail_calibrated``: give any detector the calibration contract of :mod:`vigil.detectors.calibration`.

The inner detector runs unchanged (its own learning, protection and flags); its **raw score** on ready rows
is calibrated per key into a tail probability ``p`` against the key's recent raw scores, so its
``calibrated`` (``1 - p``) and ``stats["surprise"]`` (``-log10 p``) mean what every contract-following
detector's mean: on stationary data ``calibrated >= t`` on about ``1 - t`` of the rows.

The wrapper flags on its own calibrated score (``threshold``, with ``hold_threshold`` hysteresis); the inner
detector's flags and calibrated score are kept in ``stats`` (``inner_flag``, ``inner_calibrated``). A flagged
row's raw score is learned *censored* (see :func:`~vigil.detectors.calibration.censor_rated`). The history is
learned from every ready row, so a lasting change that the inner detector re-learns is re-learned here too,
``history`` rows later at most.

This is the integration path for the detectors that predate the contract (``ew_zscore``, ``level_rarity``,
``half_space_trees``, ...): wrapped, their thresholds and ensembles compare like with like, until each carries
the calibrator in its own kernel.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Detector, Verdicts, register
from vigil.detectors.calibration import censor_rated, check_params, log10_tail, push, refill, to_calibrated
from vigil.detectors.explain import can_explain
from vigil.detectors.likelihood import build_detector
from vigil.stats.slots import grow_rows
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array


@numba.njit(cache=True)
def _wrap_kernel(
    slots: Any, raw: Any, ok: Any, lp_on: float, lp_hold: float, tail_rows: int, min_history: int,
    tail_scale_min: float, hist: Any, count: Any, fit: Any, run: Any, allow: Any, out_lp: Any, out_ready: Any,
    out_flag: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    w = hist.shape[1]
    for i in range(slots.shape[0]):
        k = slots[i]
        out_lp[i] = 0.0
        out_ready[i] = False
        out_flag[i] = False
        if not ok[i]:
            continue
        s = raw[i]
        n = min(count[k], w)
        learn_s = s
        if n >= min_history:
            u01 = ((count[k] + 1) * 0.6180339887498949) % 1.0  # ties split evenly (deterministic)
            lp = log10_tail(hist[k], n, s, tail_rows, tail_scale_min, fit[k], 0.0, u01, True)
            out_lp[i] = lp
            out_ready[i] = True
            flag = lp <= lp_on or (run[k] and lp <= lp_hold)
            out_flag[i] = flag
            run[k] = flag
            if flag:
                learn_s = censor_rated(hist[k], n, s, allow, k, tail_rows, tail_scale_min, fit[k])
        refill(allow, k, n)
        if learn_s == learn_s:  # NaN: a censored row that is not learned
            push(hist, count, k, learn_s, fit)


@register
class TailCalibrated(BaseDetector):
    """Wrap a detector: its calibrated score becomes the contract's causal tail probability (module docstring).

    Args:
        inner: the detector, or its plain-data spec ``{"kind": ..., "params": {...}}``.
        threshold: calibrated score that starts a run of flags, in (0, 1).
        hold_threshold: calibrated score that continues a run (default: ``threshold``, no hysteresis).
        history: raw scores per key in the reference distribution.
        tail_rows: top scores the exponential far tail is fitted to.
        min_history: scores a key needs before it is ready.
        tail_scale_min: floor of the far tail's scale in raw-score units (0: none).

    Score:
        the inner raw score; calibrated: ``1 - p``; ``stats["surprise"] = -log10 p``.

    State:
        the inner detector's; per key ``history`` float64 scores and a few numbers.

    Warm-up:
        the inner detector's, then ``min_history`` of its ready rows.

    Examples:
        >>> det = TailCalibrated({"kind": "ew_zscore", "params": {"field": "value", "halflife": 50}},
        ...                      threshold=0.999, history=500, min_history=100)
        >>> rng = np.random.default_rng(0)
        >>> x = rng.standard_normal(3000)
        >>> x[2900] = 9.0
        >>> v = det.process_many(np.zeros(3000, np.int32), np.arange(3000), {"value": x})
        >>> bool(v.flag[2900]), round(float(v.flag[v.ready].mean()), 3) <= 0.003
        (True, True)
    """

    kind: ClassVar[str] = "tail_calibrated"
    state_version: ClassVar[int] = 2
    live_params: ClassVar[frozenset[str]] = frozenset({"threshold", "hold_threshold", "min_history"})
    _slot_arrays: ClassVar[tuple[str, ...]] = ("hist", "count", "fit", "run", "allow")
    _slot_parts: ClassVar[tuple[str, ...]] = ("inner",)

    def __init__(
        self,
        inner: dict[str, Any] | Detector,
        *,
        threshold: float = 0.999,
        hold_threshold: float | None = None,
        history: int = 2000,
        tail_rows: int = 50,
        min_history: int = 100,
        tail_scale_min: float = 0.0,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` is a calibrated score in (0, 1), e.g. 0.999; got {threshold!r}")
        hold = threshold if hold_threshold is None else hold_threshold
        if not 0.0 < hold <= threshold:
            raise ValueError(f"`hold_threshold` must be in (0, threshold]; got {hold_threshold!r}")
        check_params(history, tail_rows, min_history, tail_scale_min)
        self.inner = build_detector(inner)
        self.fields = tuple(self.inner.fields)
        self.threshold = float(threshold)
        self.hold_threshold = None if hold_threshold is None else float(hold_threshold)
        self.history = int(history)
        self.tail_rows = int(tail_rows)
        self.min_history = int(min_history)
        self.tail_scale_min = float(tail_scale_min)
        self.hist = np.zeros((0, self.history), np.float64)
        self.count = np.zeros(0, np.int64)
        self.fit = np.zeros((0, 3), np.float64)
        self.run = np.zeros(0, np.bool_)
        self.allow = np.zeros(0, np.float64)

    def params(self) -> dict[str, Any]:
        return {"inner": {"kind": self.inner.kind, "params": self.inner.params()}, "threshold": self.threshold,
                "hold_threshold": self.hold_threshold, "history": self.history, "tail_rows": self.tail_rows,
                "min_history": self.min_history, "tail_scale_min": self.tail_scale_min}  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        ewz = {"kind": "ew_zscore", "params": {"field": "value", "halflife": 20, "min_count": 5}}
        hw = {"kind": "holt_winters", "params": {"field": "value", "period": 4, "min_residuals": 5}}
        return [
            {"inner": ewz, "history": 200, "tail_rows": 20, "min_history": 30},
            {"inner": hw, "threshold": 0.99, "hold_threshold": 0.9, "history": 1000, "tail_rows": 20,
             "min_history": 20, "tail_scale_min": 0.05},
        ]  # fmt: skip

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        v = self.inner.process_many(slots, ts_ms, X)
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        raw = np.asarray(v.score, np.float64)
        ok = np.asarray(v.ready, bool) & np.isfinite(raw)
        lp = np.zeros(m)
        ready, flag = np.zeros(m, np.bool_), np.zeros(m, np.bool_)
        hold = self.threshold if self.hold_threshold is None else self.hold_threshold
        _wrap_kernel(np.asarray(slots, np.int32), raw, ok, math.log10(1.0 - self.threshold), math.log10(1.0 - hold),
                     self.tail_rows, self.min_history, self.tail_scale_min, self.hist, self.count, self.fit, self.run,
                     self.allow, lp, ready, flag)  # fmt: skip
        calibrated, surprise = to_calibrated(lp)
        stats = {**v.stats, "inner_score": v.score, "inner_calibrated": v.calibrated,
                 "inner_flag": v.flag.astype(np.float64),
                 "surprise": np.where(ready, surprise, 0.0)}  # fmt: skip
        return Verdicts(np.where(ready, raw, 0.0), np.where(ready, calibrated, 0.0), flag, flag.copy(), ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "rarer than 1 in 3.1e+04 recent scores (surprise 4.5); <inner sentence>"."""
        nines = float(stats.get("surprise", 0.0))
        odds = 10 ** min(nines, 300)
        return f"rarer than 1 in {odds:.2g} recent scores (surprise {nines:.1f}); " + self.inner.describe(stats)

    def _grow_slots(self, top: int) -> None:
        for name in self._slot_arrays:
            setattr(self, name, grow_rows(getattr(self, name), top))

    def slice_caveat(self) -> str | None:
        return self.inner.slice_caveat()  # type: ignore[no-any-return]

    def fresh(self) -> TailCalibrated:
        """An empty twin sharing the inner detector's heavy parts (see :meth:`BaseDetector.fresh`)."""
        p = self.params()
        p.pop("inner")
        return TailCalibrated(self.inner.fresh(), **p)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The inner detector's contributions, from its verdicts kept in ``stats`` (none if it can't attribute)."""
        if not can_explain(self.inner):
            return [[] for _ in np.asarray(rows).tolist()]
        s = v.stats
        inner = Verdicts(s["inner_score"], s["inner_calibrated"], v.flag, v.fire, v.ready, s)
        return self.inner.explain_many(X, inner, rows)  # type: ignore[no-any-return]

    def reset_slots(self, slots: Int32Array) -> None:
        self.inner.reset_slots(slots)
        slots = slots[(slots >= 0) & (slots < self.hist.shape[0])]
        self.hist[slots] = 0.0
        self.count[slots] = 0
        self.fit[slots] = 0.0
        self.run[slots] = False
        self.allow[slots] = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"inner": self.inner.snapshot(), "hist": self.hist.copy(), "count": self.count.copy(),
                "fit": self.fit.copy(), "run": self.run.copy(), "allow": self.allow.copy()}  # fmt: skip

    def _restore(self, state: dict[str, Any]) -> None:
        self.inner = type(self.inner).from_snapshot(self.inner.params(), state["inner"])
        self.hist = np.array(state["hist"], np.float64).reshape(-1, self.history)
        self.count = np.array(state["count"], np.int64)
        self.fit = np.array(state["fit"], np.float64).reshape(-1, 3)
        self.run = np.array(state["run"], np.bool_)
        self.allow = np.array(state["allow"], np.float64)

"""Two-sided tabular CUSUM per key: detect a sustained shift of a key's mean.

Per key, each value is standardized against the key's baseline before the row,
``z = (x - target) / sd``, where ``sd`` (and ``target`` unless it is given) come from an
exponentially weighted mean and variance of the key's values (the same bias-corrected West update
as :class:`~vigil.detectors.ewzscore.EWZScore`, half-life in events). Two one-sided sums accumulate
the evidence of a shift up or down, each discounting ``k`` standard deviations per event (the
allowance: half the shift one wants to detect fastest):

    S+ = max(0, S+ + z - k)        S- = max(0, S- - z - k)

The score is ``max(S+, S-)`` in standard deviations; the row is flagged when it exceeds ``h``.

**After an alarm** the key's sums are reset to 0 *and* its baseline is forgotten: the change has
been reported, and the key re-learns its new normal from the next events (``min_count`` of them,
not ready meanwhile; the alarming row itself is not learned). So a level shift fires once, not
every ``h / (shift - k)`` events as a textbook chart against a fixed baseline would. With a fixed
``target`` only the standard deviation is re-learned; if the process stays off target, the chart
alarms again after the warm-up — with a known target that is the intended behaviour.

Change detectors flag the row at which the accumulated evidence crosses ``h``, which is usually
some rows after the change began; ``stats["run"]`` counts the rows the winning sum has been
positive, a rough estimate of how long ago the change started.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import one_feature, signed_larger
from vigil.stats.ew import halflife_decay, west_learn, west_std
from vigil.stats.slots import grow_rows
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_NCOL = 9  # per-key state: events learned, W, W2, EW mean, EW variance, S+, S-, rows S+ > 0, rows S- > 0


@numba.njit(cache=True)
def _cusum_kernel(
    slots: Any, x: Any, decay: float, has_target: bool, target: float, k_sd: float, h_sd: float,
    min_count: int, st: Any,
    out_z: Any, out_score: Any, out_ready: Any, out_flag: Any, out_pos: Any, out_neg: Any, out_run: Any,
    out_mean: Any, out_std: Any,
) -> None:  # fmt: skip
    for i in range(slots.shape[0]):
        k = slots[i]
        v = x[i]
        out_z[i] = 0.0
        out_score[i] = 0.0
        out_ready[i] = False
        out_flag[i] = False
        out_pos[i] = 0.0
        out_neg[i] = 0.0
        out_run[i] = 0.0
        out_mean[i] = np.nan
        out_std[i] = np.nan
        if not math.isfinite(v):  # missing or inf: neither scored nor learned
            continue
        cnt = st[k, 0]
        mean = st[k, 3]
        std = west_std(st, k)
        if cnt > 0:
            out_mean[i] = target if has_target else mean
            out_std[i] = std
        if cnt >= min_count and std > 0.0:
            z = (v - (target if has_target else mean)) / std
            sp = max(0.0, st[k, 5] + z - k_sd)
            sn = max(0.0, st[k, 6] - z - k_sd)
            rp = st[k, 7] + 1.0 if sp > 0.0 else 0.0
            rn = st[k, 8] + 1.0 if sn > 0.0 else 0.0
            score = max(sp, sn)
            out_z[i] = z
            out_score[i] = score
            out_ready[i] = True
            out_pos[i] = sp
            out_neg[i] = sn
            out_run[i] = rp if sp >= sn else rn
            if score > h_sd:
                out_flag[i] = True
                st[k, :] = 0.0  # reported: forget the sums and the old baseline, re-learn the new normal
                continue
            st[k, 5] = sp
            st[k, 6] = sn
            st[k, 7] = rp
            st[k, 8] = rn
        west_learn(st, k, v, decay)


@register
class CUSUM(BaseDetector):
    """Per-key two-sided tabular CUSUM on standardized values (see the module docstring).

    Args:
        field: the value to watch.
        target: the in-control mean; ``None`` learns it per key (EW mean).
        k: allowance in standard deviations (0.5 detects a 1 sd shift fastest).
        h: decision interval in standard deviations: flag when ``max(S+, S-) > h``.
        halflife: half-life, in events, of the per-key EW mean and variance that standardize values.
        min_count: events a key's baseline must have learned before the sums run (>= 2).

    Score:
        ``max(S+, S-)`` in standard deviations, including this row's evidence (the row is
        standardized against the baseline before it). Calibrated: ``score / (score + h)``, a monotone
        squashing that is 0.5 exactly at the threshold, so ``flag`` ⇔ ``calibrated > 0.5``.

    State:
        Per key nine numbers: the EW baseline (events, W, W2, mean, variance), the two sums and how
        many rows each has been positive.

    Warm-up:
        ``min_count`` events learned and a positive sd, again after every alarm (the baseline is
        re-learned). Before that rows get score 0, no flag. NaN and inf values are neither scored nor
        learned. A change fires once: ``fire`` equals ``flag``, and the reset after an alarm means a
        persisting shift does not flag again.

    Examples:
        >>> det = CUSUM(field="ms", k=0.5, h=5, min_count=10)
        >>> calm = 10 + np.tile([-1.0, 1.0], 15)
        >>> v = det.process_many(np.zeros(40, np.int32), np.arange(40) * 1000,
        ...                      {"ms": np.concatenate([calm, np.full(10, 12.0)])})
        >>> np.flatnonzero(v.flag).tolist(), float(v.calibrated[v.flag][0]) > 0.5
        ([33], True)
    """

    kind: ClassVar[str] = "cusum"
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("st",)

    def __init__(
        self,
        *,
        field: str = "value",
        target: float | None = None,
        k: float = 0.5,
        h: float = 5.0,
        halflife: float = 100.0,
        min_count: int = 20,
    ) -> None:
        if target is not None and not math.isfinite(target):
            raise ValueError(f"`target` must be a finite number or null (learned); got {target!r}")
        if not k >= 0:
            raise ValueError(f"`k` (allowance, sd) must be >= 0; got {k!r}")
        if not h > 0:
            raise ValueError(f"`h` (decision interval, sd) must be > 0; got {h!r}")
        if not halflife > 0:
            raise ValueError(f"`halflife` must be > 0 events; got {halflife!r}")
        if min_count < 2:
            raise ValueError(f"`min_count` must be >= 2 (a deviation needs two values); got {min_count!r}")
        self.field = field
        self.target = None if target is None else float(target)
        self.k = float(k)
        self.h = float(h)
        self.halflife = float(halflife)
        self.min_count = int(min_count)
        self.threshold = self.h
        self.fields = (field,)
        self._decay = halflife_decay(self.halflife)
        self.st = np.zeros((64, _NCOL), np.float64)

    def params(self) -> dict[str, Any]:
        return {"field": self.field, "target": self.target, "k": self.k, "h": self.h,
                "halflife": self.halflife, "min_count": self.min_count}  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"field": "value", "k": 0.5, "h": 5, "halflife": 30, "min_count": 8},
            {"field": "value", "target": 30.0, "k": 1.0, "h": 4, "halflife": 50, "min_count": 5},
        ]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        z, score, pos, neg, run, mean, std = (np.empty(m, np.float64) for _ in range(7))
        ready = np.empty(m, np.bool_)
        flag = np.empty(m, np.bool_)
        _cusum_kernel(
            slots, x, self._decay, self.target is not None, 0.0 if self.target is None else self.target,
            self.k, self.h, self.min_count, self.st, z, score, ready, flag, pos, neg, run, mean, std,
        )  # fmt: skip
        calibrated = score / (score + self.h)
        return Verdicts(
            score, calibrated, flag, flag.copy(), ready,
            {"value": x, "z": z, "s_pos": pos, "s_neg": neg, "run": run, "mean": mean, "std": std},
        )  # fmt: skip

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "latency_ms shifted up: CUSUM 5.3 sd > 5 over the last 9 events (baseline 120, sd 4.1)"."""
        up = float(stats.get("s_pos", 0.0)) >= float(stats.get("s_neg", 0.0))
        score = max(float(stats.get("s_pos", 0.0)), float(stats.get("s_neg", 0.0)))
        return (
            f"{self.field} shifted {'up' if up else 'down'}: CUSUM {score:.1f} sd > {self.h:g} over the last "
            f"{int(stats.get('run', 0))} events (baseline {float(stats.get('mean', np.nan)):.4g}, "
            f"sd {float(stats.get('std', np.nan)):.3g})"
        )

    def _grow_slots(self, top: int) -> None:
        self.st = grow_rows(self.st, top)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by the winning CUSUM sum (negative for a shift down); expected: the baseline mean."""
        s = v.stats
        return one_feature(self.field, rows, signed_larger(s["s_pos"], s["s_neg"]), s["value"], s["mean"],
                           v.flag)  # fmt: skip

    def reset_slots(self, slots: Int32Array) -> None:
        self.st[slots[slots < self.st.shape[0]]] = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"st": self.st.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.st = np.array(state["st"], np.float64).reshape(-1, _NCOL)

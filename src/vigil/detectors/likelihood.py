"""Anomaly likelihood: a calibration that means the same for every detector (after Numenta's HTM work).

Raw scores of different detectors live on different scales, and even one detector's scores drift with the
data. The anomaly likelihood asks, per key: *is the recent raw score unusually high for this key?*

* the **short-term mean** ``m`` of the key's last ``short_window`` raw scores (the current one included)
  smooths single noisy scores and lets a sustained moderate rise add up;
* the **long-term distribution**: mean ``mu`` and standard deviation ``sd`` of the key's last
  ``long_window`` short-term means (an exact rolling window, as in Numenta's ``historicWindowSize``);
* the **likelihood** ``L = 1 - Q((m - mu) / max(sd, min_std))`` with ``Q`` the upper Gaussian tail: one-sided,
  only unusually *high* scores are anomalous. ``L`` is scored against the history *before* the row, then the
  row's ``m`` is learned (prequential).

Far in the tail ``L`` rounds to 1 in floating point, so the raw score reported is the **log-scaled**
likelihood, ``-log10(1 - L)`` ("nines": 5 means L = 0.99999), computed from the log of the tail so it keeps
ranking beyond 1e-16. ``stats["log_likelihood"]`` also carries Numenta's bounded variant,
``min(nines, 10) / 10`` in [0, 1].

Every row's ``m`` is learned, flagged or not (as in Numenta): a lasting change is flagged when it starts and
becomes the new normal over ``long_window`` rows, instead of alerting forever.

:class:`AnomalyLikelihood` holds the per-key state and runs the numba kernel; :class:`Calibrated` wraps any
registered detector with it.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Detector, Verdicts, register, registry
from vigil.detectors.explain import can_explain
from vigil.stats.ring import rolling_moments_push
from vigil.stats.slots import SlotArrays, grow_rows_pow2, reset_rows
from vigil.types import BoolArray, Contribution, Float64Array, Int32Array, Int64Array

_LN10 = math.log(10.0)
_LN_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


@numba.njit(cache=True)
def log10_upper_tail(z: float) -> float:  # pragma: no cover - compiled
    """``log10 Q(z)`` for the upper Gaussian tail ``Q``, accurate far beyond where ``Q`` underflows."""
    if z < 25.0:
        return math.log(0.5 * math.erfc(z * 0.7071067811865476)) / _LN10
    z2 = z * z  # Mills ratio asymptotic series; relative error < 1e-8 from z = 25
    return (-0.5 * z2 - math.log(z) - _LN_SQRT_2PI + math.log1p(-1.0 / z2 + 3.0 / (z2 * z2))) / _LN10


@numba.njit(cache=True)
def _likelihood_kernel(
    slots: Any, raw: Any, valid: Any, min_history: int, min_std: float, nines_threshold: float,
    st: Any, short: Any, long: Any,
    out_nines: Any, out_lik: Any, out_ready: Any, out_fire: Any, out_m: Any, out_mu: Any, out_sd: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    sw = short.shape[1]
    lw = long.shape[1]
    for i in range(slots.shape[0]):
        k = slots[i]
        out_nines[i] = 0.0
        out_lik[i] = 0.0
        out_ready[i] = False
        out_fire[i] = False
        if not valid[i]:
            out_m[i] = np.nan
            out_mu[i] = np.nan
            out_sd[i] = np.nan
            continue
        ns = int(st[k, 0])
        short[k, ns % sw] = raw[i]
        ns += 1
        st[k, 0] = ns
        c = min(ns, sw)
        acc = 0.0
        for j in range(c):
            acc += short[k, j]
        m = acc / c
        nl = int(st[k, 1])
        cnt = min(nl, lw)
        mu = st[k, 2]
        m2 = st[k, 3]
        sd = math.sqrt(max(m2, 0.0) / cnt) if cnt > 0 else 0.0
        out_m[i] = m
        out_mu[i] = mu if cnt > 0 else np.nan
        out_sd[i] = sd if cnt > 0 else np.nan
        if cnt >= min_history:
            z = min(max((m - mu) / max(sd, min_std), -1e6), 1e6)
            nines = -log10_upper_tail(z)
            out_nines[i] = nines
            out_lik[i] = 1.0 - 10.0 ** (-nines)
            out_ready[i] = True
            flagged = nines >= nines_threshold
            out_fire[i] = flagged and st[k, 4] == 0.0  # the first flagged row of a run
            st[k, 4] = 1.0 if flagged else 0.0
        # learn m into the rolling window (float32 entries; the statistics use the stored, rounded value)
        mu, m2 = rolling_moments_push(long[k], nl, mu, m2, float(np.float32(m)))
        st[k, 1] = nl + 1
        st[k, 2] = mu
        st[k, 3] = m2


class AnomalyLikelihood(SlotArrays):
    """Per-key online anomaly likelihood of a raw score stream (see the module docstring).

    Args:
        short_window: raw scores in the short-term mean.
        long_window: short-term means in the rolling long-term distribution.
        min_history: short-term means a key needs before its likelihood is reported.
        min_std: floor of the long-term standard deviation (keeps a flat history from making any change
            infinitely unlikely).

    Examples:
        >>> lik = AnomalyLikelihood(short_window=1, long_window=50, min_history=20)
        >>> raw = np.r_[np.tile([1.0, 2.0], 20), 9.0]
        >>> out = lik.update_many(np.zeros(41, np.int32), raw, np.ones(41, bool), nines_threshold=5)
        >>> out["ready"][19:21].tolist(), round(float(out["nines"][-1]), 1)
        ([False, True], 50.4)
    """

    _slot_arrays: ClassVar[tuple[str, ...]] = ("st", "short", "long")

    def __init__(self, *, short_window: int = 10, long_window: int = 1000, min_history: int = 100,
                 min_std: float = 1e-3) -> None:  # fmt: skip
        if int(short_window) != short_window or short_window < 1:
            raise ValueError(f"`short_window` must be an int >= 1; got {short_window!r}")
        if int(long_window) != long_window or long_window < 2:
            raise ValueError(f"`long_window` must be an int >= 2; got {long_window!r}")
        if int(min_history) != min_history or not 2 <= min_history <= long_window:
            raise ValueError(f"`min_history` must be an int in [2, long_window={long_window}]; got {min_history!r}")
        if not min_std > 0:
            raise ValueError(f"`min_std` must be > 0; got {min_std!r}")
        self.short_window = int(short_window)
        self.long_window = int(long_window)
        self.min_history = int(min_history)
        self.min_std = float(min_std)
        self.st = np.zeros((0, 5), np.float64)  # short count, long count, long mean, long M2, last row flagged
        self.short = np.zeros((0, self.short_window), np.float64)
        self.long = np.zeros((0, self.long_window), np.float32)

    def params(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"short_window": self.short_window, "long_window": self.long_window,
                "min_history": self.min_history, "min_std": self.min_std}  # fmt: skip

    def update_many(
        self, slots: Int32Array, raw: Float64Array, valid: BoolArray, nines_threshold: float = math.inf
    ) -> dict[str, np.ndarray]:
        """Score then learn each valid row: nines, likelihood, ready, fire, short_mean, long_mean, long_std."""
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        m = len(slots)
        out = {name: np.empty(m, np.float64) for name in ("nines", "likelihood", "short_mean", "long_mean", "long_std")}
        ready, fire = np.empty(m, np.bool_), np.empty(m, np.bool_)
        _likelihood_kernel(
            slots, np.asarray(raw, np.float64), np.asarray(valid, np.bool_), self.min_history, self.min_std,
            float(nines_threshold), self.st, self.short, self.long, out["nines"], out["likelihood"], ready, fire,
            out["short_mean"], out["long_mean"], out["long_std"],
        )  # fmt: skip
        return {**out, "ready": ready, "fire": fire}

    def _grow_slots(self, top: int) -> None:
        self.st, self.short, self.long = (grow_rows_pow2(a, top) for a in (self.st, self.short, self.long))

    def snapshot(self) -> dict[str, Any]:
        """State as plain data (copies)."""
        return {"st": self.st.copy(), "short": self.short.copy(), "long": self.long.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`."""
        self.st = np.array(state["st"], np.float64).reshape(-1, 5)
        self.short = np.array(state["short"], np.float64).reshape(-1, self.short_window)
        self.long = np.array(state["long"], np.float32).reshape(-1, self.long_window)

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget expired key slots."""
        for arr in (self.st, self.short, self.long):
            reset_rows(arr, slots)


def build_detector(spec: dict[str, Any] | Detector) -> Any:
    """A registered detector from ``{"kind": ..., "params": {...}}`` (or the detector itself)."""
    if not isinstance(spec, dict):
        return spec
    kinds = registry()
    kind = spec.get("kind")
    if kind not in kinds:
        raise ValueError(f"`inner.kind` must be a registered detector, one of {sorted(kinds)}; got {kind!r}")
    return kinds[kind](**spec.get("params", {}))


@register
class Calibrated(BaseDetector):
    """Wrap a detector: its ``calibrated`` becomes the per-key anomaly likelihood of its raw score.

    The inner detector runs unchanged; its raw score feeds an :class:`AnomalyLikelihood` (module docstring).
    Its verdict columns are kept in ``stats`` (``inner_score``, ``inner_calibrated``), next to its own stats.

    Args:
        inner: the detector to calibrate, or its plain-data spec ``{"kind": ..., "params": {...}}``.
        short_window: raw scores in the short-term mean.
        long_window: short-term means in the rolling long-term distribution.
        threshold: flag when the likelihood reaches it (e.g. 0.99999). ``self.threshold`` is the same bar
            in score units, ``-log10(1 - threshold)`` (5 for 0.99999), so alerts compare like with like.
        min_history: short-term means a key needs before it is scored.
        min_std: floor of the long-term standard deviation of the short-term means.

    Score:
        ``-log10(1 - L)`` ("nines" of the likelihood ``L``); calibrated: ``L``, the one-sided Gaussian tail
        probability of the short-term mean under the key's long-term distribution. ``fire`` is the first
        flagged row of a key's run of flagged rows (the short-term mean keeps one spike visible for
        ``short_window`` rows).

    State:
        the inner detector's state; per key 5 numbers, ``short_window`` raw scores (float64) and
        ``long_window`` short-term means (float32: ``4 * long_window`` bytes per key).

    Warm-up:
        rows the inner detector marks ready count; ``min_history`` of them before the first score.

    Examples:
        >>> det = Calibrated({"kind": "forecast_residual", "params": {"min_residuals": 5}},
        ...                  short_window=1, long_window=100, min_history=20, threshold=0.9999)
        >>> rng = np.random.default_rng(1)
        >>> x = 10 + rng.standard_normal(60)
        >>> x[-1] = 30.0
        >>> v = det.process_many(np.zeros(60, np.int32), np.arange(60), {"value": x})
        >>> int(v.ready.argmax()), np.flatnonzero(v.flag).tolist(), det.threshold
        (26, [59], 4.0)
    """

    kind: ClassVar[str] = "calibrated"
    state_version: ClassVar[int] = 1
    _slot_parts: ClassVar[tuple[str, ...]] = ("inner", "lik")

    def __init__(
        self,
        inner: dict[str, Any] | Detector,
        *,
        short_window: int = 10,
        long_window: int = 1000,
        threshold: float = 0.99999,
        min_history: int = 100,
        min_std: float = 1e-3,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` is a likelihood and must be in (0, 1), e.g. 0.99999; got {threshold!r}")
        self.inner = build_detector(inner)
        self.fields = tuple(self.inner.fields)
        self.likelihood_threshold = float(threshold)
        self.threshold = -math.log10(1.0 - self.likelihood_threshold)
        self.lik = AnomalyLikelihood(short_window=short_window, long_window=long_window, min_history=min_history,
                                     min_std=min_std)  # fmt: skip

    def params(self) -> dict[str, Any]:
        return {"inner": {"kind": self.inner.kind, "params": self.inner.params()},
                "threshold": self.likelihood_threshold, **self.lik.params()}  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        hw = {"kind": "holt_winters", "params": {"field": "value", "period": 4, "min_residuals": 5}}
        zs = {"kind": "sliding_zscore", "params": {"field": "value", "window": "10s", "min_count": 3}}
        return [
            {"inner": hw, "short_window": 1, "long_window": 200, "min_history": 20, "threshold": 0.9999},
            {"inner": zs, "short_window": 3, "long_window": 50, "min_history": 10},
        ]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        v = self.inner.process_many(slots, ts_ms, X)
        out = self.lik.update_many(slots, v.score, v.ready & np.isfinite(v.score), self.threshold)
        ready = out["ready"]
        score = out["nines"]
        flag = ready & (score >= self.threshold)
        stats = {
            **v.stats, "inner_score": v.score, "inner_calibrated": v.calibrated, "likelihood": out["likelihood"],
            "nines": score, "log_likelihood": np.minimum(score, 10.0) / 10.0, "short_mean": out["short_mean"],
            "long_mean": out["long_mean"], "long_std": out["long_std"],
        }  # fmt: skip
        return Verdicts(score, out["likelihood"], flag, out["fire"] & flag, ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "likelihood 0.9999993 (6.2 nines): recent score 3.1 vs usual 1.2 ± 0.4; <inner sentence>"."""
        lik, nines = float(stats.get("likelihood", np.nan)), float(stats.get("nines", np.nan))
        return (
            f"likelihood {lik:.7g} ({nines:.1f} nines): recent {self.inner.kind} score "
            f"{float(stats.get('short_mean', np.nan)):.3g} vs usual {float(stats.get('long_mean', np.nan)):.3g}"
            f" ± {float(stats.get('long_std', np.nan)):.2g}; " + self.inner.describe(stats)
        )

    def reset_slots(self, slots: Int32Array) -> None:
        self.inner.reset_slots(slots)
        self.lik.reset_slots(slots)

    def slice_caveat(self) -> str | None:
        return self.inner.slice_caveat()  # type: ignore[no-any-return]

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The inner detector's contributions, from its verdicts kept in ``stats`` (none if it can't attribute)."""
        if not can_explain(self.inner):
            return [[] for _ in np.asarray(rows).tolist()]
        s = v.stats
        inner = Verdicts(s["inner_score"], s["inner_calibrated"], v.flag, v.fire, v.ready, s)
        return self.inner.explain_many(X, inner, rows)  # type: ignore[no-any-return]

    def fresh(self) -> Calibrated:
        """An empty twin sharing the inner detector's heavy parts (see :meth:`BaseDetector.fresh`)."""
        twin = Calibrated(self.inner.fresh(), threshold=self.likelihood_threshold, **self.lik.params())
        return twin

    def snapshot(self) -> dict[str, Any]:
        return {"inner": self.inner.snapshot(), "likelihood": self.lik.snapshot()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.inner = type(self.inner).from_snapshot(self.inner.params(), state["inner"])
        self.lik.restore(state["likelihood"])

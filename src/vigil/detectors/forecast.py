"""Forecast-residual detection: forecast each value one step ahead, score how far it lands from the forecast.

Two parts, each keyed by slot and vectorized over a micro-batch:

* a :class:`Forecaster` turns the batch into one-step-ahead forecasts. Its single verb,
  ``predict_learn_many(slots, ts_ms, x) -> yhat``, walks the rows in arrival order and, for each row,
  forecasts the key's next value from the state left by the earlier rows, *then* learns the row
  (prequential). ``yhat`` is NaN where the forecaster can't forecast yet (warm-up). A non-finite ``x`` is
  not learned and leaves the forecaster's state untouched.
* A forecaster that keeps its per-key state as arrays by slot also gives per-key slices
  (``export_slots`` / ``import_slots``, :class:`~vigil.stats.slots.SlotArrays`), which the detector's
  slices include; both built-in forecasters do.
* :class:`ForecastResidual` scores the residual ``r = x - yhat`` against the key's exponentially weighted
  mean and standard deviation of earlier residuals: ``z = (r - mean_r) / std_r``, score ``|z|`` (a residual
  z-score). Centring on ``mean_r`` absorbs a forecaster's steady bias.

With ``protect=True`` a flagged residual is not learned into the residual statistics, so a burst of
anomalies does not widen the band that judges it. The forecaster itself learns every finite value, flagged
ones too: that is what lets it follow a genuine level shift (its residuals shrink back within a few events)
and it keeps the forecaster protocol independent of scoring.

Forecasters are built from plain data ``{"kind": ..., "params": {...}}`` through :func:`make_forecaster`;
:class:`EWForecaster` (``"ew"``) lives here, :class:`~vigil.detectors.holtwinters.HoltWintersForecaster`
(``"holt_winters"``) in :mod:`vigil.detectors.holtwinters`.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Protocol, runtime_checkable

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import one_feature
from vigil.stats.ew import ew_mean_step, ew_step, halflife_alpha
from vigil.stats.slots import SlotArrays, grow_rows_pow2, reset_rows
from vigil.stats.special import two_sided_tail_many
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array


@runtime_checkable
class Forecaster(Protocol):
    """A keyed one-step-ahead forecaster (see the module docstring)."""

    kind: ClassVar[str]

    def predict_learn_many(self, slots: Int32Array, ts_ms: Int64Array, x: Float64Array) -> Float64Array:
        """Each row's forecast made before the row was learned (NaN while warming up); then learn the row."""
        ...

    def params(self) -> dict[str, Any]:
        """Constructor arguments (plain data)."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """State as plain data (copies, not views of the live state)."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`snapshot`."""
        ...

    def reset_slots(self, slots: Int32Array) -> None:
        """Forget the state of expired key slots."""
        ...


_FORECASTERS: dict[str, type[Any]] = {}


def register_forecaster(cls: type[Any]) -> type[Any]:
    """Class decorator: make a forecaster buildable by its ``kind`` (see :func:`make_forecaster`)."""
    _FORECASTERS[cls.kind] = cls
    return cls


def make_forecaster(spec: dict[str, Any] | Forecaster) -> Forecaster:
    """A forecaster from ``{"kind": ..., "params": {...}}`` (or the forecaster itself).

    Examples:
        >>> make_forecaster({"kind": "ew", "params": {"halflife": 5}})
        EWForecaster(halflife=5.0)
    """
    if isinstance(spec, dict):
        kind = spec.get("kind")
        if kind not in _FORECASTERS:
            raise ValueError(f"`forecaster.kind` must be one of {sorted(_FORECASTERS)}; got {kind!r}")
        f: Forecaster = _FORECASTERS[kind](**spec.get("params", {}))
        return f
    if not isinstance(spec, Forecaster):
        raise ValueError(f"`forecaster` must be a Forecaster or {{'kind': ..., 'params': ...}}; got {spec!r}")
    return spec


@numba.njit(cache=True)
def _ew_kernel(slots: Any, x: Any, alpha: float, st: Any, out: Any) -> None:  # pragma: no cover - compiled
    for i in range(slots.shape[0]):
        k = slots[i]
        cnt = st[k, 0]
        out[i] = st[k, 1] if cnt > 0.0 else np.nan
        v = x[i]
        if math.isfinite(v):
            st[k, 0], st[k, 1] = ew_mean_step(cnt, st[k, 1], v, alpha)  # 1/n for the first events: unbiased start


@register_forecaster
class EWForecaster(SlotArrays):
    """Forecast = the key's exponentially weighted mean of earlier values (half-life in events).

    Examples:
        >>> f = EWForecaster(halflife=1)
        >>> f.predict_learn_many(np.zeros(3, np.int32), np.arange(3), np.array([2.0, 4.0, 8.0])).tolist()
        [nan, 2.0, 3.0]
    """

    kind: ClassVar[str] = "ew"
    _slot_arrays: ClassVar[tuple[str, ...]] = ("st",)

    def __init__(self, *, halflife: float = 20.0) -> None:
        if halflife <= 0:
            raise ValueError(f"`halflife` must be > 0 events; got {halflife!r}")
        self.halflife = float(halflife)
        self._alpha = halflife_alpha(self.halflife)
        self.st = np.zeros((0, 2), np.float64)  # count, mean

    def predict_learn_many(self, slots: Int32Array, ts_ms: Int64Array, x: Float64Array) -> Float64Array:
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        out = np.empty(len(slots), np.float64)
        _ew_kernel(slots, x, self._alpha, self.st, out)
        return out

    def params(self) -> dict[str, Any]:
        return {"halflife": self.halflife}

    def snapshot(self) -> dict[str, Any]:
        return {"st": self.st.copy()}

    def restore(self, state: dict[str, Any]) -> None:
        self.st = np.array(state["st"], np.float64).reshape(-1, 2)

    def _grow_slots(self, top: int) -> None:
        self.st = grow_rows_pow2(self.st, top)

    def reset_slots(self, slots: Int32Array) -> None:
        reset_rows(self.st, slots)

    def __repr__(self) -> str:
        return f"EWForecaster(halflife={self.halflife!r})"


@numba.njit(cache=True)
def _residual_kernel(
    slots: Any, x: Any, yhat: Any, alpha: float, min_count: int, threshold: float, protect: bool, rs: Any,
    out_z: Any, out_ready: Any, out_mean: Any, out_std: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    for i in range(slots.shape[0]):
        k = slots[i]
        r = x[i] - yhat[i]
        out_z[i] = 0.0
        out_ready[i] = False
        if not math.isfinite(r):  # missing value, or no forecast yet: not scored, residuals not learned
            out_mean[i] = np.nan
            out_std[i] = np.nan
            continue
        cnt, mean, var = rs[k, 0], rs[k, 1], rs[k, 2]
        std = math.sqrt(var)
        out_mean[i] = mean
        out_std[i] = std
        z = 0.0
        if cnt >= min_count and std > 0.0:
            z = (r - mean) / std
            out_z[i] = z
            out_ready[i] = True
        if not (protect and abs(z) > threshold):
            rs[k, 0], rs[k, 1], rs[k, 2] = ew_step(cnt, mean, var, r, alpha)


@register
class ForecastResidual(BaseDetector):
    """Flag values far from a keyed one-step-ahead forecast (see the module docstring).

    Args:
        field: the value to score.
        forecaster: a :class:`Forecaster` or its plain-data spec ``{"kind": "ew", "params": {...}}``.
        threshold: flag when the residual z-score ``|z|`` exceeds it.
        residual_halflife: half-life, in events, of the residuals' mean and variance.
        min_residuals: residuals a key must have seen before its rows are scored.
        protect: don't learn flagged residuals into the residual statistics.

    Score:
        ``|z|`` with ``z = (r - mean_r) / std_r``, ``r = x - forecast``; calibrated: the Gaussian two-sided
        tail probability ``erf(|z| / sqrt 2)``.

    State:
        the forecaster's state plus three numbers per key (residual count, EW mean, EW variance).

    Warm-up:
        the forecaster's own warm-up (while it returns NaN), then ``min_residuals`` residuals.

    Examples:
        >>> det = ForecastResidual(field="v", forecaster={"kind": "ew", "params": {"halflife": 10}},
        ...                        threshold=4, min_residuals=5)
        >>> x = np.array([10, 11, 9, 10, 11, 9, 10, 11, 30.0])
        >>> v = det.process_many(np.zeros(9, np.int32), np.arange(9) * 1000, {"v": x})
        >>> v.ready.tolist(), v.flag.tolist()[-1], round(float(v.stats["forecast"][-1]), 2)
        ([False, False, False, False, False, False, True, True, True], True, 10.12)
    """

    kind: ClassVar[str] = "forecast_residual"
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("rs",)
    _slot_parts: ClassVar[tuple[str, ...]] = ("forecaster",)

    def __init__(
        self,
        *,
        field: str = "value",
        forecaster: dict[str, Any] | Forecaster | None = None,
        threshold: float = 4.0,
        residual_halflife: float = 100.0,
        min_residuals: int = 10,
        protect: bool = True,
    ) -> None:
        if threshold <= 0:
            raise ValueError(f"`threshold` must be > 0; got {threshold!r}")
        if residual_halflife <= 0:
            raise ValueError(f"`residual_halflife` must be > 0 events; got {residual_halflife!r}")
        if min_residuals < 2:
            raise ValueError(f"`min_residuals` must be >= 2 (a spread needs two residuals); got {min_residuals!r}")
        self.field = field
        self.fields = (field,)
        self.forecaster = make_forecaster(forecaster if forecaster is not None else {"kind": "ew", "params": {}})
        self.threshold = float(threshold)
        self.residual_halflife = float(residual_halflife)
        self.min_residuals = int(min_residuals)
        self.protect = bool(protect)
        self._alpha = halflife_alpha(self.residual_halflife)
        self.rs = np.zeros((0, 3), np.float64)  # residual count, EW mean, EW variance

    def params(self) -> dict[str, Any]:
        return {
            "field": self.field, "forecaster": {"kind": self.forecaster.kind, "params": self.forecaster.params()},
            "threshold": self.threshold, "residual_halflife": self.residual_halflife,
            "min_residuals": self.min_residuals, "protect": self.protect,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"field": "value", "forecaster": {"kind": "ew", "params": {"halflife": 10}}, "min_residuals": 5}]

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        yhat = np.asarray(self.forecaster.predict_learn_many(slots, ts_ms, x), np.float64)
        if len(slots):
            self._grow_slots(int(slots.max()) + 1)
        m = len(slots)
        z, ready = np.empty(m, np.float64), np.empty(m, np.bool_)
        mean, std = np.empty(m, np.float64), np.empty(m, np.float64)
        _residual_kernel(slots, x, yhat, self._alpha, self.min_residuals, self.threshold, self.protect, self.rs,
                         z, ready, mean, std)  # fmt: skip
        score = np.abs(z)
        calibrated = np.asarray(two_sided_tail_many(score), np.float64)
        flag = ready & (score > self.threshold)
        return Verdicts(
            score, calibrated, flag, flag, ready,
            {"value": x, "forecast": yhat, "residual": x - yhat, "z": z, "resid_mean": mean, "resid_std": std},
        )  # fmt: skip

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "value 30 is 6.2 sd above its forecast 10.1 (residual sd 3.2)"."""
        z = float(stats.get("z", 0.0))
        side = "above" if z > 0 else "below"
        return (
            f"{self.field} {float(stats.get('value', np.nan)):.6g} is {abs(z):.1f} sd {side} its forecast "
            f"{float(stats.get('forecast', np.nan)):.6g} (residual sd {float(stats.get('resid_std', np.nan)):.3g})"
        )

    def _grow_slots(self, top: int) -> None:
        self.rs = grow_rows_pow2(self.rs, top)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by its signed residual z; expected: the forecast."""
        s = v.stats
        return one_feature(self.field, rows, s["z"], s["value"], s["forecast"], v.flag)

    def slice_caveat(self) -> str | None:
        if isinstance(self.forecaster, SlotArrays):
            return None
        return f"forecaster {self.forecaster.kind!r} keeps no per-key slices (it has no export_slots/import_slots)"

    def reset_slots(self, slots: Int32Array) -> None:
        self.forecaster.reset_slots(slots)
        reset_rows(self.rs, slots)

    def snapshot(self) -> dict[str, Any]:
        return {"forecaster": self.forecaster.snapshot(), "residuals": self.rs.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.forecaster.restore(state["forecaster"])
        self.rs = np.array(state["residuals"], np.float64).reshape(-1, 3)

"""The first two detection layers over closed RED bins: L1 SLOs and SLAs, L2 Holt-Winters residuals.

**L1 — SLOs, error budgets, SLAs** (:class:`SloLayer`). A request is *bad* when it fails or is slower than its
entity's latency threshold ``T``; the error budget is ``1 - target``. Burn rate = bad share / budget. An entity
burns when, for some pair of windows (:data:`BURN_WINDOWS`, the multi-window, multi-burn-rate recipe of the
Google SRE workbook scaled to 10 s bins: 5 min & 30 s at 14.4x, 1 h & 5 min at 6x) both windows burn at least
the pair's rate **and** the bad count is significant: at least ``min_bad`` bad requests in the long window and
a binomial tail ``P(X >= bad | n, budget) < p_max`` over the long window. That last test is what makes the rule
*count-aware*: three requests a minute with one failure is not a 33 % error rate, it is one failure. ``T`` is
declared (``latency_ms``) or, when ``auto``, learned from the first ``learn_bins`` bins (``T`` = the bucket edge
at 2x their p99, at least their p99.9). An objective the service did not meet while healthy would page all the
time, so the budget is at least 3x the bad share (errors, and requests slower than ``T``) of the learning bins,
declared ``T`` or not; the number of such entities is ``unattainable``. A count-aware **latency shift** rule
catches what no threshold does on a quiet service (a slow checkout of 48 requests a minute): at least 30 % of
the requests slower than the baseline's p90, over 5 min and over 1 min, with a binomial tail under 10 % below
``p_max / 1000`` (entities warming up after a deploy are skipped). It is returned apart (``shift``): the
orchestrator applies it to quiet services only, where L2 does not run — on a busy one a shift in the mix of
operations (a batch job's slow bulk calls) would trip it, and L2's residuals judge it better.
SLA rules: p99 above ``sla_p99_ms`` or error share above ``sla_error_ratio`` for ``sla_bins`` bins in a row
(bins with at least ``min_requests``).

**L2 — forecast residuals** (:class:`ResidualLayer`): per entity, :class:`~vigil.detectors.HoltWinters` (the
period learned per key from its warm-up: up to 5 min at 10 s bins; a key without a season gets Holt's trend) on
the log geometric mean and the log p95 of the latency (bins with at least ``min_requests``; the geometric mean,
not the median, because a service with a 1 ms and a 30 ms operation has a median that flips between them when
the mix wobbles) and on ``log(requests + 1)``. Residual z-scores have a floor under their spread (0.1 in log
latency, about one histogram bucket; Poisson's ``1/sqrt(n)`` for traffic). Flags: latency z above ``z`` two
bins in a row; traffic z below ``-z`` two bins in a row (a drop: a spike is not a fault by itself). While a
service warms up after a deploy (its ``version`` changed, ``deploy_hold_s``), its latency and its incoming
edges' are held: neither scored nor learned, so a warm-up is not an alert and a bad release is judged against
the forecast from before it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.apps.services.red import EDGES_MS, ClosedBin
from vigil.detectors.holtwinters import HoltWinters

__all__ = ["BURN_WINDOWS", "ResidualLayer", "SloLayer", "SloTargets"]

#: (long bins, short bins, burn rate) at 10 s bins
BURN_WINDOWS: tuple[tuple[int, int, float], ...] = ((30, 3, 14.4), (360, 30, 6.0))
_RING = 360
#: the latency-shift rule: (long, short) windows in bins, and the share of requests above the baseline's p90
SHIFT_WINDOWS = (30, 6)
SHIFT_SHARE = 0.3


@dataclass
class SloTargets:
    """Per entity objectives (arrays aligned with the entity table; NaN latency = learn it)."""

    target: np.ndarray
    latency_ms: np.ndarray
    sla_p99_ms: np.ndarray
    sla_error_ratio: np.ndarray


def _grow(a: np.ndarray, n: int, fill: float = 0.0) -> np.ndarray:
    if a.shape[0] >= n:
        return a
    pad = np.full((n - a.shape[0], *a.shape[1:]), fill, a.dtype)
    return np.concatenate([a, pad])


class SloLayer:
    """L1 (module docstring): burn-rate alerts and SLA rules per entity, one closed bin at a time."""

    def __init__(self, *, min_bad: int = 3, p_max: float = 1e-6, learn_bins: int = 60, sla_bins: int = 3,
                 min_requests: int = 5) -> None:  # fmt: skip
        self.min_bad, self.p_max, self.learn_bins = int(min_bad), float(p_max), int(learn_bins)
        self.sla_bins, self.min_requests = int(sla_bins), int(min_requests)
        self.n = np.zeros((0, _RING))
        self.bad = np.zeros((0, _RING))
        self.pos = 0
        self.learn_hist = np.zeros((0, len(EDGES_MS) + 1))
        self.learned = np.zeros(0, np.int64)  # bins learned into learn_hist
        self.threshold_ms = np.zeros(0)  # NaN until learned
        self.sla_run = np.zeros(0, np.int64)
        self.above = np.zeros((0, _RING))  # requests slower than the baseline's p90 (the shift rule)
        self.p90_ms = np.zeros(0)
        self.base_n = np.zeros(0)  # requests and bad requests seen while learning
        self.unattainable = 0
        self.base_bad = np.zeros(0)

    def _size(self, E: int) -> None:
        self.n, self.bad = _grow(self.n, E), _grow(self.bad, E)
        self.learn_hist = _grow(self.learn_hist, E)
        self.learned = _grow(self.learned, E)
        self.threshold_ms = _grow(self.threshold_ms, E, np.nan)
        self.sla_run = _grow(self.sla_run, E)
        self.base_n, self.base_bad = _grow(self.base_n, E), _grow(self.base_bad, E)
        self.above, self.p90_ms = _grow(self.above, E), _grow(self.p90_ms, E, np.nan)

    def step(self, cb: ClosedBin, slo: SloTargets, hold: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Flags and figures of one bin: ``flag``, ``burn`` (short-window burn of the fast pair), ``bad``.

        ``hold``: entities warming up after a deploy (the latency-shift rule skips them).
        """
        E = len(cb.entities)
        self._size(E)
        declared = np.isfinite(slo.latency_ms[:E])
        learning = self.learned[:E] < self.learn_bins
        if learning.any():
            self.learn_hist[:E][learning] += cb.hist[learning]
            self.base_n[:E][learning] += cb.count[learning]
            self.base_bad[:E][learning] += cb.errors[learning]
            self.learned[:E][learning] += 1
            done = learning & (self.learned[:E] >= self.learn_bins)
            if done.any():
                hist = self.learn_hist[:E][done]
                t = np.where(declared[done], slo.latency_ms[:E][done], _learned_threshold(hist))
                self.threshold_ms[:E][done] = t
                self.p90_ms[:E][done] = _edge_quantile(hist, 0.9)
                # the baseline's bad share: its errors plus its requests slower than the threshold
                b = np.searchsorted(EDGES_MS, np.nan_to_num(t, nan=1e12), side="left") + 1
                cum = np.cumsum(hist, axis=1)
                below = np.take_along_axis(cum, np.clip(b - 1, 0, cum.shape[1] - 1)[:, None], axis=1)[:, 0]
                self.base_bad[:E][done] += cum[:, -1] - below
        thr = self.threshold_ms[:E]
        slow = np.where(np.isfinite(thr), cb.slower_than(np.nan_to_num(thr, nan=1e12)), 0.0)
        bad = np.minimum(cb.errors + slow, cb.count)
        self.n[:E, self.pos] = cb.count
        self.bad[:E, self.pos] = bad
        p90 = self.p90_ms[:E]
        above = np.where(np.isfinite(p90), cb.slower_than(np.nan_to_num(p90, nan=1e12)), 0.0)
        if hold is not None:
            above = np.where(hold[:E], 0.0, above)
        self.above[:E, self.pos] = above
        budget = np.clip(1.0 - slo.target[:E], 1e-6, 1.0)
        # an SLO the service did not meet while it was healthy would page all the time: the budget is at least
        # 3x its baseline bad share (counted in `unattainable`)
        known = self.learned[:E] >= self.learn_bins
        floor = np.where(known, 3.0 * self.base_bad[:E] / np.maximum(self.base_n[:E], 1.0), 0.0)
        self.unattainable = int((floor > budget).sum())
        budget = np.minimum(np.maximum(budget, floor), 1.0)
        ready = np.isfinite(thr) & known
        flag = np.zeros(E, bool)
        burn_fast = np.zeros(E)
        from scipy.stats import binom  # not a core dependency (PyFlink's venv has none): only this layer needs it

        for long_b, short_b, rate in BURN_WINDOWS:
            nl, bl = self._window(long_b, E)
            ns, bs = self._window(short_b, E)
            burn_l = bl / np.maximum(nl, 1) / budget
            burn_s = bs / np.maximum(ns, 1) / budget
            if long_b == BURN_WINDOWS[0][0]:
                burn_fast = burn_s
            hit = (burn_l >= rate) & (burn_s >= rate) & (bl >= self.min_bad)
            if hit.any():
                p = binom.sf(bl[hit] - 1, nl[hit], budget[hit])
                hit[hit] = p < self.p_max
            flag |= hit
        # latency shift, count-aware: far more requests slower than the baseline's p90 than its 10 %
        nl, _ = self._window(SHIFT_WINDOWS[0], E)
        ns, _ = self._window(SHIFT_WINDOWS[1], E)
        al, as_ = self._ring_sum(self.above, SHIFT_WINDOWS[0], E), self._ring_sum(self.above, SHIFT_WINDOWS[1], E)
        shift = (al >= SHIFT_SHARE * nl) & (as_ >= SHIFT_SHARE * ns) & (nl > 0) & (ns > 0) & np.isfinite(p90)
        if shift.any():
            shift[shift] = binom.sf(al[shift] - 1, nl[shift], 0.1) < self.p_max * 1e-3
        # SLA rules
        p99 = cb.quantile(0.99)
        ratio = cb.errors / np.maximum(cb.count, 1)
        breach = (cb.count >= self.min_requests) & ((p99 > slo.sla_p99_ms[:E]) | (ratio > slo.sla_error_ratio[:E]))
        self.sla_run[:E] = np.where(breach, self.sla_run[:E] + 1, 0)
        sla = self.sla_run[:E] >= self.sla_bins
        self.pos = (self.pos + 1) % _RING
        return {"flag": (flag | sla) & ready, "shift": shift & ready, "sla": sla, "burn": burn_fast, "bad": bad,
                "threshold_ms": thr.copy()}  # fmt: skip

    def _ring_sum(self, ring: np.ndarray, bins: int, E: int) -> np.ndarray:
        idx = (self.pos - np.arange(bins)) % _RING
        return ring[:E, idx].sum(axis=1)

    def _window(self, bins: int, E: int) -> tuple[np.ndarray, np.ndarray]:
        idx = (self.pos - np.arange(bins)) % _RING
        return self.n[:E, idx].sum(axis=1), self.bad[:E, idx].sum(axis=1)

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        return {"n": self.n, "bad": self.bad, "pos": self.pos, "learn_hist": self.learn_hist,
                "learned": self.learned, "threshold_ms": self.threshold_ms, "sla_run": self.sla_run,
                "base_n": self.base_n, "base_bad": self.base_bad, "above": self.above,
                "p90_ms": self.p90_ms}  # fmt: skip

    def restore(self, s: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.n, self.bad, self.pos = np.asarray(s["n"]), np.asarray(s["bad"]), int(s["pos"])
        self.learn_hist, self.learned = np.asarray(s["learn_hist"]), np.asarray(s["learned"], np.int64)
        self.threshold_ms, self.sla_run = np.asarray(s["threshold_ms"]), np.asarray(s["sla_run"], np.int64)
        self.base_n, self.base_bad = np.asarray(s["base_n"]), np.asarray(s["base_bad"])
        self.above, self.p90_ms = np.asarray(s["above"]), np.asarray(s["p90_ms"])


def _edge_quantile(hist: np.ndarray, q: float) -> np.ndarray:
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    edges = np.append(EDGES_MS, EDGES_MS[-1] * 1.12)
    return np.where(n > 0, edges[np.argmax(cum >= q * n[:, None], axis=1)], np.nan)


def _learned_threshold(hist: np.ndarray) -> np.ndarray:
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1:]
    edges = np.append(EDGES_MS, EDGES_MS[-1] * 1.12)
    p99 = edges[np.argmax(cum >= 0.99 * n, axis=1)]
    p999 = edges[np.argmax(cum >= 0.999 * n, axis=1)]
    t = np.maximum(2.0 * p99, p999)
    return np.where(n[:, 0] > 0, edges[np.searchsorted(edges, t)], np.nan)


class ResidualLayer:
    """L2 (module docstring): Holt-Winters residuals on log p50 / p95 latency and log traffic per entity."""

    def __init__(self, *, z: float = 5.0, min_requests: int = 10, max_period: int = 30, alpha: float = 0.05,
                 lat_floor: float = 0.1) -> None:  # fmt: skip
        self.z, self.min_requests, self.lat_floor = float(z), int(min_requests), float(lat_floor)
        kw: dict[str, Any] = {"field": "v", "period": None, "max_period": max_period, "warmup_periods": 1,
                              "alpha": alpha, "beta": 0.005, "gamma": 0.1, "threshold": z, "min_residuals": 10,
                              "residual_halflife": 60.0}  # fmt: skip
        self.dets = {name: HoltWinters(**kw) for name in ("p50", "p95", "rate")}
        self.prev_lat = np.zeros(0, bool)
        self.prev_drop = np.zeros(0, bool)

    @staticmethod
    def _z(v: Any, floor: np.ndarray | float) -> np.ndarray:
        s = v.stats
        z = (s["residual"] - s["resid_mean"]) / np.maximum(s["resid_std"], floor)
        return np.where(v.ready & np.isfinite(z), z, 0.0)

    def step(self, cb: ClosedBin, hold: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """Flags and residual z-scores of one bin: ``flag``, ``lat_z``, ``rate_z``, ``ready``.

        ``hold``: entities whose latency is neither scored nor learned this bin (a fresh deploy's warm-up).
        """
        E = len(cb.entities)
        self.prev_lat, self.prev_drop = _grow(self.prev_lat, E), _grow(self.prev_drop, E)
        slots = np.arange(E, dtype=np.int32)
        ts = np.full(E, cb.t1_ms, np.int64)
        enough = cb.count >= self.min_requests
        if hold is not None:
            enough &= ~hold[:E]
        z = {}
        for name, x in (("p50", cb.log_mean()), ("p95", np.log(np.maximum(cb.quantile(0.95), 1e-3)))):
            x = np.where(enough, x, np.nan)
            z[name] = self._z(self.dets[name].process_many(slots, ts, {"v": x}), self.lat_floor)
        vr = self.dets["rate"].process_many(slots, ts, {"v": np.log1p(cb.count)})
        rate_z = self._z(vr, 1.0 / np.sqrt(cb.count + 1.0))
        lat_z = np.maximum(z["p50"], z["p95"])
        up = lat_z > self.z
        drop = rate_z < -self.z
        flag = up & self.prev_lat[:E]
        self.prev_lat[:E], self.prev_drop[:E] = up, drop
        return {"flag": flag, "lat_z": lat_z, "rate_z": rate_z, "ready": vr.ready}

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        return {**{k: d.snapshot() for k, d in self.dets.items()}, "prev_lat": self.prev_lat,
                "prev_drop": self.prev_drop}  # fmt: skip

    def restore(self, s: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.dets = {k: HoltWinters.from_snapshot(d.params(), s[k]) for k, d in self.dets.items()}
        self.prev_lat, self.prev_drop = np.asarray(s["prev_lat"], bool), np.asarray(s["prev_drop"], bool)

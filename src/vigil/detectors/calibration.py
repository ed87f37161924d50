"""One calibration contract for every detector: a causal tail probability of the raw score, with a surprise.

Raw scores of different detectors live on different scales (a Mahalanobis distance, a rarity in nines, a
reconstruction error); a fixed map into [0, 1] (a Gaussian tail of a z-score, ``s / (1 + s)``) saturates or
never reaches a threshold, and means a different false-alarm rate for each detector. The contract:

* ``p(s)`` = the estimated probability that the key's *normal* raw score is at least ``s``, learned
  **causally per key** from its own recent raw-score history: the last ``history`` learned scores (a ring).
* ``calibrated = 1 - p`` in [0, 1]; **on stationary data the fraction of rows with ``calibrated >= t`` is
  close to ``1 - t``** for every detector (the conformance suite checks t = 0.9, 0.99, 0.999), so one
  threshold means one false-alarm rate, and ensembles of calibrated scores keep magnitude.
* ``surprise = -log10 p`` ("nines", unbounded): far tails stay resolved where ``calibrated`` rounds to 1.

How ``p`` is estimated from the history ``h`` of ``n`` scores (:func:`log10_tail`, as :class:`TailCalibrator`
uses it):

* **Up to the history's maximum**: the randomised empirical tail ``(#{h > s} + u (#{h == s} + 1)) / (n + 1)``,
  ``u`` a deterministic low-discrepancy sequence in (0, 1): exact for any score distribution, ties (a tree's
  discrete masses) and bounded scores included. With the default ``history`` of 1000, ``t = 0.999`` is read
  from the key's own scores.
* **Beyond the maximum**: ``p = S(s) / S(max) / (n + 1)``, ``S`` a generalised Pareto tail fitted to the
  ``tail_rows`` largest scores (shape from their moments, clipped to ``[0, max_shape]``: never lighter than
  exponential; scale at least ``tail_scale_min``, the detector's knowledge of its score's natural tail, e.g. 2
  for the chi-square tail of a squared Mahalanobis distance, which keeps a constant history from calling a
  tiny excess infinitely surprising).
* Fewer than ``min_history`` learned scores: not calibrated (``calibrated = 0``; the detector's own flags are
  untouched).

Which scores are learned: every scored row's, but a row the detector *flagged* is **censored**
(:func:`censor_rated`): beyond the history's maximum it is learned only at the rate stationary data gets there
(else not at all), so an incident's magnitude does not become the reference while the history keeps the shape
of a stationary one. A sustained change must not freeze the calibration (a frozen model, e.g. an offline
Isolation Forest, would otherwise flag every row after a shift for ever): an EW flag rate per key (half-life
``relearn_after`` rows) is kept, and from when it reaches 1/2 until it falls below 1/10 flagged rows are
learned uncensored, so about ``relearn_after + history`` rows into a new regime its scores are the reference.
``relearn_after = 0`` always censors. (Detectors with a protected baseline re-learn it on the same signal:
see :mod:`vigil.detectors.ewzscore`.)

The kernels here are numba functions that a detector's own kernel may call row by row (``mahalanobis`` does,
so its learn decision can depend on the calibrated score); :class:`TailCalibrator` holds their per-key state
for the others (the ``tail_calibrated`` wrapper; :func:`apply_contract` for a detector that holds one).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.stats.slots import SlotArrays, grow_rows
from vigil.types import Float64Array, Int32Array

_LOG10_TINY = -300.0  # p is floored at 1e-300: a surprise of 300 nines at most (beyond any real threshold)


@numba.njit(cache=True)
def tail_fit(hist: Any, n: int, tail_rows: int, tail_scale_min: float) -> tuple[float, float]:  # pragma: no cover
    """``(u, beta)``: the ``tail_rows``-th largest of ``hist[:n]`` and the exponential scale above it."""
    u, beta, _ = tail_fit_gpd(hist, n, tail_rows, tail_scale_min, 0.0)
    return u, beta


@numba.njit(cache=True)
def tail_fit_gpd(
    hist: Any, n: int, tail_rows: int, tail_scale_min: float, max_shape: float
) -> tuple[float, float, float]:  # pragma: no cover - compiled
    """``(u, sigma, xi)``: threshold, scale and shape of a generalised Pareto tail over the top ``tail_rows``.

    The shape comes from the excesses' first two moments (``xi = (1 - m^2 / s^2) / 2``), clipped to
    ``[0, max_shape]``: never lighter than exponential (a short history can't tell a bounded tail from a light
    one, and erring heavy errs towards fewer alarms), heavier where the scores are (a z-score of a small window
    is Student-t-like). ``max_shape = 0`` is the exponential tail, ``sigma`` its mean excess.
    """
    k = min(tail_rows, n)
    top = np.sort(np.partition(hist[:n], n - k)[n - k :])
    u = top[0]
    m = 0.0
    for j in range(1, k):
        m += top[j] - u
    m = m / max(k - 1, 1)
    xi = 0.0
    if max_shape > 0.0 and k > 3 and m > 0.0:
        v = 0.0
        for j in range(1, k):
            v += (top[j] - u - m) ** 2
        v = v / (k - 2)
        if v > 0.0:
            xi = min(max(0.5 * (1.0 - m * m / v), 0.0), max_shape)
    sigma = m * (1.0 - xi)  # the mean excess of a GPD is sigma / (1 - xi)
    if sigma < tail_scale_min:
        sigma = tail_scale_min
    if not sigma > 0.0:
        sigma = 1e-12 + abs(u) * 1e-9
    return u, sigma, xi


@numba.njit(cache=True)
def _floored_tail(
    hist: Any, n: int, s: float, tail_rows: int, tail_scale_min: float, fit: Any, max_shape: float
) -> float:  # pragma: no cover - compiled
    """A bound for ``log10 p`` in the top ``tail_rows`` when the history is narrower than the declared natural tail.

    When the fitted scale sits at ``tail_scale_min`` (e.g. a constant signal: every learned score equal), the
    history's top scores say little: a small excess over them is no evidence. Then ``p`` is at least the
    floored exponential tail from the ``tail_rows``-th largest score (the research calibration of
    ``mahalanobis``). Returns ``-inf`` (no bound) when the history has a scale of its own.
    """
    if fit[0] == 0.0:
        u, beta, xi = tail_fit_gpd(hist, n, tail_rows, tail_scale_min, max_shape)
        fit[0] = 1.0
        fit[1] = u
        fit[2] = beta
        if max_shape > 0.0:
            fit[3] = xi
    if fit[2] > tail_scale_min:
        return -math.inf
    k = min(tail_rows, n)
    return math.log10((k - 0.5) / (n + 1.0)) - (s - fit[1]) / fit[2] / math.log(10.0)


@numba.njit(cache=True)
def log10_tail(
    hist: Any, n: int, s: float, tail_rows: int, tail_scale_min: float, fit: Any, max_shape: float = 0.0,
    u01: float = 0.5, beyond_max: bool = False,
) -> float:  # pragma: no cover  # fmt: skip
    """``log10 p(s)`` against the first ``n`` scores of ``hist``; ``fit = [valid, u, beta(, xi)]`` is a cache.

    The cache (a float array of 3, or 4 with ``max_shape > 0``) is refreshed when ``fit[0] == 0``; callers reset
    it to 0 whenever the history changes. In the body, ``p = (#{h > s} + u01 * (#{h == s} + 1)) / (n + 1)``:
    with ``u01`` spread uniformly over rows this is the randomised probability integral transform, whose
    alarm rate is right even for scores with ties (a tree's discrete masses); ``u01 = 0.5`` is the mid-rank.

    ``beyond_max``: the empirical body reaches up to the history's maximum, and the fitted tail only
    extrapolates beyond it (``p = S(s) / S(max) / (n + 1)``): right for bounded and discrete scores too,
    whose tail above the ``tail_rows``-th largest the fit would overstate. Otherwise (the research default of
    ``mahalanobis``) the fitted tail starts at the ``tail_rows``-th largest score.
    """
    gt = 0
    eq = 0
    for j in range(n):
        if hist[j] > s:
            gt += 1
        elif hist[j] == s:
            eq += 1
    k = min(tail_rows, n)
    if gt + eq >= k:
        return math.log10((gt + u01 * (eq + 1.0)) / (n + 1.0))
    if beyond_max and gt + eq > 0:
        lp = math.log10((gt + u01 * (eq + 1.0)) / (n + 1.0))
        if tail_scale_min > 0.0:
            lp = max(lp, _floored_tail(hist, n, s, tail_rows, tail_scale_min, fit, max_shape))
        return lp
    if fit[0] == 0.0:
        u, beta, xi = tail_fit_gpd(hist, n, tail_rows, tail_scale_min, max_shape)
        fit[0] = 1.0
        fit[1] = u
        fit[2] = beta
        if max_shape > 0.0:
            fit[3] = xi
    xi = fit[3] if max_shape > 0.0 else 0.0
    if beyond_max:  # s is at or beyond every learned score: extrapolate from the maximum
        top = hist[0]
        for j in range(1, n):
            top = max(top, hist[j])
        lp0 = -math.log10(n + 1.0)  # the maximum's own chance to be exceeded; beyond it the fit alone decides
        if xi > 1e-6:
            lp = lp0 - math.log10((1.0 + xi * (s - fit[1]) / fit[2]) / (1.0 + xi * (top - fit[1]) / fit[2])) / xi
        else:
            lp = lp0 - (s - top) / fit[2] / math.log(10.0)
        if tail_scale_min > 0.0:
            lp = max(lp, _floored_tail(hist, n, s, tail_rows, tail_scale_min, fit, max_shape))
        return max(lp, _LOG10_TINY)
    lp0 = math.log10((k - 0.5) / (n + 1.0))
    if xi > 1e-6:
        lp = lp0 - math.log10(1.0 + xi * (s - fit[1]) / fit[2]) / xi
    else:
        lp = lp0 - (s - fit[1]) / fit[2] / math.log(10.0)
    return max(lp, _LOG10_TINY)


@numba.njit(cache=True)
def censor(hist: Any, n: int, s: float) -> float:  # pragma: no cover - compiled
    """The score to learn for a row that was flagged: ``min(s, max(history))``.

    A detector that does not learn the rows it flags (so that an anomaly does not become normal) would keep a
    history truncated at its threshold, whose tail is too thin, and alarm more often than ``1 - threshold`` on
    stationary data. Learning the flagged score *censored* at the largest learned score keeps the mass above
    the bar (the count of rows at least that extreme) without letting the anomaly's magnitude in, and cannot
    ratchet the history upwards (a censored value never exceeds the history's maximum).
    """
    top = hist[0]
    for j in range(1, n):
        if hist[j] > top:
            top = hist[j]
    return min(s, top)


@numba.njit(cache=True)
def censor_tail(
    hist: Any, n: int, s: float, tail_rows: int, tail_scale_min: float, fit: Any, max_shape: float = 0.0
) -> float:  # pragma: no cover - compiled
    """The score to learn for a flagged row: ``s`` capped where the fitted tail is 10x rarer than ``1 / n``.

    Learning a flagged row unchanged lets an anomaly's magnitude into the reference; capping it at the
    history's maximum (:func:`censor`) makes the maximum ratchet *down* whenever rows beyond it keep being
    flagged (the tail thins and the alarm rate grows past ``1 - t``). The cap here is the score whose fitted
    tail probability is ``1 / (10 (n + 1))``, and never below the history's maximum: stationary rows almost
    never reach it (so the tail is kept), and an anomaly adds at most a value just beyond what was seen.
    """
    top = hist[0]
    for j in range(1, n):
        if hist[j] > top:
            top = hist[j]
    if s <= top:
        return s
    if fit[0] == 0.0:
        u, beta, xi = tail_fit_gpd(hist, n, tail_rows, tail_scale_min, max_shape)
        fit[0] = 1.0
        fit[1] = u
        fit[2] = beta
        if max_shape > 0.0:
            fit[3] = xi
    k = min(tail_rows, n)
    xi = fit[3] if max_shape > 0.0 else 0.0
    if xi > 1e-6:
        cap = fit[1] + fit[2] / xi * ((10.0 * (k - 0.5)) ** xi - 1.0)
    else:
        cap = fit[1] + fit[2] * math.log(10.0 * (k - 0.5))
    return min(s, max(cap, top))


@numba.njit(cache=True)
def censor_rated(
    hist: Any, n: int, s: float, allow: Any, k: int, tail_rows: int, tail_scale_min: float, fit: Any,
    max_shape: float = 0.0,
) -> float:  # pragma: no cover - compiled  # fmt: skip
    """The score to learn for a flagged row, so that stationary rows keep the tail and an incident stays out.

    * Within the history's range (some learned score reaches it): the score itself; it tells nothing new.
    * Beyond every learned score: a stationary stream puts a score there about once per ``n + 1`` rows,
      and its magnitude is what keeps the fitted tail honest. A per-key allowance (``allow[k]``, refilled by
      ``4 / (n + 1)`` per learned row, at most 4) admits them at up to four times that rate, capped where the
      fitted tail is 10x rarer than ``1 / (n + 1)`` (:func:`censor_tail`); beyond the allowance (a run of them:
      an incident) the row is not learned at all (NaN: callers skip it), and the incident's magnitude never
      enters.

    Learning every flagged score as it is lets an incident become the reference; capping all at the maximum
    piles copies of it at the top (the fitted tail collapses and everything beyond the pile is flagged);
    capping all at a fixed distance beyond lets a run of flags ratchet the tail up (an incident stops being
    flagged after a few dozen rows).
    """
    top = hist[0]
    for j in range(1, n):
        if hist[j] > top:
            top = hist[j]
    if s <= top:
        return s
    if allow[k] >= 1.0:
        allow[k] -= 1.0
        return censor_tail(hist, n, s, tail_rows, tail_scale_min, fit, max_shape)
    return math.nan


@numba.njit(cache=True)
def refill(allow: Any, k: int, n: int) -> None:  # pragma: no cover - compiled
    """One learned row's refill of the beyond-the-maximum allowance of :func:`censor_rated`."""
    allow[k] = min(allow[k] + 4.0 / (n + 1.0), 4.0)


@numba.njit(cache=True)
def push(hist: Any, count: Any, k: int, s: float, fit: Any) -> None:  # pragma: no cover - compiled
    """Learn raw score ``s`` into key ``k``'s ring buffer (and invalidate its tail fit)."""
    w = hist.shape[1]
    hist[k, count[k] % w] = s
    count[k] += 1
    fit[k, 0] = 0.0


@numba.njit(cache=True)
def _calibrate_kernel(
    slots: Any, raw: Any, valid: Any, learn: Any, flagged: Any, hist: Any, count: Any, fit: Any, tail_rows: int,
    min_history: int, tail_scale_min: float, lp_flag: bool, lp_on: float, other_lp: Any, rate: Any,
    rate_decay: float, max_shape: float, rows: Any, allow: Any, out_lp: Any, out_ready: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    w = hist.shape[1]
    for i in range(slots.shape[0]):
        k = slots[i]
        out_lp[i] = 0.0
        out_ready[i] = False
        if lp_flag:
            flagged[i] = False
        if not valid[i]:
            continue
        n = min(count[k], w)
        if n >= min_history:
            # a low-discrepancy sequence over the key's learned rows: ties are split uniformly, and a history that
            # learns nothing (a frozen reference) gives every row the same answer
            u01 = ((rows[k] + 1) * 0.6180339887498949) % 1.0
            lp = log10_tail(hist[k], n, raw[i], tail_rows, tail_scale_min, fit[k], max_shape, u01, True)
            out_lp[i] = min(lp, other_lp[i])
            out_ready[i] = True
            if lp_flag:
                flagged[i] = out_lp[i] <= lp_on
        if rate_decay < 1.0:
            # rate[k] >= 1 marks a key re-learning (rate[k] - 1 is its flag rate): from a flag rate of 1/2 until
            # flags have mostly stopped (below 1/10), flagged rows are learned uncensored
            relearning = rate[k] >= 1.0
            r = (rate[k] - 1.0 if relearning else rate[k]) * rate_decay + ((1.0 - rate_decay) if flagged[i] else 0.0)
            if relearning:
                rate[k] = r + 1.0 if r >= 0.1 else r
            else:
                rate[k] = r + 1.0 if r >= 0.5 else r
        if learn[i]:
            s = raw[i]
            if flagged[i] and n > 0 and rate[k] < 1.0:  # a flagged row's magnitude stays out
                s = censor_rated(hist[k], n, s, allow, k, tail_rows, tail_scale_min, fit[k], max_shape)
            refill(allow, k, n)
            rows[k] += 1
            if s == s:  # NaN: a censored row that is not learned
                push(hist, count, k, s, fit)


class TailCalibrator(SlotArrays):
    """Per-key state of the tail-probability calibration (module docstring), vectorized over key slots.

    Every detector of Vigil holds one (``cal``, a slot part: its history travels in the key's slice) and
    calls :meth:`calibrate_many` on its raw scores; :func:`apply_contract` does it for a batch of verdicts.

    Args:
        history: learned raw scores kept per key (the reference distribution).
        tail_rows: top scores the exponential far tail is fitted to.
        min_history: learned scores a key needs before it is calibrated.
        tail_scale_min: floor of the far tail's scale, in raw-score units (0: none).

    Examples:
        >>> cal = TailCalibrator(history=1000, tail_rows=20, min_history=100)
        >>> rng = np.random.default_rng(0)
        >>> s = rng.exponential(1.0, 5000)
        >>> lp, ready = cal.calibrate_many(np.zeros(5000, np.int32), s)
        >>> round(float(np.mean(1 - 10 ** lp[ready] >= 0.99)), 3)  # alarm fraction at t = 0.99 is ~ 1 - t
        0.011
        >>> float(-cal.calibrate_many(np.zeros(1, np.int32), np.array([40.0]), learn=np.zeros(1, bool))[0][0]) > 12
        True
    """

    _slot_arrays: ClassVar[tuple[str, ...]] = ("hist", "count", "fit", "rate", "rows", "allow")

    def __init__(self, *, history: int = 2000, tail_rows: int = 50, min_history: int = 100,
                 tail_scale_min: float = 0.0, relearn_after: int = 0, max_shape: float = 0.45,
                 seed: Any = None) -> None:  # fmt: skip
        check_params(history, tail_rows, min_history, tail_scale_min)
        if isinstance(relearn_after, bool) or int(relearn_after) != relearn_after or relearn_after < 0:
            raise ValueError(f"`relearn_after` must be an int >= 0 rows (0: never); got {relearn_after!r}")
        self.history = int(history)
        self.tail_rows = int(tail_rows)
        self.min_history = int(min_history)
        self.tail_scale_min = float(tail_scale_min)
        self.relearn_after = int(relearn_after)
        if not 0.0 <= max_shape < 1.0:
            raise ValueError(f"`max_shape` (generalised Pareto tail) must be in [0, 1); got {max_shape!r}")
        self.max_shape = float(max_shape)
        # a fresh key's history (e.g. a model's training scores), or none
        self.seed = None if seed is None else np.asarray(seed, np.float64)[-self.history :].copy()
        self.hist = np.zeros((0, self.history), np.float32)  # float32: half the memory, ties are split anyway
        self.count = np.zeros(0, np.int64)
        self.fit = np.zeros((0, 4), np.float64)
        self.rate = np.zeros(0, np.float64)
        self.rows = np.zeros(0, np.int64)
        self.allow = np.zeros(0, np.float64)

    def params(self) -> dict[str, Any]:
        return {"history": self.history, "tail_rows": self.tail_rows, "min_history": self.min_history,
                "tail_scale_min": self.tail_scale_min, "relearn_after": self.relearn_after,
                "max_shape": self.max_shape}  # fmt: skip

    def _grow_slots(self, top: int) -> None:
        old = self.count.shape[0]
        if old >= top:
            return
        self.hist = grow_rows(self.hist, top)
        self.count = grow_rows(self.count, top)
        self.fit = grow_rows(self.fit, top)
        self.rate = grow_rows(self.rate, top)
        self.rows = grow_rows(self.rows, top)
        self.allow = grow_rows(self.allow, top)
        self._seed_rows(np.arange(old, self.count.shape[0]))

    def _seed_rows(self, slots: np.ndarray) -> None:
        if self.seed is not None and len(slots):
            self.hist[slots, : len(self.seed)] = self.seed
            self.count[slots] = len(self.seed)

    def ensure(self, top: int) -> None:
        """Room for key slots ``< top``."""
        self._grow_slots(top)

    def calibrate_many(
        self, slots: Int32Array, raw: Float64Array, *, valid: np.ndarray | None = None,
        learn: np.ndarray | None = None, flagged: np.ndarray | None = None,
    ) -> tuple[Float64Array, np.ndarray]:  # fmt: skip
        """``(log10 p, ready)`` of each row, prequentially.

        Args:
            slots: key slots; raw: raw scores.
            valid: rows that are scored at all (default: finite raw scores); others get ``ready = False``.
            learn: valid rows whose score joins the history afterwards (default: every valid row).
            flagged: rows the detector flagged: their score is learned censored (:func:`censor`).

        ``calibrated = 1 - 10 ** log10_p``, ``surprise = -log10_p`` (:func:`to_calibrated`).
        """
        lp, ready, _ = self._run(slots, raw, valid, learn, flagged, None)
        return lp, ready

    def _run(self, slots: Int32Array, raw: Float64Array, valid: np.ndarray | None, learn: np.ndarray | None,
             flagged: np.ndarray | None, threshold: float | None,
             other_lp: np.ndarray | None = None) -> tuple[Float64Array, np.ndarray, np.ndarray]:  # fmt: skip
        raw = np.asarray(raw, np.float64)
        m = len(slots)
        ok = np.isfinite(raw) if valid is None else (np.asarray(valid, bool) & np.isfinite(raw))
        learn_mask = ok if learn is None else (np.asarray(learn, bool) & ok)
        flag_mask = np.zeros(m, np.bool_) if flagged is None else np.array(flagged, np.bool_)
        lp_on = math.log10(max(1.0 - threshold, 1e-300)) if threshold is not None else 0.0
        if m:
            self._grow_slots(int(slots.max()) + 1)
        lp = np.zeros(m, np.float64)
        ready = np.zeros(m, np.bool_)
        _calibrate_kernel(np.asarray(slots, np.int32), raw, ok, learn_mask, flag_mask, self.hist, self.count,
                          self.fit, self.tail_rows, self.min_history, self.tail_scale_min, threshold is not None, lp_on,
                          np.zeros(m) if other_lp is None else np.asarray(other_lp, np.float64), self.rate,
                          2.0 ** (-1.0 / self.relearn_after) if self.relearn_after else 1.0, self.max_shape,
                          self.rows, self.allow, lp, ready)  # fmt: skip
        return lp, ready, flag_mask

    def calibrate_and_flag(
        self, slots: Int32Array, raw: Float64Array, threshold: float, *, valid: np.ndarray | None = None,
        other_lp: np.ndarray | None = None,
    ) -> tuple[Float64Array, np.ndarray, np.ndarray]:  # fmt: skip
        """``(log10 p, ready, flag)``: :meth:`calibrate_many` flagging rows whose calibrated score is >= ``threshold``.

        For detectors whose own threshold is on the calibrated score (flagged rows are learned censored).
        ``other_lp``: another ``log10 p`` per row (independent evidence, e.g. a value beyond its training range);
        a row's ``log10 p`` is the smaller of the two.
        """
        return self._run(slots, raw, valid, None, None, threshold, other_lp)

    def reset_slots(self, slots: Any) -> None:
        slots = np.asarray(slots, np.int64)
        slots = slots[(slots >= 0) & (slots < self.hist.shape[0])]
        self.hist[slots] = 0.0
        self.count[slots] = 0
        self.fit[slots] = 0.0
        self.rate[slots] = 0.0
        self.rows[slots] = 0
        self.allow[slots] = 0.0
        self._seed_rows(slots)

    def snapshot(self) -> dict[str, Any]:
        return {"hist": self.hist.copy(), "count": self.count.copy(), "fit": self.fit.copy(), "rate": self.rate.copy(),
                "rows": self.rows.copy(), "allow": self.allow.copy()}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        self.hist = np.array(state["hist"], np.float32).reshape(-1, self.history)
        self.count = np.array(state["count"], np.int64)
        self.fit = np.array(state["fit"], np.float64).reshape(-1, 4)
        self.rate = np.array(state["rate"], np.float64)
        self.rows = np.array(state["rows"], np.int64)
        self.allow = np.array(state["allow"], np.float64)


#: the calibration every detector gets unless its ``calibration`` param says otherwise: 1000 learned raw scores
#: per key (float32: 4 KB), so that 1 - t down to 0.001 is read from the key's own scores, beyond that a fitted
#: tail (the top 50); calibrated once 50 scores are known.
CALIBRATION_DEFAULTS: dict[str, Any] = {"history": 1000, "tail_rows": 50, "min_history": 50, "tail_scale_min": 0.0,
                                        "relearn_after": 1440, "max_shape": 0.45}  # fmt: skip


def calibration_params(value: dict[str, Any] | None, defaults: dict[str, Any] | None = None) -> dict[str, Any]:
    """A detector's ``calibration`` param completed with the defaults and checked (errors name the key).

    Examples:
        >>> calibration_params({"history": 200})["history"], calibration_params(None)["tail_rows"]
        (200, 50)
    """
    base = dict(CALIBRATION_DEFAULTS if defaults is None else defaults)
    if value is None:
        return base
    if not isinstance(value, dict):
        raise ValueError(f"`calibration` must be a mapping of {sorted(base)}; got {value!r}")
    unknown = sorted(set(value) - set(base))
    if unknown:
        raise ValueError(f"`calibration` has unknown keys {unknown}; known: {sorted(base)}")
    out = {**base, **value}
    try:
        check_params(out["history"], out["tail_rows"], out["min_history"], out["tail_scale_min"])
    except ValueError as exc:
        raise ValueError(f"`calibration`: {exc}") from None
    if isinstance(out["relearn_after"], bool) or int(out["relearn_after"]) != out["relearn_after"] or (
            out["relearn_after"] < 0):  # fmt: skip
        raise ValueError(f"`calibration`: `relearn_after` must be an int >= 0 rows; got {out['relearn_after']!r}")
    return {"history": int(out["history"]), "tail_rows": int(out["tail_rows"]),
            "min_history": int(out["min_history"]), "tail_scale_min": float(out["tail_scale_min"]),
            "relearn_after": int(out["relearn_after"]), "max_shape": float(out["max_shape"])}  # fmt: skip


def apply_contract(cal: TailCalibrator, slots: Int32Array, v: Any) -> Any:
    """Put the contract's ``calibrated`` and ``stats["surprise"]`` into verdicts ``v`` from their raw scores.

    Ready rows with a finite score are calibrated against the key's history, then learned (flagged rows
    censored). ``v.calibrated`` becomes ``1 - p`` (0 while the key's history is short); the detector's own
    ``flag`` and ``ready`` are untouched.
    """
    lp, ready = cal.calibrate_many(slots, v.score, valid=v.ready, flagged=v.flag)
    return set_contract(v, lp, ready)


def set_contract(v: Any, lp: Float64Array, ready: np.ndarray) -> Any:
    """Write ``calibrated`` (``1 - p``, 0 where not ready) and ``stats["surprise"]`` into verdicts ``v``."""
    c, surprise = to_calibrated(lp)
    v.calibrated = np.where(ready, c, 0.0)
    v.stats["surprise"] = np.where(ready, surprise, 0.0)
    return v


def check_params(history: int, tail_rows: int, min_history: int, tail_scale_min: float) -> None:
    """Validate the calibration params (errors name the param and show the value)."""
    if int(history) != history or history < 2:
        raise ValueError(f"`history` must be an int >= 2 (scores kept per key); got {history!r}")
    if int(tail_rows) != tail_rows or not 2 <= tail_rows <= history:
        raise ValueError(f"`tail_rows` must be an int in [2, history]; got {tail_rows!r}")
    if int(min_history) != min_history or not 1 <= min_history <= history:
        raise ValueError(f"`min_history` must be an int in [1, history]; got {min_history!r}")
    if not tail_scale_min >= 0:
        raise ValueError(f"`tail_scale_min` must be >= 0 (0: no floor); got {tail_scale_min!r}")


def to_calibrated(log10_p: Float64Array) -> tuple[Float64Array, Float64Array]:
    """``(calibrated, surprise)`` from ``log10 p``: ``1 - p`` and ``-log10 p``.

    Examples:
        >>> c, s = to_calibrated(np.array([0.0, -3.0]))
        >>> c.round(6).tolist(), s.tolist()
        ([0.0, 0.999], [0.0, 3.0])
    """
    lp = np.asarray(log10_p, np.float64)
    return np.maximum(-np.expm1(lp * math.log(10.0)), 0.0), np.maximum(-lp, 0.0)

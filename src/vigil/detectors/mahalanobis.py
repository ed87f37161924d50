"""Joint multivariate detector: Mahalanobis distance (or streaming PCA) of a lag embedding, per key.

Each row of a key becomes a vector ``e`` of ``d = len(fields) * window`` numbers: the last ``window`` values
of every field (the current row's included; before a key has ``window`` rows, its first row repeats). The
key's **baseline** is a running mean ``mu`` and covariance ``C`` of its learned vectors (equal weights, or
exponential weights with ``halflife`` rows), regularised towards the identity:

    ``S = (1 - shrinkage) * C + shrinkage * trace(C) / d * I + min_std**2 * I``

(the shrinkage of Ledoit & Wolf towards a scaled identity keeps ``S`` invertible from a short history and a
window of strongly correlated lags; ``min_std`` is an absolute floor in the fields' units, so a signal that
was constant while learning does not call a tiny wobble infinitely far). The raw score is the quadratic form

    ``score = (e - mu)^T M (e - mu)``

with ``M = S^-1`` (``components = 0``: the squared Mahalanobis distance) or, with ``components = k > 0``, the
streaming-PCA form ``M = V_k diag(1 / lambda_k) V_k^T + (I - V_k V_k^T) / sigma_r^2``: Hotelling's T^2 in the
top ``k`` principal axes of ``S`` plus the squared reconstruction error over the mean residual variance
``sigma_r^2`` (the "SPE"). ``M`` is refreshed every ``refit_every`` learned rows of the key (an O(d^3)
Cholesky inverse or Jacobi eigendecomposition, see :mod:`vigil.stats.linalg`); between refreshes the mean
is current and ``M`` at most ``refit_every`` rows old.

**Attribution** (``explain_many``, and ``stats["contrib_<field>"]``): the score is a sum over the embedded
features, ``sum_j (e - mu)_j (M (e - mu))_j``; each field's contribution sums its ``window`` lags. The
contributions add up to the score; a field can contribute a negative amount when it moves the way its
correlated fields make expected.

**Calibration** (:mod:`vigil.detectors.calibration`): the tail probability of the raw score among the key's
last ``history`` learned scores, exponential far tail with scale at least 2 (the chi-square tail of a
squared Mahalanobis distance). ``calibrated = 1 - p``; ``stats["surprise"] = -log10 p``.

**Flags**: ``calibrated >= threshold`` starts a run of flags; the run goes on while ``calibrated >=
hold_threshold`` (hysteresis: a long anomaly stays one incident, rather than one per crossing).

**Learning through level shifts** (``protect``, ``relearn_after``): a flagged row is not learned by the
baseline, so an anomaly does not teach the detector that it is normal; the calibration history learns its
score *censored* (:func:`~vigil.detectors.calibration.censor_rated`: beyond the history's maximum only at the rate
stationary data gets there), which keeps the alarm rate of stationary data at ``1 - threshold`` without letting
the anomaly's magnitude in.
A *shadow* baseline (same statistics, halflife ``relearn_after / 4`` rows) learns every row, flagged or not.
When about ``relearn_after`` rows have been mostly flagged (an exponentially weighted flag rate with halflife
``relearn_after`` reaches 1/2: exactly ``relearn_after`` rows of a continuous run), the shift is sustained:
the baseline becomes the shadow (a new normal), the run ends and the flag rate restarts; ``stats["relearned"]``
is 1 on that row. ``relearn_after = 0`` never re-learns (flags a permanent shift forever).

Rows with a missing (NaN or inf) value in any field are neither scored nor learned and do not enter the
window. Per key the state is ``O(d^2)`` (three ``d x d`` matrices with ``relearn_after > 0``, two without)
plus ``history`` calibration scores: about 40 KB for ``d = 30`` and ``history = 2000``.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.calibration import censor_rated, check_params, log10_tail, push, refill, to_calibrated
from vigil.detectors.explain import feature_shares
from vigil.stats.linalg import spd_inverse, sym_eigh
from vigil.stats.slots import grow_rows
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_TAIL_SCALE_MIN = 2.0  # the chi-square tail exp(-s / 2) of a squared Mahalanobis distance
# per-key scalars in `st`: rows in the window, learned weight, rows learned, flag rate, in a run, shadow weight
_N, _W, _L, _RATE, _RUN, _WS = range(6)


@numba.njit(cache=True)
def _refit(C: Any, M: Any, shrinkage: float, floor2: float, components: int, S: Any, L: Any, w: Any,
           V: Any) -> None:  # pragma: no cover - compiled  # fmt: skip
    """M = the scoring matrix of the shrunk covariance (inverse, or the PCA form)."""
    d = C.shape[0]
    tr = 0.0
    for j in range(d):
        tr += C[j, j]
    for a in range(d):
        for b in range(d):
            S[a, b] = (1.0 - shrinkage) * C[a, b]
        S[a, a] += shrinkage * tr / d + floor2
    if components == 0 and spd_inverse(S, M, L):
        return
    sym_eigh(S, w, V)
    k = min(components, d) if components > 0 else d
    rest = 0.0
    for j in range(k, d):
        rest += max(w[j], floor2)
    sig2 = rest / (d - k) if d > k else 1.0
    sig2 = max(sig2, floor2, 1e-300)
    for a in range(d):
        for b in range(d):
            acc = 0.0
            proj = 0.0
            for j in range(k):
                lam = max(w[j], floor2, 1e-300)
                acc += V[a, j] * V[b, j] / lam
                proj += V[a, j] * V[b, j]
            M[a, b] = acc + ((1.0 if a == b else 0.0) - proj) / sig2


@numba.njit(cache=True)
def _learn(e: Any, mu: Any, C: Any, st: Any, k: int, wi: int, alpha: float, D: Any) -> None:  # pragma: no cover
    """Fold vector e into the weighted mean/covariance (mu, C) whose weight is st[k, wi]."""
    d = e.shape[0]
    wsum = st[k, wi] * (1.0 - alpha) + 1.0 if alpha > 0.0 else st[k, wi] + 1.0
    st[k, wi] = wsum
    r = 1.0 / wsum
    for j in range(d):
        D[j] = e[j] - mu[j]
        mu[j] += r * D[j]
    for a in range(d):
        for b in range(d):
            C[a, b] = (1.0 - r) * (C[a, b] + r * D[a] * D[b])


@numba.njit(cache=True)
def _kernel(
    slots: Any, X: Any, window: int, alpha: float, shadow_alpha: float, rate_decay: float, shrinkage: float,
    floor2: float, components: int, refit_every: int, warmup: int, lp_on: float, lp_hold: float, protect: bool,
    relearn: bool, tail_rows: int, min_history: int,
    buf: Any, st: Any, mu: Any, C: Any, M: Any, smu: Any, sC: Any, hist: Any, hcount: Any, hfit: Any, allow: Any,
    out_score: Any, out_lp: Any, out_ready: Any, out_flag: Any, out_contrib: Any, out_relearned: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    nf = X.shape[1]
    d = nf * window
    e = np.empty(d)
    D = np.empty(d)
    MD = np.empty(d)
    S = np.empty((d, d))
    L = np.empty((d, d))
    w = np.empty(d)
    V = np.empty((d, d))
    hw = hist.shape[1]
    for i in range(slots.shape[0]):
        k = slots[i]
        out_score[i] = 0.0
        out_lp[i] = 0.0
        out_ready[i] = False
        out_flag[i] = False
        out_relearned[i] = False
        for f in range(nf):
            out_contrib[i, f] = 0.0
        finite = True
        for f in range(nf):
            if not math.isfinite(X[i, f]):
                finite = False
        if not finite:
            continue
        # window: buf[k] holds `window` rows of nf values, oldest first; the first row fills it
        if st[k, _N] == 0.0:
            for t in range(window):
                for f in range(nf):
                    buf[k, t * nf + f] = X[i, f]
        else:
            for j in range(d - nf):
                buf[k, j] = buf[k, j + nf]
            for f in range(nf):
                buf[k, d - nf + f] = X[i, f]
        st[k, _N] += 1.0
        for f in range(nf):  # embedding ordered field by field (lags oldest first) for attribution
            for t in range(window):
                e[f * window + t] = buf[k, t * nf + f]
        learned = int(st[k, _L])
        flag = False
        if learned >= warmup:
            s = 0.0
            for a in range(d):
                D[a] = e[a] - mu[k, a]
            for a in range(d):
                acc = 0.0
                for b in range(d):
                    acc += M[k, a, b] * D[b]
                MD[a] = acc
                s += D[a] * acc
            s = min(max(s, 0.0), 1e300)  # a zero-variance direction (no floor, no shrinkage) must not give inf
            out_score[i] = s
            for f in range(nf):
                c = 0.0
                for t in range(window):
                    c += D[f * window + t] * MD[f * window + t]
                out_contrib[i, f] = c
            n = min(hcount[k], hw)
            learn_s = s
            if n >= min_history:
                u01 = ((hcount[k] + 1) * 0.6180339887498949) % 1.0  # ties split evenly (deterministic)
                lp = log10_tail(hist[k], n, s, tail_rows, _TAIL_SCALE_MIN, hfit[k], 0.0, u01, True)
                out_lp[i] = lp
                out_ready[i] = True
                flag = lp <= lp_on or (st[k, _RUN] > 0.0 and lp <= lp_hold)
                if flag and protect:  # censored: the history keeps the mass above the bar, not the magnitude
                    learn_s = censor_rated(hist[k], n, s, allow, k, tail_rows, _TAIL_SCALE_MIN, hfit[k])
            refill(allow, k, n)
            out_flag[i] = flag
            st[k, _RUN] = 1.0 if flag else 0.0
            if learn_s == learn_s:  # NaN: a censored row that is not learned
                push(hist, hcount, k, learn_s, hfit)
        if relearn:
            _learn(e, smu[k], sC[k], st, k, _WS, shadow_alpha, D)
            st[k, _RATE] = st[k, _RATE] * rate_decay + ((1.0 - rate_decay) if flag else 0.0)
            if st[k, _RATE] >= 0.5:  # a sustained shift: the shadow becomes the baseline
                mu[k, :] = smu[k]
                C[k, :, :] = sC[k]
                st[k, _W] = st[k, _WS]
                st[k, _RATE] = 0.0
                st[k, _RUN] = 0.0
                out_relearned[i] = True
                _refit(C[k], M[k], shrinkage, floor2, components, S, L, w, V)
                continue
        if flag and protect:
            continue
        _learn(e, mu[k], C[k], st, k, _W, alpha, D)
        st[k, _L] = learned + 1
        if learned + 1 == warmup or (learned + 1 > warmup and (learned + 1 - warmup) % refit_every == 0):
            _refit(C[k], M[k], shrinkage, floor2, components, S, L, w, V)


def _halflife_alpha(halflife: float) -> float:
    return 1.0 - 2.0 ** (-1.0 / halflife) if halflife > 0 else 0.0


@register
class Mahalanobis(BaseDetector):
    """Mahalanobis distance / streaming PCA of a lag embedding of several fields, per key (module docstring).

    Args:
        fields: the fields of the joint model (the embedding holds ``window`` lags of each).
        window: lags per field (1: the current row only).
        components: 0 for the full Mahalanobis distance; ``k > 0`` for streaming PCA (T^2 in ``k`` axes + SPE).
        halflife: baseline memory in learned rows (0: equal weights for all learned rows).
        shrinkage: weight of the scaled identity in the covariance, in [0, 1].
        min_std: absolute floor of every embedded feature's standard deviation, in the fields' units.
        refit_every: learned rows between refreshes of the scoring matrix.
        warmup: learned rows of a key before it is scored (>= 2).
        threshold: calibrated score that starts a run of flags, in (0, 1) (``1 - threshold`` is the
            false-alarm rate on data like the learned history).
        hold_threshold: calibrated score that continues a run (<= threshold; equal: no hysteresis).
        protect: flagged rows are not learned.
        relearn_after: rows of a mostly flagged stretch after which the baseline re-learns (0: never).
        history: learned raw scores per key for the calibration.
        tail_rows: top scores the calibration's far tail is fitted to.
        min_history: calibration scores a key needs before it is ready.

    Score:
        ``(e - mu)^T M (e - mu)`` (squared Mahalanobis distance, or T^2 + SPE); calibrated = one minus its tail
        probability; ``stats["surprise"]`` = ``-log10`` of the tail probability; ``stats["contrib_<field>"]``
        the fields' additive contributions; ``stats["relearned"]`` 1 where the baseline re-learned.

    State:
        per key: the window, mean and covariance (and a shadow copy with ``relearn_after``), the scoring matrix,
        ``history`` scores, a few counters.

    Warm-up:
        ``warmup`` learned rows, then ``min_history`` scored rows (not ready while they fill the calibration).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> n = 3000
        >>> a = rng.standard_normal(n)
        >>> b = a + 0.1 * rng.standard_normal(n)            # b follows a
        >>> a[2500], b[2500] = 1.5, -1.5                    # ... except once: jointly odd, each one normal
        >>> det = Mahalanobis(fields=["a", "b"], warmup=50, min_history=200)
        >>> v = det.process_many(np.zeros(n, np.int32), np.arange(n), {"a": a, "b": b})
        >>> int(np.argmax(v.score)), bool(v.flag[2500]), float(np.mean(v.flag[v.ready])) < 0.002
        (2500, True, True)
        >>> round(float(v.stats["surprise"][2500]), 1), {f: round(float(v.stats[f"contrib_{f}"][2500])) for f in "ab"}
        (9.9, {'a': 22, 'b': 21})
    """

    kind: ClassVar[str] = "mahalanobis"
    state_version: ClassVar[int] = 2
    live_params: ClassVar[frozenset[str]] = frozenset({"threshold", "hold_threshold", "min_history"})
    _slot_arrays: ClassVar[tuple[str, ...]] = ("buf", "st", "mu", "C", "M", "smu", "sC", "hist", "hcount", "hfit",
                                               "allow")  # fmt: skip

    def __init__(
        self,
        *,
        fields: list[str] | tuple[str, ...] | str = ("value",),
        window: int = 1,
        components: int = 0,
        halflife: float = 0.0,
        shrinkage: float = 0.1,
        min_std: float = 0.0,
        refit_every: int = 10,
        warmup: int = 100,
        threshold: float = 0.999,
        hold_threshold: float | None = None,
        protect: bool = True,
        relearn_after: int = 1000,
        history: int = 2000,
        tail_rows: int = 50,
        min_history: int = 100,
    ) -> None:
        names = [fields] if isinstance(fields, str) else [str(f) for f in fields]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`fields` must name distinct fields; got {fields!r}")
        if int(window) != window or window < 1:
            raise ValueError(f"`window` must be an int >= 1 (lags per field); got {window!r}")
        if int(components) != components or components < 0:
            raise ValueError(f"`components` must be an int >= 0 (0: full Mahalanobis); got {components!r}")
        if components >= len(names) * window and components > 0:
            raise ValueError(f"`components` must be < the embedding size {len(names) * window}; got {components!r}")
        if not halflife >= 0:
            raise ValueError(f"`halflife` must be >= 0 rows (0: equal weights); got {halflife!r}")
        if not 0.0 <= shrinkage <= 1.0:
            raise ValueError(f"`shrinkage` must be in [0, 1]; got {shrinkage!r}")
        if not min_std >= 0:
            raise ValueError(f"`min_std` must be >= 0; got {min_std!r}")
        if int(refit_every) != refit_every or refit_every < 1:
            raise ValueError(f"`refit_every` must be an int >= 1; got {refit_every!r}")
        if int(warmup) != warmup or warmup < 2:
            raise ValueError(f"`warmup` must be an int >= 2 (learned rows before scoring); got {warmup!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` is a calibrated score in (0, 1), e.g. 0.999; got {threshold!r}")
        hold = threshold if hold_threshold is None else hold_threshold
        if not 0.0 < hold <= threshold:
            raise ValueError(f"`hold_threshold` must be in (0, threshold]; got {hold_threshold!r}")
        if int(relearn_after) != relearn_after or relearn_after < 0:
            raise ValueError(f"`relearn_after` must be an int >= 0 rows (0: never); got {relearn_after!r}")
        check_params(history, tail_rows, min_history, 0.0)
        self.fields = tuple(names)
        self.window = int(window)
        self.components = int(components)
        self.halflife = float(halflife)
        self.shrinkage = float(shrinkage)
        self.min_std = float(min_std)
        self.refit_every = int(refit_every)
        self.warmup = int(warmup)
        self.threshold = float(threshold)
        self.hold_threshold = None if hold_threshold is None else float(hold_threshold)
        self.protect = bool(protect)
        self.relearn_after = int(relearn_after)
        self.history = int(history)
        self.tail_rows = int(tail_rows)
        self.min_history = int(min_history)
        self._d = len(names) * self.window
        self._alloc(0)

    def _alloc(self, keys: int) -> None:
        d, nf = self._d, len(self.fields)
        sh = keys
        self.buf = np.zeros((keys, d), np.float64)
        self.st = np.zeros((keys, 6), np.float64)
        self.mu = np.zeros((keys, d), np.float64)
        self.C = np.zeros((keys, d, d), np.float64)
        self.M = np.zeros((keys, d, d), np.float64)
        self.smu = np.zeros((sh, d), np.float64)
        self.sC = np.zeros((sh, d, d), np.float64)
        self.hist = np.zeros((keys, self.history), np.float64)
        self.hcount = np.zeros(keys, np.int64)
        self.hfit = np.zeros((keys, 3), np.float64)
        self.allow = np.zeros(keys, np.float64)
        assert nf >= 1

    def params(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields), "window": self.window, "components": self.components,
            "halflife": self.halflife, "shrinkage": self.shrinkage, "min_std": self.min_std,
            "refit_every": self.refit_every, "warmup": self.warmup, "threshold": self.threshold,
            "hold_threshold": self.hold_threshold, "protect": self.protect, "relearn_after": self.relearn_after,
            "history": self.history, "tail_rows": self.tail_rows, "min_history": self.min_history,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"fields": ["value"], "warmup": 20, "min_history": 30, "history": 200, "tail_rows": 10},
            {"fields": ["value"], "window": 4, "halflife": 100, "shrinkage": 0.3, "min_std": 0.01, "warmup": 20,
             "min_history": 30, "history": 1000, "tail_rows": 20, "threshold": 0.99, "hold_threshold": 0.9,
             "relearn_after": 40, "refit_every": 3},
            {"fields": ["value"], "window": 6, "components": 2, "warmup": 25, "min_history": 20, "history": 300,
             "tail_rows": 20, "protect": False},
        ]  # fmt: skip

    def _grow_slots(self, top: int) -> None:
        if self.st.shape[0] >= top:
            return
        for name in self._slot_arrays:
            setattr(self, name, grow_rows(getattr(self, name), top))

    def _matrix(self, X: dict[str, Float64Array], m: int) -> np.ndarray:
        absent = [f for f in self.fields if f not in X]
        if absent:
            raise ValueError(f"mahalanobis: the batch lacks fields {absent}; it has {sorted(X)}")
        out = np.empty((m, len(self.fields)), np.float64)
        for j, f in enumerate(self.fields):
            out[:, j] = X[f]
        return out

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        A = self._matrix(X, m)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        nf = len(self.fields)
        score, lp = np.zeros(m), np.zeros(m)
        ready, flag, relearned = (np.zeros(m, np.bool_) for _ in range(3))
        contrib = np.zeros((m, nf))
        hold = self.threshold if self.hold_threshold is None else self.hold_threshold
        rate_decay = 2.0 ** (-1.0 / self.relearn_after) if self.relearn_after else 1.0
        _kernel(
            np.asarray(slots, np.int32), A, self.window, _halflife_alpha(self.halflife),
            _halflife_alpha(self.relearn_after / 4.0) if self.relearn_after else 0.0, rate_decay, self.shrinkage,
            self.min_std**2, self.components, self.refit_every, self.warmup, math.log10(1.0 - self.threshold),
            math.log10(1.0 - hold), self.protect, self.relearn_after > 0, self.tail_rows, self.min_history,
            self.buf, self.st, self.mu, self.C, self.M, self.smu, self.sC, self.hist, self.hcount, self.hfit,
            self.allow, score, lp, ready, flag, contrib, relearned,
        )  # fmt: skip
        calibrated, surprise = to_calibrated(lp)
        calibrated = np.where(ready, calibrated, 0.0)
        stats: dict[str, np.ndarray] = {"surprise": np.where(ready, surprise, 0.0),
                                        "relearned": relearned.astype(np.float64)}  # fmt: skip
        for j, f in enumerate(self.fields):
            stats[f"contrib_{f}"] = contrib[:, j]
        return Verdicts(np.where(ready, score, 0.0), calibrated, flag, flag.copy(), ready, stats)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """Each field's additive share of the row's distance (``stats["contrib_<field>"]``), largest first."""
        rows = np.asarray(rows, np.int64)
        shares = np.column_stack([v.stats[f"contrib_{f}"][rows] for f in self.fields]) if len(rows) else (
            np.zeros((0, len(self.fields))))  # fmt: skip
        return feature_shares(self.fields, X, rows, shares)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "joint distance 1 in 3.2e+04 rows (surprise 4.5); most unusual: c0 (+212), c3 (+4)"."""
        contrib = sorted(((f, float(stats.get(f"contrib_{f}", 0.0))) for f in self.fields), key=lambda t: -t[1])
        top = ", ".join(f"{f} ({c:+.3g})" for f, c in contrib[:3])
        nines = float(stats.get("surprise", 0.0))
        what = "PCA T2+SPE" if self.components else "Mahalanobis distance"
        odds = 10 ** min(nines, 300)
        return f"{what} rarer than 1 in {odds:.2g} learned rows (surprise {nines:.1f}); most unusual: {top}"

    def reset_slots(self, slots: Int32Array) -> None:
        slots = np.asarray(slots, np.int64)
        slots = slots[(slots >= 0) & (slots < self.st.shape[0])]
        for name in self._slot_arrays:
            getattr(self, name)[slots] = 0

    def snapshot(self) -> dict[str, Any]:
        return {name: getattr(self, name).copy() for name in self._slot_arrays}

    def _restore(self, state: dict[str, Any]) -> None:
        d = self._d
        self.buf = np.array(state["buf"], np.float64).reshape(-1, d)
        self.st = np.array(state["st"], np.float64).reshape(-1, 6)
        self.mu = np.array(state["mu"], np.float64).reshape(-1, d)
        self.C = np.array(state["C"], np.float64).reshape(-1, d, d)
        self.M = np.array(state["M"], np.float64).reshape(-1, d, d)
        self.smu = np.array(state["smu"], np.float64).reshape(-1, d)
        self.sC = np.array(state["sC"], np.float64).reshape(-1, d, d)
        self.hist = np.array(state["hist"], np.float64).reshape(-1, self.history)
        self.hcount = np.array(state["hcount"], np.int64)
        self.hfit = np.array(state["hfit"], np.float64).reshape(-1, 3)
        self.allow = np.array(state["allow"], np.float64)

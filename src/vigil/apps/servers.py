"""Multi-metric server anomaly detection: the brief's intermediate project.

Long-form samples (one row per host x metric x sample, sorted by arrival) go through three stages:

1. :class:`MultiMetricJoin` — per host and tumbling event-time window (``window_ms``, 10 s by default), one
   feature vector: the mean of each metric (and its max). Windows close on the watermark (Flink's rule, as
   in :class:`~vigil.eventtime.windows.WindowAggregator`: a sample is late when its window's
   ``end_ms + allowed_lateness_ms <= watermark`` in force before it; late samples are returned, not
   aggregated). State is one dense ``[host slot, metric]`` accumulator (sum, count, max) per open window;
   a micro-batch is folded in with one ``bincount`` over ``(window, slot, metric)``, so the join is
   vectorized (there are only ``max_delay / window + 1`` open windows at a time).

   **Missing metrics.** A vector is emitted for every host with at least one sample in the window (a
   silent host emits nothing: absence is a heartbeat rule's job). A metric without samples is marked in
   ``missing`` and imputed: the host's last value of that metric if it is at most ``carry_windows``
   windows old (last value carried forward), else the host's running mean of that metric (mean of its
   observed window means), else NaN (never seen). Imputed cells feed the global model (which needs a
   complete row) but **not** the per-metric detectors: a carried value is not evidence, so they get NaN
   (not scored, not learned) and cannot vote.

2. **Per-metric detectors** — one keyed detector per metric (slot = host), by default
   :class:`~vigil.detectors.EWZScore` on the window mean (half-life 30 windows, ``protect`` so an incident
   does not become the baseline). Optionally one **global model**: an
   :class:`~vigil.detectors.IsolationForestDetector` over the per-metric signed z-scores (clipped to
   +-``z_clip``), trained offline on normal windows (:func:`train_global_model`). z-scores, not raw
   values, because hosts differ in scale: the model learns the fleet's *joint* shape of deviations.

3. :class:`KOfN` — per host and window, ``alerting`` when at least ``k`` of the ``n`` voters flag (the
   per-metric detectors, plus the model when ``model_votes``). An alert **fires** when a host starts
   alerting after ``rearm_windows`` windows without alerting (one alert per episode, as
   :class:`~vigil.detectors.VelocityRule` fires once per burst). The alert lists every metric's value,
   z and calibrated score and the model's score.

Everything runs on numpy arrays; Python loops only over closed windows (a few per micro-batch) and over
fired alerts. :func:`run_server_pipeline` runs the stages over columnar batches; :class:`ServerPipeline`
is the streaming object (``process`` a micro-batch, ``flush`` at the end).

Examples:
    >>> from vigil.io.generators.fleet import FleetSpec, simulate_fleet
    >>> cols = simulate_fleet(FleetSpec(hosts=4, days=0.2, seed=2))
    >>> run = run_server_pipeline(cols, ServerConfig(window_s=60))
    >>> run.windows.joined.value.shape[1], int(run.windows.joined.slot.max()) <= 3, run.samples == len(cols["value"])
    (6, True, True)
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.alerting.alert import Alert, alert_id
from vigil.detectors import EWZScore, RobustZScore
from vigil.eventtime.watermarks import MAX_WATERMARK, BoundedOutOfOrderness, sub_ms, sub_ms_array
from vigil.io.generators.fleet import METRICS

__all__ = ["KOfN", "JoinedWindows", "MultiMetricJoin", "ServerConfig", "ServerPipeline", "ServerRun",
           "WindowVerdicts", "run_server_pipeline", "train_global_model"]  # fmt: skip


@dataclass(slots=True)
class JoinedWindows:
    """Feature vectors, one row per (host slot, window), sorted by ``(start_ms, slot)``.

    ``value`` is the window mean per metric (imputed where ``missing``), ``max`` the window max (the imputed
    value where missing), ``count`` the samples per metric, ``imputed`` the missing cells that got a value,
    ``delta`` the change of the mean since the host's previous window (NaN unless both were observed).
    """

    slot: np.ndarray
    start_ms: np.ndarray
    end_ms: np.ndarray
    value: np.ndarray
    max: np.ndarray
    count: np.ndarray
    missing: np.ndarray
    imputed: np.ndarray
    delta: np.ndarray

    def __len__(self) -> int:
        return int(self.slot.shape[0])

    @property
    def n_missing(self) -> np.ndarray:
        """Missing metrics per row."""
        return self.missing.sum(axis=1)

    @staticmethod
    def empty(m: int) -> JoinedWindows:
        """No rows."""
        z = np.empty((0, m))
        return JoinedWindows(np.empty(0, np.int32), np.empty(0, np.int64), np.empty(0, np.int64), z, z.copy(),
                             np.empty((0, m), np.int64), np.empty((0, m), bool), np.empty((0, m), bool),
                             z.copy())  # fmt: skip

    @staticmethod
    def concat(parts: list[JoinedWindows], m: int) -> JoinedWindows:
        """Rows of consecutive outputs as one."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return JoinedWindows.empty(m)
        return JoinedWindows(*(np.concatenate([getattr(p, f) for p in parts]) for f in JoinedWindows.__slots__))


class MultiMetricJoin:
    """Per host and tumbling window, one vector of metric means and maxes (see the module docstring).

    Args:
        n_metrics: number of metrics (rows carry a metric index in ``[0, n_metrics)``).
        window_ms: tumbling window size.
        allowed_lateness_ms: a window stays open this long after the watermark passes its end.
        carry_windows: how many windows a last value may be carried forward before the running mean is used.

    Examples:
        >>> j = MultiMetricJoin(2, window_ms=10)
        >>> late = j.add(np.array([0, 0, 0, 1]), np.array([0, 0, 1, 0]), np.array([1, 5, 3, 4]),
        ...              np.array([1.0, 3.0, 7.0, 9.0]), np.full(4, -1))
        >>> r = j.advance(10)
        >>> r.slot.tolist(), r.value.tolist(), r.missing.tolist()
        ([0, 1], [[2.0, 7.0], [9.0, nan]], [[False, False], [False, True]])
        >>> j.add(np.array([1]), np.array([1]), np.array([12]), np.array([5.0]), np.array([10])).tolist()
        []
        >>> r = j.advance(20); r.value.tolist(), r.imputed.tolist()    # host 1's cpu carried forward
        ([[9.0, 5.0]], [[True, False]])
    """

    def __init__(self, n_metrics: int, *, window_ms: int = 10_000, allowed_lateness_ms: int = 0,
                 carry_windows: int = 3) -> None:  # fmt: skip
        if window_ms <= 0:
            raise ValueError(f"`window_ms` must be > 0; got {window_ms!r}")
        if allowed_lateness_ms < 0 or carry_windows < 0:
            raise ValueError("`allowed_lateness_ms` and `carry_windows` must be >= 0; "
                             f"got {allowed_lateness_ms!r}, {carry_windows!r}")  # fmt: skip
        self.m = int(n_metrics)
        self.window_ms = int(window_ms)
        self.allowed_lateness_ms = int(allowed_lateness_ms)
        self.carry_windows = int(carry_windows)
        self._cap = 0
        self._open: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        self._alloc(64)

    def _alloc(self, cap: int) -> None:
        m, old = self.m, self._cap
        grow = {"last_val": np.nan, "last_start": np.iinfo(np.int64).min, "run_sum": 0.0, "run_n": 0}
        for name, fill in grow.items():
            arr = np.full((cap, m), fill, np.int64 if name in ("last_start", "run_n") else np.float64)
            if old:
                arr[:old] = getattr(self, name)
            setattr(self, name, arr)
        for start, (s, c, mx) in list(self._open.items()):
            s2, c2, mx2 = np.zeros((cap, m)), np.zeros((cap, m), np.int64), np.full((cap, m), -np.inf)
            s2[:old], c2[:old], mx2[:old] = s, c, mx
            self._open[start] = (s2, c2, mx2)
        self._cap = cap

    @property
    def open_windows(self) -> int:
        """Windows held in state."""
        return len(self._open)

    def add(self, slots: np.ndarray, metric: np.ndarray, ts_ms: np.ndarray, values: np.ndarray,
            watermark_before: np.ndarray) -> np.ndarray:  # fmt: skip
        """Fold a batch in; return the indices of late rows (their window had closed), which are not aggregated.

        NaN values are ignored (neither aggregated nor late).
        """
        slots = np.asarray(slots, np.int64)
        metric = np.asarray(metric, np.int64)
        ts = np.asarray(ts_ms, np.int64)
        vals = np.asarray(values, np.float64)
        size = np.int64(self.window_ms)
        start = ts // size * size
        thr = sub_ms_array(np.asarray(watermark_before, np.int64), self.allowed_lateness_ms)
        late = start + size <= thr
        ok = ~late & np.isfinite(vals)
        if len(slots) and int(slots.max()) >= self._cap:
            self._alloc(max(2 * self._cap, int(slots.max()) + 1))
        if ok.any():
            cap, m = self._cap, self.m
            st, inv = np.unique(start[ok], return_inverse=True)
            flat = (inv * cap + slots[ok]) * m + metric[ok]
            n = st.shape[0] * cap * m
            v = vals[ok]
            sums = np.bincount(flat, weights=v, minlength=n).reshape(-1, cap, m)
            cnts = np.bincount(flat, minlength=n).reshape(-1, cap, m)
            mx = np.full(n, -np.inf)
            np.maximum.at(mx, flat, v)
            mx = mx.reshape(-1, cap, m)
            for i, s in enumerate(st.tolist()):
                acc = self._open.get(s)
                if acc is None:
                    self._open[s] = (sums[i].copy(), cnts[i].copy(), mx[i].copy())
                else:
                    acc[0][:] += sums[i]
                    acc[1][:] += cnts[i]
                    np.maximum(acc[2], mx[i], out=acc[2])
        return np.flatnonzero(late)

    def advance(self, watermark_ms: int) -> JoinedWindows:
        """Emit (and drop) every window with ``end_ms + allowed_lateness_ms <= watermark_ms``, oldest first."""
        thr = sub_ms(watermark_ms, self.allowed_lateness_ms)
        closed = sorted(s for s in self._open if s + self.window_ms <= thr)
        return JoinedWindows.concat([self._emit(s, *self._open.pop(s)) for s in closed], self.m)

    def _emit(self, start: int, sums: np.ndarray, cnts: np.ndarray, mx: np.ndarray) -> JoinedWindows:
        rows = np.flatnonzero(cnts.sum(axis=1) > 0)
        c = cnts[rows]
        seen = c > 0
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = np.where(seen, sums[rows] / c, np.nan)
            run_mean = self.run_sum[rows] / self.run_n[rows]
        fresh = self.last_start[rows] >= start - self.carry_windows * self.window_ms
        fill = np.where(fresh, self.last_val[rows], run_mean)
        value = np.where(seen, mean, fill)
        mxv = np.where(seen, mx[rows], value)
        missing = ~seen
        imputed = missing & np.isfinite(value)
        prev = np.where(self.last_start[rows] == start - self.window_ms, self.last_val[rows], np.nan)
        delta = mean - prev
        # state for later windows: observed cells only
        r, j = np.nonzero(seen)
        self.last_val[rows[r], j] = mean[r, j]
        self.last_start[rows[r], j] = start
        self.run_sum[rows[r], j] += mean[r, j]
        self.run_n[rows[r], j] += 1
        n = rows.shape[0]
        return JoinedWindows(rows.astype(np.int32), np.full(n, start, np.int64),
                             np.full(n, start + self.window_ms, np.int64), value, mxv, c, missing, imputed,
                             delta)  # fmt: skip


class KOfN:
    """Per host and window: alerting when at least ``k`` of ``n`` voters flag; fire once per episode.

    Args:
        k: votes needed.
        n: number of voters (columns of ``votes``).
        rearm_windows: a host fires again only after this many windows without alerting.
        window_ms: window size (to count windows between alerting rows).
        persist_windows: the vote must hold in this many consecutive windows of the host before the host is
            alerting (2 filters chance coincidences of two unrelated one-window flags; costs one window of delay).

    Examples:
        >>> agg = KOfN(k=2, n=3, rearm_windows=2, window_ms=10)
        >>> votes = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 0]], bool)
        >>> alerting, fire = agg.process(np.zeros(5, np.int32), np.arange(5) * 10, votes)
        >>> alerting.tolist(), fire.tolist()
        ([True, False, True, False, True], [True, False, False, False, False])
    """

    def __init__(self, k: int, n: int, *, rearm_windows: int = 6, window_ms: int = 10_000,
                 persist_windows: int = 1) -> None:  # fmt: skip
        if not 1 <= k <= n:
            raise ValueError(f"`k` must be in 1..n ({n}); got {k!r}")
        if rearm_windows < 1 or persist_windows < 1:
            raise ValueError(f"`rearm_windows` and `persist_windows` must be >= 1; got {rearm_windows!r}, "
                             f"{persist_windows!r}")  # fmt: skip
        self.k, self.n = int(k), int(n)
        self.window_ms = int(window_ms)
        self.rearm_ms = int(rearm_windows) * int(window_ms)
        self.persist = int(persist_windows)
        never = np.iinfo(np.int64).min // 2
        self.last_alert_ms = np.full(64, never, np.int64)
        self.last_hit_ms = np.full(64, never, np.int64)
        self.run = np.zeros(64, np.int64)

    def process(self, slots: np.ndarray, start_ms: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(alerting, fire)`` per row; rows sorted by ``(start_ms, slot)`` (one row per host and window)."""
        if votes.shape[1:] != (self.n,):
            raise ValueError(f"`votes` must have {self.n} columns; got shape {votes.shape}")
        slots = np.asarray(slots, np.int64)
        if len(slots) and int(slots.max()) >= self.last_alert_ms.shape[0]:
            cap = max(2 * self.last_alert_ms.shape[0], int(slots.max()) + 1)
            for name, fill in (("last_alert_ms", np.iinfo(np.int64).min // 2),
                               ("last_hit_ms", np.iinfo(np.int64).min // 2), ("run", 0)):  # fmt: skip
                old = getattr(self, name)
                grown = np.full(cap, fill, np.int64)
                grown[: old.shape[0]] = old
                setattr(self, name, grown)
        hit = votes.sum(axis=1) >= self.k
        alerting = np.zeros(len(slots), bool)
        fire = np.zeros(len(slots), bool)
        if not len(slots):
            return alerting, fire
        bounds = np.flatnonzero(np.r_[True, start_ms[1:] != start_ms[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            idx = a + np.flatnonzero(hit[a:b])
            if not len(idx):
                continue
            s = slots[idx]
            t = np.asarray(start_ms[idx], np.int64)
            self.run[s] = np.where(self.last_hit_ms[s] == t - self.window_ms, self.run[s] + 1, 1)
            self.last_hit_ms[s] = t
            ok = self.run[s] >= self.persist
            idx, s, t = idx[ok], s[ok], t[ok]
            alerting[idx] = True
            fire[idx] = t - self.last_alert_ms[s] > self.rearm_ms
            self.last_alert_ms[s] = t
        return alerting, fire


DEFAULT_PER_METRIC: dict[str, dict[str, float]] = {
    # memory is steady and leaks are slow: a baseline much longer than a leak, so the ramp is not learned
    "mem": {"halflife": 120.0},
    # in and out traffic move together (one excursion would be two votes): a higher bar for each
    "net_in": {"threshold": 6.0},
    "net_out": {"threshold": 6.0},
    # the fill rate is noisy window to window; real fills are far beyond it
    "disk_used": {"threshold": 6.0},
    # steal from a noisy neighbour is moderate: a lower bar (k-of-n absorbs the extra single flags)
    "cpu": {"threshold": 4.0},
}


@dataclass
class ServerConfig:
    """Settings of the server pipeline (validated at construction).

    Args:
        metrics: metric names, in vector column order.
        window_s: tumbling window size, seconds.
        max_delay_s: watermark bound on out-of-orderness, seconds.
        allowed_lateness_s: windows stay open this long after the watermark passes them.
        carry_windows: last-value-carried-forward limit for missing metrics (then the host's running mean).
        detector: ``"ew_zscore"`` or ``"robust_zscore"`` per metric (on the window mean).
        threshold: |z| beyond which a metric flags.
        halflife: EW half-life (windows) / robust window length (windows x 4).
        min_count: windows of history a host needs before a metric is scored.
        per_metric: per-metric overrides of ``threshold``/``halflife``/``min_count``, e.g.
            ``{"cpu": {"threshold": 6}}``; ``None``: :data:`DEFAULT_PER_METRIC` (for the metrics present).
        rate_metrics: metrics scored on their change per window (``delta``) instead of their level: gauges that
            trend and step by design (disk usage grows, then log rotation drops it), where what is anomalous
            is the fill *rate*; ``None``: ``("disk_used",)`` when present.
        protect: EW detectors do not learn flagged windows (a ramp keeps being flagged instead of being learned).
        k: votes needed for an alert (of ``n`` = number of metrics, plus one when ``model_votes``).
        persist_windows: the k-of-n vote must hold in this many consecutive windows (see :class:`KOfN`).
        model_votes: the global model is one more voter (flagging beyond ``model_threshold``).
        model_threshold: calibrated bar of the global model (fraction of normal training windows less odd).
        z_clip: the model's z features are clipped to +-this.
        rearm_windows: windows without alerting before a host fires again.
    """

    metrics: tuple[str, ...] = METRICS
    window_s: float = 10.0
    max_delay_s: float = 5.0
    allowed_lateness_s: float = 0.0
    carry_windows: int = 3
    detector: str = "ew_zscore"
    threshold: float = 4.5
    halflife: float = 15.0
    min_count: int = 30
    per_metric: dict[str, dict[str, float]] | None = None
    rate_metrics: tuple[str, ...] | None = None
    protect: bool = True
    k: int = 2
    persist_windows: int = 2
    model_votes: bool = False
    model_threshold: float = 0.999
    z_clip: float = 20.0
    rearm_windows: int = 10

    def __post_init__(self) -> None:
        if self.per_metric is None:
            self.per_metric = {m: dict(p) for m, p in DEFAULT_PER_METRIC.items() if m in self.metrics}
        if self.rate_metrics is None:
            self.rate_metrics = tuple(m for m in ("disk_used",) if m in self.metrics)
        self.metrics = tuple(self.metrics)
        if self.detector not in ("ew_zscore", "robust_zscore"):
            raise ValueError(f"`detector` must be 'ew_zscore' or 'robust_zscore'; got {self.detector!r}")
        unknown = sorted((set(self.per_metric) | set(self.rate_metrics)) - set(self.metrics))
        if unknown:
            raise ValueError(
                f"`per_metric`/`rate_metrics` name unknown metrics {unknown}; metrics are {list(self.metrics)}"
            )
        n = len(self.metrics) + int(self.model_votes)
        if not 1 <= self.k <= n:
            raise ValueError(f"`k` must be in 1..{n} (the number of voters); got {self.k!r}")
        if self.window_s <= 0 or self.max_delay_s < 0:
            raise ValueError(f"`window_s` must be > 0 and `max_delay_s` >= 0; got {self.window_s}, {self.max_delay_s}")

    @property
    def window_ms(self) -> int:
        """Window size in ms."""
        return int(round(self.window_s * 1000))

    @property
    def n_voters(self) -> int:
        """Voters of the k-of-n (metrics, plus the model when it votes)."""
        return len(self.metrics) + int(self.model_votes)

    def make_detector(self, metric: str) -> Any:
        """The per-metric detector (field ``value``; slot = host)."""
        p = {"threshold": self.threshold, "halflife": self.halflife, "min_count": self.min_count,
             **(self.per_metric or {}).get(metric, {})}  # fmt: skip
        if self.detector == "ew_zscore":
            return EWZScore(field="value", halflife=p["halflife"], threshold=p["threshold"],
                            min_count=int(p["min_count"]), protect=self.protect)  # fmt: skip
        window = max(int(p["halflife"] * 4), int(p["min_count"]) + 1)
        return RobustZScore(field="value", window=window, threshold=p["threshold"], min_count=int(p["min_count"]))


@dataclass(slots=True)
class WindowVerdicts:
    """Joined windows plus every stage's verdict, row-aligned with ``joined``."""

    joined: JoinedWindows
    z: np.ndarray  # signed per-metric z (0 where not ready)
    calibrated: np.ndarray
    flag: np.ndarray
    ready: np.ndarray
    model_score: np.ndarray  # NaN without a model
    model_calibrated: np.ndarray
    model_flag: np.ndarray
    alerting: np.ndarray
    fire: np.ndarray

    def __len__(self) -> int:
        return len(self.joined)

    def votes(self, model_votes: bool = False) -> np.ndarray:
        """Voter matrix (per-metric flags, plus the model's flag as the last column)."""
        return np.column_stack([self.flag, self.model_flag]) if model_votes else self.flag

    @staticmethod
    def concat(parts: list[WindowVerdicts], m: int) -> WindowVerdicts:
        """Rows of consecutive outputs as one."""
        parts = [p for p in parts if len(p)]
        if not parts:
            e2, e1 = np.empty((0, m)), np.empty(0)
            return WindowVerdicts(JoinedWindows.empty(m), e2, e2, e2.astype(bool), e2.astype(bool), e1, e1,
                                  e1.astype(bool), e1.astype(bool), e1.astype(bool))  # fmt: skip
        names = [f for f in WindowVerdicts.__slots__ if f != "joined"]
        return WindowVerdicts(JoinedWindows.concat([p.joined for p in parts], m),
                              *(np.concatenate([getattr(p, f) for p in parts]) for f in names))  # fmt: skip


class ServerPipeline:
    """The streaming server pipeline: join -> per-metric detectors (+ global model) -> k-of-n alerts.

    Args:
        config: :class:`ServerConfig`.
        model: an artifact from :func:`train_global_model` (or ``fit_isolation_forest`` over the ``z_<metric>``
            features), or ``None``.
        host_names: slot -> host name, for alerts (default ``"slot-<n>"``).
    """

    def __init__(self, config: ServerConfig | None = None, model: dict[str, Any] | None = None,
                 host_names: Any = None) -> None:  # fmt: skip
        self.config = cfg = config or ServerConfig()
        self.join = MultiMetricJoin(len(cfg.metrics), window_ms=cfg.window_ms,
                                    allowed_lateness_ms=int(cfg.allowed_lateness_s * 1000),
                                    carry_windows=cfg.carry_windows)  # fmt: skip
        self.detectors = [cfg.make_detector(m) for m in cfg.metrics]
        self._rate = [m in (cfg.rate_metrics or ()) for m in cfg.metrics]
        self.model = None
        if model is not None:
            from vigil.detectors import IsolationForestDetector

            self.model = IsolationForestDetector(model, fields=[f"z_{m}" for m in cfg.metrics],
                                                 threshold=cfg.model_threshold)  # fmt: skip
        elif cfg.model_votes:
            raise ValueError("`model_votes` needs a model")
        self.kofn = KOfN(
            cfg.k,
            cfg.n_voters,
            rearm_windows=cfg.rearm_windows,
            window_ms=cfg.window_ms,
            persist_windows=cfg.persist_windows,
        )
        self.tracker = BoundedOutOfOrderness(int(cfg.max_delay_s * 1000)).build()
        self.host_names = host_names

    def process(self, slots: np.ndarray, metric: np.ndarray, ts_ms: np.ndarray, values: np.ndarray,
                now_ms: int = 0) -> tuple[WindowVerdicts, list[Alert], np.ndarray]:  # fmt: skip
        """One micro-batch (arrival order): ``(verdicts of the windows it closed, fired alerts, late row indices)``."""
        wm_before = self.tracker.on_batch(np.asarray(ts_ms, np.int64), now_ms=now_ms)
        late = self.join.add(slots, metric, ts_ms, values, wm_before)
        v, alerts = self._score(self.join.advance(self.tracker.watermark))
        return v, alerts, late

    def flush(self) -> tuple[WindowVerdicts, list[Alert]]:
        """End of stream: close every open window."""
        return self._score(self.join.advance(MAX_WATERMARK))

    def _score(self, jw: JoinedWindows) -> tuple[WindowVerdicts, list[Alert]]:
        cfg, n, m = self.config, len(jw), len(self.config.metrics)
        z, cal = np.zeros((n, m)), np.zeros((n, m))
        flag, ready = np.zeros((n, m), bool), np.zeros((n, m), bool)
        for j, det in enumerate(self.detectors):
            x = jw.delta[:, j] if self._rate[j] else np.where(jw.missing[:, j], np.nan, jw.value[:, j])
            v = det.process_many(jw.slot, jw.end_ms, {"value": x})
            z[:, j] = v.stats["z"] if "z" in v.stats else v.score
            cal[:, j], flag[:, j], ready[:, j] = v.calibrated, v.flag, v.ready
        ms, mc, mf = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
        if self.model is not None and n:
            zc = np.clip(z, -cfg.z_clip, cfg.z_clip)
            mv = self.model.process_many(jw.slot, jw.end_ms, {f"z_{x}": zc[:, j] for j, x in enumerate(cfg.metrics)})
            ms, mc, mf = mv.score, mv.calibrated, mv.flag
        votes = np.column_stack([flag, mf]) if cfg.model_votes else flag
        alerting, fire = self.kofn.process(jw.slot, jw.start_ms, votes)
        wv = WindowVerdicts(jw, z, cal, flag, ready, ms, mc, mf, alerting, fire)
        return wv, [self._alert(wv, int(i)) for i in np.flatnonzero(fire)]

    def _alert(self, wv: WindowVerdicts, i: int) -> Alert:
        cfg, jw = self.config, wv.joined
        slot = int(jw.slot[i])
        host = str(self.host_names[slot]) if self.host_names is not None else f"slot-{slot}"
        contrib = {
            metric: {"value": float(jw.value[i, j]), "max": float(jw.max[i, j]), "z": round(float(wv.z[i, j]), 3),
                     "calibrated": round(float(wv.calibrated[i, j]), 6), "flag": bool(wv.flag[i, j]),
                     "missing": bool(jw.missing[i, j])}
            for j, metric in enumerate(cfg.metrics)
        }  # fmt: skip
        votes = int(wv.flag[i].sum()) + int(cfg.model_votes and wv.model_flag[i])
        top = sorted((m for m in cfg.metrics if contrib[m]["flag"]), key=lambda m: -abs(contrib[m]["z"]))
        model = "" if np.isnan(wv.model_score[i]) else f"; model {float(wv.model_calibrated[i]):.4f}"
        start = int(jw.start_ms[i])
        return Alert(
            id=alert_id("servers", "k_of_n", host, str(start)), key=host, event_id=str(start), detector="k_of_n",
            score=float(votes), threshold=float(cfg.k), event_ts_ms=int(jw.end_ms[i]), detect_ts_ms=int(jw.end_ms[i]),
            stats={"window_start_ms": start, "window_end_ms": int(jw.end_ms[i]), "k": cfg.k, "n": cfg.n_voters,
                   "votes": votes, "metrics": contrib, "model_score": float(wv.model_score[i]),
                   "model_calibrated": float(wv.model_calibrated[i])},
            severity="critical" if votes >= cfg.k + 1 else "warning",
            message=f"{host}: {votes} of {cfg.n_voters} signals anomalous ("
                    + ", ".join(f"{m} z={contrib[m]['z']:+.1f}" for m in top) + f"){model}",
        )  # fmt: skip


@dataclass
class ServerRun:
    """What :func:`run_server_pipeline` returns."""

    windows: WindowVerdicts
    alerts: list[Alert]
    late: np.ndarray  # row indices (into the input columns) of late samples
    host_names: np.ndarray
    samples: int
    elapsed_s: float

    @property
    def samples_per_s(self) -> float:
        """Throughput of join + detectors + model + aggregator."""
        return self.samples / self.elapsed_s if self.elapsed_s > 0 else float("nan")


def _codes(cols: dict[str, Any], metrics: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Host slots, host names and metric indices (from ``host_id``/``metric_id`` when present)."""
    if "host_id" in cols:
        slots = np.asarray(cols["host_id"], np.int32)
        names = None
        if "host" in cols and len(slots):
            names = np.empty(int(slots.max()) + 1, object)
            first = np.unique(slots, return_index=True)[1]
            names[slots[first]] = np.asarray(cols["host"])[first]
    else:
        names, inv = np.unique(np.asarray(cols["host"]).astype(str), return_inverse=True)
        slots = inv.astype(np.int32)
    if "metric_id" in cols and tuple(metrics) == METRICS:
        metric = np.asarray(cols["metric_id"], np.int64)
    else:
        lookup = {m: i for i, m in enumerate(metrics)}
        uniq, inv = np.unique(np.asarray(cols["metric"]).astype(str), return_inverse=True)
        metric = np.array([lookup.get(u, -1) for u in uniq.tolist()], np.int64)[inv]
    return slots, np.asarray(names if names is not None else [], object), metric


def run_server_pipeline(cols: dict[str, Any], config: ServerConfig | None = None, model: dict[str, Any] | None = None,
                        *, batch_rows: int = 65_536, until_ms: int | None = None) -> ServerRun:  # fmt: skip
    """Run the whole pipeline over long-form columns sorted by arrival, in micro-batches of ``batch_rows``.

    Columns: ``host`` or ``host_id``, ``metric`` or ``metric_id``, ``ts_ms``, ``value``; rows of unknown metrics
    are ignored.

    ``until_ms``: only rows with ``ts_ms < until_ms`` (for training on a prefix). The time measured
    (``elapsed_s``) covers join, detectors, model and aggregator, not the host/metric coding.
    """
    cfg = config or ServerConfig()
    slots, names, metric = _codes(cols, cfg.metrics)
    ts = np.asarray(cols["ts_ms"], np.int64)
    values = np.asarray(cols["value"], np.float64)
    keep = metric >= 0
    if until_ms is not None:
        keep &= ts < until_ms
    rows = np.flatnonzero(keep) if not keep.all() else None
    if rows is not None:
        slots, metric, ts, values = slots[rows], metric[rows], ts[rows], values[rows]
    pipe = ServerPipeline(cfg, model, names if len(names) else None)
    parts, alerts, late = [], [], []
    t0 = time.perf_counter()
    for a in range(0, len(ts), batch_rows):
        b = a + batch_rows
        v, al, lt = pipe.process(slots[a:b], metric[a:b], ts[a:b], values[a:b])
        parts.append(v)
        alerts.extend(al)
        late.append(lt + a)
    v, al = pipe.flush()
    parts.append(v)
    alerts.extend(al)
    elapsed = time.perf_counter() - t0
    late_idx = np.concatenate(late) if late else np.empty(0, np.int64)
    if rows is not None:
        late_idx = rows[late_idx]
    return ServerRun(WindowVerdicts.concat(parts, len(cfg.metrics)), alerts, late_idx, names, len(ts), elapsed)


def train_global_model(cols: dict[str, Any], config: ServerConfig | None = None, *, until_ms: int,
                       n_estimators: int = 100, seed: int = 42) -> dict[str, Any]:  # fmt: skip
    """Offline step: fit the global Isolation Forest on the z-vectors of normal windows before ``until_ms``.

    Runs the join and per-metric detectors (no model) over the prefix, keeps windows whose detectors were
    all ready and (when the columns carry ``label``) with no labelled sample of their host in the window,
    and fits on their clipped signed z-scores (features ``z_<metric>``).
    """
    from vigil.detectors.iforest import fit_isolation_forest

    cfg = config or ServerConfig()
    cfg_plain = ServerConfig(**{**cfg.__dict__, "model_votes": False, "k": 1})
    run = run_server_pipeline(cols, cfg_plain, until_ms=until_ms)
    w = run.windows
    keep = w.ready.all(axis=1)
    if "label" in cols and len(w):
        slots, _, _ = _codes(cols, cfg.metrics)
        ts = np.asarray(cols["ts_ms"], np.int64)
        bad = (np.asarray(cols["label"]) > 0) & (ts < until_ms)
        size = np.int64(cfg.window_ms)
        bad_keys = np.unique(slots[bad].astype(np.int64) * (1 << 40) + ts[bad] // size)
        keys = w.joined.slot.astype(np.int64) * (1 << 40) + w.joined.start_ms // size
        keep &= ~np.isin(keys, bad_keys)
    X = np.clip(w.z[keep], -cfg.z_clip, cfg.z_clip)
    return fit_isolation_forest(X, [f"z_{m}" for m in cfg.metrics], n_estimators=n_estimators, seed=seed)

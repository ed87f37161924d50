"""The server pipeline's settings and its streaming object: join -> per-metric detectors (+ model) -> k-of-n."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.apps.servers.join import JoinedWindows, MultiMetricJoin
from vigil.apps.servers.kofn import KOfN
from vigil.dataflow.outputs import make_alert
from vigil.detectors import EWZScore, RobustZScore
from vigil.eventtime.watermarks import MAX_WATERMARK, BoundedOutOfOrderness
from vigil.io.generators.fleet import METRICS
from vigil.types import Alert, Contribution

DEFAULT_PER_METRIC: dict[str, dict[str, float]] = {
    # memory is steady and leaks are slow: a baseline much longer than a leak, and a lower bar, so a leak is
    # flagged early (then, protected, no longer learned) instead of its ramp being learned (batch jobs leave
    # memory alone, so the lower bar costs few single flags)
    "mem": {"halflife": 120.0, "threshold": 3.5},
    # in and out traffic move together (one excursion would be two votes): a higher bar for each
    "net_in": {"threshold": 6.0},
    "net_out": {"threshold": 6.0},
    # swapping (memory leak) and a filling writer set in over minutes: a lower bar flags the ramp before the
    # baseline learns it
    "disk_io": {"threshold": 4.0},
    # the fill rate is noisy window to window; real fills are far beyond it. Only a faster fill votes: usage
    # dropping (log rotation, clean-up) is by design
    "disk_used": {"threshold": 6.0, "direction": 1},
    # steal from a noisy neighbour is moderate: a lower bar (k-of-n absorbs the extra single flags)
    "cpu": {"threshold": 3.5},
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
            ``{"cpu": {"threshold": 6}}``, and ``direction``: ``1`` when only a rise votes (``z > 0``), ``-1``
            when only a fall does, ``0`` (default) both; ``None``: :data:`DEFAULT_PER_METRIC` (for the
            metrics present).
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
        bad_dir = {m: p["direction"] for m, p in self.per_metric.items() if p.get("direction", 0) not in (-1, 0, 1)}
        if bad_dir:
            raise ValueError(f"`per_metric` direction must be -1, 0 or 1; got {bad_dir}")
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
            features); or a detector over the ``z_<metric>`` fields such as
            :class:`~vigil.models.serving.RegistryModelDetector` (the registry's promoted version, followed
            live; while it can't serve, the model neither scores nor votes and the per-metric detectors
            carry on); or ``None``.
        host_names: slot -> host name, for alerts (default ``"slot-<n>"``).
        alert_ns: the pipeline and step names the alerts' ids are made with (a step in a pipeline sets them).
    """

    def __init__(self, config: ServerConfig | None = None, model: dict[str, Any] | None = None,
                 host_names: Any = None, alert_ns: tuple[str, str] = ("servers", "k_of_n")) -> None:  # fmt: skip
        self.config = cfg = config or ServerConfig()
        self.join = MultiMetricJoin(len(cfg.metrics), window_ms=cfg.window_ms,
                                    allowed_lateness_ms=int(cfg.allowed_lateness_s * 1000),
                                    carry_windows=cfg.carry_windows)  # fmt: skip
        self.detectors = [cfg.make_detector(m) for m in cfg.metrics]
        self._rate = [m in (cfg.rate_metrics or ()) for m in cfg.metrics]
        self._direction = [int((cfg.per_metric or {}).get(m, {}).get("direction", 0)) for m in cfg.metrics]
        self.model: Any = None
        if isinstance(model, dict):
            from vigil.detectors import IsolationForestDetector

            self.model = IsolationForestDetector(model, fields=[f"z_{m}" for m in cfg.metrics],
                                                 threshold=cfg.model_threshold)  # fmt: skip
        elif model is not None:  # a served model, e.g. RegistryModelDetector(fields=z_<metric>, fallback=[])
            self.model = model
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
        self.alert_ns = alert_ns

    def process(self, slots: np.ndarray, metric: np.ndarray, ts_ms: np.ndarray, values: np.ndarray,
                now_ms: int = 0) -> tuple[WindowVerdicts, list[Alert], np.ndarray]:  # fmt: skip
        """One micro-batch (arrival order): ``(verdicts of the windows it closed, fired alerts, late row indices)``."""
        wm_before = self.tracker.on_batch(np.asarray(ts_ms, np.int64), now_ms=now_ms)
        late = self.join.add(slots, metric, ts_ms, values, wm_before)
        v, alerts = self._score(self.join.advance(self.tracker.watermark))
        return v, alerts, late

    def health(self) -> dict[str, Any] | None:
        """The served model's health (``None`` without a model or for a fixed artifact)."""
        h = getattr(self.model, "health", None)
        return h() if h is not None else None

    def snapshot(self) -> dict[str, Any]:
        """Plain data: the join, every per-metric detector, the model's state and the aggregator."""
        return {"join": self.join.snapshot(), "detectors": [d.snapshot() for d in self.detectors],
                "model": self.model.snapshot() if self.model is not None else None, "kofn": self.kofn.snapshot(),
                "watermark": self.tracker.snapshot()}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output into a pipeline built with the same config."""
        self.join.restore(state["join"])
        self.detectors = [type(d).from_snapshot(d.params(), s)
                          for d, s in zip(self.detectors, state["detectors"], strict=True)]  # fmt: skip
        if self.model is not None and state.get("model") is not None:
            self.model = type(self.model).from_snapshot(self.model.params(), state["model"])
        self.kofn.restore(state["kofn"])
        self.tracker.restore(state["watermark"])

    def reset_slots(self, slots: np.ndarray) -> None:
        """Forget hosts whose slots the engine frees (key TTL) and may reuse."""
        for d in self.detectors:
            d.reset_slots(slots)
        self.join.reset_slots(slots)
        self.kofn.reset_slots(slots)

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
            if self._direction[j]:  # one-sided: a deviation the other way does not vote
                flag[:, j] &= np.sign(z[:, j]) == self._direction[j]
        ms, mc, mf = np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool)
        if self.model is not None and n:
            zc = np.clip(z, -cfg.z_clip, cfg.z_clip)
            mv = self.model.process_many(jw.slot, jw.end_ms, {f"z_{x}": zc[:, j] for j, x in enumerate(cfg.metrics)})
            served = mv.ready & ~(mv.stats.get("model_fallback", np.zeros(n)) >= 0.5)
            ms = np.where(served, mv.stats.get("raw_score", mv.score), np.nan)
            mc = np.where(served, mv.calibrated, np.nan)
            mf = mv.flag & served
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
        contributions = sorted((Contribution(m, c["z"], c["value"], flag=bool(c["flag"])) for m, c in contrib.items()
                                if not c["missing"]), key=lambda c: -abs(c.score))  # fmt: skip
        pipeline, step = self.alert_ns
        return make_alert(
            pipeline, step, host, str(start), detector="k_of_n", contributions=contributions,
            score=float(votes), threshold=float(cfg.k), event_ts_ms=int(jw.end_ms[i]), detect_ts_ms=int(jw.end_ms[i]),
            stats={"window_start_ms": start, "window_end_ms": int(jw.end_ms[i]), "k": cfg.k, "n": cfg.n_voters,
                   "votes": votes, "metrics": contrib, "model_score": float(wv.model_score[i]),
                   "model_calibrated": float(wv.model_calibrated[i])},
            severity="critical" if votes >= cfg.k + 1 else "warning",
            message=f"{host}: {votes} of {cfg.n_voters} signals anomalous ("
                    + ", ".join(f"{m} z={contrib[m]['z']:+.1f}" for m in top) + f"){model}",
        )  # fmt: skip

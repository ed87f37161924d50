"""The services app's detector: spans in, per-bin verdicts per service and edge out, each with its deciding layer.

:class:`ServicesDetector` chains :class:`~.red.RedWindows` (RED bins and the service graph), L1
(:class:`~.layers.SloLayer`), L2 (:class:`~.layers.ResidualLayer`), L3 (:class:`~.gnn.GnnServer`, one batched
ONNX Runtime call per :meth:`advance` over every bin it closes) and the :class:`~.orchestrator.Orchestrator`.
Each layer's time is measured with the injected ``clock`` (seconds, monotonic) and held to its budget.

:meth:`advance` also returns the verdicts of the ablations (L1 only, L1+L2) next to the full one, so one run
measures all three. Alerts are episodes: an entity alerts when it turns anomalous after ``rearm_bins`` bins
without being anomalous.

State (:meth:`snapshot` / :meth:`restore`): the open RED bins and the graph, every layer's baselines
(burn-rate rings and learned thresholds, the Holt-Winters states), the orchestrator's traffic, health and
counters, and the alert episodes; plain data, codec-encodable. The GNN's weights are the model file, not state.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.apps.services.gnn import GnnServer, GnnUnavailable, adjacency, node_features
from vigil.apps.services.layers import ResidualLayer, SloLayer, SloTargets
from vigil.apps.services.orchestrator import LAYERS, Orchestrator, ServicesConfig
from vigil.apps.services.red import EDGE, ClosedBin, RedWindows

__all__ = ["Alert", "BinVerdicts", "ServicesDetector"]

ABLATIONS = {"L1": 1, "L1+L2": 2, "L1+L2+L3": 3}


@dataclass
class Alert:
    """An alert episode's start: bin end (event time), entity, deciding layer, ablation level."""

    ts_ms: int
    entity: str
    layer: str
    level: str


@dataclass
class BinVerdicts:
    """One closed bin: per entity the verdict and the deciding layer (full strategy), plus the GNN's scores."""

    t1_ms: int
    entities: list[str]
    anomalous: np.ndarray
    layer: list[str]
    gnn: dict[str, float] | None
    alerts: list[Alert] = field(default_factory=list)
    features: np.ndarray | None = None  # [N, F] node features (training data)
    services: list[str] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)


class ServicesDetector:
    """Spans → RED bins → L1/L2/L3 → orchestrated verdicts (module docstring)."""

    def __init__(self, cfg: ServicesConfig | None = None, *, clock: Callable[[], float] = time.perf_counter,
                 keep_features: bool = False) -> None:  # fmt: skip
        self.cfg = cfg or ServicesConfig()
        self.clock = clock
        self.keep_features = keep_features
        self.red = RedWindows(self.cfg.bin_ms)
        self.l1 = SloLayer()
        self.l2 = ResidualLayer()
        self.gnn: GnnServer | None = None
        reason = "missing"
        if self.cfg.gnn_model:
            try:
                self.gnn = GnnServer(self.cfg.gnn_model)
            except GnnUnavailable:
                reason = "unloadable"
        self.orch = Orchestrator(self.cfg, l3_available=self.gnn is not None, l3_reason=reason)
        self.last_anomalous: dict[tuple[str, str], int] = {}  # (level, entity) -> last anomalous bin end
        # for the console (not state: they start again after a restore): per entity the layer that decided its
        # last bin and how many bins each layer decided; the end of the last bin judged
        self.last_layer: dict[str, str] = {}
        self.decided_by: dict[str, dict[str, int]] = {}
        self.last_t1_ms: int | None = None

    def _targets(self, entities: list[str]) -> SloTargets:
        svc = [e.split(EDGE, 1)[1] if EDGE in e else e for e in entities]  # an edge is held to its callee's SLO
        return SloTargets(np.array([self.cfg.target_of(s) for s in svc]),
                          np.array([self.cfg.setting(e, "latency_ms") if EDGE not in e else np.nan for e in entities]),
                          np.array([self.cfg.setting(e, "sla_p99_ms") if EDGE not in e else np.inf for e in entities]),
                          np.array([self.cfg.setting(e, "sla_error_ratio") if EDGE not in e else np.inf
                                    for e in entities]))  # fmt: skip

    def add(self, spans: Mapping[str, Any]) -> None:
        """Fold a batch of span columns (the otlp contract, see :mod:`.red`)."""
        self.red.add(spans)

    def advance(self, watermark_ms: int) -> list[BinVerdicts]:
        """Close the bins the watermark passed and judge them."""
        bins = self.red.advance(watermark_ms)
        if not bins:
            return []
        staged = []
        for cb in bins:
            t = self.clock()
            held = self._held(cb)
            r1 = self.l1.step(cb, self._targets(cb.entities), held)
            t1 = self.clock()
            r2 = self.l2.step(cb, held)
            t2 = self.clock()
            self.orch.timed("L1", (t1 - t) * 1000.0)
            self.orch.timed("L2", (t2 - t1) * 1000.0)
            services = [e for e in cb.entities if EDGE not in e]
            edges = [tuple(e.split(EDGE, 1)) for e in cb.entities if EDGE in e]
            x = node_features(cb.entities, services, cb.count, cb.errors, r1["bad"], r1["burn"], r2["lat_z"],
                              r2["rate_z"])  # fmt: skip
            staged.append((cb, r1, r2, services, edges, x))
        scores = self._score_l3(staged)
        out = []
        for (cb, r1, r2, services, edges, x), sc in zip(staged, scores, strict=True):
            for j, e in enumerate(cb.entities):
                if EDGE not in e:
                    self.orch.observe_traffic(e, float(cb.count[j]), self.cfg.bin_ms / 1000.0)
            l3 = None
            if sc is not None:
                l3 = dict(zip(services, sc.tolist(), strict=True))
                self.orch.l3_health(float(np.mean(sc >= self.cfg.gnn_threshold)) if len(sc) else 0.0)
            bv = BinVerdicts(cb.t1_ms, cb.entities, np.zeros(0, bool), [], l3)
            quiet = np.array([self.orch.quiet(e.split(EDGE, 1)[-1]) for e in cb.entities], bool)
            l1 = r1["flag"] | (r1["shift"] & quiet)
            for level, k in ABLATIONS.items():
                anom, who = self.orch.decide(cb.entities, l1, r2["flag"], l3, k, count=(k == 3))
                if k == 3:
                    bv.anomalous, bv.layer = anom, who
                    for e, layer in zip(cb.entities, who, strict=True):
                        self.last_layer[e] = layer
                        per = self.decided_by.setdefault(e, {})
                        per[layer] = per.get(layer, 0) + 1
                    self.last_t1_ms = cb.t1_ms
                bv.alerts += self._episodes(cb, anom, who, level)
            if self.keep_features:
                bv.features, bv.services, bv.edges = x, services, edges  # type: ignore[assignment]
            self.orch.tick()
            out.append(bv)
        return out

    def _held(self, cb: ClosedBin) -> np.ndarray:
        """Entities in a deploy's warm-up hold: the service and the edges into it."""
        fresh = self.red.deployed_since(cb.t1_ms - int(self.cfg.deploy_hold_s * 1000))
        if not fresh:
            return np.zeros(len(cb.entities), bool)
        return np.array([(e.split(EDGE, 1)[-1] in fresh) for e in cb.entities])

    def _score_l3(self, staged: list[Any]) -> list[np.ndarray | None]:
        if self.gnn is None or not self.orch.up("L3"):
            return [None] * len(staged)
        t = self.clock()
        # one batched call: snapshots of equal size stack; the graph is the edges seen in each bin
        N = max(len(s[3]) for s in staged)
        B = len(staged)
        F = staged[0][5].shape[1]
        X = np.zeros((B, N, F))
        Ai = np.zeros((B, N, N))
        Ao = np.zeros((B, N, N))
        graph = [(a, b) for (a, b) in self.red.graph.edges]
        for i, (_, _, _, services, _, x) in enumerate(staged):
            n = len(services)
            X[i, :n] = x
            Ai[i, :n, :n], Ao[i, :n, :n] = adjacency(services, graph)
        try:
            S = self.gnn.score(X, Ai, Ao)
        except Exception:  # noqa: BLE001 - a failing model falls back, it never stops the pipeline
            self.orch.down["L3"] = "unhealthy"
            self.orch._fallback("L3", "error")
            return [None] * len(staged)
        self.orch.timed("L3", (self.clock() - t) * 1000.0 / B)
        return [S[i, : len(s[3])] for i, s in enumerate(staged)]

    def _episodes(self, cb: ClosedBin, anom: np.ndarray, who: list[str], level: str) -> list[Alert]:
        out = []
        rearm = self.cfg.rearm_bins * self.cfg.bin_ms
        for j in np.flatnonzero(anom).tolist():
            key = (level, cb.entities[j])
            last = self.last_anomalous.get(key)
            if last is None or cb.t1_ms - last > rearm:
                out.append(Alert(cb.t1_ms, cb.entities[j], who[j], level))
            self.last_anomalous[key] = cb.t1_ms
        return out

    @property
    def layers_up(self) -> tuple[str, ...]:
        """The layers in service."""
        return tuple(x for x in LAYERS if self.orch.up(x))

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        return {"version": 1, "red": self.red.snapshot(), "l1": self.l1.snapshot(), "l2": self.l2.snapshot(),
                "orch": self.orch.snapshot(),
                "episodes": [[lv, e, t] for (lv, e), t in self.last_anomalous.items()]}  # fmt: skip

    def restore(self, s: dict[str, Any]) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.red.restore(s["red"])
        self.l1.restore(s["l1"])
        self.l2.restore(s["l2"])
        self.orch.restore(s["orch"], l3_available=self.gnn is not None)
        self.last_anomalous = {(str(lv), str(e)): int(t) for lv, e, t in s["episodes"]}

"""The model orchestrator: which layers judge each service, how long each may take, and what wins.

**Strategy per service** (:meth:`Orchestrator.strategy`): the layers its criticality tier declares
(``tiers.<tier>.layers``, YAML), minus L2 and L3 while its observed traffic (EW requests/min) is below
``min_rate_per_min`` — a p95 over three requests means nothing, so a quiet service gets the count-aware L1 rules
only — minus any layer that is down. Edges follow their caller's strategy (never L3: the GNN scores services).

**Health and fallback.** A layer is *down* when its model is missing or unloadable (L3 without a model file),
unhealthy (L3 *drift*: it calls more than ``drift_share`` of the services anomalous on average over the last
``drift_bins`` bins; it then stays down), or over budget: its measured time per bin (EW, from the injected
clock) above ``budgets_ms[layer]`` for ``over_budget_bins`` bins in a row; an over-budget layer is retried after
``cooldown_bins``. Every fallback is counted with its reason.

**Fusion** (:meth:`Orchestrator.decide`), per entity and bin, the layers in the strategy:

1. an L1 flag (burn rate, SLA) is an anomaly, decided by L1;
2. an L2 flag is an anomaly decided by L2 — unless L3 is in the strategy and scores the service (for an edge:
   both ends) below ``veto``: then it is normal, decided by L3 (the neighbours explain it);
3. an L3 score at or above ``threshold`` two bins in a row is an anomaly decided by L3;
4. otherwise normal, decided by the highest layer that looked.

Decisions (per deciding layer and outcome) and fallbacks (per layer and reason) are Prometheus-style counters
(:meth:`Orchestrator.metrics`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vigil.apps.services.red import EDGE
from vigil.errors import ConfigError

__all__ = ["LAYERS", "Orchestrator", "ServicesConfig", "load_config"]

LAYERS = ("L1", "L2", "L3")
_DEFAULT_TIERS: dict[str, dict[str, Any]] = {
    "critical": {"slo": 0.999, "layers": ["L1", "L2", "L3"]},
    "standard": {"slo": 0.995, "layers": ["L1", "L2", "L3"]},
    "best_effort": {"slo": 0.99, "layers": ["L1"]},
}


@dataclass
class ServicesConfig:
    """The services app's settings (the YAML of :func:`load_config`)."""

    bin_ms: int = 10_000
    tiers: dict[str, dict[str, Any]] = field(default_factory=lambda: {k: dict(v) for k, v in _DEFAULT_TIERS.items()})
    default_tier: str = "standard"
    services: dict[str, dict[str, Any]] = field(default_factory=dict)
    min_rate_per_min: float = 30.0
    budgets_ms: dict[str, float] = field(default_factory=lambda: {"L1": 50.0, "L2": 50.0, "L3": 100.0})
    over_budget_bins: int = 3
    cooldown_bins: int = 60
    gnn_model: str | None = None
    gnn_threshold: float = 0.5
    gnn_veto: float = 0.02
    drift_share: float = 0.3
    drift_bins: int = 60
    rearm_bins: int = 18
    deploy_hold_s: float = 240.0

    def tier_of(self, service: str) -> str:
        """The service's tier (the default tier when not declared)."""
        return str(self.services.get(service, {}).get("tier", self.default_tier))

    def target_of(self, service: str) -> float:
        """The service's SLO target."""
        s = self.services.get(service, {})
        return float(s.get("slo", self.tiers[self.tier_of(service)].get("slo", 0.995)))

    def setting(self, service: str, name: str) -> float:
        """A per-service number (``latency_ms``, ``sla_p99_ms``, ``sla_error_ratio``); NaN/inf when unset."""
        s = self.services.get(service, {})
        v = s.get(name, self.tiers[self.tier_of(service)].get(name))
        if v is None or v == "auto":
            return np.nan if name == "latency_ms" else np.inf
        return float(v)


def load_config(doc: dict[str, Any]) -> ServicesConfig:
    """Validate a services config document (errors name the field and value)."""
    from vigil.types import parse_duration_ms

    known = {"bin", "tiers", "default_tier", "services", "min_rate_per_min", "budgets_ms", "over_budget_bins",
             "cooldown_bins", "gnn", "drift_share", "drift_bins", "rearm_bins", "deploy_hold_s"}  # fmt: skip
    for k in doc:
        if k not in known:
            raise ConfigError("is not a setting of the services app", field=k, value=doc[k],
                              hint=f"settings: {', '.join(sorted(known))}")  # fmt: skip
    cfg = ServicesConfig()
    if "bin" in doc:
        cfg.bin_ms = int(parse_duration_ms(doc["bin"]))
    if "tiers" in doc:
        cfg.tiers = {str(k): dict(v or {}) for k, v in doc["tiers"].items()}
    for name, t in cfg.tiers.items():
        bad = [layer for layer in t.get("layers", LAYERS) if layer not in LAYERS]
        if bad:
            raise ConfigError("names an unknown layer", field=f"tiers.{name}.layers", value=bad,
                              hint="layers are L1, L2, L3")  # fmt: skip
        slo = float(t.get("slo", 0.995))
        if not 0.0 < slo < 1.0:
            raise ConfigError("must be in (0, 1), e.g. 0.999", field=f"tiers.{name}.slo", value=slo)
    cfg.default_tier = str(doc.get("default_tier", cfg.default_tier))
    cfg.services = {str(k): dict(v or {}) for k, v in (doc.get("services") or {}).items()}
    for name, s in [("default_tier", {"tier": cfg.default_tier}), *cfg.services.items()]:
        tier = s.get("tier", cfg.default_tier)
        if tier not in cfg.tiers:
            raise ConfigError("names an unknown tier", field=f"services.{name}.tier" if name != "default_tier"
                              else "default_tier", value=tier, hint=f"tiers: {', '.join(cfg.tiers)}")  # fmt: skip
    for k in (
        "min_rate_per_min",
        "over_budget_bins",
        "cooldown_bins",
        "drift_share",
        "drift_bins",
        "rearm_bins",
        "deploy_hold_s",
    ):
        if k in doc:
            setattr(cfg, k, type(getattr(cfg, k))(doc[k]))
    if "budgets_ms" in doc:
        cfg.budgets_ms.update({str(k): float(v) for k, v in doc["budgets_ms"].items()})
    g = doc.get("gnn") or {}
    cfg.gnn_model = g.get("model", cfg.gnn_model)
    cfg.gnn_threshold = float(g.get("threshold", cfg.gnn_threshold))
    cfg.gnn_veto = float(g.get("veto", cfg.gnn_veto))
    return cfg


class Orchestrator:
    """Per-service strategies, layer health and budgets, and the fused verdicts (module docstring)."""

    def __init__(self, cfg: ServicesConfig, *, l3_available: bool, l3_reason: str = "missing") -> None:
        self.cfg = cfg
        self.down: dict[str, str] = {} if l3_available else {"L3": l3_reason}
        self.ew_ms = dict.fromkeys(LAYERS, 0.0)
        self.over = dict.fromkeys(LAYERS, 0)
        self.cool = dict.fromkeys(LAYERS, 0)
        self.rate_per_min: dict[str, float] = {}
        self.timings: dict[str, int] = {}
        self.l3_share: list[float] = []
        self.l3_prev: dict[str, bool] = {}
        self.decisions: dict[tuple[str, str], int] = {}
        self.fallbacks: dict[tuple[str, str], int] = {}
        if not l3_available:
            self.fallbacks[("L3", l3_reason)] = 1

    # ---- health ----

    def up(self, layer: str) -> bool:
        """Whether ``layer`` is in service."""
        return layer not in self.down

    def timed(self, layer: str, ms: float) -> None:
        """Account one bin's time of ``layer``; over budget ``over_budget_bins`` times in a row takes it down."""
        self.timings[layer] = self.timings.get(layer, 0) + 1
        if self.timings[layer] <= 5:  # the first calls load and compile kernels: not the layer's cost
            return
        ew = self.ew_ms[layer] = 0.7 * self.ew_ms[layer] + 0.3 * ms if self.ew_ms[layer] else ms
        over = ew > self.cfg.budgets_ms.get(layer, np.inf)
        self.over[layer] = self.over[layer] + 1 if over else 0
        if self.over[layer] >= self.cfg.over_budget_bins and layer != "L1" and self.up(layer):
            self.down[layer] = "over_budget"
            self.cool[layer] = self.cfg.cooldown_bins
            self._fallback(layer, "over_budget")

    def tick(self) -> None:
        """One bin passed: over-budget layers cool down and come back."""
        for layer, reason in list(self.down.items()):
            if reason == "over_budget":
                self.cool[layer] -= 1
                if self.cool[layer] <= 0:
                    del self.down[layer]
                    self.over[layer] = 0
                    self.ew_ms[layer] = 0.0

    def l3_health(self, share_flagged: float) -> None:
        """Drift check: the GNN calling too much of the graph anomalous for too long is unhealthy."""
        self.l3_share.append(share_flagged)
        self.l3_share = self.l3_share[-self.cfg.drift_bins :]
        if len(self.l3_share) >= self.cfg.drift_bins and np.mean(self.l3_share) > self.cfg.drift_share:
            if self.up("L3"):
                self.down["L3"] = "drift"
                self._fallback("L3", "drift")

    def _fallback(self, layer: str, reason: str) -> None:
        self.fallbacks[(layer, reason)] = self.fallbacks.get((layer, reason), 0) + 1

    # ---- strategy ----

    def observe_traffic(self, service: str, requests: float, bin_s: float) -> None:
        """Fold one bin's requests into the service's EW rate."""
        r = requests * 60.0 / bin_s
        prev = self.rate_per_min.get(service)
        self.rate_per_min[service] = r if prev is None else prev + 0.05 * (r - prev)

    def quiet(self, service: str) -> bool:
        """Too little traffic for percentiles and forecasts: the count-aware L1 rules only."""
        return self.rate_per_min.get(service, 0.0) < self.cfg.min_rate_per_min

    def strategy(self, service: str, max_layers: int = 3) -> tuple[str, ...]:
        """The layers that judge ``service`` now (module docstring)."""
        layers = [x for x in self.cfg.tiers[self.cfg.tier_of(service)].get("layers", LAYERS) if x in LAYERS]
        layers = [x for x in layers if LAYERS.index(x) < max_layers and self.up(x)]
        if self.quiet(service):
            layers = [x for x in layers if x == "L1"]
        if "L1" not in layers:
            layers.insert(0, "L1")
        return tuple(layers)

    # ---- fusion ----

    def decide(self, entities: list[str], l1: np.ndarray, l2: np.ndarray, l3: dict[str, float] | None,
               max_layers: int = 3, count: bool = True) -> tuple[np.ndarray, list[str]]:  # fmt: skip
        """Anomalous per entity and the deciding layer (module docstring)."""
        out = np.zeros(len(entities), bool)
        who: list[str] = []
        prev = self.l3_prev if count else dict(self.l3_prev)
        for j, e in enumerate(entities):
            svc, peer = (e.split(EDGE, 1) + [""])[:2] if EDGE in e else (e, "")
            strat = self.strategy(svc, max_layers)
            use3 = "L3" in strat and l3 is not None and EDGE not in e and svc in l3
            veto3 = "L3" in strat and l3 is not None and svc in l3
            layer = strat[-1] if EDGE not in e else [x for x in strat if x != "L3"][-1]
            if l1[j]:
                out[j], layer = True, "L1"
            elif "L2" in strat and l2[j]:
                low = veto3 and l3 is not None and l3[svc] < self.cfg.gnn_veto and l3.get(peer, 0.0) < self.cfg.gnn_veto
                out[j], layer = (False, "L3") if low else (True, "L2")
            elif use3 and l3 is not None:
                hot = l3[svc] >= self.cfg.gnn_threshold
                if hot and prev.get(svc, False):
                    out[j], layer = True, "L3"
                prev[svc] = hot
            who.append(layer)
            if count:
                key = (layer, "anomalous" if out[j] else "normal")
                self.decisions[key] = self.decisions.get(key, 0) + 1
        return out, who

    def metrics(self) -> dict[str, Any]:
        """The counters, the layers down and the per-layer EW seconds per bin.

        ``vigil_services_decisions_total{layer,verdict}``, ``vigil_services_fallbacks_total{layer,reason}``.
        """
        return {
            "vigil_services_decisions_total": [{"layer": k[0], "verdict": k[1], "value": v}
                                               for k, v in sorted(self.decisions.items())],
            "vigil_services_fallbacks_total": [{"layer": k[0], "reason": k[1], "value": v}
                                               for k, v in sorted(self.fallbacks.items())],
            "vigil_services_layer_seconds": {k: round(v / 1000.0, 6) for k, v in self.ew_ms.items()},
            "down": dict(self.down),
        }  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """State as plain data."""
        return {"down": dict(self.down), "ew_ms": dict(self.ew_ms), "over": dict(self.over), "cool": dict(self.cool),
                "rate_per_min": dict(self.rate_per_min), "l3_share": list(self.l3_share),
                "l3_prev": dict(self.l3_prev),
                "decisions": [[*k, v] for k, v in self.decisions.items()],
                "fallbacks": [[*k, v] for k, v in self.fallbacks.items()]}  # fmt: skip

    def restore(self, s: dict[str, Any], *, l3_available: bool) -> None:
        """Restore :meth:`snapshot`'s state."""
        self.down = {k: v for k, v in s["down"].items() if k != "L3" or v != "missing"}
        if not l3_available:
            self.down["L3"] = "missing"
        self.ew_ms, self.over, self.cool = dict(s["ew_ms"]), dict(s["over"]), dict(s["cool"])
        self.rate_per_min = {str(k): float(v) for k, v in s["rate_per_min"].items()}
        self.l3_share = [float(x) for x in s["l3_share"]]
        self.l3_prev = {str(k): bool(v) for k, v in s["l3_prev"].items()}
        self.decisions = {(str(a), str(b)): int(v) for a, b, v in s["decisions"]}
        self.fallbacks = {(str(a), str(b)): int(v) for a, b, v in s["fallbacks"]}

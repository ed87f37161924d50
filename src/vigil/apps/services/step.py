"""The ``services`` step kind: the services app on the dataflow seam, in any runtime that drives steps.

In a pipeline file (after an ``otlp`` source with ``signal: traces``)::

    steps:
      - name: shop
        services:                      # the app's settings (orchestrator.load_config): tiers, SLOs, budgets
          services: {frontend: {tier: critical, sla_p99_ms: 5000}, batch-scheduler: {tier: best_effort}}
          gnn: {model: ../models/services-gnn.onnx}

:class:`ServicesStep` reads the span columns of the otlp contract from the batch — ``cols`` ``duration_ms`` and
``error``, ``extra`` ``service``, ``peer``, ``kind`` (and ``version`` when present), event time = the span's end
— so the row key is irrelevant (the step keys by service and edge itself, in the RED windows). On each
watermark it closes the RED bins and sends one alert per new episode (key = the service or ``a->b`` edge,
``detector`` = the deciding layer) to the alert sinks. Its state is the detector's snapshot; the service graph
and every baseline survive a restart from a checkpoint.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, ConfigDict

from vigil.apps.services.detector import ServicesDetector
from vigil.apps.services.orchestrator import load_config
from vigil.apps.services.red import EDGE
from vigil.dataflow.kinds import BuildContext, StepKind
from vigil.dataflow.outputs import Outputs, make_alert
from vigil.dataflow.steps import params_hash
from vigil.types import Batch, BoolArray, Int32Array, Int64Array

__all__ = ["STEP", "ServicesStep", "ServicesStepSpec"]


class ServicesStep:
    """The services detector as a dataflow step (module docstring)."""

    kind: ClassVar[str] = "services"

    def __init__(self, name: str, settings: dict[str, Any] | None = None, *, base_dir: str = ".") -> None:
        self.name = name
        self.settings = dict(settings or {})
        cfg = load_config(self.settings)
        if cfg.gnn_model and not cfg.gnn_model.startswith("/"):
            cfg.gnn_model = f"{base_dir}/{cfg.gnn_model}"
        self.det = ServicesDetector(cfg)
        self.fields = ("duration_ms", "error")

    def open(self) -> None:
        """Nothing to load ahead (the GNN loaded when built)."""

    def on_batch(self, batch: Batch, keys: np.ndarray, wm_rows: Int64Array, out: Outputs) -> None:
        """Fold the spans into the RED windows (spans for closed bins are counted late there)."""
        ex = batch.extra
        spans = {"ts_ms": batch.ts_ms, "duration_ms": batch.cols["duration_ms"], "error": batch.cols["error"],
                 "service": ex["service"], "peer": ex["peer"], "kind": ex["kind"]}  # fmt: skip
        if "version" in ex:
            spans["version"] = ex["version"]
        self.det.add(spans)

    def on_late(self, late: Batch, keys: np.ndarray, behind_ms: Int64Array, out: Outputs,
                expired: BoolArray) -> None:  # fmt: skip
        """Spans behind the watermark: their bins are closed; counted by the RED windows."""
        self.det.red.late += len(late)

    def on_watermark(self, watermark_ms: int, out: Outputs) -> None:
        """Judge the bins the watermark closed; new episodes become alerts."""
        alerts = []
        for bv in self.det.advance(watermark_ms):
            row = {e: j for j, e in enumerate(bv.entities)}
            for a in bv.alerts:
                if a.level != "L1+L2+L3":
                    continue
                score = 1.0 if bv.gnn is None else float(bv.gnn.get(a.entity, 1.0))
                alerts.append(make_alert(out.pipeline, self.name, a.entity, f"{a.entity}@{a.ts_ms}", score=score,
                                         threshold=0.5, event_ts_ms=a.ts_ms, detect_ts_ms=out.now_ns() // 1_000_000,
                                         detector=f"services-{a.layer}", labels={"layer": a.layer},
                                         stats={"layer": a.layer, "row": row[a.entity]},
                                         message=f"{a.entity}: anomalous (decided by {a.layer})"))  # fmt: skip
        out.alerts(self.name, alerts)

    def graph_json(self) -> dict[str, Any]:
        """The service graph as the console draws it, with the orchestrator's view of each service.

        Nodes: ``anomalous`` (an alert episode of the full strategy in the last two bins), ``layer`` (the layer
        that decided its last bin), ``decided_by`` (bins per deciding layer since the start), ``strategy`` (the
        layers that judge it now), ``tier`` and the EW ``rate_per_min``. Edges: ``rate`` (EW calls/s: the traffic
        weight), ``anomalous``, ``layer``. ``orchestrator``: the decision and fallback counters
        (``vigil_services_decisions_total``, ``vigil_services_fallbacks_total``) and the layers down.
        """
        d = self.det
        last = d.last_t1_ms if d.last_t1_ms is not None else -(2**62)
        since = last - 2 * d.cfg.bin_ms

        def hot(entity: str) -> bool:
            return d.last_anomalous.get(("L1+L2+L3", entity), -(2**63)) >= since

        edges = d.red.graph.to_json()["edges"]
        names = {e for e in d.red.entities if EDGE not in e} | {x for e in edges for x in (e["caller"], e["callee"])}
        nodes = [{"id": n, "anomalous": hot(n), "layer": d.last_layer.get(n),
                  "decided_by": dict(d.decided_by.get(n, {})), "strategy": list(d.orch.strategy(n)),
                  "tier": d.cfg.tier_of(n), "rate_per_min": d.orch.rate_per_min.get(n)}
                 for n in sorted(names)]  # fmt: skip
        out_edges = [{"source": e["caller"], "target": e["callee"], "rate": e["rate"], "first_seen_ms": e["first_ms"],
                      "last_seen_ms": e["last_ms"], "anomalous": hot(f"{e['caller']}{EDGE}{e['callee']}"),
                      "layer": d.last_layer.get(f"{e['caller']}{EDGE}{e['callee']}")} for e in edges]  # fmt: skip
        m = d.orch.metrics()
        return {"nodes": nodes, "edges": out_edges, "last_bin_ms": d.last_t1_ms,
                "orchestrator": {"decisions": m["vigil_services_decisions_total"],
                                 "fallbacks": m["vigil_services_fallbacks_total"], "down": m["down"]}}  # fmt: skip

    def reset_slots(self, slots: Int32Array) -> None:
        """Nothing is kept per row key (the step keys by service and edge)."""

    def snapshot(self) -> dict[str, Any]:
        """The detector's state (RED bins, graph, baselines, orchestrator)."""
        return self.det.snapshot()

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output."""
        self.det.restore(state)

    def state_key(self) -> str:
        """Settings that shape the state: the bin and the layers' parameters."""
        return f"services/1/{params_hash({'bin': self.det.cfg.bin_ms})}"

    def sinks(self) -> list[Any]:
        """No sinks of its own: alerts go to the pipeline's alert sinks."""
        return []

    def health(self) -> dict[str, Any]:
        """The orchestrator's view for the runtime's model-health alerts and metrics (``HealthReporter``).

        ``healthy`` while no layer is down; ``reason`` names the layers down and why; the decision and fallback
        counters ride along.
        """
        m = self.det.orch.metrics()
        down = m["down"]
        return {
            "healthy": not down,
            "version": self.det.cfg.gnn_model or "",
            "reason": ", ".join(f"{k} {v}" for k, v in sorted(down.items())),
            "since": None,
            "decisions": m["vigil_services_decisions_total"],
            "fallbacks": m["vigil_services_fallbacks_total"],
        }


class ServicesStepSpec(BaseModel):
    """``services:`` the services app (RED windows, L1/L2/L3, the orchestrator) over OTLP spans."""

    model_config = ConfigDict(extra="forbid")
    name: str
    services: dict[str, Any] = {}


def build(s: ServicesStepSpec, ctx: BuildContext) -> ServicesStep:
    """The step, its settings validated (errors name the step and field)."""
    from vigil.errors import ConfigError

    try:
        return ServicesStep(s.name, s.services, base_dir=ctx.base_dir)
    except ConfigError as exc:
        raise ConfigError(
            exc.message,
            step=s.name,
            field=f"services.{exc.field}" if exc.field else "services",
            value=exc.value,
            hint=exc.hint,
        ) from None


STEP = StepKind("services", ServicesStepSpec, build, reads=lambda s: ["duration_ms", "error"],
                summary="the services app: RED windows, SLO/Holt-Winters/GNN layers, the orchestrator")  # fmt: skip
"""The ``services`` step kind, registered by :mod:`vigil.config.registry`."""

"""The microservice shop simulator: spans and metrics window by window, deterministic by seed, steerable.

:class:`ServiceSimulator` ties the parts together: the topology (:mod:`.topology`), the scenario plan with its
ground truth (:mod:`.faults`), the live state (:mod:`.effects`), the vectorized request model (:mod:`.model`)
and the per-service metrics (:mod:`.metrics`). Time is simulated event time only: ``step`` advances it by
whole windows (``window_s``), as fast as numpy allows, and nothing reads the wall clock (pacing, if any, is
the caller's business: see :mod:`.control`).

Each window's output is a :class:`Window`: **span columns** (numpy arrays, one row per span: 128-bit trace
id as ``trace_hi``/``trace_lo``, ``span_id``, ``parent_span_id`` (0 at roots), ``service``, ``peer`` (-1 on
server spans), ``op``, ``kind`` (2 server, 3 client), ``zone``, ``version``, ``status`` (0 unset, 2 error),
``code`` (gRPC status, or HTTP status at the frontend), ``start_us``, ``duration_us``, ``ts_ms`` (the start,
the event time) — integer codes index :attr:`ServiceSimulator.names`) and **metric columns** (long form:
``ts_ms``, ``service``, ``metric`` (an index into :data:`~.metrics.METRICS`), ``value``).

Determinism: the same spec gives identical windows, however the run is stepped (random draws are keyed by
the window's index), as long as the same control actions are applied at the same simulated times.

Examples:
    >>> sim = ServiceSimulator(ServiceSimSpec(services=20, minutes=2, peak_rate=5.0, seed=1, faults=()))
    >>> w = sim.step()
    >>> int(w.t1_ms - w.t0_ms), len(w.spans["span_id"]) > 0, sim.now_ms == w.t1_ms
    (60000, True, True)
    >>> sim.rollback("cart")["changed"]
    False
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vigil.apps.services.sim.effects import World
from vigil.apps.services.sim.faults import FAULT_TYPES, plan_scenario
from vigil.apps.services.sim.metrics import window_metrics
from vigil.apps.services.sim.model import simulate_window
from vigil.apps.services.sim.topology import ZONES, shop_topology

__all__ = ["ServiceSimSpec", "ServiceSimulator", "Window"]

_START_MS = 1_772_452_800_000  # 2026-03-02 12:00 UTC, a Monday lunchtime


@dataclass(frozen=True)
class ServiceSimSpec:
    """What to simulate.

    Args:
        services: services in the shop (8-42; 20-40 is the realistic range).
        minutes: simulated minutes (``run`` stops there; ``step`` may go on).
        seed: the random seed.
        peak_rate: frontend requests/s at the daily peak (the diurnal curve scales it).
        faults: fault types to inject, one each, in a shuffled order (see :mod:`.faults`).
        legit: add legitimate oddities (traffic spike, scheduled batch, slow warm-up) and good deploys.
        warmup_min: no fault or oddity before this many minutes.
        start_ms: event time of the start.
        window_s: simulated seconds per window (one ``step``); 60 for bulk runs, 10 or less when steering.
        metric_step_s: interval of the resource and request metrics (divides ``window_s``).
    """

    services: int = 30
    minutes: float = 60.0
    seed: int = 7
    peak_rate: float = 50.0
    faults: tuple[str, ...] = FAULT_TYPES
    legit: bool = True
    warmup_min: float = 10.0
    start_ms: int = _START_MS
    window_s: int = 60
    metric_step_s: int = 10

    def __post_init__(self) -> None:
        if self.window_s <= 0 or self.metric_step_s <= 0 or self.window_s % self.metric_step_s:
            raise ValueError(f"`window_s` must be a positive multiple of `metric_step_s`; got {self.window_s} "
                             f"and {self.metric_step_s}")  # fmt: skip
        if self.minutes <= 0 or self.peak_rate <= 0:
            raise ValueError(f"`minutes` and `peak_rate` must be > 0; got {self.minutes}, {self.peak_rate}")


@dataclass
class Window:
    """One step's output: spans and metrics with event times in ``[t0_ms, t1_ms)`` (starts of traces)."""

    t0_ms: int
    t1_ms: int
    spans: dict[str, np.ndarray]
    metrics: dict[str, np.ndarray]
    changes: list[dict[str, Any]] = field(default_factory=list)


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: distinct inputs give distinct, random-looking 64-bit outputs."""
    z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


class ServiceSimulator:
    """The shop, stepped window by window; control actions change what later windows hold."""

    def __init__(self, spec: ServiceSimSpec) -> None:
        self.spec = spec
        self.topology = shop_topology(spec.services, peak_rate=spec.peak_rate, seed=spec.seed)
        self.plan = plan_scenario(self.topology, seed=spec.seed, start_ms=spec.start_ms, minutes=spec.minutes,
                                  fault_types=tuple(spec.faults), peak_rate=spec.peak_rate,
                                  warmup_min=spec.warmup_min, legit=spec.legit)  # fmt: skip
        self.world = World(self.topology, self.plan, peak_rate=spec.peak_rate, seed=spec.seed, start_ms=spec.start_ms)
        self.now_ms = spec.start_ms
        self.end_ms = spec.start_ms + int(spec.minutes * 60_000)
        self._index = 0
        self._trace_base = 0
        self._span_base = 0
        with np.errstate(over="ignore"):
            self._keys = _mix64(np.array([spec.seed, spec.seed + 1, spec.seed + 2], np.uint64))

    @property
    def names(self) -> dict[str, Any]:
        """Code tables of the integer columns: service, op, zone, version, metric."""
        from vigil.apps.services.sim.metrics import METRICS

        return {"service": self.topology.services, "op": self.topology.op_names, "zone": ZONES,
                "version": tuple(self.world.version_names), "metric": METRICS}  # fmt: skip

    @property
    def done(self) -> bool:
        """The scenario's minutes are simulated (``step`` may still go on)."""
        return self.now_ms >= self.end_ms

    def step(self) -> Window:
        """Simulate the next window."""
        spec, topo = self.spec, self.topology
        t0 = self.now_ms
        n_changes = len(self.world.changes)
        eff = self.world.effects(t0, spec.window_s, 1000)
        rng = np.random.default_rng([spec.seed, self._index])
        cols = simulate_window(topo, eff, rng, self._trace_base)
        spans = self._finish(cols)
        metrics = window_metrics(topo, eff, spans, rng, spec.metric_step_s * 1000)
        self._index += 1
        self.now_ms = t0 + spec.window_s * 1000
        return Window(t0, self.now_ms, spans, metrics, self.world.changes[n_changes:])

    def run(self) -> Iterator[Window]:
        """Windows until the scenario's end."""
        while not self.done:
            yield self.step()

    def _finish(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(cols["trace"])
        seq = np.arange(self._span_base, self._span_base + n, dtype=np.uint64)
        self._span_base += n
        k = self._keys
        with np.errstate(over="ignore"):
            span_id = _mix64(seq ^ k[0]) | np.uint64(1)  # never 0 (0 means "no parent")
            trace = cols["trace"].astype(np.uint64)
            out = {"trace_hi": _mix64(trace ^ k[1]), "trace_lo": _mix64(trace ^ k[2]), "span_id": span_id}
        parent = cols["parent"]
        out["parent_span_id"] = np.where(parent >= 0, span_id[np.maximum(parent, 0)], np.uint64(0))
        for name in ("service", "peer", "op", "kind", "zone", "version", "status", "code"):
            out[name] = cols[name]
        start_us = np.round(cols["start_ms"] * 1000.0).astype(np.int64)
        out["start_us"] = start_us
        out["duration_us"] = np.maximum(np.round(cols["dur_ms"] * 1000.0).astype(np.int64), 1)
        out["ts_ms"] = start_us // 1000
        out["trace"] = cols["trace"]
        if n:
            self._trace_base = int(cols["trace"].max()) + 1
        return out

    # ---- control: what a remediation engine may do ----

    def _service(self, name: str) -> int:
        return self.topology.service_index(name)

    def _log(self, action: str, service: str, changed: bool, **detail: Any) -> dict[str, Any]:
        rec = {"ts_ms": self.now_ms, "action": action, "service": service, "changed": changed, **detail}
        self.world.actions.append(rec)
        return rec

    def rollback(self, service: str) -> dict[str, Any]:
        """Roll ``service`` back to the version it ran before its last release (no-op without one)."""
        s = self._service(service)
        before = self.world.version_of(s)
        if len(self.world.stack[s]) < 2:
            return self._log("rollback", service, False, version=before)
        self.world.deploy(self.now_ms, s, before, "rollback", 0.5, 30_000.0)
        return self._log("rollback", service, True, version=self.world.version_of(s), previous=before)

    def restart(self, service: str) -> dict[str, Any]:
        """Restart every replica of ``service`` (clears leaks, runaway processes and stuck states)."""
        self.world.restart(self.now_ms, self._service(service))
        return self._log("restart", service, True)

    def scale(self, service: str, replicas: int) -> dict[str, Any]:
        """Set the replica count of ``service``, spread evenly over the zones that take traffic."""
        if replicas < 1:
            raise ValueError(f"`replicas` must be >= 1; got {replicas}")
        s = self._service(service)
        live = np.flatnonzero(self.world.weights[s] > 0)
        per = np.zeros(len(ZONES), np.int32)
        per[live] = replicas // len(live)
        per[live[: replicas % len(live)]] += 1
        per = np.where((per == 0) & (self.world.weights[s] > 0), 1, per)
        before = self.world.replicas[s].tolist()
        self.world.replicas[s] = per
        return self._log("scale", service, before != per.tolist(), replicas=per.tolist(), previous=before)

    def shift_traffic(self, service: str, weights: dict[str, float]) -> dict[str, Any]:
        """Route ``service``'s traffic by zone weights, e.g. ``{"zone-a": 1, "zone-b": 0}`` (drain zone-b)."""
        s = self._service(service)
        w = np.array([float(weights.get(z, 0.0)) for z in ZONES])
        unknown = set(weights) - set(ZONES)
        if unknown or w.min() < 0 or w.sum() <= 0:
            raise ValueError(f"`weights` must map zones of {ZONES} to non-negative weights, not all 0; got {weights}")
        before = self.world.weights[s].tolist()
        self.world.weights[s] = w / w.sum()
        self.world.replicas[s] = np.where(w > 0, np.maximum(self.world.replicas[s], 1), self.world.replicas[s])
        return self._log("shift_traffic", service, before != self.world.weights[s].tolist(),
                         weights=dict(zip(ZONES, self.world.weights[s].tolist(), strict=True)))  # fmt: skip

    def state(self) -> dict[str, Any]:
        """What an operator can see: versions, replicas and weights per service, and the time."""
        w = self.world
        return {"now_ms": self.now_ms, "services": {name: {
            "version": w.version_of(s), "replicas": dict(zip(ZONES, w.replicas[s].tolist(), strict=True)),
            "weights": dict(zip(ZONES, w.weights[s].tolist(), strict=True)), "kind": self.topology.defs[s].kind}
            for s, name in enumerate(self.topology.services)}}  # fmt: skip

    def ground_truth(self) -> dict[str, Any]:
        """Faults (with any remediation), legitimate oddities, deploys and restarts, and the actions taken."""
        return {"spec": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.spec).items()},
                "faults": [f.to_dict() for f in self.plan.faults],
                "legit": [o.to_dict() for o in self.plan.oddities],
                "changes": list(self.world.changes), "actions": list(self.world.actions),
                "edges": [[self.topology.services[a], self.topology.services[b]] for a, b in self.topology.edges]}

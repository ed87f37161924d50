"""What goes wrong in the simulated shop, and what only looks wrong: the scenario plan and its ground truth.

**Faults** (``FAULT_TYPES``; each has a root service, and the kind an RCA should name):

==================  ===========  =====================================================================
type                kind         effect (see :mod:`.effects` for the exact model)
==================  ===========  =====================================================================
latency             latency      +60-300 ms self time on the service's operations (a slow lock or query)
error_burst         errors       20-60 % of its requests fail, fast
cpu_hog             saturation   a runaway process takes 70-90 % of its CPU: throttling and queueing
memory_leak         saturation   memory climbs to the limit; GC pauses lengthen the tail, then OOM
dependency_outage   errors       a datastore or external service is down: refused or hanging (timeouts)
bad_deploy          deploy       a new version with more errors and/or 2.5-5x slower endpoints
network_delay       latency      +40-200 ms on the calls from one service to another's zone
noisy_neighbour     saturation   CPU steal and cache thrash on one zone's node: its replicas run 2-5x slower
==================  ===========  =====================================================================

**Legitimate oddities** (``LEGIT_TYPES``; not faults, and the ground truth says so): a traffic spike
(x1.5-2.5 for 5-15 min), a scheduled batch job (the ``batch-scheduler``'s cron load on catalog, search or
orders) and a slow warm-up after a good deploy (latency x2.5-5 decaying over a minute or two).

Faults come one at a time after ``warmup_min``, in a shuffled order of the requested types, each within its
own segment of the timeline; oddities and good deploys fall anywhere after the warm-up, overlapping faults
or not. Every random choice here uses its own generator (seed, ``0xFA17``, the fault types), so the traffic
of a scenario does not change when its plan does.

Examples:
    >>> from vigil.apps.services.sim.topology import shop_topology
    >>> topo = shop_topology(30)
    >>> plan = plan_scenario(topo, seed=3, start_ms=0, minutes=90, fault_types=FAULT_TYPES)
    >>> sorted(f.type for f in plan.faults) == sorted(FAULT_TYPES)
    True
    >>> all(f.start_ms >= 10 * 60_000 for f in plan.faults)
    True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from vigil.apps.services.sim.topology import ZONES, Topology

__all__ = ["FAULT_KIND", "FAULT_TYPES", "LEGIT_TYPES", "Deploy", "Fault", "Oddity", "Plan", "plan_scenario"]

FAULT_TYPES: tuple[str, ...] = ("latency", "error_burst", "cpu_hog", "memory_leak", "dependency_outage",
                                "bad_deploy", "network_delay", "noisy_neighbour")  # fmt: skip
LEGIT_TYPES: tuple[str, ...] = ("traffic_spike", "scheduled_batch", "slow_warmup")
FAULT_KIND = {"latency": "latency", "error_burst": "errors", "cpu_hog": "saturation", "memory_leak": "saturation",
              "dependency_outage": "errors", "bad_deploy": "deploy", "network_delay": "latency",
              "noisy_neighbour": "saturation"}  # fmt: skip
_MIN_RATE = 1.0  # requests/s a fault's service must get at the peak for the fault to be observable


@dataclass
class Fault:
    """One injected fault (ground truth).

    ``edge`` is ``(caller, callee)`` for network delays, ``zone`` set for zone-bound faults, ``params`` holds
    the magnitudes, and ``cleared_ms`` is set when a remediation ends the fault early.
    """

    id: int
    type: str
    service: str
    start_ms: int
    end_ms: int
    params: dict[str, Any] = field(default_factory=dict)
    edge: tuple[str, str] | None = None
    zone: str | None = None
    cleared_ms: int | None = None

    @property
    def kind(self) -> str:
        """What an RCA should call it: latency, errors, saturation or deploy."""
        return FAULT_KIND[self.type]

    def active(self, t_ms: np.ndarray) -> np.ndarray:
        """Per time, whether the fault is in force (inside its window, not yet cleared)."""
        end = self.end_ms if self.cleared_ms is None else min(self.end_ms, self.cleared_ms)
        return (t_ms >= self.start_ms) & (t_ms < end)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the ground-truth file."""
        d = asdict(self)
        d["kind"] = self.kind
        d["edge"] = list(self.edge) if self.edge else None
        return d


@dataclass
class Oddity:
    """A legitimate oddity (not a fault): ``traffic_spike``, ``scheduled_batch`` or ``slow_warmup``."""

    type: str
    start_ms: int
    end_ms: int
    service: str | None = None
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for the ground-truth file (``legit`` is always true)."""
        return {**asdict(self), "legit": True}


@dataclass
class Deploy:
    """A scheduled version change: ``cause`` is release (good), bad_release (a bad_deploy fault) or rollback."""

    ts_ms: int
    service: str
    version: str
    cause: str
    warmup: float = 1.0  # latency multiplier added at t=0 of the warm-up
    warmup_tau_ms: float = 60_000.0


@dataclass
class Plan:
    """A scenario: faults, legitimate oddities and scheduled deploys, plus each service's first version."""

    faults: list[Fault]
    oddities: list[Oddity]
    deploys: list[Deploy]
    versions: dict[str, str]


class _Releases:
    """Unique version strings per service: each release gets the next patch number."""

    def __init__(self, topo: Topology, rng: np.random.Generator) -> None:
        self.first = {s: (int(rng.integers(0, 30)), int(rng.integers(0, 10))) for s in topo.services}
        self.count = dict.fromkeys(topo.services, 0)

    def initial(self) -> dict[str, str]:
        return {s: f"1.{m}.{p}" for s, (m, p) in self.first.items()}

    def next(self, service: str) -> str:
        self.count[service] += 1
        m, p = self.first[service]
        return f"1.{m}.{p + self.count[service]}"


def plan_scenario(topo: Topology, *, seed: int, start_ms: int, minutes: float, fault_types: tuple[str, ...],
                  peak_rate: float = 50.0, warmup_min: float = 10.0, legit: bool = True,
                  good_deploys_per_h: float = 1.0) -> Plan:  # fmt: skip
    """Draw a scenario (see the module docstring). Unknown fault types raise ``ValueError``."""
    bad = [t for t in fault_types if t not in FAULT_TYPES]
    if bad:
        raise ValueError(f"unknown fault types {bad}; choose from {', '.join(FAULT_TYPES)}")
    rng = np.random.default_rng([seed, 0xFA17, *(1 + FAULT_TYPES.index(t) for t in fault_types)])
    kinds = [d.kind for d in topo.defs]
    rate = topo.fanout * peak_rate
    busy = rate >= _MIN_RATE
    apps = [i for i, k in enumerate(kinds) if k == "app" and busy[i]]
    stores = [i for i, k in enumerate(kinds) if k in ("datastore", "external") and busy[i]]
    served = [i for i, k in enumerate(kinds) if k in ("app", "datastore", "external") and busy[i]]
    hosted = [i for i in served if kinds[i] != "external"]  # ours: their CPU can be hogged or stolen
    rel = _Releases(topo, rng)
    end_ms = start_ms + int(minutes * 60_000)
    t_lo = start_ms + int(warmup_min * 60_000)
    faults: list[Fault] = []
    deploys: list[Deploy] = []
    order = list(fault_types)
    rng.shuffle(order)
    if order and t_lo < end_ms:
        seg = (end_ms - t_lo) // len(order)
        for i, typ in enumerate(order):
            lo_min, hi_min = (15.0, 25.0) if typ == "memory_leak" else (5.0, 12.0)
            dur = int(min(rng.uniform(lo_min, hi_min) * 60_000, seg - 90_000))
            if dur < 60_000:
                raise ValueError(f"{minutes} minutes are too short for {len(order)} faults after a "
                                 f"{warmup_min}-minute warm-up; give more `minutes` or fewer faults")  # fmt: skip
            a = t_lo + i * seg + int(rng.integers(0, seg - dur - 60_000 + 1))
            faults.append(_fault(len(faults), typ, a, a + dur, topo, rng, apps, stores, served, hosted, rate, rel,
                                 deploys))  # fmt: skip
    oddities: list[Oddity] = []
    if legit and t_lo < end_ms:
        span_min = (end_ms - t_lo) / 60_000
        for typ in LEGIT_TYPES:
            for _ in range(max(1, int(round(span_min / 60.0)))):
                odd = _oddity(typ, t_lo, end_ms, topo, rng, apps, faults, rel)
                if odd is not None:
                    oddities.append(odd)
                    if odd.type == "slow_warmup":
                        deploys.append(Deploy(odd.start_ms, str(odd.service), odd.params["version"], "release",
                                              odd.params["warmup"], odd.params["tau_ms"]))  # fmt: skip
        for _ in range(rng.poisson(good_deploys_per_h * span_min / 60.0)):  # more good releases, small warm-ups
            s = topo.services[int(rng.choice(apps))]
            ts = int(rng.integers(t_lo, end_ms))
            if not _in_bad_release(faults, s, ts):
                deploys.append(Deploy(ts, s, rel.next(s), "release", float(rng.uniform(0.3, 1.0)),
                                      float(rng.uniform(20_000, 60_000))))  # fmt: skip
    deploys.sort(key=lambda d: d.ts_ms)
    return Plan(faults, oddities, deploys, rel.initial())


def _in_bad_release(faults: list[Fault], service: str, ts: int) -> bool:
    """A release of ``service`` at ``ts`` would land inside one of its bad deploys (and hide it)."""
    return any(f.type == "bad_deploy" and f.service == service and f.start_ms - 60_000 <= ts < f.end_ms + 60_000
               for f in faults)  # fmt: skip


def _fault(i: int, typ: str, a: int, b: int, topo: Topology, rng: np.random.Generator, apps: list[int],
           stores: list[int], served: list[int], hosted: list[int], rate: np.ndarray, rel: _Releases,
           deploys: list[Deploy]) -> Fault:  # fmt: skip
    names = topo.services
    pick = lambda pool: names[int(rng.choice(pool))]  # noqa: E731
    if typ == "latency":
        return Fault(i, typ, pick(served), a, b, {"add_ms": float(rng.uniform(60, 300))})
    if typ == "error_burst":
        return Fault(i, typ, pick(apps), a, b, {"error_p": float(rng.uniform(0.2, 0.6))})
    if typ == "cpu_hog":
        return Fault(i, typ, pick(hosted), a, b, {"hog": float(rng.uniform(0.7, 0.9))})
    if typ == "memory_leak":
        return Fault(i, typ, pick(apps), a, b, {"to_frac": float(rng.uniform(0.93, 0.98))})
    if typ == "dependency_outage":
        mode = "refused" if rng.random() < 0.5 else "hang"
        return Fault(i, typ, pick(stores), a, b, {"mode": mode})
    if typ == "bad_deploy":
        s = pick(apps)
        v = rel.next(s)
        errors = rng.random() < 0.5
        slow = (not errors) or rng.random() < 0.3
        params = {"version": v, "error_p": float(rng.uniform(0.08, 0.3)) if errors else 0.0,
                  "slow": float(rng.uniform(2.5, 5.0)) if slow else 1.0}  # fmt: skip
        deploys.append(Deploy(a, s, v, "bad_release", 1.0, 60_000.0))
        deploys.append(Deploy(b, s, "", "rollback", 0.5, 30_000.0))  # the humans' fix: back to the version before
        return Fault(i, typ, s, a, b, params)
    if typ == "network_delay":
        busy_edges = [(c, e) for c, e in topo.edges if rate[e] >= 1.0 and topo.defs[c].instrumented
                      and topo.defs[c].kind != "batch"]  # fmt: skip
        c, e = busy_edges[int(rng.integers(len(busy_edges)))]
        zone = ZONES[int(rng.integers(len(ZONES)))]
        return Fault(i, typ, names[e], a, b, {"add_ms": float(rng.uniform(40, 200))}, edge=(names[c], names[e]),
                     zone=zone)  # fmt: skip
    if typ == "noisy_neighbour":
        zone = ZONES[int(rng.integers(len(ZONES)))]
        return Fault(i, typ, pick(hosted), a, b, {"steal": float(rng.uniform(0.6, 0.8)),
                                                  "thrash": float(rng.uniform(0.8, 1.5))}, zone=zone)  # fmt: skip
    raise ValueError(typ)


def _oddity(typ: str, t_lo: int, end_ms: int, topo: Topology, rng: np.random.Generator, apps: list[int],
            faults: list[Fault], rel: _Releases) -> Oddity | None:  # fmt: skip
    if typ == "traffic_spike":
        dur = int(rng.uniform(5, 15) * 60_000)
        a = int(rng.integers(t_lo, max(t_lo + 1, end_ms - dur)))
        return Oddity(typ, a, a + dur, None, {"factor": float(rng.uniform(1.5, 2.5))})
    if typ == "scheduled_batch":
        dur = int(rng.uniform(5, 20) * 60_000)
        a = int(rng.integers(t_lo, max(t_lo + 1, end_ms - dur)))
        jobs = topo.batch_ops.tolist()
        op = int(jobs[int(rng.integers(len(jobs)))]) if jobs else -1
        return Oddity(typ, a, a + dur, "batch-scheduler", {"op": topo.op_names[op] if op >= 0 else None,
                                                           "rate": float(rng.uniform(2.0, 6.0))})  # fmt: skip
    s = topo.services[int(rng.choice(apps))]
    a = int(rng.integers(t_lo, end_ms))
    tau = float(rng.uniform(40_000, 120_000))
    amp = float(rng.uniform(1.5, 4.0))
    if _in_bad_release(faults, s, a):
        return None
    return Oddity(typ, a, a + int(4 * tau), s, {"version": rel.next(s), "warmup": amp, "tau_ms": tau})

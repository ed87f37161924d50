"""The shop's live state (versions, replicas, traffic weights, restarts) and what it does to requests.

:class:`World` is the mutable part of a simulation: the scheduled deploys it has applied, the version each
service runs, replicas and traffic weights per zone, restarts, and the faults remediation has cleared. The
control API (:mod:`.control`) changes it; :meth:`World.effects` turns it, the plan and the time into
:class:`Effects`, arrays over 1-second bins that the propagation model (:mod:`.model`) reads per request.

The model, per service ``s``, zone ``z`` and bin ``b``:

* **CPU.** Expected demand ``D = rate * fanout_s * cpu_ms_s`` (plus batch jobs), routed to zones by the
  traffic weights; capacity ``replicas * cores``; a CPU hog takes a share of the capacity it found, a noisy
  neighbour steals 50-70 % of one zone's, GC takes its share. Self time is stretched by
  ``queue(rho) * (1 + cpu_share * (1/avail - 1))`` with ``rho = D / (capacity * avail)`` and
  ``queue(rho) = 1 + rho**4 / (1 - rho)`` (negligible below rho 0.5, x3 at 0.8, capped at x30). CPU
  pressure (the kernel's PSI "some": the share of time work waits for a CPU) is about ``rho``, plus 0.3 x
  the share of CPU taken away, weighted over the zones by traffic.
* **Memory and GC.** Memory sits at 35-50 % of the limit, plus load; a leak ramps it linearly toward
  93-98 % (restarting from the base after a restart). Above 75 % the share of time in GC grows
  quadratically, and so does the pause length (10 ms -> ~300 ms): requests that hit a pause wait for it.
* **Warm-up.** After a deploy or restart, self time is ``x (1 + a * exp(-dt / tau))``.
* **Faults** add self time, error probability, outages (refused or hanging), network delay on one edge and
  zone, or scale self time, while active and not cleared; a bad deploy is active while its version runs.

Examples:
    >>> from vigil.apps.services.sim.faults import plan_scenario
    >>> from vigil.apps.services.sim.topology import shop_topology
    >>> topo = shop_topology(20)
    >>> plan = plan_scenario(topo, seed=1, start_ms=0, minutes=30, fault_types=())
    >>> eff = World(topo, plan, peak_rate=50.0, seed=1, start_ms=0).effects(0, 10, 1000)
    >>> eff.lat_mult.shape == (len(topo.op_names), 2, 10), float(eff.err_p.max())
    (True, 0.0)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.apps.services.sim.faults import Deploy, Plan
from vigil.apps.services.sim.topology import ZONES, Topology

__all__ = ["Effects", "World", "diurnal"]

# relative traffic by hour of day (UTC here): quiet at night, peaks at lunch and in the evening
_HOURLY = np.array([0.15, 0.10, 0.08, 0.07, 0.08, 0.15, 0.35, 0.60, 0.80, 0.90, 1.00, 1.30, 1.80, 1.60, 1.10, 1.00,
                    1.10, 1.40, 1.80, 1.90, 1.50, 1.00, 0.60, 0.30]) / 1.90  # fmt: skip
_GC_BASE = {"java": 0.006, "dotnet": 0.005, "go": 0.003, "node": 0.006, "python": 0.004}


def diurnal(t_ms: np.ndarray, phases: np.ndarray) -> np.ndarray:
    """Traffic factor at epoch-ms times: the daily curve (peak 1.0) times slow +-10 % wobbles."""
    h = (np.asarray(t_ms, np.int64) % 86_400_000) / 3_600_000.0
    base = np.interp(h, np.arange(25), np.append(_HOURLY, _HOURLY[0]))
    m = np.asarray(t_ms, np.float64) / 60_000.0
    wob = (0.05 * np.sin(2 * np.pi * m / 17.0 + phases[0]) + 0.035 * np.sin(2 * np.pi * m / 6.3 + phases[1])
           + 0.02 * np.sin(2 * np.pi * m / 2.1 + phases[2]))  # fmt: skip
    return base * (1.0 + wob)


@dataclass
class Effects:
    """What the state does to requests in ``n_bins`` bins of ``bin_ms`` from ``t0_ms`` (module docstring)."""

    t0_ms: int
    bin_ms: int
    rate: np.ndarray  # [B] frontend requests/s
    batch_rate: np.ndarray  # [batch ops, B] cron requests/s
    lat_mult: np.ndarray  # [O, Z, B] self-time multiplier
    lat_add_ms: np.ndarray  # [O, B]
    err_p: np.ndarray  # [O, B] extra error probability
    down: np.ndarray  # [S, B] 0 up, 1 refusing connections, 2 hanging
    net_add_ms: dict[tuple[int, int], np.ndarray]  # (caller, callee) -> [Z, B]
    gc_p: np.ndarray  # [S, B] share of requests that hit a GC pause
    gc_pause_ms: np.ndarray  # [S, B]
    gc_frac: np.ndarray  # [S, B] share of time in GC
    mem_frac: np.ndarray  # [S, B] memory / limit
    cpu_used: np.ndarray  # [S, B] cores used besides requests (hog, GC)
    pressure: np.ndarray  # [S, B] share of time runnable work waits for CPU (PSI "some")
    thrash: np.ndarray  # [S, Z, B] CPU per request multiplier (cache thrash)
    capacity: np.ndarray  # [S] cores
    version: np.ndarray  # [S, B] version code
    weights: np.ndarray  # [S, Z] traffic weights


class World:
    """The live state of one simulation (module docstring); changed by the control API between steps."""

    def __init__(self, topo: Topology, plan: Plan, *, peak_rate: float, seed: int, start_ms: int) -> None:
        self.topo, self.plan, self.peak_rate = topo, plan, peak_rate
        rng = np.random.default_rng([seed, 0xE77EC7])
        self.phases = rng.uniform(0, 2 * np.pi, 3)
        S = len(topo.services)
        self.replicas = topo.replicas.copy()
        self.weights = self.replicas / self.replicas.sum(axis=1, keepdims=True)
        self.mem_base = rng.uniform(0.35, 0.5, S)
        self.version_names: list[str] = []
        self.stack: list[list[int]] = [[self._code(plan.versions[s])] for s in topo.services]
        self.restart_ms = np.full(S, np.iinfo(np.int64).min // 2, np.int64)
        self.warmups: list[list[tuple[int, float, float]]] = [[] for _ in range(S)]
        self.pending: list[Deploy] = sorted(plan.deploys, key=lambda d: d.ts_ms)
        self.changes: list[dict[str, Any]] = []  # applied deploys and restarts: observable change events
        self.actions: list[dict[str, Any]] = []  # remediation actions, in order
        self.hog_cores: dict[int, np.ndarray] = {}
        self.start_ms = start_ms
        self.cpu_share = np.minimum(0.9, topo.cpu_ms[topo.op_service] / np.maximum(topo.op_median_ms, 0.1))

    def _code(self, version: str) -> int:
        if version not in self.version_names:
            self.version_names.append(version)
        return self.version_names.index(version)

    def version_of(self, s: int) -> str:
        """The version service ``s`` runs now."""
        return self.version_names[self.stack[s][-1]]

    # ---- changes (scheduled deploys and control actions) ----

    def deploy(self, ts_ms: int, s: int, version: str, cause: str, warmup: float, tau_ms: float) -> None:
        """Roll out ``version`` of service ``s`` at ``ts_ms`` (``cause`` rollback: back to the one before)."""
        if cause == "rollback":
            if len(self.stack[s]) < 2 or (version and self.version_of(s) != version):
                return  # already rolled back (by remediation) or nothing to roll back to
            self.stack[s].pop()
        else:
            self.stack[s].append(self._code(version))
        self.warmups[s] = [w for w in self.warmups[s] if ts_ms - w[0] < 10 * w[2]] + [(ts_ms, warmup, tau_ms)]
        # what a deploy log shows: a release or a rollback (whether a release is bad is ground truth only)
        self.changes.append({"ts_ms": ts_ms, "service": self.topo.services[s], "type": "deploy",
                             "version": self.version_of(s), "cause": "rollback" if cause == "rollback" else "release"})

    def restart(self, ts_ms: int, s: int) -> None:
        """Restart every replica of ``s``: clears memory, runaway processes, stuck states; a short warm-up."""
        self.restart_ms[s] = ts_ms
        self.warmups[s] = [w for w in self.warmups[s] if ts_ms - w[0] < 10 * w[2]] + [(ts_ms, 0.5, 30_000.0)]
        name = self.topo.services[s]
        for f in self.plan.faults:
            if f.service == name and f.type in ("latency", "error_burst", "cpu_hog", "dependency_outage") \
                    and f.start_ms <= ts_ms < f.end_ms and f.cleared_ms is None:
                f.cleared_ms = ts_ms
        self.changes.append({"ts_ms": ts_ms, "service": name, "type": "restart", "version": self.version_of(s)})

    def _apply_pending(self, until_ms: int) -> None:
        while self.pending and self.pending[0].ts_ms < until_ms:
            d = self.pending.pop(0)
            self.deploy(d.ts_ms, self.topo.service_index(d.service), d.version, d.cause, d.warmup, d.warmup_tau_ms)

    # ---- effects ----

    def effects(self, t0_ms: int, n_bins: int, bin_ms: int) -> Effects:
        """Apply the deploys due before the end of the window, then compute its :class:`Effects`."""
        topo = self.topo
        S, O, Z, B = len(topo.services), len(topo.op_names), len(ZONES), n_bins
        t = t0_ms + np.arange(B, dtype=np.int64) * bin_ms + bin_ms // 2  # bin centres
        version = np.repeat(np.array([st[-1] for st in self.stack])[:, None], B, axis=1)
        due = [d for d in self.pending if d.ts_ms < t0_ms + B * bin_ms]
        for d in due:  # deploys inside the window switch versions from their bin on
            self._apply_pending(d.ts_ms + 1)
            s = topo.service_index(d.service)
            version[s, t >= d.ts_ms] = self.stack[s][-1]
        rate = self.peak_rate * diurnal(t, self.phases)
        batch_rate = np.zeros((len(topo.batch_ops), B))
        lat_mult = np.ones((O, Z, B))
        lat_add = np.zeros((O, B))
        err_p = np.zeros((O, B))
        down = np.zeros((S, B), np.int8)
        net: dict[tuple[int, int], np.ndarray] = {}
        thrash = np.ones((S, Z, B))
        avail = np.ones((S, Z, B))
        hog = np.zeros((S, B))
        mem = self.mem_base[:, None] + np.zeros((S, B))
        ops_of = [np.flatnonzero(topo.op_service == s) for s in range(S)]
        for odd in self.plan.oddities:
            on = (t >= odd.start_ms) & (t < odd.end_ms)
            if not on.any():
                continue
            ramp = np.clip(np.minimum(t - odd.start_ms, odd.end_ms - t) / 60_000.0, 0.0, 1.0) * on
            if odd.type == "traffic_spike":
                rate = rate * (1.0 + (odd.params["factor"] - 1.0) * ramp)
            elif odd.type == "scheduled_batch" and odd.params.get("op"):
                j = topo.batch_ops.tolist().index(topo.op_names.index(odd.params["op"]))
                batch_rate[j] += odd.params["rate"] * on
        capacity = (self.replicas * topo.cores[:, None]).sum(axis=1)
        for f in self.plan.faults:
            s = topo.service_index(f.service)
            if f.type == "bad_deploy":
                on = version[s] == self._code(f.params["version"])
            else:
                on = f.active(t)
            if not on.any():
                continue
            o = ops_of[s]
            if f.type == "latency":
                lat_add[o] += f.params["add_ms"] * on
            elif f.type == "error_burst":
                err_p[o] += f.params["error_p"] * on
            elif f.type == "cpu_hog":
                if f.id not in self.hog_cores:  # the hog takes a share of the capacity it found
                    self.hog_cores[f.id] = f.params["hog"] * self.replicas[s] * topo.cores[s]
                avail[s] *= 1.0 - np.minimum(0.95, self.hog_cores[f.id] / np.maximum(
                    self.replicas[s] * topo.cores[s], 1e-9))[:, None] * on  # fmt: skip
                hog[s] += self.hog_cores[f.id].sum() * on
            elif f.type == "memory_leak":
                t_from = max(f.start_ms, int(self.restart_ms[s]))
                prog = np.clip((t - t_from) / max(f.end_ms - f.start_ms, 1), 0.0, 1.0)
                mem[s] += (f.params["to_frac"] - self.mem_base[s]) * prog * on
            elif f.type == "dependency_outage":
                down[s] = np.where(on, 1 if f.params["mode"] == "refused" else 2, down[s])
            elif f.type == "bad_deploy":
                err_p[o] += f.params["error_p"] * on
                lat_mult[o] *= (1.0 + (f.params["slow"] - 1.0) * on)[None, None, :]
            elif f.type == "network_delay" and f.edge is not None:
                key = (topo.service_index(f.edge[0]), s)
                add = net.setdefault(key, np.zeros((Z, B)))
                add[ZONES.index(str(f.zone))] += f.params["add_ms"] * on
            elif f.type == "noisy_neighbour":
                z = ZONES.index(str(f.zone))
                avail[s, z] *= 1.0 - f.params["steal"] * on
                thrash[s, z] *= 1.0 + f.params.get("thrash", 0.5) * on  # cache and memory-bandwidth contention
        # load: expected demand per zone, GC, queueing
        demand = rate[None, :] * topo.fanout[:, None] * topo.cpu_ms[:, None] / 1000.0  # cores
        for j, op in enumerate(topo.batch_ops.tolist()):
            demand[topo.op_service[op]] += batch_rate[j] * 0.010
        heap = np.array([d.runtime != "native" for d in topo.defs])[:, None]
        mem += np.where(heap, 0.03, 0.003) * np.clip(rate / self.peak_rate, 0, 3)[None, :]  # request buffers
        pressure = np.clip((mem - 0.75) / 0.25, 0.0, 1.0) ** 2
        gc_base = np.array([_GC_BASE.get(d.runtime, 0.0) for d in topo.defs])[:, None]
        has_gc = gc_base > 0
        gc_frac = np.where(has_gc, gc_base + 0.25 * pressure, 0.0)
        gc_pause = np.where(has_gc, 10.0 + 300.0 * pressure, 0.0)
        cap_z = self.replicas * topo.cores[:, None]  # [S, Z]
        eff_cap = cap_z[:, :, None] * avail * (1.0 - gc_frac[:, None, :])
        rho = demand[:, None, :] * self.weights[:, :, None] * thrash / np.maximum(eff_cap, 1e-9)
        # CPU pressure (PSI "some"): runnable work waits about rho of the time; stolen CPU makes it wait too
        pressure = (self.weights[:, :, None] * np.minimum(1.0, rho + 0.3 * (1.0 - avail))).sum(axis=1)
        rho = np.minimum(rho, 0.97)
        queue = np.minimum(1.0 + rho**4 / (1.0 - rho), 30.0)
        stretch = 1.0 / np.maximum(avail * (1.0 - gc_frac[:, None, :]), 0.05) - 1.0  # [S, Z, B]
        lat_mult *= queue[topo.op_service] * (1.0 + self.cpu_share[:, None, None] * stretch[topo.op_service])
        lat_mult *= thrash[topo.op_service]
        lat_mult *= self._warm(t)[topo.op_service][:, None, :]
        return Effects(t0_ms=t0_ms, bin_ms=bin_ms, rate=rate, batch_rate=batch_rate, lat_mult=lat_mult,
                       lat_add_ms=lat_add, err_p=np.minimum(err_p, 1.0), down=down, net_add_ms=net,
                       gc_p=np.minimum(0.6, 8.0 * gc_frac), gc_pause_ms=gc_pause, gc_frac=gc_frac, mem_frac=mem,
                       cpu_used=hog + gc_frac * capacity[:, None], thrash=thrash, capacity=capacity, pressure=pressure,
                       version=version, weights=self.weights.copy())  # fmt: skip

    def _warm(self, t: np.ndarray) -> np.ndarray:
        out = np.ones((len(self.topo.services), len(t)))
        for s, ws in enumerate(self.warmups):
            for ts, amp, tau in ws:
                dt = (t - ts).astype(np.float64)
                out[s] += np.where(dt >= 0, amp * np.exp(-np.maximum(dt, 0.0) / tau), 0.0)
        return out

"""Per-service metrics of a window, as a metrics agent would report them every ``step_ms``.

:data:`METRICS`, per service and interval:

* ``cpu`` — CPU utilisation of the service's limit, 0..1: the CPU time of the requests it served in the
  interval (x cache thrash) plus what a hog process or GC took, over its capacity; +-1.5 points of noise.
* ``mem`` — memory in use, bytes (the state's memory share of a limit of 2.5 x the service's base size, +-1.5 %
  of the limit for garbage-collected heaps, +-0.3 % for native processes).
* ``gc`` — milliseconds of GC pause in the interval (0 for runtimes without GC: datastores).
* ``requests`` / ``errors`` — requests served and failed: server spans for instrumented services; for
  datastores and external services (no server spans), their callers' attempts that reached them.
* ``cpu_pressure`` — share of time runnable work waited for a CPU (Linux PSI "some", as cAdvisor exports
  it): about the utilisation of the available CPU, more when CPU is stolen; x/÷10 % noise.

The rows are long form (``ts_ms`` is the end of the interval, ``service``, ``metric`` index, ``value``), in
time order, then service, then metric.

Examples:
    >>> METRICS
    ('cpu', 'mem', 'gc', 'requests', 'errors', 'cpu_pressure')
"""

from __future__ import annotations

import numpy as np

from vigil.apps.services.sim.effects import Effects
from vigil.apps.services.sim.model import CODE, KIND_CLIENT, KIND_SERVER, STATUS_ERROR
from vigil.apps.services.sim.topology import Topology

__all__ = ["METRICS", "OTLP_METRICS", "window_metrics"]

METRICS: tuple[str, ...] = ("cpu", "mem", "gc", "requests", "errors", "cpu_pressure")
#: OTLP name, unit, and whether it is a (delta, monotonic) sum rather than a gauge
OTLP_METRICS = {"cpu": ("container.cpu.utilization", "1", False), "mem": ("container.memory.usage", "By", False),
                "gc": ("runtime.gc.pause.time", "ms", True), "requests": ("service.requests", "{request}", True),
                "errors": ("service.request.errors", "{request}", True),
                "cpu_pressure": ("container.cpu.pressure", "1", False)}  # fmt: skip


def window_metrics(topo: Topology, eff: Effects, spans: dict[str, np.ndarray], rng: np.random.Generator,
                   step_ms: int) -> dict[str, np.ndarray]:  # fmt: skip
    """The metric rows of one window (see the module docstring)."""
    S = len(topo.services)
    B = eff.rate.shape[0]
    per = step_ms // eff.bin_ms  # bins per interval
    K = B // per
    kind, service, peer = spans["kind"], spans["service"], spans["peer"]
    interval = np.clip((spans["ts_ms"] - eff.t0_ms) // step_ms, 0, K - 1)
    err = spans["status"] == STATUS_ERROR
    served = kind == KIND_SERVER
    # datastores: the attempts of their callers that reached them (not refused, not hanging)
    reached = (kind == KIND_CLIENT) & ~topo.instrumented[np.maximum(peer, 0)] & (peer >= 0)
    reached &= spans["code"] != CODE["unavailable"]
    bins = np.clip((spans["ts_ms"] - eff.t0_ms) // eff.bin_ms, 0, B - 1)
    reached &= eff.down[np.maximum(peer, 0), bins] == 0
    who = np.where(served, service, peer).astype(np.int64)
    rows = served | reached
    key = interval[rows] * S + who[rows]
    requests = np.bincount(key, minlength=K * S).reshape(K, S)
    errors = np.bincount(key, weights=(err & served)[rows], minlength=K * S).reshape(K, S)

    def mean_k(a: np.ndarray) -> np.ndarray:  # [S, B] -> [K, S]
        return a.reshape(a.shape[0], K, per).mean(axis=2).T

    w = eff.weights[:, :, None]
    thrash = mean_k((eff.thrash * w).sum(axis=1))
    step_s = step_ms / 1000.0
    busy = requests * topo.cpu_ms[None, :] / 1000.0 / step_s * thrash + mean_k(eff.cpu_used)
    base = 0.02 * eff.capacity[None, :]  # the runtime's idle work
    cpu = np.clip((busy + base) / eff.capacity[None, :] + 0.015 * rng.standard_normal((K, S)), 0.0, 1.0)
    limit = topo.mem_mb * 2.5 * 2**20
    heap = np.array([d.runtime not in ("native",) for d in topo.defs])  # GC heaps saw-tooth, natives barely move
    wobble = np.where(heap, 0.015, 0.003)[None, :] * rng.standard_normal((K, S))
    mem = (mean_k(eff.mem_frac) + wobble) * limit[None, :]
    gc = mean_k(eff.gc_frac) * step_ms * np.exp(0.15 * rng.standard_normal((K, S)))
    psi = np.clip(mean_k(eff.pressure) * np.exp(0.1 * rng.standard_normal((K, S)))
                  + 0.003 * np.abs(rng.standard_normal((K, S))), 0.0, 1.0)  # fmt: skip
    values = np.stack([cpu, mem, gc, requests.astype(np.float64), errors, psi], axis=2)  # [K, S, M]
    M = len(METRICS)
    ts = eff.t0_ms + (np.arange(K, dtype=np.int64) + 1) * step_ms
    return {"ts_ms": np.repeat(ts, S * M), "service": np.tile(np.repeat(np.arange(S, dtype=np.int16), M), K),
            "metric": np.tile(np.arange(M, dtype=np.int8), K * S), "value": values.reshape(-1)}  # fmt: skip

"""Training data for the L3 GNN: simulator runs → per-bin graph snapshots with labels, as one ``.npz``.

Each run (a seed of :func:`~.evaluate.sim_spec`, every fault type once, the legitimate oddities on) goes through
the same :class:`~.detector.ServicesDetector` as serving (L1 and L2 only), which hands back each bin's node
features. Labels per (bin, service): **1** for the fault's root service (and the calling service of a delayed
edge) while the fault is active; **0** for services outside its affected set and for every service when no
fault is active (legitimate oddities included: they must score low); the affected services that are not the
root are **masked** (they do look anomalous; neither label is right). Bins before the warm-up's end are dropped.

Arrays: ``x`` ``[T, N, F]`` (float32, zero-padded to the largest shop), ``y`` and ``mask`` ``[T, N]``, ``run``
``[T]`` (index into ``a_in`` / ``a_out`` ``[R, N, N]``: each run's call graph), ``features`` (names).
Seeds for training start at 1000; the demo's evaluation uses seeds below that.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from vigil.apps.services.evaluate import affected_sets, demo_config, sim_spec
from vigil.apps.services.gnn import FEATURES, adjacency
from vigil.apps.services.sim import ServiceSimulator

__all__ = ["make_dataset"]


def _run(seed: int, services: int, n_max: int, per_fault_min: float) -> dict[str, Any]:
    from vigil.apps.services.detector import ServicesDetector
    from vigil.apps.services.red import spans_of_window

    spec = sim_spec(seed, services=services, per_fault_min=per_fault_min)
    sim = ServiceSimulator(spec)
    det = ServicesDetector(demo_config(), keep_features=True)
    gt = sim.ground_truth()
    sets = affected_sets(gt)
    ready = spec.start_ms + int(spec.warmup_min * 60_000)
    xs, ys, ms = [], [], []
    svcs: list[str] = []
    for w in sim.run():
        det.add(spans_of_window(w, sim.names))
        for bv in det.advance(w.t1_ms):
            if bv.t1_ms < ready or bv.features is None:
                continue
            svcs = bv.services
            n = len(svcs)
            x = np.zeros((n_max, len(FEATURES)), np.float32)
            x[:n] = bv.features[:, : len(FEATURES)]
            y = np.zeros(n_max, np.float32)
            m = np.zeros(n_max, np.float32)
            m[:n] = 1.0
            for f, (aff, roots) in zip(gt["faults"], sets, strict=True):
                end = f["cleared_ms"] or f["end_ms"]
                if f["start_ms"] < bv.t1_ms <= end + det.cfg.bin_ms:
                    for k, s in enumerate(svcs):
                        if s in roots:
                            y[k] = 1.0
                        elif s in aff:
                            m[k] = 0.0
            xs.append(x)
            ys.append(y)
            ms.append(m)
    a_in = np.zeros((n_max, n_max), np.float32)
    a_out = np.zeros((n_max, n_max), np.float32)
    ai, ao = adjacency(svcs, list(det.red.graph.edges))
    a_in[: len(svcs), : len(svcs)], a_out[: len(svcs), : len(svcs)] = ai, ao
    return {"x": np.stack(xs), "y": np.stack(ys), "mask": np.stack(ms), "a_in": a_in, "a_out": a_out}


def make_dataset(path: str | Path, *, seeds: int = 6, first_seed: int = 1000, services: tuple[int, ...] = (30,),
                 per_fault_min: float = 15.0, log: Any = None) -> dict[str, Any]:  # fmt: skip
    """Simulate ``seeds`` runs per shop size and write the ``.npz`` (module docstring); returns a summary."""
    n_max = max(services) + 2
    parts = []
    for size in services:
        for seed in range(first_seed, first_seed + seeds):
            parts.append(_run(seed, size, n_max, per_fault_min))
            if log:
                log(f"gnn data: seed {seed}, {size} services: {len(parts[-1]['x'])} snapshots")
    run = np.concatenate([np.full(len(p["x"]), i, np.int32) for i, p in enumerate(parts)])
    data: dict[str, Any] = {"x": np.concatenate([p["x"] for p in parts]), "y": np.concatenate([p["y"] for p in parts]),
            "mask": np.concatenate([p["mask"] for p in parts]), "run": run,
            "a_in": np.stack([p["a_in"] for p in parts]), "a_out": np.stack([p["a_out"] for p in parts]),
            "features": np.array(FEATURES)}  # fmt: skip
    np.savez_compressed(path, **data)
    return {"snapshots": int(len(run)), "positives": int(data["y"].sum()), "runs": len(parts), "path": str(path)}

"""``vigil demo services`` and ``vigil train --services-gnn``: the services app, shown and trained.

* the demo runs the simulated shop through the services detector seed by seed and scores it against the ground
  truth (:mod:`vigil.apps.services.evaluate`), with the ablation L1 / L1+L2 / L1+L2+L3;
* training makes the GNN's data set here, then runs PyTorch's training script with the interpreter of its own
  virtualenv (``$VIGIL_TORCH_PYTHON``, else ``.venv-torch/bin/python`` under the current folder);
* ``vigil bench traces`` (the otlp source's bench) measures this app's spans/s and the GNN's time per graph
  snapshot through :class:`~vigil.apps.services.detector.ServicesDetector` and
  :class:`~vigil.apps.services.gnn.GnnServer`.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from vigil.cli.common import strict_json
from vigil.errors import ConfigError

DEFAULT_MODEL = Path("models/services-gnn.onnx")


def torch_python() -> str:
    """The interpreter of PyTorch's virtualenv, or a ConfigError saying how to get one."""
    env = os.environ.get("VIGIL_TORCH_PYTHON")
    if env:
        if not Path(env).is_file():
            raise ConfigError("is not an interpreter", field="VIGIL_TORCH_PYTHON", value=env)
        return env
    local = Path(".venv-torch/bin/python")
    if local.is_file():
        return str(local)
    raise ConfigError(
        "PyTorch's virtualenv was not found",
        field="VIGIL_TORCH_PYTHON",
        value=None,
        hint="make torch-venv (or point $VIGIL_TORCH_PYTHON at a python with torch and onnx)",
    )


def train_services_gnn(out: Path, *, seeds: int = 6, services: int = 30, epochs: int = 30, data: Path | None = None,
                       console: Console | None = None) -> dict[str, Any]:  # fmt: skip
    """Simulate training runs (seeds 1000+), then train and export the GNN with PyTorch (module docstring)."""
    from vigil.apps.services.gnn import GnnServer
    from vigil.apps.services.gnn_data import make_dataset

    py = torch_python()
    log = console.print if console else None
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        path = data or Path(tmp) / "gnn.npz"
        summary: dict[str, Any] = {}
        if data is None or not data.exists():
            summary["data"] = make_dataset(path, seeds=seeds, services=(services,), log=log)
        script = Path(__file__).resolve().parents[1] / "apps" / "services" / "gnn_train.py"
        proc = subprocess.run([py, str(script), "--data", str(path), "--out", str(out), "--epochs", str(epochs)],
                              capture_output=True, text=True, check=False)  # fmt: skip
        if proc.returncode != 0:
            last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "no output"
            raise ConfigError(
                "training failed in PyTorch's virtualenv", field="VIGIL_TORCH_PYTHON", value=py, hint=last
            )
        summary["train"] = json.loads(proc.stdout.strip().splitlines()[-1])
    GnnServer(out)  # it must load where it will be served
    summary["model"] = str(out)
    return summary


def run_services_demo(*, seeds: int = 3, first_seed: int = 1, services: int = 30, model: Path | None = None,
                      per_fault_min: float = 15.0, as_json: bool = False) -> dict[str, Any]:  # fmt: skip
    """Simulate, detect, score every seed; print the summary (JSON on the last line with ``as_json``)."""
    from vigil.apps.services.evaluate import demo_config, run_seed, score, sim_spec, summarize

    console = Console(stderr=as_json, highlight=False)
    if model is None and DEFAULT_MODEL.is_file():
        model = DEFAULT_MODEL
    cfg = demo_config(str(model) if model else None)
    console.print(
        f"[bold]Vigil demo[/] · services · {seeds} runs of a {services}-service shop, every fault type "
        f"once per run · GNN: {model or 'none (L3 falls back; `vigil train --services-gnn` makes one)'}"
    )
    runs: list[dict[str, Any]] = []
    fallbacks: dict[str, int] = {}
    decisions: dict[str, int] = {}
    service_days, wall = 0.0, 0.0
    spans = 0
    for seed in range(first_seed, first_seed + seeds):
        spec = sim_spec(seed, services=services, per_fault_min=per_fault_min)
        t = time.perf_counter()
        sim, alerts, det = run_seed(spec, cfg)
        wall += time.perf_counter() - t
        ready = spec.start_ms + int(spec.warmup_min * 60_000)
        runs.append(score(sim.ground_truth(), alerts, ready_ms=ready))
        service_days += services * (spec.minutes - spec.warmup_min) / 1440.0
        m = det.orch.metrics()
        for row in m["vigil_services_fallbacks_total"]:
            fallbacks[f"{row['layer']}:{row['reason']}"] = (
                fallbacks.get(f"{row['layer']}:{row['reason']}", 0) + row["value"]
            )
        for row in m["vigil_services_decisions_total"]:
            k = f"{row['layer']}:{row['verdict']}"
            decisions[k] = decisions.get(k, 0) + row["value"]
        full = runs[-1]["L1+L2+L3"]
        console.print(f"  seed {seed}: {sum(f['detected'] for f in full['faults'])}/{len(full['faults'])} faults "
                      f"detected, {full['false_alerts']} false alerts")  # fmt: skip
    res = summarize(runs, service_days)
    res["decisions"] = decisions
    res["fallbacks"] = fallbacks
    res["gnn_model"] = str(model) if model else None
    res["seeds"] = list(range(first_seed, first_seed + seeds))
    res["service_days"] = round(service_days, 3)
    res["wall_s"] = round(wall, 1)
    del spans
    for level, r in res["ablation"].items():
        console.print(
            f"  {level:9s} recall {r['recall']} precision {r['precision']} delay p50 {r['delay_s']['p50']} s"
            f" p95 {r['delay_s']['p95']} s · false alerts/service-day {r['false_alerts_per_service_day']}"
        )
    console.print("  recall by fault (L1+L2+L3): " + ", ".join(f"{k} {v}" for k, v in res["recall_by_fault"].items()))
    if as_json:
        print(strict_json(res))
    return res

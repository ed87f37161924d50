"""``vigil bench flink``: events per second per core of the fraud pipeline, embedded and on a real Flink cluster.

One run, one workload (the shared ``workload.py``: 1M card events over 10k users by default), produced as JSON into
a fresh 4-partition topic of the broker at ``--bootstrap``; then:

* ``embedded_eps``: the fraud pipeline (``pipelines/fraud-flink.yaml``'s steps) on the embedded runtime, exactly
  once, in a process of its own, over the whole topic (one worker: about one core);
* ``flink_eps_per_core``: the same file as a Flink job (``vigil flink run``, bounded, exactly-once) on a standalone
  cluster this command starts (``deploy/flink/flink.sh up``: 1 JobManager, 2 TaskManagers, free ports, a scratch
  data dir): events / CPU seconds of the TaskManagers and their Python workers during the job (from /proc), so
  other tenants of the machine do not count;
* ``per_event_eps_per_core``: the anchor, a plain per-event PyFlink job doing a z-score of the amount
  (:mod:`vigil.integrations.flink.anchor`), measured the same way;
* ``ratio_vs_per_event`` = flink_eps_per_core / per_event_eps_per_core.

Needs ``make kafka-up`` and ``.venv-flink`` (``make flink-venv``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from vigil.errors import VigilError

REPO = Path(__file__).resolve().parents[3]
FLINK_SH = REPO / "deploy" / "flink" / "flink.sh"
CLK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def taskmanager_cpu_s(data_dir: str) -> float:
    """CPU seconds (self and reaped children) of the live processes flink.sh marked as this cluster's TaskManagers."""
    mark = f"VIGIL_FLINK_PROCESS={os.path.abspath(data_dir)}:tm".encode()
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                if mark not in f.read():
                    continue
            with open(f"/proc/{pid}/stat", encoding="ascii") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in fields[11:15])  # utime stime cutime cstime
        except OSError:
            continue
    return total / CLK


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """A standalone Flink cluster of the bench's own (free ports, scratch data dir), stopped at the end."""

    def __init__(self, data: Path) -> None:
        self.data = str(data)
        self.env = dict(os.environ, VIGIL_FLINK_REST_PORT=str(free_port()), VIGIL_FLINK_RPC_PORT=str(free_port()),
                        VIGIL_FLINK_DATA=self.data)  # fmt: skip
        self.jobmanager = f"127.0.0.1:{self.env['VIGIL_FLINK_REST_PORT']}"

    def __enter__(self) -> Cluster:
        out = subprocess.run([str(FLINK_SH), "up"], env=self.env, capture_output=True, text=True, timeout=900,
                             check=False)  # fmt: skip
        if out.returncode != 0:
            raise VigilError(f"flink.sh up failed: {out.stderr.strip()[-1500:]}")
        return self

    def __exit__(self, *exc: object) -> None:
        subprocess.run([str(FLINK_SH), "down"], env=self.env, capture_output=True, timeout=300, check=False)

    def measure(self, submit: Any, events: int, timeout_s: float) -> dict[str, Any]:
        """Submit a job (``submit(jobmanager) -> id``), wait for it to end; its CPU seconds and events per core."""
        from vigil.integrations.flink.client import Rest

        rest = Rest(self.jobmanager)
        cpu0 = taskmanager_cpu_s(self.data)
        jid = submit(self.jobmanager)
        state = rest.wait(jid, ("FINISHED",), timeout_s)
        cpu = taskmanager_cpu_s(self.data) - cpu0
        ts = rest.job(jid)["timestamps"]
        job_s = (int(ts["FINISHED"]) - int(ts["RUNNING"])) / 1000
        return {"id": jid, "state": state, "cpu_s": round(cpu, 1), "job_s": round(job_s, 1),
                "eps_per_core": round(events / max(cpu, 1e-9)),
                "eps_wall": round(events / max(job_s, 1e-9))}  # fmt: skip


def run_flink_bench(*, bootstrap: str, shared: Path | None, pipeline: Path, n: int, keys: int, parallelism: int,
                    as_json: bool, out: Path, timeout_s: float = 1800) -> dict[str, Any]:  # fmt: skip
    """The module docstring's figures; printed, and saved to ``out``."""
    from rich.console import Console

    from vigil.cli.bench_engine import _import_shared, find_shared
    from vigil.cli.bench_kafka import Broker, _values, bench_pipeline, measure_throughput, produce_all
    from vigil.integrations.flink import client
    from vigil.integrations.flink.options import FlinkOptions

    console = Console(stderr=True, highlight=False)
    _import_shared(find_shared(shared, "bench", "perf"))
    from workload import generate  # type: ignore[import-not-found]

    broker = Broker(bootstrap)
    try:
        with tempfile.TemporaryDirectory(prefix="vigil-bench-flink-") as d:
            tmp = Path(d)
            with console.status(f"workload: {n:,} events, {keys:,} keys → JSON…"):
                kk, vv = _values(generate(n, keys))
            topic = broker.topic("events")
            with console.status(f"producing {n:,} events into a 4-partition topic…"):
                produce_all(bootstrap, topic, kk, vv)
            with console.status("the fraud pipeline on the embedded runtime (own process)…"):
                emb = measure_throughput(broker, pipeline, tmp, topic, "exactly-once", "1s", n)
            console.print(f"embedded: {emb['events_per_s']:,.0f} events/s")
            spec = bench_pipeline(pipeline, bootstrap=bootstrap, source=topic, alerts=broker.topic("alerts-flink"),
                                  group=f"vigil-bench-{broker.run}-flink", delivery="exactly-once",
                                  state_dir=tmp / "state-flink", checkpoint_interval="5s")  # fmt: skip
            spec["event_time"] = {**spec.get("event_time", {}), "idle_timeout": "60s"}
            spec.pop("late", None)
            path = tmp / "fraud-flink.yaml"
            path.write_text(yaml.safe_dump(spec, sort_keys=False))
            opt = FlinkOptions(bounded=True, idle_timeout_ms=0)
            with Cluster(tmp / "flink") as cluster:
                console.print(f"cluster up at {cluster.jobmanager}")
                with console.status(f"the fraud pipeline as a Flink job (p={parallelism})…"):
                    fl = cluster.measure(lambda jm: client.submit(str(path), jobmanager=jm, parallelism=parallelism,
                                                                  options=opt), n, timeout_s)  # fmt: skip
                console.print(f"flink: {fl['eps_per_core']:,} events per CPU-second ({fl['cpu_s']} CPU s)")
                anchor_args = ["--bootstrap", bootstrap, "--topic", topic, "--alerts", broker.topic("alerts-anchor"),
                               "--group", f"vigil-bench-{broker.run}-anchor", "--bounded"]  # fmt: skip
                with console.status(f"the per-event anchor job (p={parallelism})…"):
                    pe = cluster.measure(lambda jm: client.submit_module("vigil.integrations.flink.anchor", anchor_args,
                                                                         jobmanager=jm, parallelism=parallelism),
                                         n, timeout_s)  # fmt: skip
                console.print(f"per-event anchor: {pe['eps_per_core']:,} events per CPU-second ({pe['cpu_s']} CPU s)")
    finally:
        broker.close()
    result = {
        "runtime": "flink",
        "events": n,
        "keys": keys,
        "parallelism": parallelism,
        "embedded_eps": round(emb["events_per_s"]),
        "flink_eps_per_core": fl["eps_per_core"],
        "per_event_eps_per_core": pe["eps_per_core"],
        "ratio_vs_per_event": round(fl["eps_per_core"] / max(pe["eps_per_core"], 1), 2),
        "flink": fl,
        "per_event": pe,
        "pipeline": str(pipeline),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "load_avg": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if as_json:
        print(json.dumps(result), flush=True)
    return result

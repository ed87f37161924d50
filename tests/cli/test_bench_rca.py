"""`vigil bench rca`: the figures per fault type and protocol, the latency percentiles, the targets beside them."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from vigil.apps.services.rca_eval import Incident
from vigil.cli.bench_rca import summarize_bench
from vigil.cli.main import app


def _inc(fault: str, protocol: str, ranked: list[str], services: int = 40, rank_ms: float = 100.0) -> Incident:
    return Incident(fault, 1, services, "cart", "latency", ranked, ["latency"] * len(ranked), True, rank_ms,
                    rank_ms * 3, 1000, protocol, rank_ms / 2, rank_ms)  # fmt: skip


def test_summary_per_fault_type_and_protocol_with_targets():
    incs = []
    for protocol in ("inject", "alert"):
        incs += [_inc("latency", protocol, ["cart", "a", "b"]) for _ in range(4)]
        incs += [_inc("cpu_hog", protocol, ["a", "b", "cart"]), _inc("cpu_hog", protocol, ["cart", "a"], 20, 900.0)]
    out = summarize_bench(incs, [1, 2, 3, 4], [20, 40])
    assert out["inject"]["per_fault"]["latency"] == {"n": 4, "top1": 1.0, "top3": 1.0, "kind": 1.0, "detected": 1.0}
    assert out["alert"]["per_fault"]["cpu_hog"]["top1"] == 0.5 and out["alert"]["per_fault"]["cpu_hog"]["top3"] == 1.0
    assert out["inject"]["every_fault_meets_top1_top3"] is False and out["targets"]["met"] is False
    assert out["latency_ms"]["rank_p95_40_services"] == 100.0 and out["latency_ms"]["rank_cpu_p95_40_services"] == 50.0
    assert out["latency_ms"]["rank_p95"] > 100.0 and out["latency_ms"]["series_and_rank_cpu_p95_40_services"] == 150.0
    good = [i for i in incs if i.fault == "latency"]
    assert summarize_bench(good, [1], [40])["targets"]["met"] is True


def test_cli_runs_a_real_incident_and_refuses_bad_options(tmp_path):
    runner = CliRunner()
    out = tmp_path / "rca.json"
    r = runner.invoke(app, ["bench", "rca", "--seeds", "1", "--faults", "error_burst", "--services", "8", "--json",
                            "--out", str(out)])  # fmt: skip
    assert r.exit_code == 0, r.output
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got == json.loads(out.read_text())
    assert set(got["inject"]["per_fault"]) == {"error_burst"} and got["incidents"] == 1
    assert got["inject"]["per_fault"]["error_burst"]["top1"] == 1.0
    assert got["latency_ms"]["rank_p95"] > 0 and got["latency_ms"]["rank_p95_40_services"] is None
    r = runner.invoke(app, ["bench", "rca", "--faults", "disk_full"])
    assert r.exit_code == 2 and "--faults" in r.output and "disk_full" in r.output
    r = runner.invoke(app, ["bench", "rca", "--services", "5,500"])
    assert r.exit_code == 2 and "--services" in r.output

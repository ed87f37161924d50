"""`vigil bench traces` smoke test: a few minutes of the shop's traces, the keys the issue names."""

from __future__ import annotations

import json

from vigil.cli.bench_traces import run_traces_bench


def test_bench_traces_smoke(tmp_path, capsys):
    out = tmp_path / "traces.json"
    res = run_traces_bench(minutes=2, rate=20, services=14, seed=3, repeats=1, as_json=True, out=out)
    assert res["spans_per_s"] > 0 and res["spans_per_cpu_s"] > 0 and res["spans"] > 1000
    assert set(res["gnn_ms"]) >= {"p50", "p99"}
    assert res["red_windows"] > 0 and res["edges"] > 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    assert json.loads(out.read_text()) == res

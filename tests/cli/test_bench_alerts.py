"""`vigil bench alerts` smoke test: a small storm, manager workload and console store; the issue's keys."""

from __future__ import annotations

import json

from vigil.cli.bench_alerts import run_alerts_bench


def test_bench_alerts_smoke(tmp_path, capsys):
    out = tmp_path / "alerts.json"
    res = run_alerts_bench(holders=300, console_alerts=2_000, console_store=None, as_json=True, out=out,
                           manager_keys=300)  # fmt: skip
    for key in ("alerts_per_s", "storm_eps_ratio", "storm_rss_ratio", "console_p95_ms", "alerts_per_cpu_s", "storm_cpu_ratio"):
        assert isinstance(res[key], float) and res[key] > 0, key
    assert res["storm_events"] == 300 * 6
    assert res["storm"]["alerts"] == 300 and res["quiet"]["alerts"] == 0  # one velocity alert per card holder
    assert res["manager_mixed"]["raw_alerts"] == 300 * 2 * 5
    assert res["manager_mixed"]["logical_alerts"] == 300 * 2
    assert set(res["console_calls"]) == {"list", "firing", "deep_pages", "search", "search_rare", "severity",
                                         "by_key", "detail", "health", "all"}
    assert res["console_alerts"] == 2_000
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    assert json.loads(out.read_text()) == res

"""`vigil bench servers` smoke test: a tiny fleet through the worker process, checking the reported keys."""

from __future__ import annotations

import json

from vigil.cli.bench_servers import run_servers_bench


def test_bench_servers_smoke(tmp_path, capsys):
    out = tmp_path / "servers.json"
    res = run_servers_bench(hosts=50, minutes=2, as_json=True, out=out)
    for key in (
        "samples_per_s",
        "windows_per_s",
        "model_ms_mean",
        "model_ms_p95",
        "model_rows_per_batch",
        "peak_rss_mb",
        "alerts",
    ):
        assert key in res, key
    assert res["samples"] == 50 * 6 * 120
    assert res["samples_per_s"] > 0 and res["windows"] > 0 and res["model_batches"] > 0
    assert res["peak_rss_mb"] > 0 and res["alerts"] >= 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == res
    assert json.loads(out.read_text()) == res

"""The services app: RED windows, L1/L2/L3 and the orchestrator on the simulated shop (seconds, no servers)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from vigil.apps.services.detector import ServicesDetector
from vigil.apps.services.evaluate import demo_config, run_seed, score, sim_spec
from vigil.apps.services.gnn import FEATURES, GnnServer, GnnUnavailable, adjacency, build_onnx, forward, random_weights
from vigil.apps.services.orchestrator import Orchestrator, load_config
from vigil.apps.services.red import EDGES_MS, RedWindows, spans_of_window
from vigil.apps.services.sim import ServiceSimulator
from vigil.errors import ConfigError


def _spans(ts, service, peer, kind, dur, err):
    return {
        "ts_ms": np.asarray(ts, np.int64),
        "service": np.asarray(service, object),
        "peer": np.asarray(peer, object),
        "kind": np.asarray(kind, np.int8),
        "duration_ms": np.asarray(dur, float),
        "error": np.asarray(err, float),
    }


def test_red_windows_from_otlp_string_columns_close_on_the_watermark():
    rw = RedWindows(10_000)
    rw.add(_spans([1_000, 2_000, 3_000, 12_000], ["a", "b", "b", "b"], ["b", "", "", ""], [3, 2, 2, 2],
                  [5.0, 4.0, 100.0, 1.0], [0, 0, 1, 0]))  # fmt: skip
    assert rw.advance(9_999) == []
    (cb,) = rw.advance(10_000)
    assert (cb.t0_ms, cb.t1_ms) == (0, 10_000)
    row = {e: i for i, e in enumerate(cb.entities)}
    assert cb.count[row["b"]] == 2 and cb.errors[row["b"]] == 1 and cb.count[row["a->b"]] == 1
    assert cb.slower_than(np.full(len(cb.entities), 50.0))[row["b"]] == 1
    # a span for a closed bin is late: counted, not aggregated
    rw.add(_spans([5_000], ["b"], [""], [2], [1.0], [0]))
    assert rw.late == 1
    (cb2,) = rw.advance(20_000)
    assert cb2.count[row["b"]] == 1
    assert rw.graph.to_json()["edges"][0]["caller"] == "a"


def test_quantiles_are_bucket_edges():
    rw = RedWindows(10_000)
    rw.add(_spans(np.arange(100), ["s"] * 100, [""] * 100, [2] * 100, np.linspace(1, 100, 100), np.zeros(100)))
    (cb,) = rw.advance(10_000)
    p50 = float(cb.quantile(0.5)[0])
    assert p50 in EDGES_MS and 50.0 <= p50 <= 50.0 * 1.13


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="tiers.gold.layers"):
        load_config({"tiers": {"gold": {"layers": ["L4"]}}})
    with pytest.raises(ConfigError, match="services.cart.tier"):
        load_config({"services": {"cart": {"tier": "platinum"}}})
    cfg = load_config({"services": {"cart": {"tier": "best_effort", "latency_ms": 40}}, "gnn": {"threshold": 0.7}})
    assert cfg.tier_of("cart") == "best_effort" and cfg.setting("cart", "latency_ms") == 40.0
    assert np.isnan(cfg.setting("other", "latency_ms")) and cfg.gnn_threshold == 0.7


def test_orchestrator_strategy_by_tier_and_traffic_and_fallbacks():
    cfg = load_config({"services": {"db": {"tier": "best_effort"}}, "budgets_ms": {"L2": 1.0},
                       "over_budget_bins": 2, "cooldown_bins": 3})  # fmt: skip
    orch = Orchestrator(cfg, l3_available=True)
    for _ in range(50):
        orch.observe_traffic("busy", 100, 10.0)
        orch.observe_traffic("quiet", 0.5, 10.0)
        orch.observe_traffic("db", 100, 10.0)
    assert orch.strategy("busy") == ("L1", "L2", "L3")
    assert orch.strategy("quiet") == ("L1",)  # 3 requests a minute: count-aware rules only
    assert orch.strategy("db") == ("L1",)
    assert orch.strategy("busy", max_layers=2) == ("L1", "L2")
    for _ in range(8):  # the first five timings are warm-up, then two over budget in a row
        orch.timed("L2", 5.0)
    assert not orch.up("L2") and orch.strategy("busy") == ("L1", "L3")
    for _ in range(3):
        orch.tick()
    assert orch.up("L2")
    assert orch.metrics()["vigil_services_fallbacks_total"] == [{"layer": "L2", "reason": "over_budget", "value": 1}]
    missing = Orchestrator(cfg, l3_available=False)
    assert missing.strategy("busy") == ("L1",) or "L3" not in missing.strategy("busy")
    # fusion: L1 wins; L2 is vetoed by a calm GNN; the GNN alone needs two bins in a row
    ents = ["busy", "busy->db"]
    anom, who = orch.decide(ents, np.array([True, False]), np.array([False, True]), {"busy": 0.001, "db": 0.001})
    assert anom.tolist() == [True, False] and who == ["L1", "L3"]
    anom, who = orch.decide(["busy"], np.array([False]), np.array([False]), {"busy": 0.99})
    assert not anom[0]
    anom, who = orch.decide(["busy"], np.array([False]), np.array([False]), {"busy": 0.99})
    assert anom[0] and who == ["L3"]


def test_gnn_onnx_file_matches_the_reference_and_serves_batches(tmp_path):
    w = random_weights(seed=3)
    path = tmp_path / "gnn.onnx"
    build_onnx(w, path)
    server = GnnServer(path)
    rng = np.random.default_rng(0)
    svcs = [f"s{i}" for i in range(7)]
    ai, ao = adjacency(svcs, [("s0", "s1"), ("s1", "s2"), ("s0", "s3"), ("s3", "s4")])
    x = rng.standard_normal((5, 7, len(FEATURES)))
    got = server.score(x, np.broadcast_to(ai, (5, 7, 7)), np.broadcast_to(ao, (5, 7, 7)))
    assert got.shape == (5, 7)
    np.testing.assert_allclose(got, forward(w, x, ai, ao), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(server.score(x[0], ai, ao), got[0], rtol=1e-5)
    with pytest.raises(GnnUnavailable):
        GnnServer(tmp_path / "nope.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(GnnUnavailable):
        GnnServer(tmp_path / "bad.onnx")
    build_onnx(w, tmp_path / "other.onnx", features=[*FEATURES[:-1], "something_else"])
    with pytest.raises(GnnUnavailable, match="features"):
        GnnServer(tmp_path / "other.onnx")


def _small_spec(faults=("error_burst", "latency")):
    return sim_spec(13, services=16, warmup_min=20.0, per_fault_min=12.0, faults=faults)


def test_detects_faults_on_the_simulator_and_records_the_deciding_layer(tmp_path):
    path = tmp_path / "gnn.onnx"
    build_onnx(random_weights(seed=1), path)
    spec = _small_spec()
    sim, alerts, det = run_seed(spec, demo_config(str(path)))
    res = score(sim.ground_truth(), alerts, ready_ms=spec.start_ms + int(spec.warmup_min * 60_000))
    for level in ("L1+L2", "L1+L2+L3"):
        assert all(f["detected"] for f in res[level]["faults"]), res[level]
        assert all(f["delay_s"] <= 120 for f in res[level]["faults"]), res[level]
    assert {a.layer for a in alerts} <= {"L1", "L2", "L3"}
    m = det.orch.metrics()
    assert sum(r["value"] for r in m["vigil_services_decisions_total"]) > 0
    assert det.red.graph.to_json()["edges"]


def test_missing_model_falls_back_and_says_so():
    spec = _small_spec(("error_burst",))
    cfg = demo_config("/nonexistent/gnn.onnx")
    sim, alerts, det = run_seed(spec, cfg)
    assert not det.orch.up("L3")
    assert {"layer": "L3", "reason": "unloadable", "value": 1} in det.orch.metrics()["vigil_services_fallbacks_total"]
    res = score(sim.ground_truth(), alerts, ready_ms=spec.start_ms + int(spec.warmup_min * 60_000))
    assert res["L1+L2+L3"]["faults"][0]["detected"]


def test_crash_and_restart_from_a_snapshot_keeps_the_baselines(tmp_path):
    """Abort mid-stream, restore the codec-encoded snapshot into a fresh detector: same verdicts as uninterrupted."""
    from vigil.state.codec import decode, encode

    path = tmp_path / "gnn.onnx"
    build_onnx(random_weights(seed=2), path)
    spec = _small_spec(("latency",))
    cfg = demo_config(str(path))
    ticks = itertools.count()
    clock = lambda: next(ticks) * 1e-6  # noqa: E731 - a manual clock: 1 µs a call, no layer is ever over budget
    sim = ServiceSimulator(spec)
    windows = [spans_of_window(w, sim.names) | {"_wm": w.t1_ms} for w in sim.run()]

    def run(det, ws):
        out = []
        for b in ws:
            det.add(b)
            out += [(bv.t1_ms, bv.anomalous.tolist(), bv.layer, [(a.entity, a.layer, a.level) for a in bv.alerts])
                    for bv in det.advance(int(b["_wm"]))]  # fmt: skip
        return out

    whole = run(ServicesDetector(cfg, clock=clock), windows)
    cut = 18  # minutes: the baselines (thresholds, Holt-Winters) are learned by then; the fault starts at 20
    first = ServicesDetector(cfg, clock=clock)
    part1 = run(first, windows[:cut])
    state = decode(encode("app/services", 1, {}, first.snapshot()), kind="app/services", version=1)["state"]
    second = ServicesDetector(cfg, clock=clock)
    second.restore(state)
    assert np.isfinite(second.l1.threshold_ms).any()
    part2 = run(second, windows[cut:])
    assert part1 + part2 == whole
    assert any(alerts for *_, alerts in part2)


def test_services_step_on_the_dataflow_seam_emits_alerts_and_restores(tmp_path):
    """The step reads otlp-contract span columns from batches; alerts carry the deciding layer; state round-trips."""
    from vigil.config.registry import step_kinds
    from vigil.dataflow.outputs import CollectingOutputs
    from vigil.types import Batch

    kind = step_kinds()["services"]
    spec = kind.spec(name="shop", services={"services": {"batch-scheduler": {"tier": "best_effort"}}})

    class Ctx:
        base_dir = str(tmp_path)

    step = kind.build(spec, Ctx())
    with pytest.raises(ConfigError, match="step `shop`: `services.tiers.x.layers`"):
        kind.build(kind.spec(name="shop", services={"tiers": {"x": {"layers": ["L9"]}}}), Ctx())
    sink = object()
    out = CollectingOutputs("p", alert_sinks=[sink])
    sim = ServiceSimulator(_small_spec(("error_burst",)))
    names = np.asarray(sim.names["service"], object)
    for i, w in enumerate(sim.run()):
        cols = spans_of_window(w, sim.names)
        b = Batch(np.zeros(len(cols["ts_ms"]), np.int32), cols["ts_ms"],
                  {"duration_ms": cols["duration_ms"], "error": cols["error"]},
                  {"service": names[cols["service"]], "peer": np.where(cols["peer"] >= 0, names[cols["peer"]], ""),
                   "kind": cols["kind"], "version": cols["version"]})  # fmt: skip
        step.on_batch(b, np.array([]), np.zeros(len(b), np.int64), out)
        step.on_watermark(w.t1_ms, out)
        if i == 10:
            state = step.snapshot()
    alerts = out.collected(sink)
    f = sim.ground_truth()["faults"][0]
    assert any(a.event_ts_ms >= f["start_ms"] and f["service"] in a.key for a in alerts)
    g = step.graph_json()  # what the console's Services view draws: per service its deciding layer, the counters
    nodes = {n["id"]: n for n in g["nodes"]}
    assert nodes[f["service"]]["layer"] in {"L1", "L2", "L3"} and all(n["strategy"][0] == "L1" for n in nodes.values())
    assert g["edges"] and all(e["source"] in nodes and e["target"] in nodes and e["rate"] >= 0 for e in g["edges"])
    decided = sum(sum(d.values()) for d in step.det.decided_by.values())
    assert decided == sum(r["value"] for r in g["orchestrator"]["decisions"]) > 0
    assert {a.labels["layer"] for a in alerts} <= {"L1", "L2", "L3"}
    fresh = kind.build(spec, Ctx())
    fresh.restore(state)
    assert fresh.state_key() == step.state_key() and fresh.det.red.entities


def test_demo_json_has_the_issue_keys(tmp_path, monkeypatch, capsys):
    """`vigil demo services --json`: the last line is JSON with the keys issue 14 names (one small run)."""
    import json

    from vigil.cli.demo_services import run_services_demo

    monkeypatch.chdir(tmp_path)  # no models/services-gnn.onnx here: L3 falls back, and the JSON says so
    run_services_demo(seeds=1, first_seed=13, services=12, per_fault_min=4.0, as_json=True)
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("recall_by_fault", "precision", "delay_s", "false_alerts_per_service_day", "ablation"):
        assert key in res
    assert set(res["delay_s"]) == {"p50", "p95"} and set(res["ablation"]) == {"L1", "L1+L2", "L1+L2+L3"}
    assert res["fallbacks"] == {"L3:missing": 1} and res["gnn_model"] is None

"""The microservice shop simulator: determinism, realism, faults and oddities, propagation (no wall clock)."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.apps.services.sim import FAULT_TYPES, ServiceSimSpec, ServiceSimulator, shop_topology
from vigil.apps.services.sim.emit import MemorySink
from vigil.apps.services.sim.metrics import METRICS
from vigil.apps.services.sim.model import KIND_CLIENT, KIND_SERVER
from vigil.apps.services.sim.topology import catalogue

SMALL = dict(services=20, peak_rate=20.0, window_s=60)


def run(spec: ServiceSimSpec) -> tuple[ServiceSimulator, dict, dict]:
    sim = ServiceSimulator(spec)
    mem = MemorySink()
    for w in sim.run():
        mem.write(w)
    return sim, mem.spans(), mem.metrics()


def one_fault(fault: str, seed: int = 3, **kw) -> tuple[ServiceSimulator, dict, dict]:
    minutes = kw.pop("minutes", 24)
    spec = ServiceSimSpec(**{**SMALL, **kw}, minutes=minutes, seed=seed, faults=(fault,), legit=False, warmup_min=10)
    return run(spec)


def server_stats(sim, spans, service, t0, t1):
    """(count, error share, p50 ms, p90 ms) of a service's server spans starting in [t0, t1)."""
    s = sim.topology.service_index(service)
    m = (spans["kind"] == KIND_SERVER) & (spans["service"] == s) & (spans["ts_ms"] >= t0) & (spans["ts_ms"] < t1)
    d = spans["duration_us"][m] / 1000
    return int(m.sum()), float(np.mean(spans["status"][m] == 2)), float(np.median(d)), float(np.percentile(d, 90))


def client_stats(sim, spans, caller, callee, t0, t1):
    """(count, error share, p50 ms, p90 ms) of caller->callee client spans starting in [t0, t1)."""
    a, b = sim.topology.service_index(caller), sim.topology.service_index(callee)
    m = (spans["kind"] == KIND_CLIENT) & (spans["service"] == a) & (spans["peer"] == b)
    m &= (spans["ts_ms"] >= t0) & (spans["ts_ms"] < t1)
    d = spans["duration_us"][m] / 1000
    return int(m.sum()), float(np.mean(spans["status"][m] == 2)), float(np.median(d)), float(np.percentile(d, 90))


def metric(sim, metrics, service, name, t0, t1):
    s = sim.topology.service_index(service)
    m = (metrics["service"] == s) & (metrics["metric"] == METRICS.index(name))
    m &= (metrics["ts_ms"] > t0) & (metrics["ts_ms"] <= t1)
    return float(np.mean(metrics["value"][m]))


def windows(f):
    """Before the fault (5 min), and its middle part."""
    mid = (f.start_ms + f.end_ms) // 2
    return (f.start_ms - 300_000, f.start_ms), (f.start_ms + 60_000, max(mid, f.start_ms + 120_000))


# ---- determinism ----


def test_same_seed_same_spans_and_metrics():
    spec = ServiceSimSpec(**SMALL, minutes=12, seed=5, faults=("latency",), warmup_min=6)
    _, a, ma = run(spec)
    _, b, mb = run(spec)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)
    _, c, _ = run(ServiceSimSpec(**SMALL, minutes=12, seed=6, faults=("latency",), warmup_min=6))
    assert len(c["span_id"]) != len(a["span_id"]) or not np.array_equal(c["span_id"], a["span_id"])


def test_ids_are_unique_and_parents_exist():
    _, sp, _ = run(ServiceSimSpec(**SMALL, minutes=3, seed=2, faults=(), legit=False))
    assert len(np.unique(sp["span_id"])) == len(sp["span_id"])
    assert not (sp["span_id"] == 0).any()
    par = sp["parent_span_id"][sp["parent_span_id"] != 0]
    assert np.isin(par, sp["span_id"]).all()
    # a child starts no earlier than its parent and ends (server spans) within the trace's lifetime
    pos = {int(s): i for i, s in enumerate(sp["span_id"])}
    rows = np.flatnonzero(sp["parent_span_id"] != 0)[:5000]
    parents = np.array([pos[int(p)] for p in sp["parent_span_id"][rows]])
    assert (sp["start_us"][rows] >= sp["start_us"][parents]).all()
    same_trace = (sp["trace_hi"][rows] == sp["trace_hi"][parents]) & (sp["trace_lo"][rows] == sp["trace_lo"][parents])
    assert same_trace.all()


# ---- realism ----


def test_topology_looks_like_a_shop():
    names = [d.name for d in catalogue()]
    for s in ("frontend", "cart", "checkout", "payment", "shipping", "currency", "catalog", "recommendation", "ads",
              "email", "redis-cart", "mysql-catalog", "postgres-orders", "kafka-events"):
        assert s in names
    for n in (20, 30, 40):
        topo = shop_topology(n)
        assert len(topo.services) == n and topo.services[0] == "frontend"
        kinds = {d.kind for d in topo.defs}
        assert {"entry", "app", "datastore"} <= kinds
        # every service but the cron scheduler is reached from the frontend
        reach = {"frontend"}
        for _ in range(10):
            reach |= {topo.services[b] for a, b in topo.edges if topo.services[a] in reach}
        assert set(topo.services) - reach <= {"batch-scheduler"}
        assert topo.fanout[topo.service_index("frontend")] == pytest.approx(1.0)
        assert (topo.replicas >= 1).all()
    with pytest.raises(ValueError, match="services"):
        shop_topology(50)


def test_latencies_rates_and_daily_rhythm_are_plausible():
    sim, sp, met = run(ServiceSimSpec(**SMALL, minutes=6, seed=1, faults=(), legit=False))
    t0, t1 = sim.spec.start_ms, sim.end_ms
    n_fe, err_fe, p50_fe, p90_fe = server_stats(sim, sp, "frontend", t0, t1)
    assert 15 * 360 * 0.5 < n_fe < 25 * 360 * 1.2  # ~20/s at the peak, x the hour's share
    assert err_fe < 0.01 and 5 < p50_fe < 100 and p90_fe > p50_fe
    # caches answer faster than the services that call them, the payment gateway slower than most
    _, _, p50_redis, _ = client_stats(sim, sp, "cart", "redis-cart", t0, t1)
    _, _, p50_cart, _ = server_stats(sim, sp, "cart", t0, t1)
    assert p50_redis < p50_cart
    # about 10-40 spans per trace
    traces = len(np.unique(sp["trace"]))
    assert 8 < len(sp["span_id"]) / traces < 60
    # night is quieter than lunchtime
    from vigil.apps.services.sim.effects import diurnal

    day0 = sim.spec.start_ms - sim.spec.start_ms % 86_400_000
    assert diurnal(np.array([day0 + 3 * 3_600_000]), np.zeros(3))[0] < 0.2 < diurnal(
        np.array([day0 + 13 * 3_600_000]), np.zeros(3))[0]
    assert set(np.unique(met["metric"]).tolist()) == set(range(len(METRICS)))


# ---- faults: visible at the root, carried upstream ----


def test_latency_fault_shows_at_its_service_and_upstream():
    sim, sp, _ = one_fault("latency", seed=4)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    caller = _caller_of(sim, f.service)[0]
    seen = client_stats(sim, sp, caller, f.service, b0, b1)[2], client_stats(sim, sp, caller, f.service, a0, a1)[2]
    assert seen[1] > seen[0] + 0.5 * f.params["add_ms"]
    # upstream: the caller gets slower too (at p90: not every request calls it)
    assert server_stats(sim, sp, caller, a0, a1)[3] > server_stats(sim, sp, caller, b0, b1)[3] * 1.3


def _caller_of(sim, service):
    topo = sim.topology
    s = topo.service_index(service)
    callers = [a for a, b in topo.edges if b == s and topo.defs[a].kind != "batch"]
    return topo.services[callers[0]], service


def test_error_burst_fails_its_service_and_callers_see_it():
    sim, sp, met = one_fault("error_burst", seed=5)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    assert server_stats(sim, sp, f.service, b0, b1)[1] < 0.02
    assert server_stats(sim, sp, f.service, a0, a1)[1] > 0.5 * f.params["error_p"]
    caller, _ = _caller_of(sim, f.service)
    assert client_stats(sim, sp, caller, f.service, a0, a1)[1] > client_stats(sim, sp, caller, f.service, b0, b1)[1] + 0.1
    assert metric(sim, met, f.service, "errors", a0, a1) > metric(sim, met, f.service, "errors", b0, b1) + 1


def test_cpu_hog_saturates_cpu_and_slows_the_service():
    sim, sp, met = one_fault("cpu_hog", seed=6)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    assert metric(sim, met, f.service, "cpu", a0, a1) > 0.6 > metric(sim, met, f.service, "cpu", b0, b1)
    assert metric(sim, met, f.service, "cpu_pressure", a0, a1) > 3 * metric(sim, met, f.service, "cpu_pressure", b0, b1)
    caller, _ = _caller_of(sim, f.service)
    assert client_stats(sim, sp, caller, f.service, a0, a1)[3] > 1.5 * client_stats(sim, sp, caller, f.service, b0, b1)[3]


def test_memory_leak_fills_memory_then_gc_pauses_lengthen_the_tail():
    sim, sp, met = one_fault("memory_leak", seed=7, minutes=30)
    f = sim.plan.faults[0]
    late0, late1 = f.end_ms - 180_000, f.end_ms
    b0, b1 = f.start_ms - 300_000, f.start_ms
    assert metric(sim, met, f.service, "mem", late0, late1) > 1.6 * metric(sim, met, f.service, "mem", b0, b1)
    assert metric(sim, met, f.service, "gc", late0, late1) > 5 * metric(sim, met, f.service, "gc", b0, b1)
    assert server_stats(sim, sp, f.service, late0, late1)[3] > 1.5 * server_stats(sim, sp, f.service, b0, b1)[3]


@pytest.mark.parametrize("seed", [8, 9])
def test_dependency_outage_fails_calls_to_the_dependency(seed):
    sim, sp, met = one_fault("dependency_outage", seed=seed)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    caller, _ = _caller_of(sim, f.service)
    n, err, p50, _ = client_stats(sim, sp, caller, f.service, a0, a1)
    assert n > 0 and err > 0.95
    if f.params["mode"] == "refused":
        assert p50 < 5
    else:  # hanging: the caller waits for its timeout
        assert p50 >= 50
    assert metric(sim, met, f.service, "requests", a0, a1) == 0  # the datastore served nothing
    assert server_stats(sim, sp, caller, a0, a1)[1] > server_stats(sim, sp, caller, b0, b1)[1]


def test_bad_deploy_changes_the_version_and_hurts():
    sim, sp, _ = one_fault("bad_deploy", seed=10)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    s = sim.topology.service_index(f.service)
    ver = sim.names["version"]
    srv = (sp["kind"] == KIND_SERVER) & (sp["service"] == s)
    during = srv & (sp["ts_ms"] >= a0) & (sp["ts_ms"] < a1)
    assert {ver[v] for v in np.unique(sp["version"][during])} == {f.params["version"]}
    before = server_stats(sim, sp, f.service, b0, b1)
    after = server_stats(sim, sp, f.service, a0, a1)
    assert after[1] > before[1] + 0.5 * f.params["error_p"] - 0.01 or after[2] > 1.5 * before[2]
    # the humans roll back at the window's end: the version before it runs again
    late = srv & (sp["ts_ms"] >= f.end_ms + 60_000)
    assert f.params["version"] not in {ver[v] for v in np.unique(sp["version"][late])}
    assert [c["cause"] for c in sim.world.changes if c["service"] == f.service][-2:] == ["release", "rollback"]


def test_network_delay_slows_one_edge_not_the_callee():
    sim, sp, _ = one_fault("network_delay", seed=11)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    caller, callee = f.edge
    assert client_stats(sim, sp, caller, callee, a0, a1)[3] > client_stats(sim, sp, caller, callee, b0, b1)[3] + 20
    if sim.topology.defs[sim.topology.service_index(callee)].instrumented:
        assert server_stats(sim, sp, callee, a0, a1)[3] < 1.5 * server_stats(sim, sp, callee, b0, b1)[3] + 1


def test_noisy_neighbour_slows_one_zone():
    sim, sp, met = one_fault("noisy_neighbour", seed=12)
    f = sim.plan.faults[0]
    (b0, b1), (a0, a1) = windows(f)
    s = sim.topology.service_index(f.service)
    z = sim.names["zone"].index(f.zone)
    assert metric(sim, met, f.service, "cpu_pressure", a0, a1) > 2 * metric(sim, met, f.service, "cpu_pressure", b0, b1)
    if sim.topology.defs[s].instrumented:
        srv = (sp["kind"] == KIND_SERVER) & (sp["service"] == s) & (sp["ts_ms"] >= a0) & (sp["ts_ms"] < a1)
        slow = np.median(sp["duration_us"][srv & (sp["zone"] == z)])
        fine = np.median(sp["duration_us"][srv & (sp["zone"] != z)])
        assert slow > 1.3 * fine


# ---- legitimate oddities ----


def test_legit_oddities_are_in_the_truth_and_in_the_data():
    sim, sp, _ = run(ServiceSimSpec(**SMALL, minutes=45, seed=13, faults=("latency",), warmup_min=10))
    truth = sim.ground_truth()
    assert {o["type"] for o in truth["legit"]} == {"traffic_spike", "scheduled_batch", "slow_warmup"}
    assert all(o["legit"] for o in truth["legit"])
    assert [f["type"] for f in truth["faults"]] == ["latency"]
    odd = {o.type: o for o in sim.plan.oddities}
    spike = odd["traffic_spike"]
    mid = (spike.start_ms + spike.end_ms) // 2
    during = server_stats(sim, sp, "frontend", mid - 60_000, mid + 60_000)[0]
    before = server_stats(sim, sp, "frontend", spike.start_ms - 180_000, spike.start_ms - 60_000)[0]
    assert during > 1.3 * before
    batch = odd["scheduled_batch"]
    b = sim.topology.service_index("batch-scheduler")
    cron = (sp["service"] == b) & (sp["kind"] == KIND_SERVER)
    assert cron.any() and (sp["ts_ms"][cron] >= batch.start_ms).all() and (sp["ts_ms"][cron] < batch.end_ms + 1000).all()
    warm = odd["slow_warmup"]
    first = server_stats(sim, sp, warm.service, warm.start_ms, warm.start_ms + 30_000)
    settled = server_stats(sim, sp, warm.service, warm.end_ms, warm.end_ms + 120_000)
    assert first[2] > 1.3 * settled[2]
    assert any(c["service"] == warm.service and c["version"] == warm.params["version"] for c in truth["changes"])


def test_every_fault_type_in_one_run():
    sim = ServiceSimulator(ServiceSimSpec(**SMALL, minutes=90, seed=14))
    assert sorted(f.type for f in sim.plan.faults) == sorted(FAULT_TYPES)
    starts = sorted((f.start_ms, f.end_ms) for f in sim.plan.faults)
    assert all(a[1] <= b[0] for a, b in zip(starts, starts[1:]))  # one at a time
    with pytest.raises(ValueError, match="too short"):
        ServiceSimulator(ServiceSimSpec(**SMALL, minutes=20, seed=1))

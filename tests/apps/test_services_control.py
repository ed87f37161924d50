"""The control API really heals the simulated shop: each remediation removes its fault's effect from later spans."""

from __future__ import annotations

import numpy as np
import pytest

from vigil.apps.services.sim import ServiceSimSpec, ServiceSimulator
from vigil.apps.services.sim.control import SimRunner, control_app
from vigil.apps.services.sim.emit import MemorySink, concat
from vigil.apps.services.sim.metrics import METRICS
from vigil.apps.services.sim.model import KIND_CLIENT, KIND_SERVER


class Stepped:
    """A stepped simulation (10 s windows) that keeps every window."""

    def __init__(self, fault: str, seed: int, services: int = 20) -> None:
        self.sim = ServiceSimulator(ServiceSimSpec(services=services, minutes=30, seed=seed, peak_rate=20.0,
                                                   faults=(fault,), legit=False, warmup_min=8, window_s=10))
        self.mem = MemorySink()
        self.fault = self.sim.plan.faults[0]

    def until(self, t_ms: int) -> None:
        while self.sim.now_ms < t_ms:
            self.mem.write(self.sim.step())

    def spans(self, t0: int, t1: int, **eq: int) -> dict[str, np.ndarray]:
        sp = self.mem.spans()
        m = (sp["ts_ms"] >= t0) & (sp["ts_ms"] < t1)
        for k, v in eq.items():
            m &= sp[k] == v
        return {k: v[m] for k, v in sp.items()}

    def metric(self, service: str, name: str, t0: int, t1: int) -> float:
        met = concat([w.metrics for w in self.mem.windows])
        s = self.sim.topology.service_index(service)
        m = (met["service"] == s) & (met["metric"] == METRICS.index(name)) & (met["ts_ms"] > t0) & (met["ts_ms"] <= t1)
        return float(met["value"][m].mean())

    def idx(self, service: str) -> int:
        return self.sim.topology.service_index(service)

    def caller(self) -> int:
        topo = self.sim.topology
        s = self.idx(self.fault.service)
        return next(a for a, b in topo.edges if b == s and topo.defs[a].kind != "batch")


def p90_ms(sp: dict[str, np.ndarray]) -> float:
    return float(np.percentile(sp["duration_us"], 90) / 1000)


def err(sp: dict[str, np.ndarray]) -> float:
    return float(np.mean(sp["status"] == 2))


def test_rollback_ends_a_bad_deploy():
    run = Stepped("bad_deploy", seed=21)
    f = run.fault
    s = run.idx(f.service)
    run.until(f.start_ms + 120_000)
    before = run.spans(f.start_ms - 240_000, f.start_ms - 30_000, service=s, kind=KIND_SERVER)
    bad = run.spans(f.start_ms + 60_000, f.start_ms + 120_000, service=s, kind=KIND_SERVER)
    assert err(bad) > err(before) + 0.04 or p90_ms(bad) > 1.8 * p90_ms(before)
    rec = run.sim.rollback(f.service)
    assert rec["changed"] and rec["previous"] == f.params["version"]
    t = run.sim.now_ms
    run.until(t + 150_000)
    after = run.spans(t + 60_000, t + 150_000, service=s, kind=KIND_SERVER)
    versions = {run.sim.names["version"][v] for v in np.unique(after["version"])}
    assert f.params["version"] not in versions
    assert err(after) < err(before) + 0.02 and p90_ms(after) < 1.4 * p90_ms(before) + 1
    assert run.sim.ground_truth()["actions"][0]["action"] == "rollback"


def test_restart_clears_a_memory_leak():
    run = Stepped("memory_leak", seed=22)
    f = run.fault
    late = f.start_ms + int(0.8 * (f.end_ms - f.start_ms))
    run.until(late)
    base_mem = run.metric(f.service, "mem", f.start_ms - 240_000, f.start_ms)
    high_mem = run.metric(f.service, "mem", late - 60_000, late)
    assert high_mem > 1.5 * base_mem
    run.sim.restart(f.service)
    t = run.sim.now_ms
    run.until(t + 60_000)
    assert run.metric(f.service, "mem", t, t + 60_000) < 1.1 * base_mem
    assert run.metric(f.service, "gc", t + 30_000, t + 60_000) < 2 * run.metric(f.service, "gc", f.start_ms - 240_000,
                                                                               f.start_ms)


def test_restart_ends_a_cpu_hog_and_scaling_relieves_it():
    run = Stepped("cpu_hog", seed=23)
    f = run.fault
    s = run.idx(f.service)
    c = run.caller()
    run.until(f.start_ms + 90_000)
    base = run.spans(f.start_ms - 240_000, f.start_ms, service=c, peer=s, kind=KIND_CLIENT)
    hog = run.spans(f.start_ms + 30_000, f.start_ms + 90_000, service=c, peer=s, kind=KIND_CLIENT)
    assert p90_ms(hog) > 2 * p90_ms(base)
    # scaling out: the hog keeps its cores, the new replicas do the work
    replicas = int(run.sim.world.replicas[s].sum())
    assert run.sim.scale(f.service, replicas * 6)["changed"]
    t = run.sim.now_ms
    run.until(t + 60_000)
    scaled = run.spans(t, t + 60_000, service=c, peer=s, kind=KIND_CLIENT)
    assert p90_ms(scaled) < 0.7 * p90_ms(hog)
    assert run.metric(f.service, "cpu", t, t + 60_000) < run.metric(f.service, "cpu", f.start_ms + 30_000,
                                                                  f.start_ms + 90_000)
    # a restart kills the runaway process
    run.sim.scale(f.service, replicas)
    run.sim.restart(f.service)
    t = run.sim.now_ms
    run.until(t + 90_000)
    healed = run.spans(t + 45_000, t + 90_000, service=c, peer=s, kind=KIND_CLIENT)
    assert p90_ms(healed) < 1.5 * p90_ms(base) + 1
    assert f.cleared_ms == t


@pytest.mark.parametrize("fault,seed", [("noisy_neighbour", 24), ("network_delay", 25)])
def test_shifting_traffic_away_from_the_bad_zone_heals(fault, seed):
    run = Stepped(fault, seed=seed)
    f = run.fault
    s = run.idx(f.service)
    c = run.sim.topology.service_index(f.edge[0]) if f.edge else run.caller()
    bad_zone = run.sim.names["zone"].index(f.zone)
    run.until(f.start_ms + 90_000)
    base = run.spans(f.start_ms - 240_000, f.start_ms, service=c, peer=s, kind=KIND_CLIENT)
    sick = run.spans(f.start_ms + 30_000, f.start_ms + 90_000, service=c, peer=s, kind=KIND_CLIENT)
    assert p90_ms(sick) > 1.5 * p90_ms(base)
    good = run.sim.names["zone"][1 - bad_zone]
    rec = run.sim.shift_traffic(f.service, {good: 1.0})
    assert rec["changed"] and rec["weights"][f.zone] == 0.0
    t = run.sim.now_ms
    run.until(t + 60_000)
    healed = run.spans(t, t + 60_000, service=c, peer=s, kind=KIND_CLIENT)
    assert p90_ms(healed) < 1.3 * p90_ms(base) + 2
    served = run.spans(t, t + 60_000, service=s, kind=KIND_SERVER)
    assert not len(served["zone"]) or (served["zone"] != bad_zone).all()


def test_restart_brings_back_a_dependency():
    for seed in range(30, 40):  # a seed whose outage hits a datastore its callers retry on
        run = Stepped("dependency_outage", seed=seed)
        if run.sim.topology.defs[run.idx(run.fault.service)].kind == "datastore":
            break
    f = run.fault
    s, c = run.idx(f.service), run.caller()
    run.until(f.start_ms + 60_000)
    assert err(run.spans(f.start_ms + 20_000, f.start_ms + 60_000, service=c, peer=s, kind=KIND_CLIENT)) > 0.95
    run.sim.restart(f.service)
    t = run.sim.now_ms
    run.until(t + 60_000)
    assert err(run.spans(t, t + 60_000, service=c, peer=s, kind=KIND_CLIENT)) < 0.05


def test_actions_are_validated():
    sim = ServiceSimulator(ServiceSimSpec(services=12, minutes=5, seed=1, faults=(), peak_rate=5.0))
    with pytest.raises(ValueError, match="no service"):
        sim.restart("nope")
    with pytest.raises(ValueError, match="replicas"):
        sim.scale("cart", 0)
    with pytest.raises(ValueError, match="weights"):
        sim.shift_traffic("cart", {"zone-x": 1})
    assert sim.rollback("cart")["changed"] is False  # nothing deployed yet


# ---- the HTTP face and the runner ----


def test_http_control_api_steers_a_stepped_run():
    from fastapi.testclient import TestClient

    sim = ServiceSimulator(ServiceSimSpec(services=12, minutes=5, seed=2, faults=(), peak_rate=5.0, window_s=10))
    sink = MemorySink()
    runner = SimRunner(sim, [sink], mode="stepped")
    client = TestClient(control_app(runner))
    assert client.get("/health").json()["ok"] is True
    topo = client.get("/topology").json()
    assert topo["services"]["frontend"] == "entry" and ["frontend", "cart"] in topo["edges"]
    r = client.post("/step", json={"windows": 3}).json()
    assert [w["t1_ms"] - w["t0_ms"] for w in r] == [10_000] * 3 and len(sink.windows) == 3
    assert client.post("/actions/scale", json={"service": "cart", "replicas": 5}).json()["replicas"] == [3, 2]
    r = client.post("/actions/shift-traffic", json={"service": "cart", "weights": {"zone-a": 1, "zone-b": 0}})
    assert r.status_code == 200 and r.json()["weights"]["zone-b"] == 0.0
    assert client.post("/actions/restart", json={"service": "cart"}).json()["action"] == "restart"
    assert client.post("/actions/rollback", json={"service": "cart"}).json()["changed"] is False
    assert client.post("/actions/restart", json={"service": "nope"}).status_code == 404
    assert client.post("/actions/scale", json={"service": "cart", "replicas": 0}).status_code == 400
    assert client.post("/step", json={"windows": 0}).status_code == 400
    assert [a["action"] for a in client.get("/actions").json()] == ["scale", "shift_traffic", "restart", "rollback"]
    state = client.get("/state").json()["services"]["cart"]
    assert state["weights"] == {"zone-a": 1.0, "zone-b": 0.0}
    assert client.get("/ground-truth").status_code == 404  # a healer must not peek
    client.post("/step", json={"windows": 2})
    zones = sink.windows[-1].spans["zone"][(sink.windows[-1].spans["service"] == sim.topology.service_index("cart"))
                                          & (sink.windows[-1].spans["kind"] == KIND_SERVER)]
    assert (zones == 0).all()
    paced = TestClient(control_app(SimRunner(sim, [], mode="paced"), expose_truth=True))
    assert paced.post("/step", json={"windows": 1}).status_code == 409
    assert "faults" in paced.get("/ground-truth").json()


def test_paced_runner_keeps_simulated_time_ahead_of_an_injected_clock():
    sim = ServiceSimulator(ServiceSimSpec(services=12, minutes=1, seed=3, faults=(), peak_rate=5.0, window_s=10))
    now = [100.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    runner = SimRunner(sim, [], mode="paced")
    runner.run_paced(10.0, clock=lambda: now[0], sleep=sleep)
    assert sim.done and runner.windows == 6
    # 10 s windows at 10x: one second of (fake) wall time between windows
    assert slept == pytest.approx([1.0] * 5)


def test_control_api_acts_once_per_idempotency_key_and_checks_the_token():
    from fastapi.testclient import TestClient

    sim = ServiceSimulator(ServiceSimSpec(services=12, minutes=5, seed=2, faults=(), peak_rate=5.0, window_s=10))
    runner = SimRunner(sim, [], mode="stepped")
    client = TestClient(control_app(runner, token="s3cret"))
    body = {"service": "cart", "replicas": 4}
    assert client.post("/actions/scale", json=body).status_code == 401
    assert client.post("/actions/scale", json=body, headers={"Authorization": "Bearer nope"}).status_code == 401
    assert client.post("/step", json={"windows": 1}).status_code == 401
    assert client.get("/state").status_code == 200  # reads stay open
    auth = {"Authorization": "Bearer s3cret", "Idempotency-Key": "inc-1:scale/0"}
    first = client.post("/actions/scale", json=body, headers=auth)
    again = client.post("/actions/scale", json=body, headers=auth)
    assert first.status_code == again.status_code == 200 and first.json() == again.json()
    assert again.headers["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in first.headers
    assert [a["action"] for a in sim.world.actions] == ["scale"] and runner.keys["inc-1:scale/0"] == 2
    other = client.post("/actions/scale", json={"service": "cart", "replicas": 2}, headers=auth)
    assert other.status_code == 422 and len(sim.world.actions) == 1
    plain = {"Authorization": "Bearer s3cret"}  # no key: acts every time
    client.post("/actions/restart", json={"service": "cart"}, headers=plain)
    client.post("/actions/restart", json={"service": "cart"}, headers=plain)
    assert [a["action"] for a in sim.world.actions] == ["scale", "restart", "restart"]
    assert "s3cret" not in client.post("/actions/scale", json=body).text

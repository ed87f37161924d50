"""Root-cause ranking: inputs (CSV, folders, edges, spans), the method's steps on small cases, the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest

from vigil.rca import (
    ChangeEvent,
    MetricFrame,
    ServiceGraph,
    detect_incident,
    infer_graph,
    rank_causes,
    read_csv_folder,
    read_edges,
    read_wide_csv,
    red_frame,
)
from vigil.rca.graph import personalized_pagerank
from vigil.rca.scores import baseline, onset, peak

T = 180  # 30 minutes of 10 s bins
STEP = 10_000
T0 = 1_772_452_800_000  # 2026-03-02 12:00 UTC
AT = T0 + 170 * STEP  # the incident is raised at bin 170
FAULT = 150  # the fault starts at bin 150


def noisy(base: float, rng: np.random.Generator, rel: float = 0.05) -> np.ndarray:
    return base * np.exp(rel * rng.standard_normal(T))


def chain_frame(seed: int = 0, fault: str = "latency") -> MetricFrame:
    """frontend -> api -> db, with RED series per service and edge, cpu per service; a fault in db."""
    rng = np.random.default_rng(seed)
    ents = ["frontend", "api", "db", "frontend->api", "api->db"]
    mets = ["rate", "errors", "latency-mean", "latency-p90", "cpu"]
    v = np.zeros((len(ents), len(mets), T))
    lat = {"db": noisy(2.0, rng), "api": noisy(5.0, rng), "frontend": noisy(3.0, rng)}
    err = {e: np.abs(0.002 * rng.standard_normal(T)) for e in ("db", "api", "frontend")}
    cpu = {e: noisy(0.2, rng) for e in ("db", "api", "frontend")}
    if fault == "latency":
        lat["db"][FAULT:] += 40
    elif fault == "errors":
        err["db"][FAULT:] += 0.3
    elif fault == "cpu":
        cpu["db"][FAULT:] = 0.95
        lat["db"][FAULT:] *= 6
    db_seen = lat["db"] + 0.4
    api_total = lat["api"] + db_seen
    fe_total = lat["frontend"] + api_total + 0.4
    series = {
        "db": (20, err["db"], lat["db"], cpu["db"]),
        "api": (20, err["api"] + err["db"], api_total, cpu["api"]),
        "frontend": (20, err["frontend"] + err["db"], fe_total, cpu["frontend"]),
        "frontend->api": (20, err["api"] + err["db"], api_total + 0.4, None),
        "api->db": (20, err["db"], db_seen, None),
    }
    for i, e in enumerate(ents):
        r, er, la, c = series[e]
        v[i, 0] = noisy(r, rng, 0.03)
        v[i, 1] = er
        v[i, 2] = la
        v[i, 3] = la * 1.6
        v[i, 4] = c if c is not None else np.nan
    return MetricFrame(T0 + np.arange(T, dtype=np.int64) * STEP, ents, mets, v)


@pytest.mark.parametrize("fault,kind", [("latency", "latency"), ("errors", "errors"), ("cpu", "saturation")])
def test_the_deepest_unexplained_service_is_the_root(fault, kind):
    res = rank_causes(chain_frame(1, fault), AT)
    assert res.top(1) == ["db"], res.to_dict()["causes"][:3]
    assert res.causes[0].kind == kind
    ev = {c.service: c.evidence for c in res.causes}
    # the callers look broken too, but their calls explain it
    assert ev["api"]["explained_by_callees"]["latency" if fault != "errors" else "errors"] > 0.7


def test_without_edge_series_the_graph_still_points_down():
    f = chain_frame(2, "latency")
    keep = [i for i, e in enumerate(f.entities) if "->" not in e]
    bare = MetricFrame(f.ts_ms, [f.entities[i] for i in keep], f.metrics, f.values[keep])
    g = ServiceGraph([("frontend", "api"), ("api", "db")])
    assert rank_causes(bare, AT, graph=g).top(1) == ["db"]


def test_a_deploy_that_started_it_makes_the_kind_deploy():
    f = chain_frame(3, "errors")
    f.changes = [ChangeEvent(T0 + FAULT * STEP - 2_000, "db", "deploy", "1.2.3 -> 1.2.4"),
                 ChangeEvent(T0 + 60 * STEP, "api", "deploy", "long before")]
    res = rank_causes(f, AT)
    assert res.top(1) == ["db"] and res.causes[0].kind == "deploy"
    assert res.causes[0].evidence["deploy"]["detail"] == "1.2.3 -> 1.2.4"
    assert {c.service: c.kind for c in res.causes}["api"] != "deploy"


def test_only_data_before_the_incident_time_is_used():
    f = chain_frame(4, "latency")
    g = chain_frame(4, "latency")
    g.values[:, :, 170:] = 1e6  # garbage after `at`
    a, b = rank_causes(f, AT), rank_causes(g, AT)
    assert a.top(5) == b.top(5) and [c.score for c in a.causes] == [c.score for c in b.causes]


def test_a_network_delay_blames_the_link_to_the_callee():
    f = chain_frame(5, "none")
    j = f.entities.index("api->db")
    f.values[j, 2, FAULT:] += 60  # the caller sees slow calls; the db's own latency does not move
    f.values[j, 3, FAULT:] += 90
    api = f.entities.index("api")
    fe = f.entities.index("frontend")
    for i in (api, fe):
        f.values[i, 2, FAULT:] += 60
        f.values[i, 3, FAULT:] += 90
    res = rank_causes(f, AT)
    assert res.top(1) == ["db"] and res.causes[0].evidence.get("network_from") == "api"


def test_a_traffic_spike_is_not_a_root_cause():
    f = chain_frame(6, "latency")
    # more traffic everywhere, and the frontend slows a little under it
    for i in range(len(f.entities)):
        f.values[i, 0, FAULT - 20 :] *= 2.2
    fe = f.entities.index("frontend")
    f.values[fe, 2, FAULT - 20 : FAULT] *= 1.5
    res = rank_causes(f, AT)
    assert res.top(1) == ["db"]


def test_robust_scores():
    med, scale = baseline(np.array([[0.0] * 20]), ["errors"], np.array([100.0]), 10.0)
    assert med[0] == 0 and scale[0] == pytest.approx(np.sqrt(0.005 * 0.995 / 100))  # binomial floor
    z = np.array([[0.0, 9, 9, 1, 9, 9, 9]])
    assert onset(z, 4.0)[0] == 1 and onset(z, 4.0, sustain=3)[0] == 4
    assert peak(z, 3)[0] == 9 and peak(np.array([[1.0, np.nan]]), 2)[0] == -np.inf


def test_personalized_pagerank_matches_networkx():
    import networkx as nx
    rng = np.random.default_rng(0)
    W = rng.random((6, 6)) * (rng.random((6, 6)) < 0.5)
    np.fill_diagonal(W, 0)
    selfw, pers = rng.random(6), rng.random(6)
    ours = personalized_pagerank(W, self_weight=selfw, personal=pers, damping=0.85, tol=1e-13)
    G = nx.DiGraph()
    G.add_nodes_from(range(6))
    for i in range(6):
        for j in range(6):
            w = W[i, j] + (selfw[i] if i == j else 0)
            if w > 0:
                G.add_edge(i, j, weight=w)
    ref = nx.pagerank(G, alpha=0.85, personalization=dict(enumerate(pers)), weight="weight", tol=1e-13,
                      dangling=dict(enumerate(np.full(6, 1.0))))
    np.testing.assert_allclose(ours, [ref[i] for i in range(6)], atol=1e-6)


def test_wide_csv_folder_and_edges(tmp_path):
    f = chain_frame(7, "latency")
    cols = ["time"] + [f"{e}_{m}" for e in f.entities for m in f.metrics]
    rows = [[str(int(t // 1000))] + [f"{x:.6g}" for x in f.values[:, :, k].ravel()] for k, t in enumerate(f.ts_ms)]
    text = "\n".join(",".join(r) for r in [cols, *rows]) + "\n"
    wide = read_wide_csv(io.StringIO(text.replace("latency-p90", "latency-90").replace("_rate", "_workload")))
    assert "latency-p90" in wide.metrics and "rate" in wide.metrics and wide.step_ms == STEP
    assert rank_causes(wide, AT).top(1) == ["db"]
    folder = tmp_path / "svc"
    folder.mkdir()
    for e in ("frontend", "api", "db"):
        i = f.entities.index(e)
        lines = ["time," + ",".join(f.metrics)] + [
            f"{int(t)}," + ",".join(f"{x:.6g}" for x in f.values[i, :, k]) for k, t in enumerate(f.ts_ms)]
        (folder / f"{e}.csv").write_text("\n".join(lines) + "\n")
    per = read_csv_folder(str(folder))
    assert sorted(per.services) == ["api", "db", "frontend"]
    edges = read_edges(io.StringIO("source,target\nfrontend,api\napi,db\n"))
    assert edges.edges == [("api", "db"), ("frontend", "api")]
    assert rank_causes(per, AT, graph=edges).top(1) == ["db"]
    ver = read_wide_csv(io.StringIO("time,db_version,db_cpu\n1772452800,1.0,0.1\n1772452810,1.0,0.1\n"
                                    "1772452820,1.1,0.1\n"))
    assert [(c.service, c.ts_ms, c.detail) for c in ver.changes] == [("db", T0 + 20_000, "1.0 -> 1.1")]


def test_red_frame_against_a_plain_reference():
    rng = np.random.default_rng(8)
    n = 5000
    spans = {"ts_ms": rng.integers(0, 60_000, n), "service": rng.integers(0, 3, n), "kind": rng.choice([2, 3], n),
             "status": rng.choice([0, 2], n, p=[0.9, 0.1]), "duration_us": rng.integers(100, 100_000, n)}
    spans["peer"] = np.where(spans["kind"] == 3, (spans["service"] + 1) % 3, -1)
    f = red_frame(spans, ["a", "b", "c"], t0_ms=0, t1_ms=60_000, step_ms=10_000, mix_adjust=False)
    for s, name in enumerate("abc"):
        for b in range(6):
            m = (spans["kind"] == 2) & (spans["service"] == s) & (spans["ts_ms"] // 10_000 == b)
            d = np.sort(spans["duration_us"][m] / 1000)
            assert f.series(name, "rate")[b] == pytest.approx(m.sum() / 10)
            assert f.series(name, "errors")[b] == pytest.approx(np.mean(spans["status"][m] == 2))
            assert f.series(name, "latency-mean")[b] == pytest.approx(d.mean())
            assert f.series(name, "latency-p90")[b] == pytest.approx(d[int(np.floor(0.9 * (len(d) - 1)))])
    m = (spans["kind"] == 3) & (spans["service"] == 0) & (spans["peer"] == 1)
    assert np.nansum(f.series("a->b", "rate")) * 10 == m.sum()
    g = infer_graph(spans, ["a", "b", "c"])
    assert g.edges == [("a", "b"), ("b", "c"), ("c", "a")]


def test_detect_incident_finds_a_sustained_change():
    f = chain_frame(9, "errors")
    at = detect_incident(f, T0 + 100 * STEP)
    assert T0 + FAULT * STEP < at <= T0 + (FAULT + 5) * STEP
    assert detect_incident(chain_frame(9, "none"), T0 + 100 * STEP) is None


def test_simulated_incident_end_to_end():
    from vigil.apps.services.rca_eval import run_incident

    inc = run_incident("error_burst", seed=101, services=20, rate=30.0)
    by = {i.protocol: i for i in inc}
    assert by["inject"].hit1 and by["inject"].kind_ok
    assert by["inject"].rank_ms > 0


def test_cli_rca_on_csv(tmp_path):
    from typer.testing import CliRunner

    from vigil.cli.main import app

    f = chain_frame(10, "latency")
    cols = ["time"] + [f"{e}_{m}" for e in f.entities for m in f.metrics]
    rows = [[str(int(t))] + [f"{x:.6g}" for x in f.values[:, :, k].ravel()] for k, t in enumerate(f.ts_ms)]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(",".join(r) for r in [cols, *rows]) + "\n")
    r = CliRunner().invoke(app, ["rca", str(path), "--at", str(AT), "--json", "--top", "2"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["causes"][0]["service"] == "db" and len(out["causes"]) == 2
    r = CliRunner().invoke(app, ["rca", str(path), "--at", str(AT)])
    assert r.exit_code == 0 and "db" in r.output
    r = CliRunner().invoke(app, ["rca", str(tmp_path / "missing.csv")])
    assert r.exit_code == 2


def test_a_frame_from_plain_series_is_the_library_entry_point():
    f = chain_frame(12, "errors")
    series = {(e, m): f.values[i, j] for i, e in enumerate(f.entities) for j, m in enumerate(f.metrics)}
    g = MetricFrame.from_series(f.ts_ms, series, [ChangeEvent(T0, "api", "deploy", "long before")])
    assert g.entities == f.entities and g.changes[0].service == "api"
    res = rank_causes(g, AT, graph=ServiceGraph([("frontend", "api"), ("api", "db")]))
    assert res.top(1) == ["db"] and res.causes[0].kind == "errors"
    assert res.to_dict()["causes"][0]["evidence"]["z"]["errors"] > 4
    with pytest.raises(ValueError, match="has 3 values"):
        MetricFrame.from_series(f.ts_ms, {("db", "errors"): [0.0, 0.1, 0.2]})

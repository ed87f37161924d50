"""RCA priors from post-mortems: fitting, the gentle re-ranking, storage beside the incident store, rank_causes."""

from __future__ import annotations

import pytest
from test_rca import AT, chain_frame  # the frame of the RCA tests (tests/rca on the path)

from vigil.errors import ConfigError
from vigil.rca import rank_causes
from vigil.rca.priors import RcaPriors, active_priors, fit_priors, priors_dir, promote, rerank
from vigil.rca.rank import Cause


def test_fit_counts_and_smooths() -> None:
    pm = [{"service": "db", "kind": "saturation"}] * 6 + [{"service": "db", "kind": "latency"}] * 2
    pm += [{"service": "cart", "kind": "deploy"}] * 2
    p = fit_priors(pm, alpha=1.0)
    assert p.counts == {"cart": {"deploy": 2}, "db": {"latency": 2, "saturation": 6}} and p.n == 10
    # p(db) = (8+1)/(10+3), p(saturation|db) = (6+1)/(8+4)
    assert p.prob("db", "saturation") == pytest.approx(9 / 13 * 7 / 12)
    assert p.rel("db", "saturation") == 1.0
    # kind given service matters: db's saturation > db's latency > db's errors (never confirmed)
    assert p.rel("db", "saturation") > p.rel("db", "latency") > p.rel("db", "errors") > 0
    # a service never confirmed keeps a small non-zero prior (the smoothing)
    assert 0 < p.rel("web", "latency") < p.rel("cart", "deploy")
    # no post-mortem, no prior
    assert fit_priors([]).bonus("db", "latency") == 0.0
    with pytest.raises(ConfigError):
        fit_priors(pm, weight=-1)


def test_rerank_moves_near_ties_only_and_never_stacks() -> None:
    p = fit_priors([{"service": "db", "kind": "saturation"}] * 5, weight=0.05)
    near = [Cause("web", "latency", 1.0), Cause("db", "saturation", 0.98)]
    far = [Cause("web", "latency", 1.0), Cause("db", "saturation", 0.6)]
    once = rerank(near, p)
    assert [c.service for c in once] == ["db", "web"]
    assert [c.service for c in rerank(far, p)] == ["web", "db"]
    # the raw score is kept: re-ranking again (or with no priors) starts from it
    assert once[0].evidence["score_raw"] == 0.98 and once[0].score == pytest.approx(0.98 + p.bonus("db", "saturation"))
    twice = rerank(once, p)
    assert [c.score for c in twice] == [c.score for c in once]
    assert [(c.service, c.score) for c in rerank(once, None)] == [("web", 1.0), ("db", 0.98)]


def test_versions_beside_the_store_and_round_trip(tmp_path) -> None:
    store = tmp_path / "incidents.db"
    assert active_priors(store) is None and active_priors(":memory:") is None and active_priors(None) is None
    p = fit_priors([{"service": "db", "kind": "errors"}], weight=0.1)
    assert promote(store, p, who="ann", why="test") == "v0001" and p.version == "v0001"
    got = active_priors(store)
    assert got is not None and got.version == "v0001" and got.counts == p.counts and got.weight == 0.1
    assert (priors_dir(store) / "CURRENT").read_text().strip() == "v0001"
    with pytest.raises(ConfigError):
        RcaPriors.from_dict({"format": 99})


def test_rank_causes_takes_priors_as_a_tie_breaker() -> None:
    frame = chain_frame(1, "latency")
    plain = rank_causes(frame, AT)
    assert plain.top(1) == ["db"]
    # a prior for api (as the kind RCA gives it), at the default weight, does not overturn clear evidence
    kind = next(c.kind for c in plain.causes if c.service == "api")
    api = fit_priors([{"service": "api", "kind": kind}] * 20)
    res = rank_causes(frame, AT, priors=api)
    assert res.top(1) == ["db"] and res.causes[0].evidence["score_raw"] == round(plain.causes[0].score, 4)
    assert {c.service: c.evidence["prior"] for c in res.causes}["api"] == pytest.approx(0.05)
    # an overwhelming weight would (which is why the default is small)
    heavy = fit_priors([{"service": "api", "kind": kind}] * 20, weight=5.0)
    assert rank_causes(frame, AT, priors=heavy).top(1) == ["api"]


def test_cli_rca_breaks_ties_with_the_priors_in_force(tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from vigil.cli.main import app

    f = chain_frame(10, "latency")
    cols = ["time"] + [f"{e}_{m}" for e in f.entities for m in f.metrics]
    rows = [[str(int(t))] + [f"{x:.6g}" for x in f.values[:, :, k].ravel()] for k, t in enumerate(f.ts_ms)]
    path = tmp_path / "m.csv"
    path.write_text("\n".join(",".join(r) for r in [cols, *rows]) + "\n")
    store = tmp_path / "incidents.db"
    cli = CliRunner()
    r = cli.invoke(app, ["rca", str(path), "--at", str(AT), "--json", "--priors", str(store)])
    assert r.exit_code == 0 and "no RCA priors in force" in r.stderr
    assert "prior" not in json.loads(r.stdout)["causes"][0]["evidence"]
    promote(store, fit_priors([{"service": "db", "kind": "latency"}] * 3), who="t", why="t")
    r = cli.invoke(app, ["rca", str(path), "--at", str(AT), "--json", "--priors", str(store)])
    top = json.loads(r.stdout)["causes"][0]
    assert r.exit_code == 0 and top["service"] == "db" and top["evidence"]["prior"] == 0.05

"""Retraining the RCA priors with post-mortems: chronological hold-out, promoted only when better."""

from __future__ import annotations

from pathlib import Path

import pytest

from vigil.errors import ConfigError
from vigil.incidents import Cause, Incident, IncidentStore
from vigil.incidents.retrain import retrain_priors
from vigil.rca.priors import active_priors, priors_dir

# RCA's recorded ranking for every incident: web a hair ahead of db, cart far behind
NEAR_TIE = [("web", "latency", 1.0), ("db", "saturation", 0.98), ("cart", "errors", 0.4)]


def _store(path: Path | str, confirmed: list[str], causes=NEAR_TIE) -> IncidentStore:  # type: ignore[no-untyped-def]
    s = IncidentStore(path)
    for i in range(len(confirmed)):
        # written in reverse: the split must follow the incidents' time, not the order post-mortems were written
        j = len(confirmed) - 1 - i
        s.put(Incident(f"inc-{j}", 60_000 * j, causes=[Cause(a, k, sc) for a, k, sc in causes]))
        s.postmortem(f"inc-{j}", service=confirmed[j], kind="saturation" if confirmed[j] == "db" else "latency",
                     by="ann", at_ms=1_000 - j)  # fmt: skip
    return s


def test_promoted_when_better_then_refused_when_no_better(tmp_path: Path) -> None:
    s = _store(tmp_path / "incidents.db", ["db"] * 10)
    r = retrain_priors(s, holdout=0.3, who="ann")
    assert r.learned == 7 and r.held_back == ["inc-7", "inc-8", "inc-9"]
    assert (r.before["top1"], r.before["top3"], r.after["top1"], r.after["top3"]) == (0.0, 1.0, 1.0, 1.0)
    assert r.promoted and r.version == "v0001" and r.decision == "promoted v0001"
    cur = active_priors(s.path)
    assert cur is not None and cur.counts == {"db": {"saturation": 7}}
    assert cur.meta["held_back"] == ["inc-7", "inc-8", "inc-9"] and cur.meta["after"]["top1"] == 1.0
    # again: the priors in force already do as well, so nothing new is promoted
    again = retrain_priors(s, holdout=0.3, who="ann")
    assert again.current == "v0001" and again.before == again.after and not again.promoted
    assert active_priors(s.path).version == "v0001"  # type: ignore[union-attr]


def test_refused_when_worse_and_nothing_written(tmp_path: Path) -> None:
    # db was the cause early on, web lately: priors from the early ones would flip the held-back incidents wrong
    s = _store(tmp_path / "incidents.db", ["db"] * 7 + ["web"] * 3)
    r = retrain_priors(s, holdout=0.3)
    assert (r.before["top1"], r.after["top1"]) == (1.0, 0.0)
    assert not r.promoted and "worse on top-1" in r.decision and r.version is None
    assert active_priors(s.path) is None and not priors_dir(s.path).exists()
    assert [x["top_after"][0] for x in r.per_incident] == ["db", "db", "db"]


def test_dry_run_and_too_few(tmp_path: Path) -> None:
    s = _store(tmp_path / "incidents.db", ["db"] * 4)
    r = retrain_priors(s, holdout=0.25, dry_run=True)
    assert r.after["top1"] > r.before["top1"] and not r.promoted and active_priors(s.path) is None
    with pytest.raises(ConfigError, match="too few"):
        retrain_priors(_store(tmp_path / "one" / "incidents.db", ["db"]))
    with pytest.raises(ConfigError):
        retrain_priors(s, holdout=1.0)


def test_an_incident_without_recorded_causes_is_a_miss_both_ways(tmp_path: Path) -> None:
    s = _store(tmp_path / "incidents.db", ["db"] * 3)
    s.put(Incident("inc-9", 10**9))  # RCA never ran on it
    s.postmortem("inc-9", service="db", kind="saturation", by="ann", at_ms=5)
    r = retrain_priors(s, holdout=0.5, dry_run=True)
    assert r.held_back == ["inc-2", "inc-9"]
    assert (r.before["top1"], r.after["top1"], r.after["top3"]) == (0.0, 0.5, 0.5)

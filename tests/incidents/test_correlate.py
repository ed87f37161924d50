"""Correlation by time, graph proximity and shared traces; the lifecycle; the store."""

from __future__ import annotations

from pathlib import Path

from vigil.incidents import Cause, Correlator, IncidentStore, Signal
from vigil.types import Alert

EDGES = [("frontend", "cart"), ("cart", "redis"), ("frontend", "checkout"), ("checkout", "payment"),
         ("payment", "bank"), ("frontend", "ads")]  # fmt: skip


def test_alerts_join_by_graph_distance_and_time() -> None:
    c = Correlator(EDGES, window_ms=300_000, hops=2)
    a = c.add(Signal("1", 0, "redis"))
    assert c.add(Signal("2", 10_000, "frontend")).id == a.id  # 2 hops: cart between
    far = c.add(Signal("3", 20_000, "bank"))  # 3 hops from frontend, more from redis
    assert far.id != a.id
    late = c.add(Signal("4", 10_000 + 300_001, "cart"))  # adjacent, but past the window
    assert late.id not in (a.id, far.id)
    assert a.services == ["redis", "frontend"] and a.alerts == ["1", "2"]


def test_a_shared_trace_joins_whatever_the_distance_and_wins_over_proximity() -> None:
    c = Correlator(EDGES, hops=1)
    a = c.add(Signal("1", 0, "bank", trace_ids=frozenset({"t1"})))
    b = c.add(Signal("2", 1_000, "redis"))
    joined = c.add(Signal("3", 2_000, "cart", trace_ids=frozenset({"t1", "t9"})))  # next to redis, shares t1 with bank
    assert joined.id == a.id != b.id and "shared trace" in a.timeline[-1].detail


def test_lifecycle_open_mitigated_resolved_on_the_timeline() -> None:
    c = Correlator(EDGES, quiet_ms=60_000)
    inc = c.add(Signal("1", 0, "cart", "warning"))
    c.add(Signal("2", 5_000, "frontend", "critical"))
    assert inc.severity == "critical"
    c.mitigated(inc.id, 30_000, "rolled back cart")
    assert c.tick(200_000) == []  # still firing
    c.clear("cart", 40_000)
    c.clear("frontend", 50_000)
    assert c.tick(64_000) == [] and [i.id for i in c.tick(65_000)] == [inc.id]
    assert [(t.at_ms, t.what) for t in inc.timeline] == [(0, "open"), (5_000, "alert"), (30_000, "mitigated"),
                                                       (65_000, "resolved")]  # fmt: skip


def test_from_an_alert_and_through_the_store(tmp_path: Path) -> None:
    alert = Alert(id="a1", key="cart", event_id="e", detector="lat", score=9.0, threshold=6.0, event_ts_ms=7,
                  detect_ts_ms=8, severity="critical", labels={"service": "cart", "trace_id": "abc"})  # fmt: skip
    sig = Signal.from_alert(alert)
    assert (sig.service, sig.ts_ms, sig.trace_ids) == ("cart", 7, frozenset({"abc"}))
    store = IncidentStore(tmp_path / "incidents.db")
    inc = Correlator(EDGES, first_id=store.next_number()).add(sig)
    inc.causes = [Cause("cart", "deploy", 0.8, {"deploy": "v2"})]
    store.put(inc)
    again = IncidentStore(tmp_path / "incidents.db")
    assert again.get("inc-1") == inc and again.recent()[0]["top_kind"] == "deploy" and again.next_number() == 2
    again.postmortem("inc-1", service="cart", kind="deploy", by="ann", at_ms=9, labels={"team": "shop"}, notes="v2")
    assert again.postmortems()[0]["labels"] == {"team": "shop"}

"""The alert store's read side (vigil.alerting.queries): keyset pages, bounded searches and indexed counts, on
small stores whose every answer is checked against a plain-Python reference. The million-alert store is in
tests/console/test_console_paging.py."""

import random
import sqlite3

import pytest

from vigil.alerting.queries import Position
from vigil.alerting.store import AlertStore

KEYS = ["u1", "U10", "card_7", "50%off", 'quote"d', "caf\u00e9", "user\u202egnp.exe", "plain"]


def row(i, key, *, status="firing", severity="warning", alertname="amount_z", message=None, updated=None):
    return {"fingerprint": f"{i:016x}", "labels": {"alertname": alertname, "key": key, "severity": severity,
                                                   "pipeline": "p"},
            "status": status, "revision": 1, "starts_at_ms": i, "ends_at_ms": None,
            "last_alert": {"id": f"a{i}", "message": message if message is not None else f"score high on {key}",
                           "stats": {"note": "ZZZ only in stats"}},
            "observations": 1, "updated_ms": i // 3 if updated is None else updated}


@pytest.fixture
def store(tmp_path):
    rng = random.Random(3)
    rows = [row(i, rng.choice(KEYS), status=rng.choice(["firing", "resolved", "resolved", "retracted"]),
                severity=rng.choice(["warning", "critical", "info"]), alertname=rng.choice(["amount_z", "velocity"]))
            for i in range(600)]
    s = AlertStore(tmp_path / "a.db")
    s.write_alerts(rows)
    yield s
    s.close()


def order(rows):
    return sorted(rows, key=lambda r: (-r["updated_ms"], r["fingerprint"]))


def walk(store, *, limit=7, scan_rows=50, **filters):
    """Every page, following next; returns (fingerprints in order, pages)."""
    out, pages, before = [], 0, None
    while True:
        page = store.alert_page(limit=limit, before=before, scan_rows=scan_rows, **filters)
        pages += 1
        assert len(page.rows) <= limit and (page.complete or page.examined == scan_rows)
        out += [r["fingerprint"] for r in page.rows]
        if page.next is None:
            return out, pages
        assert page.rows or not page.complete  # an empty page only when a search ran out of budget
        before = page.next


def reference(store, pred):
    return [r["fingerprint"] for r in order(store.alerts()) if pred(r)]


def text_hit(q):
    q = q.lower()
    return lambda r: any(q in (v or "").lower() for v in (r["labels"]["key"], r["labels"]["alertname"],
                                                          r["last_alert"]["message"]))


@pytest.mark.parametrize("filters, pred", [
    ({}, lambda r: True),
    ({"status": "firing"}, lambda r: r["status"] == "firing"),
    ({"severity": "critical"}, lambda r: r["labels"]["severity"] == "critical"),
    ({"status": "retracted", "severity": "info"},
     lambda r: r["status"] == "retracted" and r["labels"]["severity"] == "info"),
    ({"key": "U10"}, lambda r: r["labels"]["key"] == "U10"),
    ({"alertname": "velocity", "status": "resolved"},
     lambda r: r["labels"]["alertname"] == "velocity" and r["status"] == "resolved"),
    ({"text": "u1"}, text_hit("u1")),  # ASCII letters in any case: u1 and U10
    ({"text": "50%"}, text_hit("50%")),  # LIKE's wildcards are plain characters
    ({"text": "d_7"}, text_hit("d_7")),
    ({"text": 'e"d'}, text_hit('e"d')),  # a quote, stored escaped in the JSON
    ({"text": "caf\u00e9"}, text_hit("caf\u00e9")),  # non-ASCII, stored as \u00e9 in the JSON
    ({"text": "\u202e"}, text_hit("\u202e")),
    ({"text": "VELOC"}, text_hit("veloc")),  # the alertname
    ({"text": "zzz only"}, lambda r: False),  # in the stored alert, but not in key, alertname or message
    ({"text": "score high", "status": "firing"}, lambda r: r["status"] == "firing"),
])
def test_every_page_walk_equals_the_reference(store, filters, pred):
    want = reference(store, pred)
    got, pages = walk(store, **filters)
    assert got == want
    if any(k in filters for k in ("severity", "alertname", "text")):  # bounded: 50 alerts a call at most
        n = len(store.alerts(status=filters.get("status")))
        assert pages >= n // 50


def test_fingerprint_prefixes_are_found_by_the_text_search(store):
    page = store.alert_page(text="00000000000001", limit=1000)
    assert sorted(r["fingerprint"] for r in page.rows) == [f"{i:016x}" for i in range(256, 512)]


def test_keyset_pages_hold_while_alerts_arrive_and_change(tmp_path):
    """New alerts go to the top, changed ones move there: a walk never repeats an alert and misses none that
    stayed put."""
    s = AlertStore(tmp_path / "a.db")
    s.write_alerts([row(i, f"k{i}", updated=1000 + i // 2) for i in range(1000)])
    seen, before, n, moved = [], None, 1000, set()
    while True:
        page = s.alert_page(limit=37, before=before)
        seen += [r["fingerprint"] for r in page.rows]
        s.write_alerts([row(n, f"new{n}", updated=10_000 + n), row(n + 1, f"new{n + 1}", updated=10_000 + n)])
        n += 2
        a, b = random.Random(n).sample(range(1000), 2)  # one seen or not, one more: both move to the top
        s.write_alerts([row(a, f"k{a}", updated=10_000 + n), row(b, f"k{b}", updated=10_000 + n)])
        moved |= {f"{a:016x}", f"{b:016x}"}
        if page.next is None:
            break
        before = page.next
    assert len(seen) == len(set(seen))
    stayed = {f"{i:016x}" for i in range(1000)} - moved
    assert stayed <= set(seen) and all(int(fp, 16) < 1000 for fp in seen)
    s.close()


def test_a_search_stops_at_its_budget_and_goes_on_from_there(store):
    page = store.alert_page(text="nothing like it", scan_rows=100)
    assert (page.rows, page.complete, page.examined) == ([], False, 100)
    hundredth = order(store.alerts())[99]
    assert page.next == Position(hundredth["updated_ms"], hundredth["fingerprint"])
    with pytest.raises(ValueError):
        store.alert_page(limit=0)


def test_counts_follow_writes_from_any_connection(store):
    want = {s: len(store.alerts(status=s)) for s in ("firing", "resolved", "retracted")}
    assert store.alert_counts() == want
    with AlertStore(store.path) as other:  # another connection (another process, in real life)
        other.write_alerts([row(10_000, "x", status="retracted")])
    assert store.alert_counts() == {**want, "retracted": want["retracted"] + 1}
    store.write_alerts([row(10_000, "x", status="firing")])  # this connection
    assert store.alert_counts() == {**want, "firing": want["firing"] + 1}


def test_muted_counts_translate_matchers_like_the_manager(store):
    from vigil.alerting.policy import Matcher, matches_all

    silences = [["key=~u1.*"], ["severity!=warning", "alertname=velocity"], ["key!~.*", "key="], ["nope=x"],
                ['key=quote"d']]
    firing = [r for r in store.alerts(status="firing")]
    parsed = [tuple(Matcher.parse(t) for t in s) for s in silences]
    want = sum(any(matches_all(ms, r["labels"]) for ms in parsed) for r in firing)
    as_tuples = [[(m.label, m.op, m.value) for m in ms] for ms in parsed]
    assert store.count_muted(as_tuples) == (want, 0, True) and want > 0
    store.add_ack(firing[0]["fingerprint"], "ana", "", 5)
    store.add_ack(firing[0]["fingerprint"], "bo", "", 6)
    assert store.count_muted([], scan_rows=10)[1:] == (1, True)
    silenced, _, exact = store.count_muted([[("key", "=~", ".*")]], scan_rows=10)
    assert (silenced, exact) == (10, False)  # the 10 firing alerts that changed last: a lower bound


def test_pages_walk_the_stores_indexes_in_order(tmp_path):
    s = AlertStore(tmp_path / "a.db")
    names = {r[0] for r in sqlite3.connect(s.path).execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"alerts_updated", "alerts_status_updated", "alerts_key", "feedback_fp"} <= names
    for index, where in (("alerts_status_updated", "a.status = 'firing'"), ("alerts_key", "a.key = 'k'"),
                         ("alerts_updated", "1")):
        plan = " ".join(r[-1] for r in s._db.execute(
            f"EXPLAIN QUERY PLAN SELECT * FROM alerts a INDEXED BY {index} WHERE {where} AND a.updated_ms <= 5 AND "
            "(a.updated_ms < 5 OR a.fingerprint > 'x') ORDER BY a.updated_ms DESC, a.fingerprint LIMIT 5"))
        assert index in plan and "TEMP B-TREE" not in plan  # walked in order, never sorted
    s.close()


def test_a_key_is_an_index_range_not_a_search(store):
    want = reference(store, lambda r: r["labels"]["key"] == "U10" and r["status"] == "firing")
    page = store.alert_page(key="U10", status="firing", limit=1000, scan_rows=1)
    assert [r["fingerprint"] for r in page.rows] == want and page.complete and page.next is None
    assert store.key_count("U10", "firing") == len(want) and store.key_count("nope") == 0


def test_alerts_the_manager_wrote_are_searched_in_their_bodies(tmp_path):
    """The manager keeps each alert's body once in alert_bodies; the message search reads it there."""
    from vigil.alerting.manager import AlertManager
    from vigil.types import Alert

    s = AlertStore(tmp_path / "a.db")
    mgr = AlertManager({"route": {"receiver": "default", "group_by": ["key"]}}, store=s, pipeline="p",
                       clock=lambda: 1_000)
    mgr.ingest([Alert(f"a{i}", f"k{i}", f"e{i}", "velocity", 6.0, 3.0, 100 + i, 100,
                      message=f"{i} payments in 1 s from caf\u00e9 {i % 3}") for i in range(30)])
    stored = s._rows("SELECT last_alert, last_body FROM alerts")
    assert stored and all(r["last_alert"] is None and r["last_body"] for r in stored)
    page = s.alert_page(text="CAF\u00e9 2", limit=100)
    assert sorted(r["labels"]["key"] for r in page.rows) == sorted(f"k{i}" for i in range(30) if i % 3 == 2)
    assert all(r["last_alert"]["message"].endswith("2") for r in page.rows)
    s.close()


def test_a_search_with_a_time_budget_stops_between_chunks_and_misses_nothing(store, monkeypatch):
    """budget_s=0: every call examines one chunk and stops (as a loaded machine would); the walk is the same."""
    import vigil.alerting.queries as queries

    monkeypatch.setattr(queries, "_CHUNK_ROWS", 40)
    page = store.alert_page(text="nothing like it", budget_s=0)
    assert (page.rows, page.complete, page.examined) == ([], False, 40)
    assert page.next == Position(order(store.alerts())[39]["updated_ms"], order(store.alerts())[39]["fingerprint"])
    got, before, calls = [], None, 0
    while True:
        page = store.alert_page(text="u1", limit=7, before=before, budget_s=0)
        calls += 1
        got += [r["fingerprint"] for r in page.rows]
        if page.next is None:
            break
        before = page.next
    assert got == reference(store, text_hit("u1")) and calls >= 600 // 40
    full = store.alert_page(text="u1", limit=1000, budget_s=60)  # time left: chunk after chunk to scan_rows
    assert [r["fingerprint"] for r in full.rows] == reference(store, text_hit("u1")) and full.complete

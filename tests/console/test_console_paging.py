"""The console over a million stored alerts: paging with the cursor stays correct while alerts arrive and change,
searches find exactly what SQL finds, a call stays bounded. The store is filled by bulk SQL through the store's
own schema (vigil.console.bench.fill_store); how fast the calls are is `vigil bench alerts`' business, not a test's.
"""

from __future__ import annotations

import sqlite3

import httpx
import pytest

from vigil.alerting.queries import DEFAULT_SCAN_ROWS
from vigil.alerting.store import AlertStore
from vigil.console.app import create_app
from vigil.console.bench import NEEDLE, NEEDLE_EVERY, T0_MS, fill_store
from vigil.console.listing import decode_cursor, encode_cursor
from vigil.console.server import serve_console
from vigil.testing.clock import ManualClock

N = 1_000_000
TOKEN = "paging-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    # lean alerts whose change times follow the file's order: the same paging, without a random page read and a
    # big JSON document per alert (those are for the benchmark)
    return fill_store(tmp_path_factory.mktemp("million") / "alerts.db", N, revisions=False, shuffled=False, lean=True)


@pytest.fixture(scope="module")
def served(million):
    store = AlertStore(million, create=False)
    clock = ManualClock(T0_MS / 1000 + 86_400)
    # no time budget: how far each search call looks is then exact (10,000 alerts), whatever the machine's load
    handle, url = serve_console(create_app(store=store, token=TOKEN, pipeline_name="fraud", clock=clock.ms,
                                           search_budget_s=None))  # fmt: skip
    with httpx.Client(base_url=url, headers=AUTH, timeout=60) as client:
        yield client, store
    handle.stop()
    store.close()


def count(db, where="1"):
    with sqlite3.connect(db) as c:
        return c.execute(f"SELECT count(*) FROM alerts WHERE {where}").fetchone()[0]


def truth(db, where="1", args=()):
    """The fingerprints SQL finds, newest change first (the order the console promises)."""
    with sqlite3.connect(db) as c:
        return [r[0] for r in c.execute(f"SELECT fingerprint FROM alerts WHERE {where} "
                                        "ORDER BY updated_ms DESC, fingerprint", args)]


def new_rows(start, n, updated_ms):
    return [{"fingerprint": f"new{i:013x}", "labels": {"alertname": "velocity", "key": f"late-{i}",
                                                       "severity": "warning", "pipeline": "fraud"},
             "status": "firing", "revision": 1, "last_alert": {"message": "arrived while paging"},
             "updated_ms": updated_ms} for i in range(start, start + n)]


def test_pages_through_the_api_follow_the_cursor_in_order(served, million):
    client, _ = served
    want = truth(million, "status = 'firing'")[:1500]
    got, cursor = [], None
    while len(got) < 1500:
        r = client.get("/api/alerts", params={"status": "firing", "limit": 500, **({"cursor": cursor} if cursor else {})})
        body = r.json()
        assert r.status_code == 200 and body["complete"] and body["total"] == count(million, "status = 'firing'")
        got += [a["fingerprint"] for a in body["alerts"]]
        cursor = body["next_cursor"]
    assert got == want and all(a["status"] == "firing" for a in body["alerts"])
    assert body["counts"]["firing"] + body["counts"]["resolved"] + body["counts"]["retracted"] >= N


def test_a_rare_search_goes_on_from_where_each_call_stopped_until_it_found_them_all(served, million):
    client, _ = served
    want = truth(million, "(SELECT json_extract(body, '$.message') FROM alert_bodies WHERE hash = last_body) LIKE ?",
                 (f"%{NEEDLE}%",))  # as the manager writes alerts: the body once, in alert_bodies
    assert len(want) == N // NEEDLE_EVERY
    got, cursor, calls, examined = [], None, 0, 0
    while True:
        body = client.get("/api/alerts", params={"q": NEEDLE.upper(), **({"cursor": cursor} if cursor else {})}).json()
        calls += 1
        examined += body["examined"]
        assert body["examined"] <= DEFAULT_SCAN_ROWS and body["total"] is None  # bounded; a search has no indexed total
        got += [a["fingerprint"] for a in body["alerts"]]
        if not body["complete"]:
            assert body["searched_to_ms"] == decode_cursor(body["next_cursor"]).updated_ms
        cursor = body["next_cursor"]
        if cursor is None:
            break
    assert got == want and calls == -(-count(million) // DEFAULT_SCAN_ROWS) and examined == count(million)


def test_a_common_search_and_a_key_fill_their_pages_at_once(served, million):
    client, _ = served
    prefix = client.get("/api/alerts", params={"limit": 1}).json()["alerts"][0]["key"][:-2]  # 100 keys
    body = client.get("/api/alerts", params={"q": prefix, "limit": 20}).json()
    assert body["complete"] and len(body["alerts"]) == 20
    assert [a["fingerprint"] for a in body["alerts"]] == truth(
        million, "json_extract(labels, '$.key') LIKE ?", (prefix + "%",))[:20]
    key = client.get(f"/api/alerts/{truth(million)[500_000]}").json()["key"]  # a key is an index range: all at once
    body = client.get("/api/alerts", params={"key": key}).json()
    assert [a["fingerprint"] for a in body["alerts"]] == truth(million, "json_extract(labels, '$.key') = ?", (key,))
    assert body["complete"] and body["next_cursor"] is None and body["total"] == len(body["alerts"]) > 1
    sev = client.get("/api/alerts", params={"severity": "critical", "status": "firing", "limit": 30}).json()
    assert [a["fingerprint"] for a in sev["alerts"]] == truth(
        million, "status = 'firing' AND json_extract(labels, '$.severity') = 'critical'")[:30]


def test_detail_health_and_a_bad_cursor_at_a_million(served, million):
    client, _ = served
    fp = truth(million)[123_456]
    a = client.get(f"/api/alerts/{fp}").json()
    assert a["fingerprint"] == fp and a["revisions"] == [] and a["alert"]["id"].startswith("a")
    assert client.get(f"/api/alerts/{fp[:10]}").json()["fingerprint"] == fp  # a unique prefix
    h = client.get("/api/health").json()
    assert h["alerts"]["firing"] == count(million, "status = 'firing'") and h["alerts"]["silenced"] == 0
    r = client.get("/api/alerts", params={"cursor": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["field"] == "cursor"
    assert decode_cursor(encode_cursor(decode_cursor(client.get("/api/alerts").json()["next_cursor"])))


def test_a_million_alerts_page_without_duplicates_or_gaps_while_alerts_arrive(million):
    """Last in this file: it adds and changes alerts in the shared store."""
    store = AlertStore(million, create=False)
    counts = store.alert_counts()
    assert sum(counts.values()) == N and counts["firing"] == len(range(0, N, 7))
    top_ms = store.alert_page(limit=1).rows[0]["updated_ms"]
    seen: list[str] = []
    before, pages, arrived, moved = None, 0, 0, set()
    while True:
        page = store.alert_page(limit=20_000, before=before)
        assert page.complete and len(page.rows) <= 20_000
        seen += [r["fingerprint"] for r in page.rows]
        pages += 1
        if pages % 5 == 0:  # the pipeline goes on: new alerts arrive, old ones change (and move to the top)
            store.write_alerts(new_rows(arrived, 100, top_ms + pages))
            arrived += 100
            changed = store.alert_page(limit=2, before=page.next).rows + page.rows[:2]  # unseen and seen ones
            for r in changed:
                moved.add(r["fingerprint"])
                store.write_alerts([{**r, "observations": r["observations"] + 1, "updated_ms": top_ms + pages}])
        if page.next is None:
            break
        before = page.next
    assert pages == 50 and arrived == 1000
    assert len(seen) == len(set(seen))  # no duplicates
    assert not any(fp.startswith("new") for fp in seen)  # arrivals are above the first page: the next refresh
    unmoved = set(truth(million, "fingerprint NOT LIKE 'new%'")) - moved
    assert unmoved <= set(seen) and len(seen) >= N - len(moved)  # no gaps: every alert that stayed put
    store.close()

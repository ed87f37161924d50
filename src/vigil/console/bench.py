"""How fast the console's API answers over a large alert store: the ``console_p95_ms`` of ``vigil bench alerts``.

- :func:`fill_store`: a store of ``n`` alerts made in seconds by bulk SQL, laid out as the alert manager writes
  them (schema 2: each alert's body once in ``alert_bodies``, its row and a ``fired`` revision pointing at it),
  with known needles to search for.
- :func:`time_api_calls`: times real HTTP calls of each kind against a served console (the alert list, a status
  filter, paging deep with the cursor, searches, the severity and key filters, one alert's detail, the health
  bar): p50, p95 and max in milliseconds per kind and over all of them.
- :func:`measure_console`: serves the console over a store in a process of its own (as ``vigil console`` does,
  so the client's work is not the server's) and times the calls: ``console_p95_ms`` and the rest.

Speed is measured here, never asserted in tests (the tests check the same store for correctness). Run on its own:
``python -m vigil.console.bench --alerts 1000000`` (the store is written to ``--store`` first if missing).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from vigil.alerting.queries import READ_INDEXES
from vigil.alerting.store import AlertStore
from vigil.errors import VigilError

T0_MS = 1_700_000_000_000
#: every alert whose number is a multiple of this has ``NEEDLE`` in its message (10 in a million)
NEEDLE, NEEDLE_EVERY = "needle-7f3", 100_000

_NUMBERS = "WITH RECURSIVE c(i) AS (SELECT :start UNION ALL SELECT i + 1 FROM c WHERE i < :stop - 1)"
_NAME = "CASE i % 3 WHEN 0 THEN 'amount_z' WHEN 1 THEN 'velocity' ELSE 'rarity' END"
_SEVERITY = "CASE WHEN i % 97 = 0 THEN 'critical' WHEN i % 10 = 0 THEN 'info' ELSE 'warning' END"
_KEY = "printf('card-%07d', i % :keys)"
#: each alert's body (its last Alert.to_dict()), under a made-up content hash
_BODIES = f"""
{_NUMBERS}
INSERT INTO alert_bodies (hash, body) SELECT printf('b%015x', i),
  json_object('id', 'a' || i, 'score', 4.0 + (i % 13) / 2.0, 'threshold', 3.0, 'event_ts_ms', :t0 + i * 10,
              'message', CASE WHEN i % :every = 0 THEN 'amount ' || (i % 997) || ' matches ' || :needle ELSE
                         'amount ' || (i % 997) || ' is 4.2 sd above the usual 83.1' END{{evidence}})
FROM c
"""
_ALERTS = f"""
{_NUMBERS}
INSERT INTO alerts (fingerprint, labels, status, revision, starts_at_ms, ends_at_ms, last_alert, observations,
                    updated_ms, key, alertname, severity, last_body) SELECT
  printf('%016x', i * 2654435761),
  json_object('alertname', {_NAME}, 'key', {_KEY}, 'pipeline', 'fraud', 'severity', {_SEVERITY}),
  CASE WHEN i % 7 = 0 THEN 'firing' WHEN i % 50 = 1 THEN 'retracted' ELSE 'resolved' END,
  1, :t0 + i * 10, CASE WHEN i % 7 = 0 THEN NULL ELSE :t0 + i * 10 + 60000 END, NULL, 1 + i % 5,
  :t0 + 60000 + ((i * :mult) % :period) / 4 * 40,
  {_KEY}, {_NAME}, {_SEVERITY}, printf('b%015x', i)
FROM c
"""
#: the rest of an alert as the manager stores it
_EVIDENCE = """,
              'key', printf('card-%07d', i % :keys), 'event_id', 'e' || i,
              'detector', CASE i % 3 WHEN 0 THEN 'amount_z' WHEN 1 THEN 'velocity' ELSE 'rarity' END,
              'detect_ts_ms', :t0 + i * 10, 'latency_ms', NULL, 'stats', json_object('z', 4.2),
              'event_ids', json_array(), 'severity', 'warning', 'labels', json_object(),
              'contributions', json_array(json_object('feature', 'amount', 'score', 4.2, 'value', 412.0,
                                                      'expected', 83.1, 'flag', NULL))"""
_REVISIONS = """
INSERT INTO alert_revisions (fingerprint, revision, status, reason, alert, at_ms, note, body)
SELECT fingerprint, 1, 'firing', 'fired', NULL, starts_at_ms, NULL, last_body FROM alerts WHERE rowid > ?
"""
#: the alert list's indexes, dropped for the fill and made again once at the end (faster than row by row)
_LIST_INDEXES = ("alerts_updated", "alerts_status_updated", "alerts_key")


def fill_store(path: str | os.PathLike[str], n: int, *, keys: int = 400_000, start: int = 0,
               revisions: bool = True, shuffled: bool = True, lean: bool = False) -> Path:  # fmt: skip
    """Add alerts number ``start`` to ``start + n - 1`` to the store at ``path`` (made if missing).

    Alert ``i`` is on key ``card-{i % keys}`` with alertname ``amount_z``, ``velocity`` or ``rarity`` (``i % 3``);
    one in 7 is firing, one in 50 retracted, the rest resolved; one in 97 critical, one in 10 info; the message
    of every ``NEEDLE_EVERY``-th has ``NEEDLE``. Alert ``i`` starts at ``T0_MS + 10 i``; four alerts share each
    change time, a minute after (unshuffled) or anywhere in that span. ``shuffled``:
    change times are a permutation of the numbers, so the newest-change order is not the order of the file, as
    in a store where alerts keep changing (the worst case for reads: every alert on a page of its own);
    otherwise they follow the numbers. ``lean``: each stored alert has only its id, score, threshold, event time
    and message, not the evidence the manager stores too (for tests of paging: parsing is cheaper). Returns the
    path.
    """
    path = Path(path)
    AlertStore(path).close()  # the schema, as the pipeline makes it
    db = sqlite3.connect(path, isolation_level=None)
    try:  # no journal and a big cache for the fill; indexes built once at the end (faster than row by row)
        db.execute("PRAGMA journal_mode = DELETE")
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")
        db.execute("BEGIN IMMEDIATE")
        made = [r[0] for r in db.execute("SELECT sql FROM sqlite_master WHERE type = 'index' AND name IN "
                                         f"({', '.join('?' * len(_LIST_INDEXES))})", _LIST_INDEXES)]  # fmt: skip
        for index in _LIST_INDEXES:
            db.execute(f"DROP INDEX IF EXISTS {index}")
        top = db.execute("SELECT coalesce(max(rowid), 0) FROM alerts").fetchone()[0]
        period = n + start if (n + start) % 7919 else n + start + 1  # 7919 is prime: i * 7919 % period permutes
        args = {"start": start, "stop": start + n, "keys": keys, "t0": T0_MS, "every": NEEDLE_EVERY, "needle": NEEDLE,
                "mult": 7919 if shuffled else 1, "period": period if shuffled else 1 << 62}
        db.execute(_BODIES.replace("{evidence}", "" if lean else _EVIDENCE), args)
        db.execute(_ALERTS, args)
        if revisions:
            db.execute(_REVISIONS, (top,))
        for statement in [*made, *filter(str.strip, READ_INDEXES.split(";"))]:
            db.execute(statement)
        db.execute("COMMIT")
        db.execute("PRAGMA journal_mode = WAL")
    finally:
        db.close()
    return path


def time_api_calls(url: str, token: str, n_calls: int = 100, *, seed: int = 0) -> dict[str, dict[str, float]]:
    """Time ``n_calls`` calls of each kind against the console at ``url``, one after another.

    Returns ``{kind: {"p50_ms", "p95_ms", "max_ms", "calls"}}`` for the kinds ``list``, ``firing``, ``deep_pages``
    (200 alerts a page, following the cursor), ``search`` (a key prefix: many matches), ``search_rare`` (a word
    in ten messages of a million, following the cursor: each call examines its budget), ``severity``,
    ``by_key``, ``detail`` and ``health``, and ``all`` of them together.
    """
    rng = random.Random(seed)
    out: dict[str, dict[str, float]] = {}
    every: list[float] = []
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=120) as client:
        first = client.get("/api/alerts", params={"limit": 1000})  # warms up the connection and the page cache
        first.raise_for_status()
        seen = [(a["fingerprint"], a["key"]) for a in first.json()["alerts"]]
        if not seen:
            raise VigilError(f"console bench: no alerts at {url} (hint: fill the store with fill_store)")
        cursors: dict[str, str | None] = {"deep_pages": None, "search_rare": None}
        kinds: dict[str, Any] = {
            "list": lambda: ("/api/alerts", {}),
            "firing": lambda: ("/api/alerts", {"status": "firing"}),
            "deep_pages": lambda: ("/api/alerts", {"cursor": cursors["deep_pages"], "limit": 200}),
            "search": lambda: ("/api/alerts", {"q": f"card-{rng.randint(0, 399_999):07d}"[:9]}),
            "search_rare": lambda: ("/api/alerts", {"q": NEEDLE, "cursor": cursors["search_rare"]}),
            "severity": lambda: ("/api/alerts", {"severity": "critical", "status": "firing"}),
            "by_key": lambda: ("/api/alerts", {"key": rng.choice(seen)[1]}),
            "detail": lambda: (f"/api/alerts/{rng.choice(seen)[0]}", {}),
            "health": lambda: ("/api/health", {}),
        }
        for kind, make in kinds.items():
            times = []
            for _ in range(n_calls):
                path, params = make()
                params = {k: v for k, v in params.items() if v is not None}
                t = time.perf_counter()
                r = client.get(path, params=params)
                times.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    raise VigilError(f"console bench: {path} {params} answered {r.status_code}: {r.text[:300]}")
                if kind in cursors:
                    cursors[kind] = r.json()["next_cursor"]
                if kind == "deep_pages":
                    seen += [(a["fingerprint"], a["key"]) for a in r.json()["alerts"][:5]]
            out[kind] = _summary(times)
            every += times
    out["all"] = _summary(every)
    return out


def measure_console(store_path: str | os.PathLike[str], n_calls: int = 100) -> dict[str, Any]:
    """Serve the console over ``store_path`` in a process of its own and time :func:`time_api_calls`.

    Returns ``console_p95_ms`` and ``console_p50_ms`` (all calls together), ``console_calls`` (per kind) and
    ``console_alerts`` (in the store).
    """
    with sqlite3.connect(f"file:{store_path}?mode=ro", uri=True) as db:
        n = db.execute("SELECT count(*) FROM alerts").fetchone()[0]
    server = subprocess.Popen([sys.executable, "-m", "vigil.console.bench", "serve", "--store", str(store_path)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert server.stdout is not None
        url, token = server.stdout.readline().split()
        calls = time_api_calls(url, token, n_calls)
    finally:
        if server.stdin is not None:
            server.stdin.close()
        server.wait(timeout=60)
    return {"console_p95_ms": calls["all"]["p95_ms"], "console_p50_ms": calls["all"]["p50_ms"],
            "console_calls": calls, "console_alerts": n}  # fmt: skip


def _serve(store_path: Path) -> None:  # pragma: no cover - run as a subprocess
    """Serve the console over the store until stdin closes; prints ``url token``."""
    import secrets

    from vigil.console.app import create_app
    from vigil.console.server import serve_console

    token = secrets.token_urlsafe(24)
    store = AlertStore(store_path, create=False)
    handle, url = serve_console(create_app(store=store, token=token, pipeline_name="bench"))
    print(f"{url} {token}", flush=True)
    sys.stdin.read()
    handle.stop()
    store.close()


def _summary(times_ms: list[float]) -> dict[str, float]:
    s = sorted(times_ms)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 2)

    return {"p50_ms": q(0.5), "p95_ms": q(0.95), "max_ms": round(s[-1], 2), "calls": float(len(s))}


def _main() -> None:  # pragma: no cover - a command
    import argparse

    ap = argparse.ArgumentParser(prog="python -m vigil.console.bench",
                                 description="console_p95_ms alone: the console's API over a big alert store")
    sub = ap.add_subparsers(dest="part")
    serve = sub.add_parser("serve", help="(internal) serve a store until stdin closes")
    serve.add_argument("--store", type=Path, required=True)
    ap.add_argument("--alerts", type=int, default=1_000_000, help="alerts in the store (default 1,000,000)")
    ap.add_argument("--store", type=Path, help="reuse this store (written there first if missing)")
    ap.add_argument("--calls", type=int, default=100, help="calls of each kind (default 100)")
    a = ap.parse_args()
    if a.part == "serve":
        _serve(a.store)
        return
    with tempfile.TemporaryDirectory() as tmp:
        store = a.store or Path(tmp) / "alerts.db"
        if not store.exists():
            t = time.perf_counter()
            fill_store(store, a.alerts)
            print(f"filled {store} with {a.alerts:,} alerts in {time.perf_counter() - t:.0f} s", file=sys.stderr)
        result = measure_console(store, a.calls)
    result["load_avg"] = list(os.getloadavg())
    print(json.dumps(result))


if __name__ == "__main__":  # pragma: no cover
    _main()

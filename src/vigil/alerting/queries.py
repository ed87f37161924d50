"""The alert store's read side for large stores: keyset pages, bounded searches, indexed counts.

:class:`AlertQueries` is mixed into :class:`~vigil.alerting.store.AlertStore`; the console and ``vigil bench alerts``
use it to stay fast at a million stored alerts. Nothing here changes how alerts are written.

- **Order**: newest change first, ``(updated_ms DESC, fingerprint)``, a strict total order. A page ends at a
  :class:`Position`; the next page starts strictly below it (keyset paging), so alerts that arrive or change while
  someone pages move to the top and never make a later page repeat or skip an alert that stayed put.
- **Indexes**: the store's schema 2 (:mod:`vigil.alerting.store_state`) keeps ``key``, ``alertname`` and
  ``severity`` as columns and indexes the alerts by last change, all of them, per status and per key; pages walk
  those in order (``INDEXED BY``). The read side adds only ``feedback (fingerprint)`` (:data:`READ_INDEXES`).
- **Search** (a substring of key, alertname or message, a fingerprint prefix; an exact severity or alertname)
  examines at most ``scan_rows`` alerts per call in that order and says where it stopped, so a call costs the
  same whether the term is everywhere or nowhere; the caller continues from :attr:`AlertPage.next`. An exact
  ``key`` or ``status`` needs no budget: it is an index range. Why not a full-text index: an FTS5 trigram table
  kept by triggers made the manager's alert writes about 3x slower (22k against 65k rows/s here), and the alert
  path is what must hold in an alert storm. The message is in the stored alert (JSON, in the row or, as the
  manager writes it, in ``alert_bodies``): a ``LIKE`` over the document lets through candidates, and only those
  pay for ``json_extract``. Reading an alert's body costs two B-tree lookups (about 4.5 µs, the row itself 1.5):
  at the default budget of 10,000 alerts a search call costs about 75 ms of CPU at a million. With ``budget_s``
  (the console's 80 ms) it also stops between chunks of 1,000 alerts once the time is spent: a loaded machine
  answers as soon, having looked less far.
  Matching is case-insensitive for ASCII letters (SQLite's ``LIKE``), exact for other characters.

Examples:
    >>> import os, tempfile
    >>> from vigil.alerting.store import AlertStore
    >>> s = AlertStore(os.path.join(tempfile.mkdtemp(), "alerts.db"))
    >>> s.write_alerts([{"fingerprint": f"{i:016x}", "labels": {"alertname": "z", "key": f"u{i}"},
    ...                  "status": "firing", "revision": 1, "last_alert": {"message": f"odd amount {i}"},
    ...                  "updated_ms": i} for i in range(5)])
    >>> page = s.alert_page(limit=2)
    >>> [r["labels"]["key"] for r in page.rows], page.next
    (['u4', 'u3'], Position(updated_ms=3, fingerprint='0000000000000003'))
    >>> [r["labels"]["key"] for r in s.alert_page(limit=2, before=page.next).rows]
    ['u2', 'u1']
    >>> [r["labels"]["key"] for r in s.alert_page(text="AMOUNT 1").rows], s.alert_counts()
    (['u1'], {'firing': 5, 'resolved': 0, 'retracted': 0})
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from vigil.alerting.store_state import ALERT_COLUMNS
from vigil.errors import StateError

STATUSES = ("firing", "resolved", "retracted")
DEFAULT_SCAN_ROWS = 10_000
_CHUNK_ROWS = 1_000  # alerts a search examines between looks at the clock (with a time budget)

#: what the read side adds to the store's own indexes (schema 2 has the alert list's; see the module doc)
READ_INDEXES = """
CREATE INDEX IF NOT EXISTS feedback_fp ON feedback (fingerprint);
"""
#: the store's indexes the read side walks: all alerts, one status, one key (each newest change first)
_INDEXES = ("alerts_updated", "alerts_status_updated", "alerts_key")
_ORDER = " ORDER BY a.updated_ms DESC, a.fingerprint"
_BELOW = "a.updated_ms <= ? AND (a.updated_ms < ? OR a.fingerprint > ?)"  # strictly after a position
_AT_OR_ABOVE = "a.updated_ms >= ? AND (a.updated_ms > ? OR a.fingerprint <= ?)"  # up to a position, inclusive
_HEX = re.compile(r"[0-9a-f]{4,16}")


class Position(NamedTuple):
    """Where a page of alerts ended (the next page starts strictly below it, in newest-change-first order)."""

    updated_ms: int
    fingerprint: str


@dataclass
class AlertPage:
    """A page of alert rows, newest change first.

    ``next`` is where to continue (``None``: nothing older is left). ``complete`` is False when the search
    stopped at its row budget before filling the page: ``rows`` may then be short, even empty, and more matches
    may lie below ``next``. ``examined`` counts the alerts looked at.
    """

    rows: list[dict[str, Any]]
    next: Position | None
    complete: bool = True
    examined: int = 0
    filters: dict[str, Any] = field(default_factory=dict)


def like_pattern(text: str) -> str:
    r"""A ``LIKE ... ESCAPE '\'`` pattern matching ``text`` anywhere (``\`` escapes ``%``, ``_`` and itself).

    Examples:
        >>> print(like_pattern("50%_a" + chr(92)))
        %50\%\_a\\%
    """
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _json_path(label: str) -> str:
    return '$."' + label.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _pos(p: Position | tuple[int, str]) -> tuple[int, int, str]:
    return int(p[0]), int(p[0]), str(p[1])


class AlertQueries:
    """Read-side queries of the alert store (see the module docstring); mixed into ``AlertStore``."""

    _db: sqlite3.Connection
    _lock: Any
    path: Any

    def _rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:  # provided by AlertStore
        raise NotImplementedError

    def _one(self, sql: str, args: Any = ()) -> Any:  # provided by AlertStore
        raise NotImplementedError

    def _ensure_read_indexes(self) -> None:
        """Make the read side's own index (once per file; a store opened read-only just goes without it)."""
        self._counts_cache: tuple[Any, dict[str, int]] | None = None
        self._db.create_function("vigil_fullmatch", 2, _fullmatch, deterministic=True)
        have = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        self._indexed = set(_INDEXES) <= have  # schema 2 makes them; hints only where they exist
        if "feedback_fp" in have:
            return
        try:
            self._db.executescript("BEGIN IMMEDIATE;" + READ_INDEXES + "COMMIT;")
        except sqlite3.OperationalError:  # read-only file or busy beyond the timeout: slower reads, same answers
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")

    def _hint(self, index: str) -> str:
        return f" INDEXED BY {index}" if self._indexed else ""

    def tune_for_reads(self, *, mmap_bytes: int = 1 << 32, cache_kib: int = 65_536) -> None:
        """Set this connection up for big scans: the file memory-mapped, a larger page cache.

        A search walks alerts in change order, which is not the order of the file: each alert is a random page.
        Read through a memory map, a page already in the OS cache costs no system call (about half the time).
        """
        with self._lock:
            self._db.execute(f"PRAGMA mmap_size = {int(mmap_bytes)}")
            self._db.execute(f"PRAGMA cache_size = -{int(cache_kib)}")

    # -- pages ------------------------------------------------------------------------------------------------

    def alert_page(self, *, status: str | None = None, severity: str | None = None, key: str | None = None,
                   alertname: str | None = None, text: str | None = None, limit: int = 50,
                   before: Position | tuple[int, str] | None = None, scan_rows: int = DEFAULT_SCAN_ROWS,
                   budget_s: float | None = None) -> AlertPage:  # fmt: skip
        """Up to ``limit`` alert rows older than ``before``, newest change first, matching every filter given.

        Args:
            status: ``firing``, ``resolved`` or ``retracted`` (indexed).
            key: an exact key (indexed).
            severity, alertname: exact label values.
            text: a substring of the key, the alertname or the last alert's message, or a fingerprint prefix.
            limit: rows per page.
            before: continue below this :class:`Position` (the previous page's ``next``).
            scan_rows: with ``severity``, ``alertname`` or ``text``: examine at most this many alerts (of the
                status and key asked for).
            budget_s: with those: also stop, at a multiple of 1,000 alerts examined, once this much time has
                passed (a loaded machine answers sooner with less; ``None``: ``scan_rows`` alone decides).
        """
        if limit < 1 or scan_rows < 1:
            raise ValueError("limit and scan_rows must be >= 1")
        head: list[str] = []
        args: list[Any] = []
        for col, val in (("a.status", status), ("a.key", key)):
            if val is not None:
                head.append(f"{col} = ?")
                args.append(val)
        if before is not None:
            head.append(_BELOW)
            args += _pos(before)
        preds, pargs = _predicates(severity, alertname, text)
        index = "alerts_key" if key is not None else "alerts_status_updated" if status is not None else "alerts_updated"
        table = f"alerts a{self._hint(index)}"
        where = " AND ".join(head) or "1"
        filters = {"status": status, "severity": severity, "key": key, "alertname": alertname, "text": text}
        if not preds:  # an index range: one page, no budget
            rows = [_parse(r) for r in self._rows(f"SELECT {ALERT_COLUMNS} FROM {table} WHERE {where}{_ORDER} "
                                                  "LIMIT ?", (*args, limit + 1))]  # fmt: skip
            if len(rows) > limit:
                rows = rows[:limit]
                return AlertPage(rows, Position(rows[-1]["updated_ms"], rows[-1]["fingerprint"]), True, limit, filters)
            return AlertPage(rows, None, True, len(rows), filters)
        # a search: windows of alerts in order (all of scan_rows at once, or chunks while time is left), each
        # fixed first by its last alert (None: it reaches the oldest), then searched
        step = scan_rows if budget_s is None else min(scan_rows, _CHUNK_ROWS)
        started = time.perf_counter()
        out: list[dict[str, Any]] = []
        cur_where, cur_args, examined = where, list(args), 0
        while True:
            n = min(step, scan_rows - examined)
            ends = self._rows(f"SELECT a.updated_ms, a.fingerprint FROM {table} WHERE {cur_where}{_ORDER} "
                              "LIMIT 2 OFFSET ?", (*cur_args, n - 1))  # fmt: skip
            bound = (ends[0]["updated_ms"], ends[0]["fingerprint"]) if len(ends) == 2 else None
            window, wargs = cur_where, list(cur_args)
            if bound is not None:
                window += " AND " + _AT_OR_ABOVE
                wargs += _pos(bound)
            sql = f"SELECT {ALERT_COLUMNS} FROM {table} WHERE {window}"
            sql += "".join(f" AND {p}" for p in preds) + _ORDER + " LIMIT ?"
            out += [_parse(r) for r in self._rows(sql, (*wargs, *pargs, limit + 1 - len(out)))]
            if len(out) > limit:
                out = out[:limit]
                last = out[-1]
                return AlertPage(out, Position(last["updated_ms"], last["fingerprint"]), True,
                                 self._examined(table, where, args, last), filters)  # fmt: skip
            if bound is None:  # the window reached the oldest alert: nothing left below
                return AlertPage(out, None, True, self._examined(table, where, args, None), filters)
            examined += n
            if examined >= scan_rows or (budget_s is not None and time.perf_counter() - started >= budget_s):
                return AlertPage(out, Position(int(bound[0]), str(bound[1])), False, examined, filters)
            cur_where, cur_args = where + " AND " + _BELOW, [*args, *_pos(bound)]

    def _examined(self, table: str, where: str, args: list[Any], last: dict[str, Any] | None) -> int:
        sql = f"SELECT count(*) FROM {table} WHERE {where}"
        if last is None:
            return int(self._one(sql, args)[0])
        at = _pos((last["updated_ms"], last["fingerprint"]))
        return int(self._one(sql + " AND " + _AT_OR_ABOVE, (*args, *at))[0])

    # -- counts -----------------------------------------------------------------------------------------------

    def alert_counts(self) -> dict[str, int]:
        """Alerts per status (``firing``, ``resolved``, ``retracted``), from the status index.

        Cached until the file changes (any connection's write), so a console polled by many tabs counts once.
        """
        version = (self._one("PRAGMA data_version")[0], self._db.total_changes)
        cached = self._counts_cache
        if cached is not None and cached[0] == version:
            return dict(cached[1])
        sql = f"SELECT count(*) FROM alerts a{self._hint('alerts_status_updated')} WHERE a.status = ?"
        counts = {s: int(self._one(sql, (s,))[0]) for s in STATUSES}
        self._counts_cache = (version, counts)
        return dict(counts)

    def key_count(self, key: str, status: str | None = None) -> int:
        """How many alerts a key has (of one status), from the key index."""
        sql = f"SELECT count(*) FROM alerts a{self._hint('alerts_key')} WHERE a.key = ?"
        return int(self._one(sql + (" AND a.status = ?" if status else ""), (key, status) if status else (key,))[0])

    def count_muted(self, silences: list[list[tuple[str, str, str]]], *, scan_rows: int = DEFAULT_SCAN_ROWS
                    ) -> tuple[int, int, bool]:  # fmt: skip
        """Firing alerts silenced by any of ``silences`` and firing alerts with an active ack.

        Each silence is its matchers as ``(label, op, value)`` (``=``, ``!=``, ``=~``, ``!~``; a missing label
        is the empty string). Silences are matched against at most ``scan_rows`` firing alerts, newest change
        first: returns ``(silenced, acked, exact)``, ``exact`` False when more firing alerts exist than that.
        """
        # CROSS JOIN: the acks drive (a few), each looks its alert up; never a walk of every firing alert
        acked = int(self._one("SELECT count(DISTINCT k.fingerprint) FROM acks k CROSS JOIN alerts a "
                              "ON a.fingerprint = k.fingerprint WHERE k.cleared_ms IS NULL AND a.status = 'firing'")[0])
        if not silences:
            return 0, acked, True
        ors, args = [], []
        for matchers in silences:
            ands = []
            for label, op, value in matchers:
                v = "coalesce(json_extract(labels, ?), '')"
                if op in ("=", "!="):
                    ands.append(f"{v} {'=' if op == '=' else '!='} ?")
                    args += [_json_path(label), value]
                else:
                    ands.append(f"{'' if op == '=~' else 'NOT '}vigil_fullmatch(?, {v})")
                    args += [value, _json_path(label)]
            ors.append("(" + (" AND ".join(ands) or "1") + ")")
        sql = ("SELECT count(*), (SELECT count(*) FROM (SELECT 1 FROM alerts WHERE status = 'firing' LIMIT ?)) "
               f"FROM (SELECT a.labels FROM alerts a{self._hint('alerts_status_updated')} WHERE a.status = 'firing'"
               f"{_ORDER} LIMIT ?) WHERE {' OR '.join(ors)}")  # fmt: skip
        silenced, seen = self._one(sql, (scan_rows + 1, scan_rows, *args))
        return int(silenced), acked, int(seen) <= scan_rows

    def acks_for(self, fingerprints: list[str]) -> dict[str, dict[str, Any]]:
        """The latest active ack of each of ``fingerprints`` that has one."""
        out: dict[str, dict[str, Any]] = {}
        for i in range(0, len(fingerprints), 500):
            chunk = fingerprints[i : i + 500]
            marks = ", ".join("?" * len(chunk))
            for r in self._rows(f"SELECT * FROM acks WHERE cleared_ms IS NULL AND fingerprint IN ({marks}) "
                                "ORDER BY rowid", chunk):  # fmt: skip
                out[r["fingerprint"]] = r
        return out


def _predicates(severity: str | None, alertname: str | None, text: str | None) -> tuple[list[str], list[Any]]:
    preds: list[str] = []
    args: list[Any] = []
    for col, value in (("a.severity", severity), ("a.alertname", alertname)):
        if value is not None:
            preds.append(f"{col} = ?")
            args.append(value)
    if text:
        plain = like_pattern(text)
        # the stored alert is JSON, which escapes non-ASCII, quotes and control characters: a cheap LIKE over the
        # document for either spelling first, json_extract of the message only for the documents it lets through
        escaped = like_pattern(json.dumps(text)[1:-1])
        spellings = [plain] if escaped == plain else [plain, escaped]

        def message(doc: str) -> str:
            raw = " OR ".join(f"{doc} LIKE ? ESCAPE '\\'" for _ in spellings)
            return f"(({raw}) AND json_extract({doc}, '$.message') LIKE ? ESCAPE '\\')"

        # a manager's row keeps its alert in alert_bodies (by hash), a row written whole keeps it in place
        pred = (f"(a.key LIKE ? ESCAPE '\\' OR a.alertname LIKE ? ESCAPE '\\' OR {message('a.last_alert')} OR "
                f"(SELECT {message('b.body')} FROM alert_bodies b WHERE b.hash = a.last_body))")
        pargs: list[Any] = [plain, plain, *spellings, plain, *spellings, plain]
        if _HEX.fullmatch(text.lower()):
            pred = f"(a.fingerprint LIKE ? ESCAPE '\\' OR {pred})"
            pargs = [text.lower() + "%", *pargs]
        preds.append(pred)
        args += pargs
    return preds, args


_REGEX_CACHE: dict[str, re.Pattern[str] | None] = {}


def _fullmatch(pattern: str, value: str) -> bool:
    rx = _REGEX_CACHE.get(pattern, False)
    if rx is False:
        try:
            rx = re.compile(pattern)
        except re.error:
            rx = None
        if len(_REGEX_CACHE) > 1000:
            _REGEX_CACHE.clear()
        _REGEX_CACHE[pattern] = rx
    return rx is not None and rx.fullmatch(value or "") is not None  # type: ignore[union-attr]


def _parse(row: dict[str, Any]) -> dict[str, Any]:
    for c in ("labels", "last_alert"):
        if row.get(c) is not None:
            try:
                row[c] = json.loads(row[c])
            except ValueError as exc:
                raise StateError(f"alert {row.get('fingerprint')}: column {c} is not JSON ({exc})") from exc
    return row

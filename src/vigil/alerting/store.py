"""The alert store: one SQLite file shared by the alert manager, the CLI and the web console.

One process writes alert state (the pipeline's :class:`~vigil.alerting.manager.AlertManager`); any number of
readers and the CLI read it and add silences, acks and feedback at the same time. SQLite's WAL journal makes that
safe: readers never block the writer, writers wait for each other (``busy_timeout``). Each :class:`AlertStore`
holds one connection shared by its threads behind a lock.

Tables: ``alerts`` (one row per logical alert, by fingerprint), ``alert_revisions`` (every state change and
late-data revision), ``silences``, ``acks``, ``feedback`` (true/false-positive labels from operators, exported
as training data), ``notifications`` (the delivery log), ``manager_state`` (the alert manager's own state, by
checkpoint: :mod:`vigil.alerting.store_state`) and ``meta``. Triggers bump ``meta.mute_version`` on any
change to silences or acks, so the manager notices a silence added by another process with one cheap query.
The schema version is SQLite's ``PRAGMA user_version``. Pages, searches and counts for big stores (the console)
are the read side in :mod:`vigil.alerting.queries`, mixed in; its indexes are made when a store is opened.

Examples:
    >>> import os, tempfile
    >>> s = AlertStore(os.path.join(tempfile.mkdtemp(), "alerts.db"))
    >>> sid = s.add_silence(["key=u1"], starts_ms=0, ends_ms=10_000, created_by="ana", comment="known", now_ms=0)
    >>> [x["matchers"] for x in s.silences(active_at_ms=5_000)], s.silences(active_at_ms=20_000)
    ([['key=u1']], [])
    >>> s.mute_version() > 0
    True
"""

from __future__ import annotations

import csv
import json
import math
import os
import secrets
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from vigil.alerting.queries import AlertQueries
from vigil.alerting.store_state import (
    ALERT_COLUMNS,
    ALERT_UPSERT,
    MIGRATE_V2,
    REVISION_COLUMNS,
    ManagerRows,
    StateWrite,
)
from vigil.errors import ConfigError, StateError

_LAST = "COALESCE(a.last_alert, (SELECT body FROM alert_bodies WHERE hash = a.last_body))"

__all__ = ["FEEDBACK_LABELS", "SCHEMA_VERSION", "AlertStore", "StateWrite", "to_json"]

SCHEMA_VERSION = 2
FEEDBACK_LABELS = ("true_positive", "false_positive")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    fingerprint TEXT PRIMARY KEY, labels TEXT NOT NULL, status TEXT NOT NULL, revision INTEGER NOT NULL,
    starts_at_ms INTEGER, ends_at_ms INTEGER, last_alert TEXT, observations INTEGER NOT NULL DEFAULT 0,
    updated_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS alerts_status ON alerts (status);
CREATE TABLE IF NOT EXISTS alert_revisions (
    fingerprint TEXT NOT NULL, revision INTEGER NOT NULL, status TEXT NOT NULL, reason TEXT NOT NULL,
    alert TEXT, at_ms INTEGER, note TEXT);
CREATE INDEX IF NOT EXISTS alert_revisions_fp ON alert_revisions (fingerprint);
CREATE TABLE IF NOT EXISTS silences (
    id TEXT PRIMARY KEY, matchers TEXT NOT NULL, starts_ms INTEGER NOT NULL, ends_ms INTEGER NOT NULL,
    created_by TEXT NOT NULL, comment TEXT NOT NULL, created_ms INTEGER NOT NULL, expired_ms INTEGER);
CREATE TABLE IF NOT EXISTS acks (
    fingerprint TEXT NOT NULL, "by" TEXT NOT NULL, comment TEXT NOT NULL, at_ms INTEGER NOT NULL,
    cleared_ms INTEGER);
CREATE INDEX IF NOT EXISTS acks_fp ON acks (fingerprint);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, fingerprint TEXT NOT NULL, alert_id TEXT,
    label TEXT NOT NULL CHECK (label IN ('true_positive', 'false_positive')), note TEXT NOT NULL DEFAULT '',
    "by" TEXT NOT NULL DEFAULT '', at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS notifications (
    idempotency_key TEXT PRIMARY KEY, receiver TEXT NOT NULL, group_key TEXT NOT NULL, reason TEXT NOT NULL,
    status TEXT NOT NULL, created_ms INTEGER NOT NULL, delivered_ms INTEGER, error TEXT);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (name, value) VALUES ('mute_version', 0);
"""
_BUMP = "BEGIN UPDATE meta SET value = value + 1 WHERE name = 'mute_version'; END"
_TRIGGERS = "\n".join(
    f"CREATE TRIGGER IF NOT EXISTS {t}_{op.lower()} AFTER {op} ON {t} {_BUMP};"
    for t in ("silences", "acks") for op in ("INSERT", "UPDATE", "DELETE")
)  # fmt: skip


def to_json(obj: Any) -> str:
    """Compact, valid JSON that also takes numpy scalars and arrays; NaN and infinities become ``null``.

    Examples:
        >>> to_json({"score": float("nan"), "z": [1.5, float("inf")]})
        '{"score":null,"z":[1.5,null]}'
    """
    try:
        return json.dumps(obj, separators=(",", ":"), default=_default, allow_nan=False)
    except ValueError:  # a non-finite float somewhere (e.g. a model score without a model): write null
        return json.dumps(_finite(obj), separators=(",", ":"), default=_default, allow_nan=False)


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    if hasattr(obj, "tolist"):
        return _finite(obj.tolist())
    return obj


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


class AlertStore(AlertQueries, ManagerRows):
    """Alert state, silences, acks, feedback and the notification log in one SQLite file (see the module doc).

    Args:
        path: the database file (its folder is created). The convention is ``vigil-out/<pipeline>/alerts.db``.
        create: create the file if missing; with ``False`` a missing file is a :class:`StateError`.

    Raises:
        StateError: the file is not a readable SQLite database, or was written by a newer Vigil.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        if not create and not self.path.exists():
            raise StateError(f"no alert store at {self.path} (hint: pass --db, e.g. vigil-out/<pipeline>/alerts.db)")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0, isolation_level=None)
        except (sqlite3.Error, OSError) as exc:
            raise StateError(f"can't open alert store {self.path}: {exc}") from exc
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA busy_timeout = 10000")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StateError(f"alert store {self.path} has schema version {version}, newer than this Vigil's "
                                 f"{SCHEMA_VERSION} (hint: upgrade Vigil, or point --db at another file)")  # fmt: skip
            self._db.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL: a commit survives a process crash without an fsync each (power loss may lose the last)
            self._db.execute("PRAGMA synchronous = NORMAL")
            # up to 32 MB of pages (default 2 MB): the indexes of 100k alerts; in an alert storm the random
            # fingerprint keys otherwise send every upsert to the OS for its index pages (a third of the store's CPU)
            self._db.execute("PRAGMA cache_size = -32768")
            if version < SCHEMA_VERSION:
                self._migrate(version)
            self._ensure_read_indexes()  # the console's pages and counts (vigil.alerting.queries)
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StateError(f"alert store {self.path} is unreadable or corrupt ({exc}) "
                             "(hint: move the file aside; a fresh one is created on the next run)") from exc

    def _migrate(self, version: int) -> None:
        """Bring the schema from ``version`` to :data:`SCHEMA_VERSION`, in one transaction."""
        script = (_SCHEMA + _TRIGGERS if version < 1 else "") + MIGRATE_V2
        self._db.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;")

    # -- plumbing ---------------------------------------------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The schema version of the open file."""
        return int(self._one("PRAGMA user_version")[0])

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise StateError(f"alert store {self.path}: can't start a write ({exc})") from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StateError(f"alert store {self.path}: commit failed ({exc})") from exc

    def _write(self, sql: str, args: Any = ()) -> tuple[int, int]:
        """Run one statement in its own transaction; (rows changed, last inserted rowid)."""
        try:
            with self._tx() as db:
                cur = db.execute(sql, args)
                return cur.rowcount, cur.lastrowid or 0
        except sqlite3.Error as exc:
            raise StateError(f"alert store {self.path}: write failed ({exc})") from exc

    def _rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        with self._lock:
            try:
                return [dict(r) for r in self._db.execute(sql, args).fetchall()]
            except sqlite3.Error as exc:
                raise StateError(f"alert store {self.path}: read failed ({exc})") from exc

    def _one(self, sql: str, args: Any = ()) -> Any:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchone()
            except sqlite3.Error as exc:
                raise StateError(f"alert store {self.path}: read failed ({exc})") from exc

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._db.close()

    def __enter__(self) -> AlertStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- alerts -----------------------------------------------------------------------------------------------

    def write_alerts(self, alerts: list[dict[str, Any]], revisions: list[dict[str, Any]] | None = None) -> None:
        """Upsert alert rows and append revision rows, in one transaction.

        ``alerts`` items have the ``alerts`` columns (``labels`` and ``last_alert`` as plain data);
        ``revisions`` items have ``fingerprint, revision, status, reason, alert, at_ms`` and optionally ``note``.
        """
        rows = [(a["fingerprint"], to_json(a["labels"]), a["status"], a["revision"], a.get("starts_at_ms"),
                 a.get("ends_at_ms"), to_json(a.get("last_alert")), a.get("observations", 0), a["updated_ms"],
                 a["labels"].get("key"), a["labels"].get("alertname"), a["labels"].get("severity"), None)
                for a in alerts]  # fmt: skip
        revs = [(r["fingerprint"], r["revision"], r["status"], r["reason"], to_json(r.get("alert")), r.get("at_ms"),
                 r.get("note"), None) for r in revisions or ()]  # fmt: skip
        try:
            with self._tx() as db:
                db.executemany(ALERT_UPSERT, rows)
                db.executemany("INSERT INTO alert_revisions VALUES (?, ?, ?, ?, ?, ?, ?, ?)", revs)
        except sqlite3.Error as exc:
            raise StateError(f"alert store {self.path}: write failed ({exc})") from exc

    def alerts(self, status: str | None = None, key: str | None = None, limit: int | None = None
               ) -> list[dict[str, Any]]:  # fmt: skip
        """Alert rows (``labels``, ``last_alert`` parsed), newest change first, optionally filtered."""
        where, args = [], []
        if status is not None:
            where.append("a.status = ?")
            args.append(status)
        if key is not None:
            where.append("a.key = ?")
            args.append(key)
        sql = f"SELECT {ALERT_COLUMNS} FROM alerts a" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY a.updated_ms DESC, a.fingerprint" + (f" LIMIT {int(limit)}" if limit else "")
        return [_parse(r, "labels", "last_alert") for r in self._rows(sql, args)]

    def alert(self, fingerprint: str) -> dict[str, Any] | None:
        """One alert row by fingerprint, or ``None``."""
        rows = self._rows(f"SELECT {ALERT_COLUMNS} FROM alerts a WHERE a.fingerprint = ?", (fingerprint,))
        return _parse(rows[0], "labels", "last_alert") if rows else None

    def find_fingerprint(self, prefix: str) -> str:
        """The full fingerprint of the one alert whose fingerprint starts with ``prefix`` (like git's short ids).

        Raises:
            ConfigError: no alert, or more than one, has that prefix.
        """
        low = prefix.lower().replace("%", "").replace("_", "")  # a primary-key range, not a LIKE scan
        hits = [r["fingerprint"] for r in self._rows("SELECT fingerprint FROM alerts WHERE fingerprint >= ? AND "
                                                     "fingerprint < ? ORDER BY fingerprint LIMIT 5",
                                                     (low, low + "\U0010ffff"))]  # fmt: skip
        if len(hits) == 1:
            return hits[0]
        if not hits:
            raise ConfigError(f"matches no alert in {self.path}", field="fingerprint", value=prefix,
                              hint="list them with `vigil alerts list`")  # fmt: skip
        raise ConfigError("matches several alerts", field="fingerprint", value=prefix,
                          hint=f"give more characters: {', '.join(hits)}")

    def revisions(self, fingerprint: str) -> list[dict[str, Any]]:
        """Every recorded state change and revision of one alert, oldest first."""
        rows = self._rows(f"SELECT {REVISION_COLUMNS} FROM alert_revisions r WHERE r.fingerprint = ? ORDER BY r.rowid",
                          (fingerprint,))
        return [_parse(r, "alert") for r in rows]

    # -- silences and acks ------------------------------------------------------------------------------------

    def mute_version(self) -> int:
        """A counter bumped by every change to silences or acks (in any process)."""
        return int(self._one("SELECT value FROM meta WHERE name = 'mute_version'")[0])

    def add_silence(self, matchers: list[str], *, starts_ms: int, ends_ms: int, created_by: str, comment: str,
                    now_ms: int, id: str | None = None) -> str:  # fmt: skip
        """Store a silence (matchers as strings, already validated) and return its id."""
        sid = id or secrets.token_hex(6)
        self._write("INSERT INTO silences VALUES (?, ?, ?, ?, ?, ?, ?, NULL)",
                    (sid, to_json(list(matchers)), starts_ms, ends_ms, created_by, comment, now_ms))
        return sid

    def expire_silence(self, id: str, now_ms: int) -> bool:
        """Expire a silence now; False when there is no unexpired silence with that id."""
        n, _ = self._write("UPDATE silences SET expired_ms = ? WHERE id = ? AND expired_ms IS NULL", (now_ms, id))
        return n > 0

    def silences(self, *, active_at_ms: int | None = None, include_expired: bool = False) -> list[dict[str, Any]]:
        """Silences, oldest first: all unexpired ones, or those active at ``active_at_ms``."""
        sql, args = "SELECT * FROM silences", []
        if active_at_ms is not None:
            sql += " WHERE expired_ms IS NULL AND starts_ms <= ? AND ends_ms > ?"
            args = [active_at_ms, active_at_ms]
        elif not include_expired:
            sql += " WHERE expired_ms IS NULL"
        return [_parse(r, "matchers") for r in self._rows(sql + " ORDER BY created_ms, id", args)]

    def add_ack(self, fingerprint: str, by: str, comment: str, at_ms: int) -> None:
        """Acknowledge an alert: its group is not re-sent on ``repeat_interval`` while every alert in it is acked."""
        self._write('INSERT INTO acks (fingerprint, "by", comment, at_ms) VALUES (?, ?, ?, ?)',
                    (fingerprint, by, comment, at_ms))

    def clear_acks(self, fingerprint: str, at_ms: int) -> int:
        """Clear an alert's acks (it resolved and fired again); returns how many were cleared."""
        n, _ = self._write("UPDATE acks SET cleared_ms = ? WHERE fingerprint = ? AND cleared_ms IS NULL",
                           (at_ms, fingerprint))
        return n

    def acks(self, fingerprint: str | None = None, *, active_only: bool = True) -> list[dict[str, Any]]:
        """Acks, oldest first."""
        where = ["cleared_ms IS NULL"] if active_only else []
        args: list[Any] = []
        if fingerprint is not None:
            where.append("fingerprint = ?")
            args.append(fingerprint)
        sql = "SELECT * FROM acks" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY rowid"
        return self._rows(sql, args)

    # -- feedback ---------------------------------------------------------------------------------------------

    def add_feedback(self, fingerprint: str, label: str, *, at_ms: int, note: str = "", by: str = "",
                     alert_id: str | None = None) -> int:  # fmt: skip
        """Record whether an alert was a true or false positive; returns the feedback id.

        ``alert_id`` defaults to the id of the alert's latest underlying :class:`~vigil.types.Alert`.
        """
        if label not in FEEDBACK_LABELS:
            raise ConfigError("must be 'true_positive' or 'false_positive'", field="label", value=label)
        if alert_id is None:
            row = self.alert(fingerprint)
            alert_id = (row.get("last_alert") or {}).get("id") if row else None
        _, rowid = self._write('INSERT INTO feedback (fingerprint, alert_id, label, note, "by", at_ms) '
                               "VALUES (?, ?, ?, ?, ?, ?)", (fingerprint, alert_id, label, note, by, at_ms))
        return rowid

    def feedback(self, fingerprint: str | None = None, label: str | None = None) -> list[dict[str, Any]]:
        """Feedback rows joined with the alert's labels, score and event time, oldest first."""
        where, args = [], []
        if fingerprint is not None:
            where.append("f.fingerprint = ?")
            args.append(fingerprint)
        if label is not None:
            where.append("f.label = ?")
            args.append(label)
        sql = ('SELECT f.id, f.fingerprint, f.alert_id, f.label, f.note, f."by", f.at_ms, '
               "json_extract(a.labels, '$.alertname') AS alertname, json_extract(a.labels, '$.key') AS key, "
               f"json_extract(a.labels, '$.severity') AS severity, json_extract({_LAST}, '$.score') AS score, "
               f"json_extract({_LAST}, '$.event_ts_ms') AS event_ts_ms "
               "FROM feedback f LEFT JOIN alerts a ON a.fingerprint = f.fingerprint")  # fmt: skip
        sql += (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY f.id"
        return self._rows(sql, args)

    def export_feedback(self, path: str | os.PathLike[str]) -> int:
        """Write every feedback row to ``path``: CSV for ``.csv``, else JSON lines. Returns the row count."""
        rows = self.feedback()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            cols = ["id", "fingerprint", "alert_id", "label", "note", "by", "at_ms", "alertname", "key", "severity",
                    "score", "event_ts_ms"]  # fmt: skip
            with out.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
        else:
            with out.open("w", encoding="utf-8") as fh:
                fh.writelines(to_json(r) + "\n" for r in rows)
        return len(rows)

    # -- notification log -------------------------------------------------------------------------------------

    def record_notification(self, *, idempotency_key: str, receiver: str, group_key: str, reason: str,
                            status: str, created_ms: int, delivered_ms: int | None = None,
                            error: str | None = None) -> None:  # fmt: skip
        """Log one notification's delivery (an existing key is updated: a retry replaces the outcome)."""
        self.record_notifications([(idempotency_key, receiver, group_key, reason, status, created_ms, delivered_ms,
                                    error)])  # fmt: skip

    def record_notifications(self, rows: list[tuple[Any, ...]]) -> None:
        """Log many deliveries in one transaction.

        Each row is ``(idempotency_key, receiver, group_key, reason, status, created_ms, delivered_ms, error)``
        (see :meth:`record_notification`).
        """
        if not rows:
            return
        try:
            with self._tx() as db:
                db.executemany(
                    "INSERT INTO notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO "
                    "UPDATE SET status = excluded.status, delivered_ms = excluded.delivered_ms, error = excluded.error",
                    rows)  # fmt: skip
        except sqlite3.Error as exc:
            raise StateError(f"alert store {self.path}: write failed ({exc})") from exc

    def notifications(self, limit: int = 100) -> list[dict[str, Any]]:
        """The latest notifications, newest first."""
        return self._rows("SELECT * FROM notifications ORDER BY created_ms DESC, rowid DESC LIMIT ?", (int(limit),))


def _parse(row: dict[str, Any], *json_cols: str) -> dict[str, Any]:
    for c in json_cols:
        if row.get(c) is not None:
            row[c] = json.loads(row[c])
    return row

"""The alert store's schema version 2: alert bodies stored once, the manager's state rows, columns for paging.

:class:`ManagerRows` is mixed into :class:`~vigil.alerting.store.AlertStore`.

- ``alert_bodies``: each distinct :class:`~vigil.types.Alert` as JSON, once, under a hash of its content. An
  alert's row (``alerts.last_body``), its revisions (``alert_revisions.body``) and the manager's state refer to
  it, so an alert that fires and resolves is written once, not three or four times (in an alert storm the
  store's bytes are the cost). Equal content, equal hash: a replay writes nothing new. Rows written by schema 1
  keep their JSON in ``alerts.last_alert`` and ``alert_revisions.alert``; readers take whichever is there.
- ``manager_state``: versions of the manager's state, one row per (kind, id, seq): ``kind`` is ``e`` (a logical
  alert; ``alert`` holds its latest alert's body hash), ``g`` (a group) or ``m`` (counters, and the rowid of the
  last ``alert_revisions`` row at that point). A save writes only what changed, as version ``seq``; a forgotten
  alert or group gets a tombstone (``data`` NULL). The state as of ``seq`` is, for each id, its newest version at
  or before ``seq``: a restore from any checkpoint the engine still keeps is exact, and a rollback deletes the
  versions and revision rows written after it. Version 0 is the start of a checkpointed run, never pruned.
- ``alerts`` gets ``key``, ``alertname`` and ``severity`` columns (from ``labels``) and indexes by last change,
  so that the console pages through a million alerts with index range scans.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import orjson

from vigil.errors import StateError

MIGRATE_V2 = """
ALTER TABLE alerts ADD COLUMN key TEXT;
ALTER TABLE alerts ADD COLUMN alertname TEXT;
ALTER TABLE alerts ADD COLUMN severity TEXT;
ALTER TABLE alerts ADD COLUMN last_body TEXT;
ALTER TABLE alert_revisions ADD COLUMN body TEXT;
UPDATE alerts SET key = json_extract(labels, '$.key'), alertname = json_extract(labels, '$.alertname'),
                  severity = json_extract(labels, '$.severity');
DROP INDEX IF EXISTS alerts_status;
CREATE INDEX IF NOT EXISTS alerts_updated ON alerts (updated_ms DESC, fingerprint);
CREATE INDEX IF NOT EXISTS alerts_status_updated ON alerts (status, updated_ms DESC, fingerprint);
CREATE INDEX IF NOT EXISTS alerts_key ON alerts (key, updated_ms DESC, fingerprint);
CREATE TABLE IF NOT EXISTS alert_bodies (hash TEXT PRIMARY KEY, body TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS manager_state (
    kind TEXT NOT NULL, id TEXT NOT NULL, seq INTEGER NOT NULL, data TEXT, alert TEXT);
CREATE UNIQUE INDEX IF NOT EXISTS manager_state_version ON manager_state (kind, id, seq);
"""

#: the alert row columns readers get (``last_alert`` from the body table or, for schema 1 rows, in place)
ALERT_COLUMNS = ("a.fingerprint, a.labels, a.status, a.revision, a.starts_at_ms, a.ends_at_ms, "
                 "COALESCE(a.last_alert, (SELECT body FROM alert_bodies WHERE hash = a.last_body)) AS last_alert, "
                 "a.observations, a.updated_ms")  # fmt: skip
REVISION_COLUMNS = ("r.fingerprint, r.revision, r.status, r.reason, "
                    "COALESCE(r.alert, (SELECT body FROM alert_bodies WHERE hash = r.body)) AS alert, r.at_ms, r.note")
ALERT_UPSERT = (
    "INSERT INTO alerts (fingerprint, labels, status, revision, starts_at_ms, ends_at_ms, last_alert, observations, "
    "updated_ms, key, alertname, severity, last_body) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (fingerprint) DO UPDATE SET labels = excluded.labels, status = excluded.status, "
    "revision = excluded.revision, starts_at_ms = excluded.starts_at_ms, ends_at_ms = excluded.ends_at_ms, "
    "last_alert = excluded.last_alert, observations = excluded.observations, updated_ms = excluded.updated_ms, "
    "key = excluded.key, alertname = excluded.alertname, severity = excluded.severity, last_body = excluded.last_body"
)
REVISION_INSERT = ("INSERT INTO alert_revisions (fingerprint, revision, status, reason, alert, at_ms, note, body) "
                   "VALUES (?, ?, ?, ?, NULL, ?, ?, ?)")  # fmt: skip
# version 0 is the start of a checkpointed run (what a run without a checkpoint goes back to): never pruned
_PRUNE = ("DELETE FROM manager_state WHERE kind = ?1 AND id = ?2 AND seq > 0 AND seq < "
          "(SELECT max(seq) FROM manager_state WHERE kind = ?1 AND id = ?2 AND seq <= ?3)")  # fmt: skip


@dataclass
class StateWrite:
    """One save of the alert manager's state (what changed since the previous save), as version ``seq``.

    ``entries`` are ``(fingerprint, data JSON, latest alert's body hash)``, ``groups`` ``(group key, data JSON)``;
    ``meta`` is JSON text (the store adds ``rev_rowid``); ``prune`` lists tombstones ``(kind, id, seq)`` no
    checkpoint needs any more. ``new`` holds the ``(kind, id)`` saved for the first time: they have no older
    versions to prune (in a storm, nearly all of them: one DELETE each was a third of a save).
    """

    seq: int
    entries: list[tuple[str, str, str]]
    groups: list[tuple[str, str]]
    deleted_entries: list[str]
    deleted_groups: list[str]
    meta: str
    keep_from: int | None = None
    prune: list[tuple[str, str, int]] = field(default_factory=list)
    new: set[tuple[str, str]] = field(default_factory=set)


class ManagerRows:
    """The alert manager's rows in the store (see the module docstring); a mixin of ``AlertStore``."""

    path: Any
    _lock: threading.RLock
    _db: sqlite3.Connection
    _tx: Callable[[], AbstractContextManager[sqlite3.Connection]]
    _rows: Callable[..., list[dict[str, Any]]]

    def write_manager(self, alerts: list[tuple[Any, ...]], revisions: list[tuple[Any, ...]],
                      bodies: dict[str, str], state: StateWrite | None = None) -> None:  # fmt: skip
        """Write bodies, upsert alert rows, append revision rows and save a state version, in one transaction.

        ``bodies`` maps content hash -> alert JSON; ``alerts`` items are tuples in the order of
        :data:`ALERT_UPSERT` (``labels`` JSON text, ``last_alert`` NULL, ``last_body`` a hash); ``revisions``
        items ``(fingerprint, revision, status, reason, at_ms, note, body hash)``.
        """
        try:
            with self._tx() as db:
                if bodies:
                    db.executemany("INSERT OR IGNORE INTO alert_bodies (hash, body) VALUES (?, ?)", bodies.items())
                if alerts:
                    db.executemany(ALERT_UPSERT, alerts)
                if revisions:
                    db.executemany(REVISION_INSERT, revisions)
                if state is not None:
                    _write_state(db, state)
        except sqlite3.Error as exc:
            raise StateError(f"alert store {self.path}: write failed ({exc})") from exc

    def load_manager(self, seq: int | None
                     ) -> tuple[int, str, list[tuple[str, str, str, str, str]], list[tuple[str, str]],
                                list[tuple[str, str, int]]] | None:  # fmt: skip
        """The manager's state as of ``seq`` (``None``: the latest), or ``None`` if nothing was saved.

        Returns ``(seq of its meta, meta JSON, entries (fingerprint, data, body hash, body JSON, labels JSON),
        groups, tombstones)``.
        """
        inner = "SELECT kind, id, max(seq) AS seq, data, alert FROM manager_state"
        inner += (" WHERE seq <= ?" if seq is not None else "") + " GROUP BY kind, id"
        sql = (f"SELECT s.kind, s.id, s.seq, s.data, s.alert, b.body, a.labels FROM ({inner}) s LEFT JOIN "
               "alert_bodies b ON b.hash = s.alert LEFT JOIN alerts a ON s.kind = 'e' AND a.fingerprint = s.id")
        with self._lock:
            try:
                rows = self._db.execute(sql, () if seq is None else (seq,)).fetchall()
            except sqlite3.Error as exc:
                raise StateError(f"alert store {self.path}: read failed ({exc})") from exc
        meta, entries, groups, tombstones = None, [], [], []
        for kind, id_, s, data, alert, body, labels in rows:
            if data is None:
                tombstones.append((kind, id_, s))
            elif kind == "e":
                entries.append((id_, data, alert, body, labels))
            elif kind == "g":
                groups.append((id_, data))
            elif kind == "m":
                meta = (s, data)
        if meta is None:
            return None
        return meta[0], meta[1], entries, groups, tombstones

    def rollback_manager(self, seq: int, rev_rowid: int) -> None:
        """Forget what the manager wrote after version ``seq``: later versions, revision rows past ``rev_rowid``."""
        try:
            with self._tx() as db:
                db.execute("DELETE FROM manager_state WHERE seq > ?", (seq,))
                db.execute("DELETE FROM alert_revisions WHERE rowid > ?", (rev_rowid,))
        except sqlite3.Error as exc:
            raise StateError(f"alert store {self.path}: write failed ({exc})") from exc

    def manager_seqs(self) -> list[int]:
        """The sequences the manager's state was saved at (its meta versions), oldest first."""
        return [r["seq"] for r in self._rows("SELECT seq FROM manager_state WHERE kind = 'm' ORDER BY seq")]


def _write_state(db: sqlite3.Connection, s: StateWrite) -> None:
    rev_rowid = db.execute("SELECT max(rowid) FROM alert_revisions").fetchone()[0] or 0
    meta = orjson.dumps({**orjson.loads(s.meta), "rev_rowid": int(rev_rowid)}).decode()
    sql = "INSERT OR REPLACE INTO manager_state (kind, id, seq, data, alert) VALUES (?, ?, ?, ?, ?)"
    db.executemany(sql, [("e", fp, s.seq, data, body) for fp, data, body in s.entries])
    db.executemany(sql, [("g", gk, s.seq, data, None) for gk, data in s.groups])
    db.executemany(sql, [("e", fp, s.seq, None, None) for fp in s.deleted_entries])
    db.executemany(sql, [("g", gk, s.seq, None, None) for gk in s.deleted_groups])
    db.execute(sql, ("m", "", s.seq, meta, None))
    if s.keep_from is not None:  # after the new versions: one at or before keep_from supersedes the older ones
        ids = [("e", fp) for fp, _, _ in s.entries] + [("g", gk) for gk, _ in s.groups] + [("m", "")]
        ids += [("e", fp) for fp in s.deleted_entries] + [("g", gk) for gk in s.deleted_groups]
        db.executemany(_PRUNE, [(k, i, s.keep_from) for k, i in ids if (k, i) not in s.new])
        # a forgotten id: its versions up to the tombstone go, and the tombstone too unless the epoch start has it
        db.executemany("DELETE FROM manager_state WHERE kind = ? AND id = ? AND seq > 0 AND seq < ?", s.prune)
        db.executemany("DELETE FROM manager_state WHERE kind = ?1 AND id = ?2 AND seq = ?3 AND NOT EXISTS "
                       "(SELECT 1 FROM manager_state WHERE kind = ?1 AND id = ?2 AND seq = 0)", s.prune)

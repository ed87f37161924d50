"""Incidents in SQLite: the whole record (causes, timeline, alerts) as JSON, with the columns lists filter on.

Post-mortems sit beside them: the confirmed root cause (service and kind), labels and notes a person wrote
after the fact — what ``vigil retrain`` learns RCA priors from.

Examples:
    >>> from vigil.incidents.model import Cause, Incident
    >>> s = IncidentStore(":memory:")
    >>> s.put(Incident("inc-1", 5, severity="critical", services=["cart"], causes=[Cause("cart", "deploy", 0.9)]))
    >>> [(r["id"], r["status"], r["top_service"]) for r in s.recent()]
    [('inc-1', 'open', 'cart')]
    >>> s.get("inc-1").causes[0].kind, s.next_number()
    ('deploy', 2)
    >>> s.put(Incident("inc-2", 9))
    >>> [r["id"] for r in s.recent(limit=1)], [r["id"] for r in s.recent(after=(9, "inc-2"))]
    (['inc-2'], ['inc-1'])
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from typing import Any

from vigil.errors import StateError
from vigil.incidents.model import Incident

_SCHEMA = """
CREATE TABLE IF NOT EXISTS incidents (
    id TEXT PRIMARY KEY, opened_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, status TEXT NOT NULL,
    severity TEXT NOT NULL, top_service TEXT, top_kind TEXT, doc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_by_time ON incidents (opened_ms);
CREATE TABLE IF NOT EXISTS postmortems (
    incident_id TEXT PRIMARY KEY, service TEXT NOT NULL, kind TEXT NOT NULL, labels TEXT NOT NULL,
    notes TEXT NOT NULL, by TEXT NOT NULL, at_ms INTEGER NOT NULL);
"""


class IncidentStore:
    """Incidents and post-mortems in one SQLite file (module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"incident store {self.path}: {exc}") from None
        self._lock = threading.RLock()

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def put(self, inc: Incident) -> None:
        """Insert or replace an incident (its latest state)."""
        top = inc.top
        updated = max([inc.opened_ms] + [t.at_ms for t in inc.timeline])
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO incidents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (inc.id, inc.opened_ms, updated, inc.status, inc.severity, top.service if top else None,
                 top.kind if top else None, json.dumps(inc.to_dict())),
            )  # fmt: skip

    def get(self, incident_id: str) -> Incident | None:
        """One incident, or ``None``."""
        with self._lock:
            row = self._db.execute("SELECT doc FROM incidents WHERE id = ?", (incident_id,)).fetchone()
        return None if row is None else Incident.from_dict(json.loads(row[0]))

    def recent(self, status: str | None = None, limit: int = 100,
               after: tuple[int, str] | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Incidents newest first, as summary rows (no timeline).

        ``after``: the ``(opened_ms, id)`` of the last row of the previous page; the page goes on after it (a
        keyset cursor: incidents opened meanwhile never shift the pages).
        """
        conds: list[str] = []
        args: list[Any] = []
        if status:
            conds.append("status = ?")
            args.append(status)
        if after is not None:
            conds.append("(opened_ms < ? OR (opened_ms = ? AND id > ?))")
            args += [int(after[0]), int(after[0]), str(after[1])]
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        with self._lock:
            cur = self._db.execute(
                "SELECT id, opened_ms, updated_ms, status, severity, top_service, top_kind, doc FROM incidents "
                f"{where} ORDER BY opened_ms DESC, id LIMIT {int(limit)}",
                args,
            )
            rows = cur.fetchall()
        out = []
        for r in rows:
            doc = json.loads(r[7])
            out.append({"id": r[0], "opened_ms": r[1], "updated_ms": r[2], "status": r[3], "severity": r[4],
                        "top_service": r[5], "top_kind": r[6], "services": doc.get("services", []),
                        "alerts": len(doc.get("alerts", []))})  # fmt: skip
        return out

    def next_number(self) -> int:
        """The number the next ``inc-<n>`` id should take."""
        with self._lock:
            ids = [r[0] for r in self._db.execute("SELECT id FROM incidents")]
        nums = [int(i[4:]) for i in ids if i.startswith("inc-") and i[4:].isdigit()]
        return max(nums, default=0) + 1

    # -- post-mortems ---------------------------------------------------------------------------------------

    def postmortem(self, incident_id: str, *, service: str, kind: str, by: str, at_ms: int,
                   labels: dict[str, str] | None = None, notes: str = "") -> None:  # fmt: skip
        """Record (or replace) an incident's post-mortem: the confirmed root cause, labels, notes."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO postmortems VALUES (?, ?, ?, ?, ?, ?, ?)",
                (incident_id, service, kind, json.dumps(labels or {}), notes, by, at_ms),
            )

    def postmortems(self) -> list[dict[str, Any]]:
        """Every post-mortem, oldest first."""
        with self._lock:
            rows = self._db.execute("SELECT * FROM postmortems ORDER BY at_ms, incident_id").fetchall()
        return [{"incident_id": r[0], "service": r[1], "kind": r[2], "labels": json.loads(r[3]), "notes": r[4],
                 "by": r[5], "at_ms": r[6]} for r in rows]  # fmt: skip

"""The remediation store (SQLite): runs, their audit log, approvals and the idempotency record of every step.

* ``runs``: one row per playbook run — its incident, target service, status (``waiting_approval``,
  ``running``, ``succeeded``, ``failed``, ``rejected``), dry-run flag and the incident as JSON.
* ``audit``: append-only: every decision and step (matched, skipped and why, approval asked/given, step
  started/done/failed, "would …" in dry-run). Parameters are recorded; tokens never are (they are read
  from the environment at call time and never pass through here).
* ``steps``: the result of each completed step, keyed by its idempotency key ``<run>/<step index>``: a
  step whose key is there is never executed again, whoever retries it (a restarted worker, Temporal's
  activity retry, a second `vigil remediation resume`).
* ``approvals``: who approved which run, when, with what comment.

Times are the caller's (event time in the demo): the store reads no clock.

Examples:
    >>> s = RemediationStore(":memory:")
    >>> s.create_run("r1", playbook="p", incident_id="inc-1", service="cart", dry_run=True, at_ms=5,
    ...              incident={"id": "inc-1"})
    True
    >>> s.create_run("r1", playbook="p", incident_id="inc-1", service="cart", dry_run=True, at_ms=6, incident={})
    False
    >>> s.step_done("r1/0", {"ok": True}, at_ms=7); s.step_result("r1/0")
    {'ok': True}
    >>> [e["event"] for e in s.audit("r1")]
    ['run_created', 'step_done']
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from vigil.errors import StateError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY, playbook TEXT NOT NULL, incident_id TEXT NOT NULL, service TEXT NOT NULL,
    status TEXT NOT NULL, dry_run INTEGER NOT NULL, created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    incident TEXT NOT NULL, executor TEXT NOT NULL DEFAULT 'inprocess');
CREATE INDEX IF NOT EXISTS runs_by_playbook ON runs (playbook, service, created_ms);
CREATE INDEX IF NOT EXISTS runs_by_status ON runs (status);
CREATE TABLE IF NOT EXISTS audit (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT, at_ms INTEGER NOT NULL, event TEXT NOT NULL,
    step INTEGER, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS audit_by_run ON audit (run_id, seq);
CREATE TABLE IF NOT EXISTS steps (key TEXT PRIMARY KEY, run_id TEXT NOT NULL, at_ms INTEGER NOT NULL, result TEXT);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS approvals (
    run_id TEXT NOT NULL, step INTEGER NOT NULL, by TEXT NOT NULL, at_ms INTEGER NOT NULL, comment TEXT,
    PRIMARY KEY (run_id, step));
"""
ACTIVE = ("waiting_approval", "running")


class RemediationStore:
    """Runs, audit log, step results and approvals in one SQLite file (module docstring)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if self.path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StateError(f"remediation store {self.path}: {exc}") from None
        self._lock = threading.RLock()
        with self._lock:
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            #: random, made when the file was: names this store's runs on shared engines (Temporal workflow ids)
            self.store_id: str = self._db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0]

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _rows(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        with self._lock:
            cur = self._db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    # -- runs ---------------------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        playbook: str,
        incident_id: str,
        service: str,
        dry_run: bool,
        at_ms: int,
        incident: dict[str, Any],
        executor: str = "inprocess",
        status: str = "running",
    ) -> bool:
        """Record a new run; ``False`` (and nothing written) when ``run_id`` exists: starting is idempotent."""
        with self._tx() as db:
            if db.execute("SELECT 1 FROM runs WHERE run_id = ?", (run_id,)).fetchone():
                return False
            db.execute(
                "INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    run_id,
                    playbook,
                    incident_id,
                    service,
                    status,
                    int(dry_run),
                    at_ms,
                    at_ms,
                    json.dumps(incident),
                    executor,
                ),
            )
            db.execute(
                "INSERT INTO audit (run_id, at_ms, event, step, detail) VALUES (?, ?, ?, NULL, ?)",
                (
                    run_id,
                    at_ms,
                    "run_created",
                    json.dumps({"playbook": playbook, "incident": incident_id, "service": service, "dry_run": dry_run}),
                ),
            )
        return True

    def set_status(self, run_id: str, status: str, at_ms: int, detail: dict[str, Any] | None = None) -> None:
        """Move a run to ``status`` (audited)."""
        with self._tx() as db:
            db.execute("UPDATE runs SET status = ?, updated_ms = ? WHERE run_id = ?", (status, at_ms, run_id))
            db.execute(
                "INSERT INTO audit (run_id, at_ms, event, step, detail) VALUES (?, ?, ?, NULL, ?)",
                (run_id, at_ms, f"run_{status}", json.dumps(detail or {})),
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        """One run (``incident`` parsed), or ``None``."""
        rows = self._rows("SELECT * FROM runs WHERE run_id = ?", (run_id,))
        if not rows:
            return None
        r = rows[0]
        r["incident"], r["dry_run"] = json.loads(r["incident"]), bool(r["dry_run"])
        return r

    def runs(self, status: str | None = None, limit: int = 100, *,
             incident_id: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
        """Runs, newest first (without the incident JSON); of one status, of one incident."""
        conds, args = [], []
        for col, val in (("status", status), ("incident_id", incident_id)):
            if val is not None:
                conds.append(f"{col} = ?")
                args.append(val)
        where = ("WHERE " + " AND ".join(conds)) if conds else ""
        rows = self._rows(
            f"SELECT run_id, playbook, incident_id, service, status, dry_run, created_ms, updated_ms, "
            f"executor FROM runs {where} ORDER BY created_ms DESC, run_id LIMIT {int(limit)}",
            args,
        )
        for r in rows:
            r["dry_run"] = bool(r["dry_run"])
        return rows

    def active(self, playbook: str | None = None) -> int:
        """Runs in flight (waiting for approval or running), of one playbook or all."""
        sql = f"SELECT COUNT(*) FROM runs WHERE status IN {ACTIVE}"
        args: tuple[Any, ...] = ()
        if playbook is not None:
            sql, args = sql + " AND playbook = ?", (playbook,)
        with self._lock:
            return int(self._db.execute(sql, args).fetchone()[0])

    def last_run_ms(self, playbook: str, service: str) -> int | None:
        """When ``playbook`` last started a run on ``service`` (the cooldown's anchor)."""
        with self._lock:
            row = self._db.execute(
                "SELECT MAX(created_ms) FROM runs WHERE playbook = ? AND service = ? AND status != 'rejected'",
                (playbook, service),
            ).fetchone()
        return None if row[0] is None else int(row[0])

    # -- audit --------------------------------------------------------------------------------------------

    def log(
        self,
        run_id: str | None,
        event: str,
        at_ms: int,
        *,
        step: int | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Append to the audit log."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO audit (run_id, at_ms, event, step, detail) VALUES (?, ?, ?, ?, ?)",
                (run_id, at_ms, event, step, json.dumps(detail or {})),
            )

    def audit(self, run_id: str | None = None, limit: int = 1000) -> list[dict[str, Any]]:
        """Audit entries in order (one run's, or the latest of all)."""
        if run_id is not None:
            rows = self._rows("SELECT * FROM audit WHERE run_id = ? ORDER BY seq LIMIT ?", (run_id, limit))
        else:
            rows = self._rows("SELECT * FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?) ORDER BY seq", (limit,))
        for r in rows:
            r["detail"] = json.loads(r["detail"])
        return rows

    # -- steps (idempotency) --------------------------------------------------------------------------------

    def step_result(self, key: str) -> Any:
        """The recorded result of a completed step, or ``None`` if it has not completed."""
        with self._lock:
            row = self._db.execute("SELECT result FROM steps WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def step_done(self, key: str, result: Any, at_ms: int) -> None:
        """Record a completed step (audited); the first record wins."""
        run_id, _, idx = key.rpartition("/")
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO steps VALUES (?, ?, ?, ?)", (key, run_id, at_ms, json.dumps(result))
            )
            if cur.rowcount:
                db.execute(
                    "INSERT INTO audit (run_id, at_ms, event, step, detail) VALUES (?, ?, ?, ?, ?)",
                    (run_id, at_ms, "step_done", int(idx) if idx.isdigit() else None, json.dumps(result)),
                )

    # -- approvals ----------------------------------------------------------------------------------------

    def approve(self, run_id: str, step: int, *, by: str, at_ms: int, comment: str = "") -> bool:
        """Record an approval of ``run_id``'s gate at ``step``; ``False`` if it was already approved."""
        with self._tx() as db:
            cur = db.execute(
                "INSERT OR IGNORE INTO approvals VALUES (?, ?, ?, ?, ?)", (run_id, step, by, at_ms, comment)
            )
            if cur.rowcount:
                db.execute(
                    "INSERT INTO audit (run_id, at_ms, event, step, detail) VALUES (?, ?, ?, ?, ?)",
                    (run_id, at_ms, "approved", step, json.dumps({"by": by, "comment": comment})),
                )
            return bool(cur.rowcount)

    def waiting_step(self, run_id: str) -> int | None:
        """The gate (step index) a run waiting for approval waits at; ``None`` when it waits for nothing."""
        run = self.run(run_id)
        if run is None or run["status"] != "waiting_approval":
            return None
        rows = self._rows(
            "SELECT detail FROM audit WHERE run_id = ? AND event = 'run_waiting_approval' ORDER BY seq DESC LIMIT 1",
            (run_id,),
        )
        return int(json.loads(rows[0]["detail"]).get("step", 0)) if rows else None

    def approval(self, run_id: str, step: int) -> dict[str, Any] | None:
        """The approval of a gate, if given."""
        rows = self._rows("SELECT * FROM approvals WHERE run_id = ? AND step = ?", (run_id, step))
        return rows[0] if rows else None

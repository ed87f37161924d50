"""Tickets in an issue tracker: one per alert episode, never two, commented on and closed as it evolves.

An *episode* is one logical alert from the time it started: ``fingerprint@starts_at_ms``. Against a
generic ticket API at ``url``:

- the first firing notification of an episode opens a ticket, ``POST {url}/tickets`` with
  ``{title, body, labels, idempotency_key: <episode>}``, and expects ``{"id": ...}`` back;
- later notifications of the episode (updates, repeats, revisions) comment on it,
  ``POST {url}/tickets/{id}/comments``;
- resolved or retracted closes it, ``PATCH {url}/tickets/{id}`` with ``{"status": "closed", ...}``
  (a firing revision of a closed episode re-opens it with ``"status": "open"``).

Never a second ticket. The episode → ticket id map lives in SQLite at ``state_path`` and is written
(committed) before ``send`` returns, so a restarted process finds its tickets. The one gap a local
map cannot close, a ticket the server created while the answer was lost (timeout, crash), is closed
by the server: the create request carries the episode as ``idempotency_key`` (body and
``Idempotency-Key`` header) on every attempt, across restarts, so the server returns the ticket it
already made. Each notification is also recorded per episode, so a notification delivered again (a
retry of a partly failed send, a replay after a restart) adds no second comment.

Examples:
    >>> from vigil.alerting.notification import NotifiedAlert
    >>> episode_id(NotifiedAlert("3f2a", "firing", {"alertname": "z"}, {}, 1700000000000))
    '3f2a@1700000000000'
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from vigil.alerting.notification import Notification, NotifiedAlert
from vigil.alerting.notifiers.base import HttpDelivery, RetryPolicy, check_http_url, rfc3339
from vigil.errors import ConfigError, NotifyError

log = logging.getLogger("vigil.alerting.notifiers")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tickets (
    episode    TEXT PRIMARY KEY,   -- fingerprint@starts_at_ms
    ticket_id  TEXT NOT NULL,
    state      TEXT NOT NULL,      -- open | closed
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS delivered (
    episode         TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    at_ms           INTEGER NOT NULL,
    PRIMARY KEY (episode, idempotency_key)
);
"""
_RETENTION_MS = 90 * 86_400_000  # how long a delivered notification is remembered


def episode_id(alert: NotifiedAlert) -> str:
    """The id of the alert's episode: ``fingerprint@starts_at_ms``."""
    return f"{alert.fingerprint}@{alert.starts_at_ms}"


def _title(alert: NotifiedAlert) -> str:
    name = alert.labels.get("alertname", "alert")
    summary = alert.annotations.get("summary") or alert.alert.get("message") or f"{name} on {alert.labels.get('key')}"
    severity = alert.labels.get("severity") or alert.alert.get("severity")
    return (f"[{severity}] " if severity else "") + f"{name}: {summary}"[:250]


def _body(alert: NotifiedAlert, notification: Notification) -> str:
    lines = [alert.annotations.get("summary") or alert.alert.get("message") or _title(alert), ""]
    if alert.annotations.get("description"):
        lines += [alert.annotations["description"], ""]
    lines.append(f"status: {alert.status} (reason: {notification.reason}, revision {alert.revision})")
    lines.append(f"started: {rfc3339(alert.starts_at_ms)}")
    if alert.ends_at_ms is not None:
        lines.append(f"ended: {rfc3339(alert.ends_at_ms)}")
    if "score" in alert.alert:
        lines.append(f"score: {alert.alert['score']} (threshold {alert.alert.get('threshold')})")
    stats = alert.alert.get("stats")
    if isinstance(stats, Mapping) and stats:
        lines.append("stats: " + ", ".join(f"{k}={v}" for k, v in stats.items()))
    lines.append("labels: " + ", ".join(f"{k}={v}" for k, v in sorted(alert.labels.items())))
    lines.append(f"fingerprint: {alert.fingerprint}, episode: {episode_id(alert)}")
    return "\n".join(lines)


class TicketState:
    """The SQLite file of episode → ticket mappings and delivered notifications."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"can't be opened as a SQLite database ({exc})", field="state_path",
                              value=str(path)) from None

    def ticket(self, episode: str) -> tuple[str, str] | None:
        """``(ticket_id, state)`` of the episode, or None."""
        row = self._db.execute("SELECT ticket_id, state FROM tickets WHERE episode = ?", (episode,)).fetchone()
        return (row[0], row[1]) if row else None

    def delivered(self, episode: str, key: str) -> bool:
        """True when notification ``key`` was already handled for the episode."""
        q = "SELECT 1 FROM delivered WHERE episode = ? AND idempotency_key = ?"
        return self._db.execute(q, (episode, key)).fetchone() is not None

    def record(
        self, episode: str, key: str, at_ms: int, ticket_id: str | None = None, state: str | None = None
    ) -> None:
        """Atomically: the episode's ticket (when given) and notification ``key`` as delivered."""
        with self._db:
            self._db.execute("BEGIN IMMEDIATE")
            if ticket_id is not None and state is not None:
                self._db.execute("INSERT OR REPLACE INTO tickets VALUES (?, ?, ?, ?)",
                                 (episode, ticket_id, state, at_ms))
            self._db.execute("INSERT OR IGNORE INTO delivered VALUES (?, ?, ?)", (episode, key, at_ms))

    def prune(self, now_ms: int) -> None:
        """Forget delivered notifications older than the retention (tickets are kept)."""
        with self._db:
            self._db.execute("DELETE FROM delivered WHERE at_ms < ?", (now_ms - _RETENTION_MS,))

    def close(self) -> None:
        """Close the database."""
        self._db.close()


class TicketNotifier:
    """Opens, comments on and closes tickets, one per alert episode (see the module docstring).

    Args:
        url: the ticket API's base URL.
        state_path: the SQLite file of episode → ticket id (created when missing).
        headers: extra request headers (e.g. ``Authorization``).
        name: the receiver name (in errors and logs).
        policy: retries and timeout.
        transport: an httpx transport (tests).
    """

    def __init__(
        self,
        url: str,
        state_path: str | Path,
        headers: Mapping[str, str] | None = None,
        *,
        name: str = "ticket",
        policy: RetryPolicy | None = None,
        transport: Any = None,
    ) -> None:
        self.url = check_http_url(url).rstrip("/")
        self.name = name
        self.state = TicketState(state_path)
        self._http = HttpDelivery(name, policy, headers, transport=transport)
        self._lock = threading.Lock()
        self._pruned = False

    def send(self, notification: Notification) -> None:
        """Open, comment on or close the ticket of each alert in the notification.

        Raises:
            NotifyError: a ticket request failed (alerts handled before it stay handled: sending the same
                notification again resumes where it stopped), the create answer had no ``id``, or the
                state file can't be written.
        """
        with self._lock:
            try:
                if not self._pruned:
                    self.state.prune(notification.created_ms)
                    self._pruned = True
                for alert in notification.alerts:
                    self._handle(alert, notification)
            except sqlite3.Error as exc:
                # e.g. a full disk; the server side de-duplicates the next attempt by idempotency key
                raise NotifyError(f"notifier `{self.name}`: can't record ticket state in {self.state.path}: "
                                  f"{exc}") from exc

    def _ticket_url(self, ticket_id: str) -> str:
        return f"{self.url}/tickets/{quote(ticket_id, safe='')}"

    def _handle(self, alert: NotifiedAlert, n: Notification) -> None:
        ep, key = episode_id(alert), n.idempotency_key
        if self.state.delivered(ep, key):
            return
        known = self.state.ticket(ep)
        op_key = f"{ep}/{key}"
        if alert.status == "firing":
            if known is None:
                self.state.record(ep, key, n.created_ms, self._create(alert, n, ep), "open")
                return
            ticket_id, state = known
            if state == "closed":
                body = {"status": "open", "comment": _body(alert, n), "idempotency_key": f"{op_key}/reopen"}
                self._http.request("PATCH", self._ticket_url(ticket_id), body, f"{op_key}/reopen")
                self.state.record(ep, key, n.created_ms, ticket_id, "open")
                return
            comment = {"body": _body(alert, n), "status": alert.status, "reason": n.reason,
                       "revision": alert.revision, "idempotency_key": op_key}
            self._http.request("POST", self._ticket_url(ticket_id) + "/comments", comment, op_key)
            self.state.record(ep, key, n.created_ms)
            return
        if known is None or known[1] == "closed":
            # nothing to close: the episode never got a ticket here (or it is closed already)
            log.info("notifier `%s`: %s alert %s has no open ticket; nothing to close", self.name, alert.status, ep)
            self.state.record(ep, key, n.created_ms)
            return
        body = {"status": "closed", "resolution": alert.status, "comment": _body(alert, n), "idempotency_key": op_key}
        self._http.request("PATCH", self._ticket_url(known[0]), body, op_key)
        self.state.record(ep, key, n.created_ms, known[0], "closed")

    def _create(self, alert: NotifiedAlert, n: Notification, episode: str) -> str:
        body = {
            "title": _title(alert),
            "body": _body(alert, n),
            "labels": dict(alert.labels),
            "idempotency_key": episode,
        }
        resp = self._http.request("POST", f"{self.url}/tickets", body, episode)
        try:
            ticket_id = resp.json()["id"]
        except (ValueError, KeyError, TypeError):
            ticket_id = None
        if ticket_id is None or isinstance(ticket_id, bool) or not isinstance(ticket_id, str | int) or ticket_id == "":
            raise NotifyError(f"notifier `{self.name}`: POST {self._http.safe(self.url + '/tickets')} answered "
                              f"HTTP {resp.status_code} without a ticket id (expected JSON {{\"id\": ...}}); "
                              f"got {resp.text[:200]!r}")
        return str(ticket_id)

    def close(self) -> None:
        """Release the connection pool and the state database."""
        self._http.close()
        self.state.close()

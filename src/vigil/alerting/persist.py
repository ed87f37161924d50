"""The alert manager's state in the alert store and in snapshots, as a mixin :class:`PersistMixin`.

Two kinds of writes, both incremental (what changed since the last write, never the whole state):

- **Rows for readers** (:meth:`PersistMixin.persist`): the ``alerts`` row of every alert that changed and a
  ``alert_revisions`` row per state change, in one transaction. The console and the CLI read these.
- **The manager's own state** (:meth:`PersistMixin.save_state`), keyed by a checkpoint sequence: a version of
  each alert and group that changed since the last save, a tombstone for each one forgotten, and the counters.
  :meth:`PersistMixin.load_state` puts back the state as of a sequence, and with ``rollback`` removes what was
  written after it (later versions, and revision rows), so that a pipeline restarted from checkpoint *n* replays
  its alerts into the manager as it was at *n*, and the history records each change once.

Snapshots (:meth:`PersistMixin.snapshot`, :meth:`PersistMixin.restore`) are the whole state as plain data: for
tests, and to read a state file written by an earlier Vigil.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from vigil.alerting.model import (
    _Entry,
    _Group,
    body_of,
    entry_data,
    entry_from,
    entry_from_row,
    entry_row,
    group_data,
    group_from,
    history_dict,
)
from vigil.alerting.policy import AlertPolicy, parse_matchers
from vigil.alerting.store import AlertStore, StateWrite
from vigil.errors import SnapshotError, StateError
from vigil.types import Alert

log = logging.getLogger("vigil.alerting.manager")  # the logger these records have always gone to

_KIND, _VERSION = "alert_manager", 1
_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
_BACKLOG = 10_000  # revision rows kept while the store can't be written


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, option=_OPTS, default=str).decode()


class PersistMixin:
    """Store rows, state versions and snapshots of :class:`~vigil.alerting.manager.AlertManager`."""

    policy: AlertPolicy
    store: AlertStore | None
    clock: Callable[[], int]
    autopersist: bool
    counters: dict[str, int]
    pipeline: str
    _entries: dict[str, _Entry]
    _groups: dict[str, _Group]
    _event_now_ms: int | None
    _silences: dict[str, dict[str, Any]]
    _silence_matchers: dict[str, Any]
    _acks: dict[str, dict[str, Any]]
    _reset_caches: Callable[[], None]
    _route_all: Callable[[], None]

    def _init_persist(self) -> None:
        self._dirty: dict[str, _Entry] = {}  # alerts whose row changed (even if forgotten since)
        self._revs: list[tuple[Any, ...]] = []  # (entry, revision, status, reason, alert, at_ms, note)
        self._sdirty: set[str] = set()  # alerts whose state changed since the last save
        self._sdeleted: set[str] = set()  # alerts forgotten since the last save
        self._gdirty: set[str] = set()
        self._gdeleted: set[str] = set()
        self._tombstones: list[tuple[str, str, int]] = []  # (kind, id, seq) to prune once no checkpoint needs them
        self._bodies: dict[str, str] = {}  # alert bodies for the next write: hash -> JSON
        self.saved_seq: int | None = None

    def _auto(self) -> None:
        if self.autopersist:
            self.persist()

    # -- rows for readers -------------------------------------------------------------------------------------

    def persist(self, state: StateWrite | None = None) -> bool:
        """Write the changed alert rows and the new revision rows (and ``state``), in one transaction.

        Every alert body goes in once (an alert that fires and resolves refers to the same body). Returns False
        if the store could not be written: alerting goes on, the rows are written at the next successful call
        (the last 10,000 revisions are kept meanwhile).
        """
        if self.store is None:
            self._dirty, self._revs = {}, []
            return True
        if not (self._dirty or self._revs or state is not None):
            return True
        now, bodies = self.clock(), self._bodies
        rows = []
        for fp, e in self._dirty.items():
            lab = e.labels
            rows.append((fp, _dumps(lab), e.status, e.revision, e.starts_at_ms, e.ends_at_ms, None, e.observations,
                         now, lab.get("key"), lab.get("alertname"), lab.get("severity"), self._body(e)))  # fmt: skip
        revs = []
        for e, rev, status, reason, alert, at_ms, note in self._revs:
            if alert is e.last:
                h = self._body(e)
            else:
                h, text = body_of(alert)
                bodies[h] = text
            revs.append((e.fingerprint, rev, status, reason, at_ms, note or None, h))
        try:
            self.store.write_manager(rows, revs, bodies, state)
        except StateError as exc:
            log.error("alert store write failed, will retry: %s", exc)
            self._revs = self._revs[-_BACKLOG:]
            for e in self._dirty.values():  # their bodies were not written: make them again next time
                if e.last_body in bodies:
                    e.last_body = None
            bodies.clear()
            return False
        bodies.clear()
        self._dirty, self._revs = {}, []
        return True

    def _body(self, e: _Entry) -> str:
        """The hash of ``e.last``'s body, queuing the body for this write if it isn't in the store yet."""
        h = e.last_body
        if h is None:
            h, text = body_of(e.last)
            self._bodies[h] = text
            e.last_body = h
        return h

    # -- the manager's own state, by checkpoint sequence ------------------------------------------------------

    def save_state(self, seq: int, *, keep_from: int | None = None, extra: Mapping[str, Any] | None = None) -> bool:
        """Save what changed since the last save as version ``seq``, with the rows :meth:`persist` writes.

        Args:
            seq: the checkpoint sequence (a later save of the same ``seq`` replaces it).
            keep_from: the oldest sequence that may still be restored: older versions superseded by one at or
                before it are removed (``None``: keep them).
            extra: plain data of the caller's, given back by :meth:`load_state`.
        """
        if self.store is None:
            return True
        entries, groups = self._entries, self._groups
        e_rows = [(fp, _dumps(entry_row(e)), self._body(e))
                  for fp in self._sdirty if (e := entries.get(fp)) is not None]  # fmt: skip
        g_rows = [(gk, _dumps(group_data(g))) for gk in self._gdirty if (g := groups.get(gk)) is not None]
        meta = {"counters": dict(self.counters), "event_now_ms": self._event_now_ms, "extra": dict(extra or {})}
        prune = [t for t in self._tombstones if keep_from is not None and t[2] <= keep_from]
        new = {("e", fp) for fp, _, _ in e_rows if not entries[fp].saved}
        new.update(("g", gk) for gk, _ in g_rows if not groups[gk].saved)
        state = StateWrite(seq=seq, entries=e_rows, groups=g_rows, deleted_entries=sorted(self._sdeleted),
                           deleted_groups=sorted(self._gdeleted), meta=_dumps(meta), keep_from=keep_from,
                           prune=prune, new=new)  # fmt: skip
        if not self.persist(state):
            for fp, _, h in e_rows:
                e = entries.get(fp)
                if e is not None and e.last_body == h:
                    e.last_body = None
            return False
        for fp, _, _ in e_rows:
            entries[fp].saved = True
        for gk, _ in g_rows:
            groups[gk].saved = True
        if prune:
            self._tombstones = [t for t in self._tombstones if t[2] > keep_from]  # type: ignore[operator]
        self._tombstones += [("e", fp, seq) for fp in self._sdeleted] + [("g", gk, seq) for gk in self._gdeleted]
        self._sdirty, self._sdeleted, self._gdirty, self._gdeleted = set(), set(), set(), set()
        self.saved_seq = seq
        return True

    def load_state(self, seq: int | None = None, *, rollback: bool = False) -> dict[str, Any] | None:
        """Put back the state saved as of ``seq`` (``None``: the latest); ``None`` if nothing was saved.

        With ``rollback``, what was written after ``seq`` is removed from the store: later state versions and
        the revision rows written since (a replay from ``seq`` writes them again). Returns the ``extra`` that
        was saved with it.
        """
        if self.store is None:
            return None
        got = self.store.load_manager(seq)
        if got is None:
            return None
        meta_seq, meta_text, e_rows, g_rows, tombstones = got
        meta = orjson.loads(meta_text)
        entries = {}
        for fp, data, h, body, labels in e_rows:
            if body is None or labels is None:
                raise StateError(f"alert store {self.store.path}: the row or latest alert of alert {fp} is missing")
            entries[fp] = entry_from_row(fp, orjson.loads(data), orjson.loads(labels),
                                         Alert.from_dict(orjson.loads(body)), h)  # fmt: skip
        self._entries = entries
        self._groups = {gk: group_from(orjson.loads(data)) for gk, data in g_rows}
        self.counters = {**dict.fromkeys(self.counters, 0), **meta["counters"]}
        self._event_now_ms = meta["event_now_ms"]
        if rollback and seq is not None:
            self.store.rollback_manager(seq, int(meta.get("rev_rowid", 0)))
        self._init_persist()
        self._tombstones = list(tombstones)
        self.saved_seq = meta_seq
        self._reset_caches()
        self._route_all()
        return dict(meta.get("extra") or {})

    def mark_all_changed(self) -> None:
        """Every alert and group goes into the next :meth:`save_state` (a full version)."""
        self._sdirty, self._gdirty = set(self._entries), set(self._groups)

    def history_of(self, e: _Entry) -> list[dict[str, Any]]:
        """An alert's recent history: what is in memory, else (after a restart) the store's last 50 revisions."""
        if e.history or self.store is None:
            return [history_dict(h) for h in e.history]
        return [{k: r[k] for k in ("revision", "status", "alert", "reason", "at_ms")} | ({"note": r["note"]}
                if r.get("note") else {}) for r in self.store.revisions(e.fingerprint)[-50:]]  # fmt: skip

    # -- snapshots --------------------------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON/msgpack-able) in the ``{kind, version, params, state}`` envelope."""
        entries = [{**entry_data(e, with_history=True), "last": e.last.to_dict()} for e in self._entries.values()]
        groups = [group_data(g) for g in self._groups.values()]
        state = {"entries": entries, "groups": groups,
                 "counters": self.counters, "event_now_ms": self._event_now_ms,
                 "silences": list(self._silences.values()) if self.store is None else [],
                 "acks": list(self._acks.values()) if self.store is None else []}  # fmt: skip
        return orjson.loads(_dumps({"kind": _KIND, "version": _VERSION, "params": {"pipeline": self.pipeline},
                                    "state": state}))  # fmt: skip

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace this manager's state by a :meth:`snapshot` (silences and acks come from the store if any)."""
        if not isinstance(snapshot, Mapping) or snapshot.get("kind") != _KIND or snapshot.get("version") != _VERSION:
            got = (snapshot.get("kind"), snapshot.get("version")) if isinstance(snapshot, Mapping) else snapshot
            raise SnapshotError(f"not an alert manager snapshot of version {_VERSION}: got {got!r}")
        s = snapshot["state"]
        self._entries = {d["fingerprint"]: entry_from(d, Alert.from_dict(d["last"])) for d in s["entries"]}
        self._groups = {g["key"]: group_from(g) for g in s["groups"]}
        self.counters = {**dict.fromkeys(self.counters, 0), **s["counters"]}
        self._event_now_ms = s["event_now_ms"]
        if self.store is None:
            self._silences = {x["id"]: dict(x) for x in s["silences"]}
            self._silence_matchers = {k: parse_matchers(v["matchers"]) for k, v in self._silences.items()}
            self._acks = {a["fingerprint"]: dict(a) for a in s["acks"]}
        self._sdirty, self._gdirty = set(self._entries), set(self._groups)  # all of it goes into the next save
        self._reset_caches()

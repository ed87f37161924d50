"""The alert manager: many detector alerts in, few notifications out, the way Alertmanager does it.

Pure, deterministic logic (no threads, no global clock): the engine calls :meth:`AlertManager.ingest` with the
alerts of a micro-batch, :meth:`~AlertManager.advance` with the watermark and :meth:`~AlertManager.tick` with
processing time, and hands the returned :class:`~vigil.alerting.notification.Notification` objects to a
:class:`Dispatcher`.

- **De-duplication**: an alert's labels (``alertname`` = detector, ``key``, ``severity``, ``pipeline`` and any
  labels in ``alert.labels``) give its fingerprint; every alert of one detector on one key is one
  logical alert, whose latest :class:`~vigil.types.Alert` and observation count are kept.
- **Resolution in event time**: a firing alert without a new observation for ``resolve_after`` of event time
  resolves when the watermark passes (the key returned to normal); it ends at last observation + resolve_after.
- **Grouping in processing time** per route: a new group waits ``group_wait``, later changes are batched for
  ``group_interval``, an unchanged firing group is re-sent every ``repeat_interval`` unless all of it is acked.
- **Muting**: silenced and inhibited alerts are tracked but left out of notifications.
- **Flap damping** in event time (so that a replay at full speed damps like the live run): an alert that flipped
  firing<->resolved ``threshold`` times within ``window`` is held until stable for ``hold``.

Idempotency keys hash the group key, the reason and each alert's (fingerprint, status, revision, start); the
start tells a re-fired alert from its earlier episode, and a ``repeat`` also hashes which repeat it is, so that a
notifier de-duplicating by key drops only true re-deliveries (a retry, a replay after restore).

Examples:
    >>> from vigil.types import Alert
    >>> clock = [0]
    >>> m = AlertManager({"route": {"receiver": "default", "group_wait": "10s"}}, clock=lambda: clock[0])
    >>> m.ingest([Alert(f"a{i}", "u1", f"e{i}", "amount_z", 5.0, 3.0, 1000 * i, 0) for i in range(3)])
    >>> m.tick(5_000), [n.reason for n in m.tick(10_000)]
    ([], ['new'])
    >>> m.counters["raw_alerts_in"], m.counters["logical_alerts"], m.counters["notifications_out"]
    (3, 1, 1)
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from vigil.alerting.dispatch import DeliveryReport, Dispatcher
from vigil.alerting.model import AlertState, _Entry, _Group, _told_current, _wall_ms, idempotency_key, labels_of
from vigil.alerting.mutes import MuteMixin
from vigil.alerting.notification import Notification, NotifiedAlert, fingerprint
from vigil.alerting.policy import AlertPolicy, parse_matchers
from vigil.alerting.store import AlertStore, to_json
from vigil.errors import SnapshotError, StateError
from vigil.types import Alert

__all__ = ["COUNTERS", "HISTORY_LIMIT", "AlertManager", "AlertState", "DeliveryReport", "Dispatcher", "idempotency_key",
           "labels_of"]  # fmt: skip

log = logging.getLogger(__name__)

HISTORY_LIMIT = 50  # per alert in memory (the store keeps every revision)
COUNTERS = ("raw_alerts_in", "logical_alerts", "notifications_out", "suppressed_silenced", "suppressed_inhibited",
            "suppressed_flapping", "suppressed_dedup")  # fmt: skip
_REASONS = ("retracted", "revised", "update", "resolved")  # which reason a batch of changes is sent under
_KIND, _VERSION = "alert_manager", 1


class AlertManager(MuteMixin):
    """Groups, de-duplicates, mutes and routes alerts into notifications (see the module docstring).

    Silences, acks and inhibition come from :class:`~vigil.alerting.mutes.MuteMixin`.

    Args:
        policy: an :class:`AlertPolicy`, or a mapping validated into one.
        store: an :class:`AlertStore` (or its path): state changes are written to it, silences and acks read
            from it, so the CLI in another process can silence and ack.
        pipeline: the ``pipeline`` label of every alert.
        clock: processing time in epoch ms (default: the wall clock); tests pass a manual one.
    """

    def __init__(self, policy: AlertPolicy | Mapping[str, Any] | None = None, *,
                 store: AlertStore | str | os.PathLike[str] | None = None, pipeline: str = "",
                 clock: Callable[[], int] | None = None) -> None:  # fmt: skip
        self.policy = policy if isinstance(policy, AlertPolicy) else AlertPolicy.from_dict(policy)
        self.store = store if isinstance(store, AlertStore) or store is None else AlertStore(store)
        self.pipeline = pipeline
        self.clock = clock or _wall_ms
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._entries: dict[str, _Entry] = {}
        self._groups: dict[str, _Group] = {}
        self._event_now_ms: int | None = None
        self._init_mutes()
        self._reset_caches()

    def _reset_caches(self) -> None:
        """Derived state: rebuilt from entries on init and restore, never snapshotted."""
        self._reset_mute_caches()
        self._flush_min: int | None = min((g.next_flush_ms for g in self._groups.values()), default=None)
        self._last_dicts: dict[str, tuple[Alert, dict[str, Any]]] = {}  # the latest Alert as a dict, made once
        self._flapping = {fp for fp, e in self._entries.items() if e.flapping}
        for e in self._entries.values():
            self._index_source(e)
        self._dirty: set[str] = set()
        self._revs: list[dict[str, Any]] = []
        firing = [e.last_event_ts_ms for e in self._entries.values() if e.status == "firing"]
        self._next_deadline_ms = min(firing) + self.policy.resolve_after_ms if firing else None
        self._next_gc_ms: int | None = None

    # -- input ------------------------------------------------------------------------------------------------

    def ingest(self, alerts: Iterable[Alert], now_ms: int | None = None) -> None:
        """Take firing observations (a micro-batch's alerts) at processing time ``now_ms``."""
        now = self.clock() if now_ms is None else now_ms
        self._sync_mutes()
        seen = []
        for a in alerts:
            self.counters["raw_alerts_in"] += 1
            labels = labels_of(a, self.pipeline)
            fp = fingerprint(labels)
            seen.append((fp, self._observe(fp, labels, a, now)))
            self._event_now_ms = max(self._event_now_ms or a.event_ts_ms, a.event_ts_ms)
        for fp, kind in seen:  # classified after the whole batch, so order inside a batch doesn't matter
            e = self._entries[fp]
            if self._silenced_by(e, now):
                self.counters["suppressed_silenced"] += 1
            elif self._inhibited_by(e):
                self.counters["suppressed_inhibited"] += 1
            elif e.flapping:
                self.counters["suppressed_flapping"] += 1
            elif kind == "dup":
                self.counters["suppressed_dedup"] += 1
        self._persist()

    def _observe(self, fp: str, labels: dict[str, str], a: Alert, now: int) -> str:
        e = self._entries.get(fp)
        if e is None:
            nodes = self.policy.tree.match(labels)
            e = _Entry(fp, labels, "firing", 1, a.event_ts_ms, None, 1, a, a.event_ts_ms,
                       [n.group_key(labels) for n in nodes], [n.receiver for n in nodes])  # fmt: skip
            self._entries[fp] = e
            self.counters["logical_alerts"] += 1
            self._change(e, "fired", a.event_ts_ms, now)
            return "new"
        e.observations += 1
        if e.status == "firing":
            if a.event_ts_ms >= e.last_event_ts_ms:
                e.last, e.last_event_ts_ms = a, a.event_ts_ms
            self._dirty.add(fp)
            return "dup"
        self._flip(e, a.event_ts_ms)
        e.status, e.starts_at_ms, e.ends_at_ms, e.note = "firing", a.event_ts_ms, None, ""
        e.last, e.last_event_ts_ms = a, a.event_ts_ms
        if fp in self._acks:
            self._clear_ack(fp, now)
        self._change(e, "fired", a.event_ts_ms, now)
        return "refire"

    def advance(self, watermark_ms: int) -> None:
        """Event time reached ``watermark_ms``: resolve alerts not observed for ``resolve_after``."""
        self._event_now_ms = max(self._event_now_ms or watermark_ms, watermark_ms)
        if self._next_deadline_ms is not None and watermark_ms >= self._next_deadline_ms:
            after, nxt, now = self.policy.resolve_after_ms, None, None
            for e in self._entries.values():
                if e.status != "firing":
                    continue
                deadline = e.last_event_ts_ms + after
                if deadline <= watermark_ms:
                    now = self.clock() if now is None else now
                    self._resolve(e, deadline, now)
                else:
                    nxt = deadline if nxt is None else min(nxt, deadline)
            self._next_deadline_ms = nxt
        if self._next_gc_ms is None or watermark_ms >= self._next_gc_ms:
            self._gc(watermark_ms)
        self._persist()

    def resolve(self, fingerprint: str, at_ms: int) -> None:
        """Resolve a firing alert explicitly, ending at event time ``at_ms``."""
        e = self._get(fingerprint)
        if e.status == "firing":
            self._resolve(e, at_ms, self.clock())
            self._persist()

    def revise(self, alert: Alert, now_ms: int | None = None) -> str:
        """Late data changed an alert: same fingerprint, revision + 1 (a new one is simply ingested)."""
        fp = fingerprint(labels_of(alert, self.pipeline))
        e = self._entries.get(fp)
        if e is None:
            self.ingest([alert], now_ms)
            return fp
        now = self.clock() if now_ms is None else now_ms
        e.revision += 1
        e.last, e.last_event_ts_ms = alert, max(e.last_event_ts_ms, alert.event_ts_ms)
        if e.status == "retracted":
            e.status, e.ends_at_ms, e.note = "firing", None, ""
            self._arm(e)
        self._change(e, "revised", now, now)
        self._persist()
        return fp

    def retract(self, fingerprint: str, at_ms: int, why: str = "") -> None:
        """Late data showed the alert should never have fired: status ``retracted`` from ``at_ms``."""
        e = self._get(fingerprint)
        if e.status != "retracted":
            e.status, e.ends_at_ms, e.note = "retracted", at_ms, why
            self._change(e, "retracted", at_ms, self.clock(), note=why)
            self._persist()

    def _get(self, fp: str) -> _Entry:
        try:
            return self._entries[fp]
        except KeyError:
            raise KeyError(f"no alert with fingerprint {fp!r}") from None

    def _resolve(self, e: _Entry, ends_at_ms: int, now: int) -> None:
        self._flip(e, ends_at_ms)
        e.status, e.ends_at_ms = "resolved", ends_at_ms
        self._change(e, "resolved", ends_at_ms, now)

    def _change(self, e: _Entry, reason: str, at_ms: int, now: int, note: str = "") -> None:
        """Record a state change: history, store, inhibition cache, group membership."""
        item = {"revision": e.revision, "status": e.status, "alert": e.last.to_dict(), "reason": reason, "at_ms": at_ms}
        if note:
            item["note"] = note
        e.history = [*e.history[-(HISTORY_LIMIT - 1):], item]
        self._revs.append({"fingerprint": e.fingerprint, **item})
        self._dirty.add(e.fingerprint)
        self._index_source(e)
        if e.status == "firing":
            self._arm(e)
        for node in self.policy.tree.match(e.labels):
            gk = node.group_key(e.labels)
            g = self._groups.get(gk)
            if g is None:
                g = self._groups[gk] = _Group(gk, node.receiver, node.group_labels(e.labels), node.group_wait_ms,
                                              node.group_interval_ms, node.repeat_interval_ms,
                                              next_flush_ms=now + node.group_wait_ms)  # fmt: skip
                due = g.next_flush_ms
                self._flush_min = due if self._flush_min is None else min(self._flush_min, due)
            g.members.add(e.fingerprint)

    def _arm(self, e: _Entry) -> None:
        d = e.last_event_ts_ms + self.policy.resolve_after_ms
        self._next_deadline_ms = d if self._next_deadline_ms is None else min(self._next_deadline_ms, d)

    def _flip(self, e: _Entry, at_ms: int) -> None:
        f = self.policy.flap
        if f is not None:
            e.flips = [*(t for t in e.flips if t > at_ms - f.window_ms), at_ms]
            if len(e.flips) >= f.threshold:
                e.flapping = True
                self._flapping.add(e.fingerprint)

    def _gc(self, watermark_ms: int) -> None:
        """Forget alerts resolved longer than ``retain_resolved`` ago and settled in every group (kept in the store)."""
        keep = self.policy.retain_resolved_ms
        members = {fp for g in self._groups.values() for fp in g.members}
        for fp in [fp for fp, e in self._entries.items() if e.status != "firing" and not e.flapping
                   and fp not in members and e.ends_at_ms is not None and watermark_ms - e.ends_at_ms >= keep]:
            del self._entries[fp]
            self._rule_keys.pop(fp, None)
            self._sil_cache.pop(fp, None)
            self._last_dicts.pop(fp, None)
        self._next_gc_ms = watermark_ms + max(keep // 4, 1)

    # -- output -----------------------------------------------------------------------------------------------

    def tick(self, now_ms: int | None = None) -> list[Notification]:
        """Processing time is ``now_ms``: the notifications due now, in group-key order."""
        now = self.clock() if now_ms is None else now_ms
        self._sync_mutes()
        self._settle_flaps()
        out = []
        for gk in sorted(gk for gk, g in self._groups.items() if now >= g.next_flush_ms):
            g = self._groups[gk]
            n = self._flush(g, now)
            if n is not None:
                out.append(n)
            if not g.members:
                del self._groups[gk]
        self._flush_min = min((g.next_flush_ms for g in self._groups.values()), default=None)
        self.counters["notifications_out"] += len(out)
        self._persist()
        return out

    def drain(self, now_ms: int, ahead_ms: int) -> list[Notification]:
        """Send what waits in ``group_wait``/``group_interval`` now (the stream ended or the run stops).

        The groups are flushed as if it were ``now_ms + ahead_ms``, then their timers are set as if flushed at
        ``now_ms``, so a restart goes on from here rather than ``ahead_ms`` in the future.
        """
        out = self.tick(now_ms + ahead_ms)
        for g in self._groups.values():
            g.next_flush_ms = min(g.next_flush_ms, now_ms + g.interval_ms)
            if g.last_sent_ms is not None:
                g.last_sent_ms = min(g.last_sent_ms, now_ms)
        self._flush_min = min((g.next_flush_ms for g in self._groups.values()), default=None)
        return out

    def next_due_ms(self) -> int | None:
        """The earliest time a timer is due: a group flush (processing clock) or, in event time, a resolution.

        Kept up to date as groups are made and flushed, so asking costs nothing (an event-time driver asks
        before every alert).
        """
        due = [t for t in (self._flush_min, self._next_deadline_ms) if t is not None]
        return min(due) if due else None

    def _settle_flaps(self) -> None:
        f, t = self.policy.flap, self._event_now_ms
        for fp in list(self._flapping):
            e = self._entries[fp]
            if f is None or t is None or t - e.flips[-1] >= f.hold_ms:
                e.flapping = False
                self._flapping.discard(fp)

    def _flush(self, g: _Group, now: int) -> Notification | None:
        include, firing, kinds = [], [], set()
        for fp in sorted(g.members):
            e = self._entries[fp]
            if e.flapping or self._muted(e, now):
                continue
            told, state = e.sent.get(g.key), e.state()
            if e.status == "firing":
                include.append(e)
                firing.append(e)
                if told != state:
                    kinds.add("revised" if told and told[0] == "firing" and told[2] == state[2] else "update")
            elif told is not None and not _told_current(told, state):
                include.append(e)
                same_episode = told[0] == state[0] and told[2] == state[2]
                kinds.add("retracted" if e.status == "retracted" else "revised" if same_episode else "resolved")
        reason = None
        if not g.has_sent and firing:
            reason = "new"
        elif kinds:
            reason = next(r for r in _REASONS if r in kinds)
        elif (firing and g.last_sent_ms is not None and now - g.last_sent_ms >= g.repeat_ms
              and not all(e.fingerprint in self._acks for e in firing)):
            reason = "repeat"
        g.next_flush_ms = now + g.interval_ms
        if reason is None:
            self._drop_settled(g)
            return None
        g.repeat_seq = g.repeat_seq + 1 if reason == "repeat" else 0
        key = idempotency_key(g.key, reason, [(e.fingerprint, e.status, e.revision, e.starts_at_ms) for e in include],
                              g.repeat_seq)  # fmt: skip
        n = Notification(receiver=g.receiver, group_key=g.key, group_labels=dict(g.labels),
                         status="firing" if firing else "resolved", reason=reason,  # type: ignore[arg-type]
                         alerts=[self._notified(e) for e in include], idempotency_key=key, created_ms=now)
        for e in include:
            e.sent[g.key] = e.state()
        g.has_sent, g.last_sent_ms = True, now
        self._drop_settled(g)
        return n

    def _drop_settled(self, g: _Group) -> None:
        """Leave out of the group resolved alerts already told (or never worth telling)."""
        for fp in [fp for fp in g.members if self._entries[fp].status != "firing"]:
            e = self._entries[fp]
            told = e.sent.get(g.key)
            if not e.flapping and (told is None or _told_current(told, e.state())):
                g.members.discard(fp)

    def _notified(self, e: _Entry) -> NotifiedAlert:
        a = e.last
        ann = {"summary": a.message or f"{a.detector} fired on {a.key}",
               "description": f"{a.detector} on {a.key}: score {a.score:.4g} vs threshold {a.threshold:.4g}, "
                              f"{e.observations} observation(s)",
               "score": f"{a.score:.6g}", "threshold": f"{a.threshold:.6g}", "observations": str(e.observations)}
        if e.note:
            ann["retraction"] = e.note
        cached = self._last_dicts.get(e.fingerprint)
        if cached is None or cached[0] is not a:
            cached = self._last_dicts[e.fingerprint] = (a, a.to_dict())
        return NotifiedAlert(fingerprint=e.fingerprint, status=e.status, labels=dict(e.labels),  # type: ignore[arg-type]
                             annotations=ann, starts_at_ms=e.starts_at_ms, ends_at_ms=e.ends_at_ms,
                             revision=e.revision, alert=cached[1])  # fmt: skip

    def _persist(self) -> None:
        if self.store is not None and (self._dirty or self._revs):
            now = self.clock()
            rows = [{"fingerprint": e.fingerprint, "labels": e.labels, "status": e.status, "revision": e.revision,
                     "starts_at_ms": e.starts_at_ms, "ends_at_ms": e.ends_at_ms, "last_alert": e.last.to_dict(),
                     "observations": e.observations, "updated_ms": now}
                    for fp in sorted(self._dirty) if (e := self._entries.get(fp)) is not None]  # fmt: skip
            try:
                self.store.write_alerts(rows, self._revs)
            except StateError as exc:  # alerting goes on; the rows are written at the next successful call
                log.error("alert store write failed, will retry: %s", exc)
                self._revs = self._revs[-10_000:]
                return
        self._dirty, self._revs = set(), []

    # -- introspection and checkpoints ------------------------------------------------------------------------

    def alerts(self, status: str | None = None, key: str | None = None, silenced: bool | None = None
               ) -> list[AlertState]:  # fmt: skip
        """Every tracked logical alert (optionally filtered), oldest start first."""
        now = self.clock()
        self._sync_mutes()
        self._settle_flaps()
        out = []
        for e in sorted(self._entries.values(), key=lambda x: (x.starts_at_ms, x.fingerprint)):
            if (status is not None and e.status != status) or (key is not None and e.labels.get("key") != key):
                continue
            sil = self._silenced_by(e, now)
            if silenced is not None and bool(sil) != silenced:
                continue
            ack = self._acks.get(e.fingerprint)
            out.append(AlertState(
                fingerprint=e.fingerprint, labels=dict(e.labels), status=e.status, revision=e.revision,
                starts_at_ms=e.starts_at_ms, ends_at_ms=e.ends_at_ms, observations=e.observations,
                last=e.last.to_dict(), silenced_by=sil, inhibited_by=self._inhibited_by(e),
                acked={k: ack[k] for k in ("by", "comment", "at_ms")} if ack else None, flapping=e.flapping,
                history=list(e.history), group_key=e.group_keys[0] if e.group_keys else "",
                receivers=list(e.receivers)))  # fmt: skip
        return out

    def snapshot(self) -> dict[str, Any]:
        """Plain-data state (JSON/msgpack-able) in the ``{kind, version, params, state}`` envelope."""
        entries = [{**{k: v for k, v in vars(e).items() if k != "last"}, "last": e.last.to_dict()}
                   for e in self._entries.values()]  # fmt: skip
        groups = [{**vars(g), "members": sorted(g.members)} for g in self._groups.values()]
        state = {"entries": entries, "groups": groups,
                 "counters": self.counters, "event_now_ms": self._event_now_ms,
                 "silences": list(self._silences.values()) if self.store is None else [],
                 "acks": list(self._acks.values()) if self.store is None else []}  # fmt: skip
        return json.loads(to_json({"kind": _KIND, "version": _VERSION, "params": {"pipeline": self.pipeline},
                                   "state": state}))  # fmt: skip

    def restore(self, snapshot: Mapping[str, Any]) -> None:
        """Replace this manager's state by a :meth:`snapshot` (silences and acks come from the store if any)."""
        if not isinstance(snapshot, Mapping) or snapshot.get("kind") != _KIND or snapshot.get("version") != _VERSION:
            got = (snapshot.get("kind"), snapshot.get("version")) if isinstance(snapshot, Mapping) else snapshot
            raise SnapshotError(f"not an alert manager snapshot of version {_VERSION}: got {got!r}")
        s = snapshot["state"]
        self._entries = {}
        for d in s["entries"]:
            d = dict(d)
            d["last"] = Alert.from_dict(d["last"])
            self._entries[d["fingerprint"]] = _Entry(**d)
        self._groups = {g["key"]: _Group(**{**g, "members": set(g["members"])}) for g in s["groups"]}
        self.counters = {**dict.fromkeys(COUNTERS, 0), **s["counters"]}
        self._event_now_ms = s["event_now_ms"]
        if self.store is None:
            self._silences = {x["id"]: dict(x) for x in s["silences"]}
            self._silence_matchers = {k: parse_matchers(v["matchers"]) for k, v in self._silences.items()}
            self._acks = {a["fingerprint"]: dict(a) for a in s["acks"]}
        self._reset_caches()

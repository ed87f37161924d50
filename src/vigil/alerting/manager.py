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
  An observation ``resolve_after`` or more after the previous one ends the old episode there and starts a new
  one, whether or not the watermark got there first: the history is a function of event time, not of batching.
- **Grouping in processing time** per route: a new group waits ``group_wait``, later changes are batched for
  ``group_interval``, an unchanged firing group is re-sent every ``repeat_interval`` unless all of it is acked.
  A group holds at most ``group_limit`` alerts; more are stored and counted (``group_overflow``, and the group's
  next notification's ``truncated``), never silently dropped.
- **Muting**: silenced and inhibited alerts are tracked but left out of notifications.
- **Flap damping** in event time (so that a replay at full speed damps like the live run): an alert that flipped
  firing<->resolved ``threshold`` times within ``window`` is held until stable for ``hold``.
- **Bounded**: resolved alerts are forgotten ``retain_resolved`` after they end (the store keeps them), a group
  ends once its last alert is resolved and told, an alert's in-memory history keeps its last 50 changes.

Timers (group flushes, resolutions, forgetting) sit in heaps, so a tick or a watermark costs what is due, not the
number of alerts held. Idempotency keys hash the group key, the reason and each alert's (fingerprint, status,
revision, start); the start tells a re-fired alert from its earlier episode, and a ``repeat`` also hashes which
repeat it is, so that a notifier de-duplicating by key drops only true re-deliveries (a retry, a replay after
restore).

The state lives in memory and, with a store, in it: rows the console reads are written as alerts change (one
transaction per :meth:`~AlertManager.persist`), and the manager's own state is saved incrementally, keyed by a
checkpoint sequence (:meth:`~AlertManager.save_state`, :meth:`~AlertManager.load_state`).

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

import hashlib
import heapq
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from operator import attrgetter
from typing import Any

from vigil.alerting.dispatch import DeliveryReport, Dispatcher
from vigil.alerting.grouping import GroupingMixin
from vigil.alerting.model import (
    AlertState,
    _Entry,
    _Group,
    _wall_ms,
    history_dict,
    idempotency_key,
    labels_and_fingerprint,
    labels_of,
)
from vigil.alerting.mutes import MuteMixin
from vigil.alerting.notification import fingerprint
from vigil.alerting.persist import PersistMixin
from vigil.alerting.policy import AlertPolicy
from vigil.alerting.store import AlertStore
from vigil.eventtime.watermarks import MAX_WATERMARK
from vigil.types import Alert

__all__ = ["COUNTERS", "HISTORY_LIMIT", "AlertManager", "AlertState", "DeliveryReport", "Dispatcher", "idempotency_key",
           "labels_of"]  # fmt: skip

log = logging.getLogger(__name__)

HISTORY_LIMIT = 50  # per alert in memory (the store keeps every revision)
COUNTERS = ("raw_alerts_in", "logical_alerts", "notifications_out", "suppressed_silenced", "suppressed_inhibited",
            "suppressed_flapping", "suppressed_dedup", "group_overflow", "forgotten")  # fmt: skip
_ROUTE_CACHE = 4096
_by_ts = attrgetter("event_ts_ms")


class AlertManager(MuteMixin, GroupingMixin, PersistMixin):
    """Groups, de-duplicates, mutes and routes alerts into notifications (see the module docstring).

    Silences, acks and inhibition come from :class:`~vigil.alerting.mutes.MuteMixin`, group flushes from
    :class:`~vigil.alerting.grouping.GroupingMixin`, the store and snapshots from
    :class:`~vigil.alerting.persist.PersistMixin`.

    Args:
        policy: an :class:`AlertPolicy`, or a mapping validated into one.
        store: an :class:`AlertStore` (or its path): state changes are written to it, silences and acks read
            from it, so the CLI in another process can silence and ack.
        pipeline: the ``pipeline`` label of every alert.
        clock: processing time in epoch ms (default: the wall clock); tests pass a manual one.
        autopersist: write changed rows to the store at the end of every call (default); ``False``: only when
            :meth:`persist` is called (the pipeline's alert sink does, once per batch of work).
    """

    def __init__(self, policy: AlertPolicy | Mapping[str, Any] | None = None, *,
                 store: AlertStore | str | os.PathLike[str] | None = None, pipeline: str = "",
                 clock: Callable[[], int] | None = None, autopersist: bool = True) -> None:  # fmt: skip
        self.policy = policy if isinstance(policy, AlertPolicy) else AlertPolicy.from_dict(policy)
        self.store = store if isinstance(store, AlertStore) or store is None else AlertStore(store)
        self.pipeline = pipeline
        self.clock = clock or _wall_ms
        self.autopersist = autopersist
        self.lean_receivers: set[str] = set()  # receivers that only log: no alert list is built for them
        self.counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
        self._entries: dict[str, _Entry] = {}
        self._groups: dict[str, _Group] = {}
        self._event_now_ms: int | None = None
        self.watermark_ms = -(2**63)  # the latest :meth:`advance`
        self._route_gen = 0
        self._route_labels = sorted({m.label for m in _matchers(self.policy.tree)})
        self._init_mutes()
        self._init_persist()
        self._reset_caches()

    def _reset_caches(self) -> None:
        """Derived state: rebuilt from entries and groups on init and restore, never saved."""
        self._reset_mute_caches()
        self._route_cache: dict[tuple[str, ...], tuple[Any, ...]] = {}
        self._any_route = None if self._route_labels else tuple(self.policy.tree.match({}))  # no matcher reads labels
        self._flapping = {fp for fp, e in self._entries.items() if e.flapping}
        if self._rules:
            for e in self._entries.values():
                self._index_source(e)
        after, keep = self.policy.resolve_after_ms, self.policy.retain_resolved_ms
        self._deadlines = [(e.last_event_ts_ms + after, fp) for fp, e in self._entries.items() if e.status == "firing"]
        self._forget = [(e.ends_at_ms + keep, fp) for fp, e in self._entries.items()
                        if e.status != "firing" and e.ends_at_ms is not None]  # fmt: skip
        heapq.heapify(self._deadlines)
        heapq.heapify(self._forget)
        self._reset_flush_heap()
        self._status_counts: dict[str, int] = {}
        for e in self._entries.values():
            self._status_counts[e.status] = self._status_counts.get(e.status, 0) + 1

    # -- input ------------------------------------------------------------------------------------------------

    def ingest(self, alerts: Iterable[Alert], now_ms: int | None = None, *, nows: list[int] | None = None) -> None:
        """Take firing observations (a micro-batch's alerts) at processing time ``now_ms``.

        They are taken in event-time order. ``nows`` gives each alert its own processing time instead (an event
        clock: the time of each alert), in the same order as ``alerts``, which must then be sorted already.
        """
        now = self.clock() if now_ms is None else now_ms
        self._sync_mutes()
        if nows is None:
            batch = sorted(alerts, key=_by_ts)
            times = None
        else:
            batch, times = list(alerts), nows
        entries, pipeline, observe = self._entries, self.pipeline, self._observe
        seen, event_now = [], self._event_now_ms
        for i, a in enumerate(batch):
            t = now if times is None else times[i]
            if a.labels:
                fp = labels_and_fingerprint(a, pipeline)[1]
            else:  # the core labels only: the fingerprint without building a dict first
                fp = _fp_core(a.detector, a.key, a.severity, pipeline)
            seen.append((fp, observe(fp, entries.get(fp), a, t), t))
            ts = a.event_ts_ms
            if event_now is None or ts > event_now:
                event_now = ts
        self._event_now_ms = event_now
        c = self.counters
        c["raw_alerts_in"] += len(batch)
        if not self._silence_matchers and not self._rules and not self._flapping:
            c["suppressed_dedup"] += sum(1 for _, kind, _ in seen if kind == "dup")
        else:  # classified after the whole batch, so order inside a batch doesn't matter
            for fp, kind, t in seen:
                e = entries[fp]
                if self._silenced_by(e, t):
                    c["suppressed_silenced"] += 1
                elif self._inhibited_by(e):
                    c["suppressed_inhibited"] += 1
                elif e.flapping:
                    c["suppressed_flapping"] += 1
                elif kind == "dup":
                    c["suppressed_dedup"] += 1
        self._auto()

    def _observe(self, fp: str, e: _Entry | None, a: Alert, now: int) -> str:
        ts = a.event_ts_ms
        if e is None:
            labels = labels_and_fingerprint(a, self.pipeline)[0]
            nodes = self._route(labels)
            e = _Entry(fp, labels, "firing", 1, ts, None, 1, a, ts, [n.group_key(labels) for n in nodes],
                       [n.receiver for n in nodes], route_gen=self._route_gen)  # fmt: skip
            self._entries[fp] = e
            self._count_status(None, "firing")
            self.counters["logical_alerts"] += 1
            self._change(e, "fired", ts, now)
            return "new"
        if e.status == "firing":
            deadline = e.last_event_ts_ms + self.policy.resolve_after_ms
            if ts < deadline:
                e.observations += 1
                if ts >= e.last_event_ts_ms:
                    e.last, e.last_event_ts_ms, e.last_body = a, ts, None
                self._dirty[fp] = e
                self._sdirty.add(fp)
                return "dup"
            self._resolve(e, deadline, now)  # quiet for resolve_after: that episode ended, whatever the watermark
        if e.ends_at_ms is not None and ts - e.ends_at_ms >= self.policy.retain_resolved_ms:
            # past retain_resolved it would have been forgotten: a new logical alert, whether or not the
            # forgetting (which waits for its groups to settle, in processing time) has happened yet
            e.revision, e.observations, e.history, e.flips, e.flapping, e.sent = 1, 0, [], [], False, {}
            self._flapping.discard(fp)
            self.counters["logical_alerts"] += 1
        e.observations += 1
        self._flip(e, ts)
        self._count_status(e.status, "firing")
        e.status, e.starts_at_ms, e.ends_at_ms, e.note = "firing", ts, None, ""
        e.last, e.last_event_ts_ms, e.last_body = a, ts, None
        if fp in self._acks:
            self._clear_ack(fp, now)
        self._change(e, "fired", ts, now)
        return "refire"

    def advance(self, watermark_ms: int) -> None:
        """Event time reached ``watermark_ms``: resolve alerts not observed for ``resolve_after``."""
        self.watermark_ms = max(self.watermark_ms, watermark_ms)
        self._event_now_ms = max(self._event_now_ms or watermark_ms, watermark_ms)
        dl, entries, after, now = self._deadlines, self._entries, self.policy.resolve_after_ms, None
        while dl and dl[0][0] <= watermark_ms:
            d, fp = heapq.heappop(dl)
            e = entries.get(fp)
            if e is None or e.status != "firing":
                continue
            deadline = e.last_event_ts_ms + after
            if deadline > d:  # observed since: look again at its real deadline
                heapq.heappush(dl, (deadline, fp))
            elif deadline == d:
                now = self.clock() if now is None else now
                self._resolve(e, deadline, now)
        self._forget_resolved(watermark_ms)
        self._auto()

    def resolve(self, fingerprint: str, at_ms: int) -> None:
        """Resolve a firing alert explicitly, ending at event time ``at_ms``."""
        e = self._get(fingerprint)
        if e.status == "firing":
            self._resolve(e, at_ms, self.clock())
            self._auto()

    def revise(self, alert: Alert, now_ms: int | None = None) -> str:
        """Late data changed an alert: same fingerprint, revision + 1 (a new one is simply ingested)."""
        fp = fingerprint(labels_of(alert, self.pipeline))
        e = self._entries.get(fp)
        if e is None:
            self.ingest([alert], now_ms)
            return fp
        now = self.clock() if now_ms is None else now_ms
        e.revision += 1
        e.last, e.last_event_ts_ms, e.last_body = alert, max(e.last_event_ts_ms, alert.event_ts_ms), None
        if e.status == "retracted":
            self._count_status(e.status, "firing")
            e.status, e.ends_at_ms, e.note = "firing", None, ""
            self._arm(e)
        self._change(e, "revised", now, now)
        self._auto()
        return fp

    def retract(self, fingerprint: str, at_ms: int, why: str = "") -> None:
        """Late data showed the alert should never have fired: status ``retracted`` from ``at_ms``."""
        e = self._get(fingerprint)
        if e.status != "retracted":
            self._count_status(e.status, "retracted")
            e.status, e.ends_at_ms, e.note = "retracted", at_ms, why
            self._change(e, "retracted", at_ms, self.clock(), note=why)
            self._auto()

    def set_policy(self, policy: AlertPolicy | Mapping[str, Any] | None) -> None:
        """Swap the policy, keeping every alert and group (timers and inhibition follow the new policy at once)."""
        self.policy = policy if isinstance(policy, AlertPolicy) else AlertPolicy.from_dict(policy)
        self._route_labels = sorted({m.label for m in _matchers(self.policy.tree)})
        self._route_gen += 1
        self._load_rules()
        self._reset_caches()

    def known(self, fingerprint: str) -> bool:
        """Whether an alert with this fingerprint is tracked."""
        return fingerprint in self._entries

    def _get(self, fp: str) -> _Entry:
        try:
            return self._entries[fp]
        except KeyError:
            raise KeyError(f"no alert with fingerprint {fp!r}") from None

    def _resolve(self, e: _Entry, ends_at_ms: int, now: int) -> None:
        self._flip(e, ends_at_ms)
        self._count_status(e.status, "resolved")
        e.status, e.ends_at_ms = "resolved", ends_at_ms
        self._change(e, "resolved", ends_at_ms, now)

    def _count_status(self, old: str | None, new: str) -> None:
        c = self._status_counts
        if old is not None:
            c[old] -= 1
        c[new] = c.get(new, 0) + 1

    def _change(self, e: _Entry, reason: str, at_ms: int, now: int, note: str = "") -> None:
        """Record a state change: history, store, inhibition index, timers, group membership."""
        fp = e.fingerprint
        h = e.history
        h.append((e.revision, e.status, e.last, reason, at_ms, note))
        if len(h) > HISTORY_LIMIT:
            del h[0]
        self._revs.append((e, e.revision, e.status, reason, e.last, at_ms, note))
        self._dirty[fp] = e
        self._sdirty.add(fp)
        if self._rules:
            self._index_source(e)
        if e.status == "firing":
            if reason == "fired":
                self._arm(e)
        elif e.ends_at_ms is not None:
            heapq.heappush(self._forget, (e.ends_at_ms + self.policy.retain_resolved_ms, fp))
        limit = self.policy.group_limit
        nodes = self._route(e.labels)
        if e.route_gen != self._route_gen:  # made under another policy: its groups are today's policy's
            e.group_keys, e.receivers = [n.group_key(e.labels) for n in nodes], [n.receiver for n in nodes]
            e.route_gen = self._route_gen
        for node, gk in zip(nodes, e.group_keys, strict=True):
            g = self._groups.get(gk)
            if g is None:
                g = self._groups[gk] = _Group(gk, node.receiver, node.group_labels(e.labels), node.group_wait_ms,
                                              node.group_interval_ms, node.repeat_interval_ms,
                                              next_flush_ms=now + node.group_wait_ms)  # fmt: skip
                self._schedule(g)
            if fp in g.members:
                continue
            if len(g.members) >= limit:  # a storm in one group: stored and counted, not notified
                g.overflow += 1
                self.counters["group_overflow"] += 1
            else:
                g.members.add(fp)
            self._gdirty.add(gk)

    def _route(self, labels: Mapping[str, str]) -> tuple[Any, ...]:
        """The routes of an alert, cached by the values of the labels the route tree's matchers read."""
        if self._any_route is not None:
            return self._any_route
        key = tuple(labels.get(n, "") for n in self._route_labels)
        nodes = self._route_cache.get(key)
        if nodes is None:
            if len(self._route_cache) >= _ROUTE_CACHE:
                self._route_cache.clear()
            nodes = self._route_cache[key] = tuple(self.policy.tree.match(labels))
        return nodes

    def _route_all(self) -> None:
        """Routes for every alert made under another policy (loaded ones): the group keys of today's policy."""
        for e in self._entries.values():
            if e.route_gen != self._route_gen and not e.group_keys:
                nodes = self._route(e.labels)
                e.group_keys, e.receivers = [n.group_key(e.labels) for n in nodes], [n.receiver for n in nodes]
                e.route_gen = self._route_gen

    def _groups_of(self, e: _Entry) -> list[str]:
        """The groups an alert may be in: its own, and today's policy's if it was made under another one."""
        if e.route_gen == self._route_gen:
            return e.group_keys
        return [*e.group_keys, *(n.group_key(e.labels) for n in self._route(e.labels))]

    def _arm(self, e: _Entry) -> None:
        heapq.heappush(self._deadlines, (e.last_event_ts_ms + self.policy.resolve_after_ms, e.fingerprint))

    def _flip(self, e: _Entry, at_ms: int) -> None:
        f = self.policy.flap
        if f is not None:
            e.flips = [*(t for t in e.flips if t > at_ms - f.window_ms), at_ms]
            if len(e.flips) >= f.threshold:
                e.flapping = True
                self._flapping.add(e.fingerprint)

    def _forget_resolved(self, watermark_ms: int) -> None:
        """Forget alerts resolved ``retain_resolved`` ago and settled in every group (the store keeps them)."""
        heap, entries, keep = self._forget, self._entries, self.policy.retain_resolved_ms
        later = []
        while heap and heap[0][0] <= watermark_ms:
            _, fp = heapq.heappop(heap)
            e = entries.get(fp)
            if e is None or e.status == "firing" or e.ends_at_ms is None or watermark_ms - e.ends_at_ms < keep:
                continue  # gone, firing again, or ended again later (that end has its own place in the heap)
            groups = self._groups
            if e.flapping or any(fp in g.members for gk in self._groups_of(e) if (g := groups.get(gk)) is not None):
                later.append(fp)  # not settled in its groups yet: look again later
                continue
            del entries[fp]
            self._status_counts[e.status] -= 1
            self.counters["forgotten"] += 1
            self._rule_keys.pop(fp, None)
            self._sil_cache.pop(fp, None)
            self._sdirty.discard(fp)
            if e.saved:  # a saved version says it exists: the next save says it no longer does
                self._sdeleted.add(fp)
        again = min(watermark_ms + max(keep // 4, 1), MAX_WATERMARK)  # at the end of time: at the next look
        for fp in later:
            heapq.heappush(heap, (again, fp))

    # -- introspection ----------------------------------------------------------------------------------------

    def alerts(self, status: str | None = None, key: str | None = None, silenced: bool | None = None,
               fingerprints: Iterable[str] | None = None) -> list[AlertState]:  # fmt: skip
        """Tracked logical alerts (optionally filtered, or only ``fingerprints``), oldest start first."""
        now = self.clock()
        self._sync_mutes()
        self._settle_flaps()
        if fingerprints is not None:
            chosen = [e for fp in fingerprints if (e := self._entries.get(fp)) is not None]
        else:
            chosen = list(self._entries.values())
        out = []
        for e in sorted(chosen, key=lambda x: (x.starts_at_ms, x.fingerprint)):
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
                history=[history_dict(h) for h in e.history], group_key=e.group_keys[0] if e.group_keys else "",
                receivers=list(e.receivers)))  # fmt: skip
        return out

    def state_counts(self) -> dict[str, int]:
        """Logical alerts by state (firing, resolved, retracted; and silenced, inhibited, acked among firing).

        The statuses are counted as they change; only silences, inhibition and acks look at the firing alerts.
        """
        out = {k: v for k, v in self._status_counts.items() if v}
        if self._silence_matchers or self._rules or self._acks:
            now = self.clock()
            self._sync_mutes()
            for e in self._entries.values():
                if e.status != "firing":
                    continue
                if self._silence_matchers and self._silenced_by(e, now):
                    out["silenced"] = out.get("silenced", 0) + 1
                if self._rules and self._inhibited_by(e):
                    out["inhibited"] = out.get("inhibited", 0) + 1
                if e.fingerprint in self._acks:
                    out["acked"] = out.get("acked", 0) + 1
        return out

    def __len__(self) -> int:
        return len(self._entries)


def _fp_core(detector: str, key: str, severity: str, pipeline: str) -> str:
    """The fingerprint of an alert's core labels (as :func:`~vigil.alerting.notification.fingerprint` makes it)."""
    if pipeline:
        text = f"alertname\x1f{detector}\x1ekey\x1f{key}\x1epipeline\x1f{pipeline}\x1eseverity\x1f{severity}\x1e"
    else:
        text = f"alertname\x1f{detector}\x1ekey\x1f{key}\x1eseverity\x1f{severity}\x1e"
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


def _matchers(node: Any) -> Iterable[Any]:
    yield from node.matchers
    for child in node.children:
        yield from _matchers(child)

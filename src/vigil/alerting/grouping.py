"""Group flushes for the alert manager, as a mixin :class:`GroupingMixin`: what is due, and the notifications.

:class:`~vigil.alerting.manager.AlertManager` inherits it. Groups wait in a heap by their next flush time, so a
tick costs the groups that are due (plus a log factor), not every group held: in an alert storm with one group
per card holder, a tick once a second must not walk a hundred thousand groups to find the few due.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any

from vigil.alerting.model import _Entry, _Group, _told_current, idempotency_key
from vigil.alerting.notification import Notification, NotifiedAlert
from vigil.alerting.policy import AlertPolicy

_REASONS = ("retracted", "revised", "update", "resolved")  # which reason a batch of changes is sent under


class GroupingMixin:
    """Group timers and flushes of :class:`~vigil.alerting.manager.AlertManager` (see the module docstring)."""

    policy: AlertPolicy
    clock: Callable[[], int]
    counters: dict[str, int]
    lean_receivers: set[str]
    _entries: dict[str, _Entry]
    _groups: dict[str, _Group]
    _event_now_ms: int | None
    _flapping: set[str]
    _deadlines: list[tuple[int, str]]
    _acks: dict[str, dict[str, Any]]
    _sdirty: set[str]
    _gdirty: set[str]
    _gdeleted: set[str]
    _sync_mutes: Callable[[], None]
    _muted: Callable[[_Entry, int], bool]
    _auto: Callable[[], None]

    def _reset_flush_heap(self) -> None:
        self._flush_heap = [(g.next_flush_ms, gk) for gk, g in self._groups.items()]
        heapq.heapify(self._flush_heap)

    def _schedule(self, g: _Group) -> None:
        heapq.heappush(self._flush_heap, (g.next_flush_ms, g.key))

    def tick(self, now_ms: int | None = None) -> list[Notification]:
        """Processing time is ``now_ms``: the notifications due now, in group-key order."""
        now = self.clock() if now_ms is None else now_ms
        self._sync_mutes()
        self._settle_flaps()
        heap, groups = self._flush_heap, self._groups
        due = set()
        while heap and heap[0][0] <= now:
            t, gk = heapq.heappop(heap)
            g = groups.get(gk)
            if g is not None and g.next_flush_ms == t:
                due.add(gk)
        out = []
        for gk in sorted(due):
            g = groups[gk]
            n = self._flush(g, now)
            if n is not None:
                out.append(n)
            if g.members:
                self._gdirty.add(gk)
                heapq.heappush(heap, (g.next_flush_ms, gk))
            else:
                del groups[gk]
                self._gdirty.discard(gk)
                if g.saved:
                    self._gdeleted.add(gk)
        self.counters["notifications_out"] += len(out)
        self._auto()
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
            self._gdirty.add(g.key)
        self._reset_flush_heap()
        return out

    def next_due_ms(self) -> int | None:
        """The earliest time a timer is due: a group flush (processing clock) or, in event time, a resolution.

        Read off the tops of the timer heaps (dropping what went stale), so asking costs next to nothing (an
        event-time driver asks before every run of alerts).
        """
        heap, groups = self._flush_heap, self._groups
        while heap and ((g := groups.get(heap[0][1])) is None or g.next_flush_ms != heap[0][0]):
            heapq.heappop(heap)
        dl, entries, after = self._deadlines, self._entries, self.policy.resolve_after_ms
        while dl:
            d, fp = dl[0]
            e = entries.get(fp)
            if e is None or e.status != "firing":
                heapq.heappop(dl)
                continue
            real = e.last_event_ts_ms + after
            if real == d:
                break
            heapq.heapreplace(dl, (real, fp)) if real > d else heapq.heappop(dl)
        due = [h[0][0] for h in (heap, dl) if h]
        return min(due) if due else None

    def _settle_flaps(self) -> None:
        f, t = self.policy.flap, self._event_now_ms
        for fp in list(self._flapping):
            e = self._entries.get(fp)
            if e is None or f is None or t is None or t - e.flips[-1] >= f.hold_ms:
                if e is not None:
                    e.flapping = False
                    self._sdirty.add(fp)
                self._flapping.discard(fp)

    def _flush(self, g: _Group, now: int) -> Notification | None:
        include, firing, kinds = [], [], set()
        entries = self._entries
        for fp in sorted(g.members):
            e = entries.get(fp)
            if e is None:  # forgotten under another policy's groups: nothing left to tell
                g.members.discard(fp)
                continue
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
        if g.overflow and firing:  # the group grew past what it lists: that is news too
            kinds.add("update")
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
        body = [] if g.receiver in self.lean_receivers else [self._notified(e) for e in include]
        n = Notification(receiver=g.receiver, group_key=g.key, group_labels=dict(g.labels),
                         status="firing" if firing else "resolved", reason=reason,  # type: ignore[arg-type]
                         alerts=body, idempotency_key=key, created_ms=now, truncated=g.overflow)  # fmt: skip
        for e in include:
            e.sent[g.key] = e.state()
            self._sdirty.add(e.fingerprint)
        g.has_sent, g.last_sent_ms, g.overflow = True, now, 0
        self._drop_settled(g)
        return n

    def _drop_settled(self, g: _Group) -> None:
        """Leave out of the group resolved alerts already told (or never worth telling)."""
        entries = self._entries
        for fp in [fp for fp in g.members if entries[fp].status != "firing"]:
            e = entries[fp]
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
        return NotifiedAlert(fingerprint=e.fingerprint, status=e.status, labels=dict(e.labels),  # type: ignore[arg-type]
                             annotations=ann, starts_at_ms=e.starts_at_ms, ends_at_ms=e.ends_at_ms,
                             revision=e.revision, alert=a.to_dict())  # fmt: skip

"""Alerts into incidents: by time, by distance in the service graph, and by shared trace ids.

An alert (a :class:`Signal`: its id, event time, service, severity and any trace ids it saw) joins an open
incident when it comes within ``window_ms`` of that incident's latest alert **and** either shares a trace id
with it (the same requests failed in both places) or its service is within ``hops`` call edges of one of the
incident's services (failures travel along calls, in both directions). Among several candidates the one with
a shared trace wins, then the nearest, then the newest. Otherwise the alert opens a new incident. The incident
keeps its subgraph (``edges``): the calls among its services and the services that connect two of them.

The lifecycle: ``open`` → ``mitigated`` (a playbook finished, or a person said so) → ``resolved`` (no alert
for ``quiet_ms`` after the last one and every service cleared). Each change is on the incident's timeline,
at event time; nothing here reads a clock.

Examples:
    >>> c = Correlator(edges=[("frontend", "cart"), ("cart", "redis"), ("frontend", "ads")], window_ms=60_000)
    >>> a = c.add(Signal("a1", 1_000, "redis", "critical"))
    >>> b = c.add(Signal("a2", 9_000, "frontend"))           # two hops from redis, soon after: same incident
    >>> d = c.add(Signal("a3", 9_500, "email"))              # not connected: a new one
    >>> a.id == b.id != d.id, a.services, a.severity
    (True, ['redis', 'frontend'], 'critical')
    >>> a.edges                                              # the subgraph: cart joins the two
    [('cart', 'redis'), ('frontend', 'cart')]
    >>> c.clear("redis", 20_000); c.clear("frontend", 20_000); [i.id for i in c.tick(200_000)]  # email fires on
    ['inc-1']
    >>> a.status, [t.what for t in a.timeline]
    ('resolved', ['open', 'alert', 'resolved'])
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vigil.incidents.model import Incident

_RANK = {"info": 0, "warning": 1, "critical": 2}


@dataclass(frozen=True)
class Signal:
    """An alert as correlation sees it."""

    id: str
    ts_ms: int
    service: str
    severity: str = "warning"
    trace_ids: frozenset[str] = frozenset()
    detail: str = ""

    @staticmethod
    def from_alert(alert: Any, *, service_label: str = "service") -> Signal:
        """From a :class:`vigil.types.Alert`.

        The service is its ``service`` label, else its key; trace ids come from ``stats["trace_ids"]`` or a
        ``trace_id`` label.
        """
        labels: Mapping[str, str] = alert.labels or {}
        traces = set((alert.stats or {}).get("trace_ids") or [])
        if labels.get("trace_id"):
            traces.add(labels["trace_id"])
        return Signal(str(alert.id), int(alert.event_ts_ms), labels.get(service_label) or str(alert.key),
                      str(alert.severity), frozenset(str(t) for t in traces), str(alert.message))  # fmt: skip


@dataclass
class _Open:
    incident: Incident
    last_ms: int
    traces: set[str] = field(default_factory=set)
    firing: set[str] = field(default_factory=set)


class Correlator:
    """Groups signals into incidents and runs their lifecycle (module docstring).

    Args:
        edges: call edges ``(caller, callee)`` of the service graph (direction is ignored for proximity).
        window_ms: how long after an incident's latest alert a new one may still join it.
        hops: how far apart in the graph two services may be to share an incident.
        quiet_ms: no alert for this long (and every service cleared) resolves an incident.
        first_id: the number of the first incident (ids are ``inc-<n>``).
    """

    def __init__(self, edges: Iterable[tuple[str, str]] = (), *, window_ms: int = 600_000, hops: int = 2,
                 quiet_ms: int = 120_000, first_id: int = 1) -> None:  # fmt: skip
        self.adj: dict[str, set[str]] = {}
        self.calls: set[tuple[str, str]] = set()
        for a, b in edges:
            self.calls.add((a, b))
            self.adj.setdefault(a, set()).add(b)
            self.adj.setdefault(b, set()).add(a)
        self.window_ms, self.hops, self.quiet_ms = int(window_ms), int(hops), int(quiet_ms)
        self._next = int(first_id)
        self.open: dict[str, _Open] = {}

    def distance(self, a: str, b: str, limit: int | None = None) -> int | None:
        """Call edges between two services (None: farther than ``limit``, default ``hops``)."""
        limit = self.hops if limit is None else limit
        if a == b:
            return 0
        seen, frontier = {a}, deque([(a, 0)])
        while frontier:
            s, d = frontier.popleft()
            if d >= limit:
                continue
            for n in self.adj.get(s, ()):
                if n == b:
                    return d + 1
                if n not in seen:
                    seen.add(n)
                    frontier.append((n, d + 1))
        return None

    def add(self, sig: Signal) -> Incident:
        """Put a signal into its incident (a new one if none fits); the incident."""
        best: tuple[tuple[int, int, int], _Open] | None = None
        for o in self.open.values():
            if o.incident.status == "resolved" or sig.ts_ms - o.last_ms > self.window_ms:
                continue
            shared = bool(sig.trace_ids & o.traces)
            dists = [d for s in o.incident.services if (d := self.distance(sig.service, s)) is not None]
            if not shared and not dists:
                continue
            key = (0 if shared else 1, min(dists) if dists else self.hops + 1, -o.last_ms)
            if best is None or key < best[0]:
                best = (key, o)
        if best is None:
            inc = Incident(f"inc-{self._next}", sig.ts_ms, severity=sig.severity)
            self._next += 1
            inc.note(sig.ts_ms, "open", f"{sig.service}: {sig.detail}".rstrip(": "))
            o = self.open[inc.id] = _Open(inc, sig.ts_ms)
        else:
            o = best[1]
            why = "shared trace" if best[0][0] == 0 else f"{best[0][1]} hop(s) from {', '.join(o.incident.services)}"
            o.incident.note(sig.ts_ms, "alert", f"{sig.service} ({why})")
        inc = o.incident
        o.last_ms = max(o.last_ms, sig.ts_ms)
        o.traces |= sig.trace_ids
        o.firing.add(sig.service)
        if sig.service not in inc.services:
            inc.services.append(sig.service)
            inc.edges = self.subgraph(inc.services)
        if sig.id not in inc.alerts:
            inc.alerts.append(sig.id)
        if _RANK.get(sig.severity, 1) > _RANK.get(inc.severity, 1):
            inc.severity = sig.severity
        if inc.status == "mitigated" and best is not None:
            inc.note(sig.ts_ms, "open", "alerting again after mitigation")
        return inc

    def subgraph(self, services: Iterable[str]) -> list[tuple[str, str]]:
        """The call edges among ``services`` and the services that connect two of them, sorted."""
        nodes = set(services)
        nodes |= {n for n, near in self.adj.items() if len(near & nodes) >= 2}
        return sorted((a, b) for a, b in self.calls if a in nodes and b in nodes)

    def clear(self, service: str, at_ms: int) -> None:
        """A service's alert stopped firing."""
        for o in self.open.values():
            o.firing.discard(service)

    def mitigated(self, incident_id: str, at_ms: int, detail: str = "") -> Incident | None:
        """Mark an incident mitigated (a playbook finished, or a person said so)."""
        o = self.open.get(incident_id)
        if o is None or o.incident.status != "open":
            return None
        return o.incident.note(at_ms, "mitigated", detail)

    def tick(self, now_ms: int) -> list[Incident]:
        """Resolve the incidents quiet for ``quiet_ms`` with nothing firing; those resolved now."""
        done = []
        for key, o in list(self.open.items()):
            if not o.firing and now_ms - o.last_ms >= self.quiet_ms:
                o.incident.note(now_ms, "resolved", f"quiet for {(now_ms - o.last_ms) / 1000:.0f} s")
                done.append(o.incident)
                del self.open[key]
        return done

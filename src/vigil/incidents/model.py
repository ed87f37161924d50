"""The incident record that correlation produces, RCA explains and playbooks act on.

An incident has its services and the call edges between them (``edges``, caller → callee: the subgraph the
console draws), ranked causes (a service, a kind — ``latency``, ``errors``, ``saturation``, ``deploy`` — a
score and the evidence), a lifecycle (``open`` → ``mitigated`` → ``resolved``) and a timeline of what
happened to it. Times are event-time epoch milliseconds: nothing here reads a clock.

Examples:
    >>> inc = Incident(id="inc-1", opened_ms=1_000, severity="critical", services=["cart", "frontend"],
    ...                causes=[Cause(service="cart", kind="deploy", score=0.9, evidence={"version": "v2"})])
    >>> inc.top.service, inc.status
    ('cart', 'open')
    >>> inc.note(2_000, "mitigated", "rolled back cart").status
    'mitigated'
    >>> Incident.from_dict(inc.to_dict()) == inc
    True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

STATUSES = ("open", "mitigated", "resolved")
KINDS = ("latency", "errors", "saturation", "deploy")


@dataclass
class Cause:
    """One ranked root-cause candidate."""

    service: str
    kind: str
    score: float
    evidence: dict[str, Any] = field(default_factory=dict)


@dataclass
class TimelineEntry:
    """Something that happened to an incident, at an event time."""

    at_ms: int
    what: str
    detail: str = ""


@dataclass
class Incident:
    """Correlated alerts with their likely causes (module docstring)."""

    id: str
    opened_ms: int
    severity: str = "warning"
    services: list[str] = field(default_factory=list)
    causes: list[Cause] = field(default_factory=list)
    alerts: list[str] = field(default_factory=list)
    status: str = "open"
    labels: dict[str, str] = field(default_factory=dict)
    timeline: list[TimelineEntry] = field(default_factory=list)
    edges: list[tuple[str, str]] = field(default_factory=list)

    @property
    def top(self) -> Cause | None:
        """The most likely cause, if any was found."""
        return self.causes[0] if self.causes else None

    def note(self, at_ms: int, what: str, detail: str = "") -> Incident:
        """Add to the timeline; ``what`` in :data:`STATUSES` also moves the lifecycle."""
        self.timeline.append(TimelineEntry(int(at_ms), what, detail))
        if what in STATUSES:
            self.status = what
        return self

    def to_dict(self) -> dict[str, Any]:
        """Plain data (JSON-ready)."""
        return asdict(self)

    @staticmethod
    def from_dict(d: Mapping[str, Any]) -> Incident:
        """The inverse of :meth:`to_dict` (unknown keys ignored)."""
        return Incident(
            id=str(d["id"]), opened_ms=int(d["opened_ms"]), severity=str(d.get("severity", "warning")),
            services=[str(s) for s in d.get("services") or []],
            causes=[Cause(str(c["service"]), str(c["kind"]), float(c.get("score", 0.0)), dict(c.get("evidence") or {}))
                    for c in d.get("causes") or []],
            alerts=[str(a) for a in d.get("alerts") or []], status=str(d.get("status", "open")),
            labels={str(k): str(v) for k, v in (d.get("labels") or {}).items()},
            timeline=[TimelineEntry(int(t["at_ms"]), str(t["what"]), str(t.get("detail", "")))
                      for t in d.get("timeline") or []],
            edges=[(str(a), str(b)) for a, b in d.get("edges") or []],
        )  # fmt: skip

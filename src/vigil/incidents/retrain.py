"""Retraining the RCA priors with post-mortems; a new version is promoted only when it ranks better.

:func:`retrain_priors` takes the post-mortems of an :class:`~vigil.incidents.store.IncidentStore` (the confirmed
root cause of an incident), orders them by when their incident opened, and holds back the latest ``holdout``
share of them (a chronological split: the priors are judged on incidents that came after everything they learned
from). It fits :class:`~vigil.rca.priors.RcaPriors` on the earlier ones, then re-ranks each held-back incident's
recorded causes (the candidates RCA gave at the time, :attr:`Incident.causes`) twice — under the priors in force
(none: the evidence alone) and under the new ones — and counts how often the confirmed service is ranked first
(top-1) and among the first three (top-3).

The new version is promoted (written as the version in force beside the store) only when it is **not worse on
top-1 and better on top-1 or top-3**; otherwise nothing is written. A held-back incident whose recorded causes
do not include the confirmed service (or that has none: RCA never ran on it) counts as a miss both ways.

Examples:
    >>> from vigil.incidents.model import Cause, Incident
    >>> from vigil.incidents.store import IncidentStore
    >>> s = IncidentStore(":memory:")
    >>> near_tie = [Cause("web", "latency", 1.0), Cause("db", "saturation", 0.98)]  # RCA's ranking each time
    >>> for i in range(4):
    ...     s.put(Incident(f"inc-{i}", i * 1000, causes=near_tie))
    ...     s.postmortem(f"inc-{i}", service="db", kind="saturation", by="ann", at_ms=9)
    >>> r = retrain_priors(s, holdout=0.25, dry_run=True)
    >>> r.before["top1"], r.after["top1"], r.promoted, r.decision
    (0.0, 1.0, False, 'better, not promoted (dry run)')
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vigil.errors import ConfigError
from vigil.incidents.store import IncidentStore
from vigil.rca import priors as rp

__all__ = ["PriorsReport", "retrain_priors"]


@dataclass
class PriorsReport:
    """What :func:`retrain_priors` learned, how both versions did on the held-back slice, and what it decided."""

    learned: int
    held_back: list[str]
    before: dict[str, Any]
    after: dict[str, Any]
    current: str | None
    candidate: rp.RcaPriors
    promoted: bool
    decision: str
    version: str | None = None
    per_incident: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Flat JSON-ready keys (``rca_top1_before``, ``rca_top1_after``, ..., ``promoted``)."""
        return {"rca_postmortems_learned": self.learned, "rca_held_back": len(self.held_back),
                "rca_held_back_incidents": self.held_back,
                "rca_top1_before": self.before["top1"], "rca_top3_before": self.before["top3"],
                "rca_top1_after": self.after["top1"], "rca_top3_after": self.after["top3"],
                "rca_priors_current": self.current, "rca_priors_version": self.version,
                "rca_priors": self.candidate.to_dict()["counts"], "promoted": self.promoted,
                "decision": self.decision, "per_incident": self.per_incident}  # fmt: skip


def _evaluate(rows: list[tuple[dict[str, Any], Any]], priors: rp.RcaPriors | None) -> dict[str, Any]:
    top1 = top3 = 0
    for pm, inc in rows:
        ranked = rp.rerank(inc.causes if inc is not None else [], priors)
        top1 += rp.top_k_hits(ranked, pm["service"], 1)
        top3 += rp.top_k_hits(ranked, pm["service"], 3)
    n = len(rows)
    return {"n": n, "top1": round(top1 / n, 4) if n else 0.0, "top3": round(top3 / n, 4) if n else 0.0}


def retrain_priors(store: IncidentStore, *, holdout: float = 0.3, alpha: float = 1.0, weight: float = 0.05,
                   who: str = "", why: str = "retrained with post-mortems",
                   dry_run: bool = False) -> PriorsReport:  # fmt: skip
    """Fit RCA priors on the earlier post-mortems, judge them on the later ones, promote if better (module doc)."""
    if not 0 < holdout < 1:
        raise ConfigError("must be between 0 and 1 (exclusive)", field="--rca-holdout", value=holdout)
    pms = store.postmortems()
    rows = [(pm, store.get(pm["incident_id"])) for pm in pms]
    # chronological: by when the incident opened (the post-mortem's own time is when someone wrote it)
    rows.sort(key=lambda r: (r[1].opened_ms if r[1] is not None else r[0]["at_ms"], r[0]["incident_id"]))
    n_hold = max(1, round(holdout * len(rows)))
    if len(rows) - n_hold < 1:
        raise ConfigError(f"holds {len(rows)} post-mortem(s): too few to learn from and judge on (at least 2)",
                          field="--postmortems", value=store.path,
                          hint="record them: vigil incidents postmortem INC --service S --kind K")  # fmt: skip
    learn, held = rows[:-n_hold], rows[-n_hold:]
    path = None if store.path == ":memory:" else store.path
    current = rp.active_priors(path)
    cand = rp.fit_priors((pm for pm, _ in learn), alpha=alpha, weight=weight)
    before, after = _evaluate(held, current), _evaluate(held, cand)
    per = []
    for pm, inc in held:
        causes = inc.causes if inc is not None else []
        per.append({"incident": pm["incident_id"], "confirmed": pm["service"],
                    "top_before": [c.service for c in rp.rerank(causes, current)[:3]],
                    "top_after": [c.service for c in rp.rerank(causes, cand)[:3]]})  # fmt: skip
    better = after["top1"] >= before["top1"] and (after["top1"] > before["top1"] or after["top3"] > before["top3"])
    cand.meta = {"learned_from": [pm["incident_id"] for pm, _ in learn],
                 "held_back": [pm["incident_id"] for pm, _ in held], "before": before, "after": after,
                 "replaces": current.version if current else None}  # fmt: skip
    version = None
    if not better:
        decision = "not promoted: no better on the held-back post-mortems" + (
            "" if after["top1"] >= before["top1"] else " (worse on top-1)"
        )
    elif dry_run or path is None:
        decision = "better, not promoted (dry run)"
    else:
        version = rp.promote(path, cand, who=who, why=why)
        decision = f"promoted {version}"
    return PriorsReport(len(learn), [pm["incident_id"] for pm, _ in held], before, after,
                        current.version if current else None, cand, version is not None, decision, version,
                        per)  # fmt: skip

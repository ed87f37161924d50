"""RCA priors learned from post-mortems: which services (and kinds) have turned out to be the root cause before.

A post-mortem confirms an incident's root cause (a service and a kind). Over many of them some services are the
cause far more often than others (the database that everything leans on, the service deployed ten times a day).
:func:`fit_priors` turns the confirmed causes into a **gentle prior** per ``(service, kind)``:

* ``p(service)`` = the smoothed share of post-mortems naming it, ``(n_s + a) / (N + a (V + 1))`` (``V`` services
  seen, one more share for every service never confirmed), and
* ``p(kind | service)`` = ``(n_sk + a) / (n_s + a K)`` over the ``K`` kinds,

with ``a`` the additive smoothing (``alpha``). The prior of a candidate is ``p(service) p(kind | service)``
relative to the largest one (0..1], and :meth:`RcaPriors.bonus` adds ``weight x`` that to the candidate's score
(0..1, the best about 1). With the default ``weight`` of 0.05 the prior only reorders causes whose evidence is
within 5 % of the top: a tie-breaker, never a verdict against clear evidence.

The priors are versioned in a :class:`~vigil.state.history.ConfigHistory` folder beside the incident store
(:func:`priors_dir`: ``<store folder>/rca-priors/``; each version is the JSON of :meth:`RcaPriors.to_dict`).
``vigil retrain --postmortems`` fits them and promotes a version only when it ranks the held-back post-mortem
incidents better (:mod:`vigil.incidents.retrain`); :func:`active_priors` reads the version in force (``None``
when there is none: no prior). :func:`rerank` applies priors to causes already ranked (their raw score is kept in
the evidence as ``score_raw``, so priors never stack).

Examples:
    >>> pm = [{"service": "db", "kind": "saturation"}] * 3 + [{"service": "cart", "kind": "deploy"}]
    >>> p = fit_priors(pm)
    >>> round(p.rel("db", "saturation"), 2), round(p.rel("cart", "deploy"), 2), round(p.rel("web", "latency"), 2)
    (1.0, 0.35, 0.11)
    >>> from vigil.rca.rank import Cause
    >>> [c.service for c in rerank([Cause("cart", "latency", 1.0), Cause("db", "saturation", 0.97)], p)]
    ['db', 'cart']
    >>> [c.service for c in rerank([Cause("cart", "latency", 1.0), Cause("db", "saturation", 0.7)], p)]
    ['cart', 'db']
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from vigil.errors import ConfigError
from vigil.state.history import ConfigHistory

__all__ = ["FORMAT", "KINDS", "RcaPriors", "active_priors", "fit_priors", "priors_dir", "rerank", "top_k_hits"]

#: the cause kinds :func:`~vigil.rca.rank.rank_causes` gives (and post-mortems confirm)
KINDS = ("latency", "errors", "saturation", "deploy")
#: the version of the stored JSON layout
FORMAT = 1


@dataclass
class RcaPriors:
    """Counts of confirmed root causes and how much they weigh (module docstring).

    Attributes:
        counts: ``{service: {kind: n}}`` of confirmed causes.
        alpha: additive smoothing.
        weight: the largest bonus added to a 0..1 cause score.
        version: the history version these are (``""``: not stored).
        meta: what they were fitted on and how they evaluated (free-form, JSON-ready).
    """

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    alpha: float = 1.0
    weight: float = 0.05
    version: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """How many post-mortems the priors count."""
        return sum(sum(k.values()) for k in self.counts.values())

    def prob(self, service: str, kind: str) -> float:
        """Smoothed ``p(service) p(kind | service)``."""
        n_s = sum(self.counts.get(service, {}).values())
        a, v = self.alpha, len(self.counts)
        p_s = (n_s + a) / (self.n + a * (v + 1)) if self.n + a * (v + 1) > 0 else 0.0
        n_k = self.counts.get(service, {}).get(kind, 0)
        p_k = (n_k + a) / (n_s + a * len(KINDS)) if n_s + a * len(KINDS) > 0 else 0.0
        return p_s * p_k

    def rel(self, service: str, kind: str) -> float:
        """:meth:`prob` relative to the most likely confirmed cause (0..1]; 0 without any post-mortem."""
        top = max((self.prob(s, k) for s, ks in self.counts.items() for k in ks), default=0.0)
        return min(1.0, self.prob(service, kind) / top) if top > 0 else 0.0

    def bonus(self, service: str, kind: str) -> float:
        """What the prior adds to a 0..1 cause score: ``weight x rel``."""
        return self.weight * self.rel(service, kind)

    def to_dict(self) -> dict[str, Any]:
        """Plain data (the stored JSON)."""
        return {"format": FORMAT, "alpha": self.alpha, "weight": self.weight,
                "counts": {s: dict(sorted(k.items())) for s, k in sorted(self.counts.items())},
                "meta": self.meta}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], version: str = "") -> RcaPriors:
        """The inverse of :meth:`to_dict`."""
        if int(doc.get("format", 0)) != FORMAT:
            raise ConfigError(f"is not an RCA priors file of format {FORMAT}", field="format",
                              value=doc.get("format"))  # fmt: skip
        counts = {str(s): {str(k): int(n) for k, n in ks.items()} for s, ks in (doc.get("counts") or {}).items()}
        return cls(counts, float(doc.get("alpha", 1.0)), float(doc.get("weight", 0.05)), version,
                   dict(doc.get("meta") or {}))  # fmt: skip


def fit_priors(postmortems: Iterable[Mapping[str, Any]], *, alpha: float = 1.0, weight: float = 0.05) -> RcaPriors:
    """Priors from post-mortems (mappings with ``service`` and ``kind``: :meth:`IncidentStore.postmortems` rows)."""
    if alpha < 0 or weight < 0:
        raise ConfigError("must be >= 0", field="alpha" if alpha < 0 else "weight", value=min(alpha, weight))
    c = Counter((str(p["service"]), str(p["kind"])) for p in postmortems)
    counts: dict[str, dict[str, int]] = {}
    for (s, k), n in sorted(c.items()):
        counts.setdefault(s, {})[k] = n
    return RcaPriors(counts, alpha, weight)


def rerank(causes: Sequence[Any], priors: RcaPriors | None) -> list[Any]:
    """``causes`` (objects with ``service``, ``kind``, ``score``, ``evidence``) best first under ``priors``.

    Scores start from the raw one (``evidence["score_raw"]`` when a prior was applied before, else ``score``);
    with priors each cause gets ``score = raw + bonus`` and the evidence ``score_raw`` and ``prior``. Without
    priors the causes come back in raw order with their raw scores. Ties keep the service name order.
    """
    out = []
    for c in causes:
        ev = dict(c.evidence or {})
        raw = float(ev.pop("score_raw", c.score))
        ev.pop("prior", None)
        if priors is not None:
            b = priors.bonus(c.service, c.kind)
            ev["score_raw"], ev["prior"] = round(raw, 4), round(b, 4)
            out.append(replace(c, score=raw + b, evidence=ev))
        else:
            out.append(replace(c, score=raw, evidence=ev))
    return sorted(out, key=lambda c: (-c.score, c.service))


def top_k_hits(ranked: Sequence[Any], service: str, k: int) -> bool:
    """Is ``service`` among the ``k`` best-ranked causes?"""
    return service in [c.service for c in ranked[:k]]


def priors_dir(store: str | os.PathLike[str]) -> Path:
    """The version folder of the priors learned from the incident store at ``store``."""
    return Path(store).resolve().parent / "rca-priors"


def history(store: str | os.PathLike[str]) -> ConfigHistory:
    """The :class:`ConfigHistory` of the priors beside ``store``."""
    return ConfigHistory(priors_dir(store))


def load(h: ConfigHistory, version: str) -> RcaPriors:
    """One stored version."""
    return RcaPriors.from_dict(json.loads(h.text(version)), version=version)


def active_priors(store: str | os.PathLike[str] | None) -> RcaPriors | None:
    """The priors in force beside the incident store ``store``; ``None`` when none was promoted (no prior)."""
    if store is None or str(store) == ":memory:":
        return None
    h = history(store)
    v = h.current_version()
    return None if v is None else load(h, v)


def promote(store: str | os.PathLike[str], priors: RcaPriors, *, who: str, why: str) -> str:
    """Store ``priors`` as a new version beside ``store`` and make it the one in force; return the version."""
    h = history(store)
    cur = h.current_version()
    text = json.dumps(priors.to_dict(), indent=1, sort_keys=True) + "\n"
    changes = [f"{s}/{k}: {n}" for s, ks in sorted(priors.counts.items()) for k, n in sorted(ks.items())]
    v = h.record(text, action="retrain", who=who, why=why or f"replaces {cur or 'no prior'}", changes=changes[:50])
    priors.version = v
    return v

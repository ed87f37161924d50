"""Suppression learned from operator feedback: per-key bars raised just above what operators called normal.

An operator's false-positive label says "this score, on this key, is normal here". :class:`FeedbackTuner`
turns such labels into **adjustments**, one per ``(detector, key, feature)`` — the feature is a voting
feature of a *vote alert* (an alert whose :attr:`~vigil.types.Alert.contributions` carry per-feature flags
and whose ``stats["k"]`` says how many votes it needs, such as the server pipeline's ``k_of_n``), and ``""``
for a single detector's own score:

* **bar** = ``headroom`` x the largest score labelled false positive, at most ``max_factor`` x the base
  threshold (an adjustment whose bar hits that cap is marked ``capped``: it hides less than was labelled);
* **TP-protected**: no adjustment where a true-positive label on the same detector, key and feature scored at
  most ``tp_margin`` x the new bar (a confirmed incident near that score must keep voting);
* **bounded**: at most ``max_entries`` adjustments (most labels first, then the most recently confirmed), each
  expiring ``ttl_ms`` after its latest label unless a new label re-confirms it;
* **reversible**: every learned set is a version in a :class:`~vigil.state.history.ConfigHistory` folder
  (the JSON text of the set, with who, why, when, the labels it came from and the changes it made);
  :meth:`FeedbackTuner.rollback` restores the previous set and :meth:`FeedbackTuner.clear` records an empty
  one, both as new history entries.

:meth:`Suppressions.filter` applies a set to alerts with their own evidence: a vote alert's votes are
recounted, a feature voting only when its ``|score|`` is above its key's bar (votes that are not among the
contributions, such as the server pipeline's model, are kept as they are: a model is adapted by retraining,
:mod:`vigil.apps.servers.retrain`); the alert is suppressed when fewer than ``k`` votes remain. Any other
alert is suppressed when its score is at most its key's bar. Suppressed alerts are returned, with the version
and the features that lost their vote, never dropped silently. One guard bounds what feedback may hide: an
alert stands when one of its remaining votes is at least ``max_factor`` x its bar (its base bar for a metric
without one) — a memory leak on a host whose job the operator taught away still alerts on the leak's memory,
and a job run ten times its usual size is not "like the ones labelled normal".

Alert-level filtering sees only the alerts that fired: a vote alert it suppresses takes the rest of its
episode with it (the server pipeline's aggregator does not fire again within ``rearm_windows``), even when
later windows of the episode would have passed the learned bars. An app can apply the bars where they belong,
to every window's votes before they are counted (:func:`vigil.apps.servers.feedback.revote`); the feedback
demo reports both.

Examples:
    >>> import tempfile
    >>> from vigil.types import Alert
    >>> fp = Alert("a1", "web-1", "w1", "cpu_z", 5.2, 4.0, 1_000, 1_000)
    >>> tuner = FeedbackTuner(tempfile.mkdtemp(), headroom=1.2)
    >>> s = tuner.learn([Label(fp, "false_positive", at_ms=2_000, by="ana")], who="ana", why="nightly job")
    >>> s.version, round(s.bar("cpu_z", "web-1", "", at_ms=3_000), 2)
    ('v0001', 6.24)
    >>> kept, suppressed = s.filter([Alert("a2", "web-1", "w2", "cpu_z", 6.0, 4.0, 9_000, 9_000),
    ...                              Alert("a3", "web-1", "w3", "cpu_z", 7.5, 4.0, 9_500, 9_500)])
    >>> [a.id for a in kept], [x.alert.id for x in suppressed], suppressed[0].reason
    (['a3'], ['a2'], 'suppressed by feedback v0001: score 6 <= bar 6.24')
    >>> tuner.clear(who="ana", why="job moved").version, len(tuner.current()), tuner.rollback(who="ana").version
    ('v0002', 0, 'v0001')
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from vigil.errors import ConfigError
from vigil.state.history import ConfigHistory
from vigil.types import Alert, Contribution

if TYPE_CHECKING:
    from vigil.alerting.store import AlertStore

__all__ = ["Adjustment", "FeedbackTuner", "Label", "Suppressed", "Suppressions", "labels_from_store", "votes_of"]

LABELS = ("true_positive", "false_positive")
DAY_MS = 86_400_000
_KIND, _FORMAT = "feedback_suppressions", 1


@dataclass(frozen=True, slots=True)
class Label:
    """One operator label on one alert.

    Attributes:
        alert: the alert as raised (its ``stats`` are the scores the label is about).
        label: ``"true_positive"`` or ``"false_positive"``.
        at_ms: when the label was given (epoch ms; the TTL of what it teaches runs from here).
        by: who labelled.
        note: the operator's words.
        id: the label's id where it is stored (e.g. the alert store's feedback id).
    """

    alert: Alert
    label: str
    at_ms: int
    by: str = ""
    note: str = ""
    id: str = ""

    def __post_init__(self) -> None:
        if self.label not in LABELS:
            raise ConfigError("must be 'true_positive' or 'false_positive'", field="label", value=self.label)


@dataclass(slots=True)
class Adjustment:
    """A raised bar for one ``(detector, key, feature)`` (``feature`` ``""``: the detector's own score)."""

    detector: str
    key: str
    feature: str
    base: float
    bar: float
    max_fp_score: float
    n_labels: int
    confirmed_ms: int
    expires_ms: int
    labels: list[str] = field(default_factory=list)
    capped: bool = False

    @property
    def ident(self) -> tuple[str, str, str]:
        """``(detector, key, feature)``."""
        return self.detector, self.key, self.feature

    @property
    def factor(self) -> float:
        """The bar over the base threshold."""
        return self.bar / self.base if self.base > 0 else float("inf")

    def describe(self) -> str:
        """One line: what, by how much, from how many labels."""
        what = f"{self.detector} {self.key}" + (f" {self.feature}" if self.feature else "")
        return (f"{what}: bar {self.base:g} -> {self.bar:.3g} (x{self.factor:.2f}{', capped' if self.capped else ''}; "
                f"{self.n_labels} label{'s' if self.n_labels != 1 else ''})")  # fmt: skip


@dataclass(frozen=True, slots=True)
class Suppressed:
    """An alert held back by a learned set: the version, and the features under their bar."""

    alert: Alert
    version: str
    votes: int
    votes_after: int
    under: tuple[str, ...]
    reason: str


class Suppressions:
    """A learned set of adjustments (one version), applied to alerts or to server-pipeline windows.

    Args:
        entries: the adjustments.
        version: the history version this set is (``""``: not stored).
        meta: the version's record (params, who, why, labels, changes).
    """

    def __init__(self, entries: Iterable[Adjustment] = (), version: str = "", meta: dict[str, Any] | None = None):
        self.entries: dict[tuple[str, str, str], Adjustment] = {e.ident: e for e in entries}
        self.version = version
        self.meta = dict(meta or {})
        self.counters = {"seen": 0, "suppressed": 0}

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Adjustment]:
        return iter(self.entries.values())

    def __repr__(self) -> str:
        return f"Suppressions(version={self.version!r}, entries={len(self)})"

    def bar(self, detector: str, key: str, feature: str = "", *, at_ms: int) -> float | None:
        """The learned bar in force at ``at_ms`` (``None``: none, or expired)."""
        e = self.entries.get((detector, key, feature))
        return e.bar if e is not None and at_ms < e.expires_ms else None

    # -- applying ----------------------------------------------------------------------------------------------

    def check(self, alert: Alert, now_ms: int | None = None) -> Suppressed | None:
        """Re-evaluate one alert against the bars (at ``now_ms``, default its event time); ``None``: it stands."""
        at = alert.event_ts_ms if now_ms is None else now_ms
        voters = votes_of(alert)
        if voters is not None:
            det = alert.detector
            flags = {c.feature: bool(c.flag) for c in voters}
            score = {c.feature: abs(float(c.score)) for c in voters}
            votes = int(alert.stats.get("votes", sum(flags.values())))
            under = []
            for m in flags:
                b = self.bar(det, alert.key, m, at_ms=at) if flags[m] else None
                if b is not None and score[m] <= b:
                    under.append(m)
            after = votes - len(under)
            k = int(alert.stats.get("k", alert.threshold))
            if not under or after >= k or self._far_beyond(det, alert.key, score, flags, under, at):
                return None
            bars = {m: self.bar(det, alert.key, m, at_ms=at) for m in under}
            detail = ", ".join(f"{m} |z| {score[m]:.3g} <= {bars[m]:.3g}" for m in under)
            why = f"suppressed by feedback {self.version}: {after} of {k} votes left ({detail})"
            return Suppressed(alert, self.version, votes, after, tuple(under), why)
        b = self.bar(alert.detector, alert.key, "", at_ms=at)
        if b is None or not float(alert.score) <= b:
            return None
        why = f"suppressed by feedback {self.version}: score {float(alert.score):.3g} <= bar {b:.3g}"
        return Suppressed(alert, self.version, 1, 0, ("",), why)

    def _far_beyond(self, detector: str, key: str, score: dict[str, float], flags: dict[str, bool],
                    under: list[str], at: int) -> bool:  # fmt: skip
        """A remaining vote at least ``guard`` x its bar (its base when it has none): the alert stands."""
        guard = float(self.meta.get("params", {}).get("max_factor", 0.0))
        base = self.meta.get("base", {}).get(detector, {})
        for m in flags:
            if not flags[m] or m in under:
                continue
            ref = self.bar(detector, key, m, at_ms=at) or base.get(m)
            if guard > 0 and ref is not None and score[m] >= guard * float(ref):
                return True
        return False

    def filter(self, alerts: Iterable[Alert], now_ms: int | None = None) -> tuple[list[Alert], list[Suppressed]]:
        """``(kept, suppressed)``: every alert re-evaluated with its own stats (module docstring); counted."""
        kept: list[Alert] = []
        suppressed: list[Suppressed] = []
        for a in alerts:
            s = self.check(a, now_ms) if self.entries else None
            if s is None:
                kept.append(a)
            else:
                suppressed.append(s)
        self.counters["seen"] += len(kept) + len(suppressed)
        self.counters["suppressed"] += len(suppressed)
        return kept, suppressed

    # -- plain data --------------------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """``{kind, format, version, meta, entries}`` (JSON-ready)."""
        return {"kind": _KIND, "format": _FORMAT, "version": self.version, "meta": self.meta,
                "entries": [asdict(e) for e in sorted(self.entries.values(), key=lambda e: e.ident)]}  # fmt: skip

    @classmethod
    def from_dict(cls, doc: dict[str, Any], version: str | None = None) -> Suppressions:
        """The inverse of :meth:`to_dict`."""
        if doc.get("kind") != _KIND or doc.get("format") != _FORMAT:
            raise ConfigError(f"is not a feedback suppression set (format {_FORMAT})", field="kind",
                              value=doc.get("kind"))  # fmt: skip
        entries = [Adjustment(**e) for e in doc.get("entries", [])]
        return cls(entries, version if version is not None else str(doc.get("version", "")), doc.get("meta"))


class FeedbackTuner:
    """Learns :class:`Suppressions` from labels and keeps their versions (see the module docstring).

    Args:
        directory: the version folder (a :class:`~vigil.state.history.ConfigHistory`; each version is the
            JSON text of a set).
        base: base thresholds per detector and feature of vote alerts (e.g.
            :func:`vigil.apps.servers.feedback.server_base` for ``k_of_n``); a single detector's alerts carry
            their own (``alert.threshold``).
        max_factor: a bar is at most this times its base threshold (> 1).
        headroom: a bar is this times the largest score labelled false positive (>= 1).
        max_entries: at most this many adjustments in a set.
        ttl_ms: an adjustment expires this long after its latest label.
        tp_margin: no adjustment where a true positive scored at most this times the bar (>= 1).
        clock: epoch-ms clock for ``learned_ms`` (injectable; default: the latest label's time).
    """

    def __init__(self, directory: str | os.PathLike[str], *, base: dict[str, dict[str, float]] | None = None,
                 max_factor: float = 2.0, headroom: float = 1.2, max_entries: int = 200, ttl_ms: int = 7 * DAY_MS,
                 tp_margin: float = 1.5, clock: Callable[[], int] | None = None) -> None:  # fmt: skip
        checks = (("max_factor", max_factor, max_factor > 1.0, "e.g. 2.0"),
                  ("headroom", headroom, headroom >= 1.0, "e.g. 1.2"),
                  ("max_entries", max_entries, int(max_entries) == max_entries and max_entries >= 1, "e.g. 200"),
                  ("ttl_ms", ttl_ms, ttl_ms > 0, "e.g. 7 days = 604800000"),
                  ("tp_margin", tp_margin, tp_margin >= 1.0, "e.g. 1.5"))  # fmt: skip
        for name, value, ok, hint in checks:
            if not ok:
                raise ConfigError("is out of range", field=name, value=value, hint=hint)
        self.history = ConfigHistory(directory)
        self.base = {d: dict(f) for d, f in (base or {}).items()}
        self.max_factor, self.headroom, self.tp_margin = float(max_factor), float(headroom), float(tp_margin)
        self.max_entries, self.ttl_ms = int(max_entries), int(ttl_ms)
        self.clock = clock

    @property
    def params(self) -> dict[str, Any]:
        """The bounds every learned version records."""
        return {"max_factor": self.max_factor, "headroom": self.headroom, "max_entries": self.max_entries,
                "ttl_ms": self.ttl_ms, "tp_margin": self.tp_margin}  # fmt: skip

    # -- reading -----------------------------------------------------------------------------------------------

    def current(self) -> Suppressions:
        """The set in force (empty before the first version)."""
        cur = self.history.current()
        if cur is None:
            return Suppressions()
        return Suppressions.from_dict(json.loads(cur[1]), version=cur[0])

    def load(self, version: str) -> Suppressions:
        """One stored version."""
        return Suppressions.from_dict(json.loads(self.history.text(version)), version=version)

    def entries(self) -> list[dict[str, Any]]:
        """The history: version, action (learn/clear/rollback), who, why, when, changes."""
        return self.history.entries()

    # -- writing -----------------------------------------------------------------------------------------------

    def learn(self, labels: Iterable[Label], *, who: str, why: str = "", now_ms: int | None = None) -> Suppressions:
        """Merge what ``labels`` teach into the current set and store the result as a new version.

        Existing adjustments stay (until they expire at ``now_ms``) unless a true positive among ``labels``
        protects them; a false positive on the same ``(detector, key, feature)`` re-confirms one (its TTL
        restarts from that label's time) and may raise its bar (up to the cap). Pass every label each time
        (e.g. :func:`labels_from_store`): labels are judged by their own times, so an old label re-read does not
        extend anything, and a true positive keeps protecting its key. ``now_ms`` defaults to the clock, else the
        latest label's time.
        """
        labels = list(labels)
        if now_ms is None:
            now_ms = self.clock() if self.clock else max((x.at_ms for x in labels), default=0)
        old = self.current()
        merged: dict[tuple[str, str, str], Adjustment] = {}
        changes: list[str] = []
        for e in old:
            if e.expires_ms > now_ms:
                merged[e.ident] = Adjustment(**asdict(e))
            else:
                changes.append(f"- expired {e.describe()}")
        fps: dict[tuple[str, str, str], list[_Obs]] = {}
        tps: dict[tuple[str, str, str], list[float]] = {}
        for x in labels:
            for o in _observations(x):
                if x.label == "false_positive":
                    fps.setdefault(o.ident, []).append(o)
                else:
                    tps.setdefault(o.ident, []).append(o.score)
        for ident, obs in sorted(fps.items()):
            prev = merged.get(ident)
            base = self._base(ident, obs)
            top = max(o.score for o in obs)
            want, cap = top * self.headroom, base * self.max_factor
            bar = min(max(want, prev.bar if prev else 0.0), cap)
            if not bar > base:  # the operator called normal what does not even cross the base bar
                continue
            ids = sorted({o.label_id for o in obs if o.label_id} | set(prev.labels if prev else ()))
            confirmed = max([o.at_ms for o in obs] + ([prev.confirmed_ms] if prev else []))
            new = Adjustment(*ident, base=base, bar=round(bar, 6),
                             max_fp_score=max(top, prev.max_fp_score if prev else 0.0),
                             n_labels=len(ids) if ids else len(obs) + (prev.n_labels if prev else 0),
                             confirmed_ms=confirmed, expires_ms=confirmed + self.ttl_ms, labels=ids,
                             capped=want > cap or bool(prev and prev.capped))  # fmt: skip
            merged[ident] = new
            changes.append(("~ " if prev else "+ ") + new.describe())
        for ident, e in list(merged.items()):
            near = [s for s in tps.get(ident, []) if s <= e.bar * self.tp_margin]
            if near:
                del merged[ident]
                changes.append(f"- protected {e.describe()}: a true positive scored {min(near):.3g}")
        if len(merged) > self.max_entries:
            ranked = sorted(merged.values(), key=lambda e: (-e.n_labels, -e.confirmed_ms, e.ident))
            for e in ranked[self.max_entries :]:
                del merged[e.ident]
                changes.append(f"- over max_entries: {e.describe()}")
        meta = {"action": "learn", "who": who, "why": why, "learned_ms": int(now_ms), "params": self.params,
                "base": self.base, "labels": [_label_ref(x) for x in labels],
                "based_on": old.version or None}  # fmt: skip
        return self._record(Suppressions(merged.values(), meta=meta), "learn", who, why, changes)

    def clear(self, *, who: str, why: str = "") -> Suppressions:
        """Record an empty set as a new version (reversible with :meth:`rollback`)."""
        old = self.current()
        meta = {"action": "clear", "who": who, "why": why, "params": self.params, "based_on": old.version or None}
        return self._record(Suppressions(meta=meta), "clear", who, why, [f"- cleared {len(old)} adjustments"])

    def rollback(self, version: str | None = None, *, who: str, why: str = "") -> Suppressions:
        """Make ``version`` (default: the one in force before the current) current again; return it."""
        v = self.history.rollback(version, who=who, why=why)
        return self.load(v)

    def _record(self, s: Suppressions, action: str, who: str, why: str, changes: list[str]) -> Suppressions:
        text = json.dumps(s.to_dict(), indent=1, sort_keys=True) + "\n"
        s.version = self.history.record(text, action=action, who=who, why=why, changes=changes)
        return s

    def _base(self, ident: tuple[str, str, str], obs: list[_Obs]) -> float:
        detector, _, feature = ident
        if not feature:  # a single detector's alert carries its threshold
            return max(o.base for o in obs)
        base = self.base.get(detector, {}).get(feature)
        if base is None:
            raise ConfigError(f"has no base threshold for {detector} feature {feature!r}", field="base",
                              value=self.base.get(detector),
                              hint="pass the app's base bars (e.g. server_base(config))")  # fmt: skip
        return float(base)


@dataclass(frozen=True, slots=True)
class _Obs:
    """One voting signal of a labelled alert."""

    ident: tuple[str, str, str]
    score: float
    base: float
    at_ms: int
    label_id: str


def votes_of(alert: Alert) -> list[Contribution] | None:
    """The voting features of a vote alert (contributions with flags, and ``stats["k"]``); ``None`` otherwise.

    Examples:
        >>> a = Alert("a", "h1", "w", "k_of_n", 2, 2, 0, 0, stats={"k": 2},
        ...           contributions=[Contribution("cpu", 5.0, flag=True), Contribution("mem", 0.3, flag=False)])
        >>> [c.feature for c in votes_of(a)], votes_of(Alert("b", "u", "e", "z", 5, 3, 0, 0))
        (['cpu', 'mem'], None)
    """
    if not isinstance(alert.stats, dict) or "k" not in alert.stats:
        return None
    voters = [c for c in alert.contributions if c.flag is not None]
    return voters or None


def _observations(x: Label) -> list[_Obs]:
    """Every voting signal of a labelled alert: for a vote alert the features that voted, else its score.

    A feature that did not vote neither caused a false alert nor carried a true one.
    """
    a = x.alert
    voters = votes_of(a)
    if voters is not None:
        return [_Obs((a.detector, a.key, c.feature), abs(float(c.score)), float("nan"), x.at_ms, x.id)
                for c in voters if c.flag]  # fmt: skip
    return [_Obs((a.detector, a.key, ""), float(a.score), float(a.threshold), x.at_ms, x.id)]


def _label_ref(x: Label) -> dict[str, Any]:
    return {"id": x.id, "alert_id": x.alert.id, "key": x.alert.key, "detector": x.alert.detector,
            "label": x.label, "by": x.by, "at_ms": x.at_ms, "note": x.note}  # fmt: skip


def labels_from_store(store: AlertStore, *, since_ms: int | None = None) -> list[Label]:
    """The alert store's feedback as :class:`Label` objects (the labelled alert itself, with its stats).

    The alert is the store revision whose alert id is the feedback's ``alert_id`` (every firing is a
    revision), else the logical alert's latest one. Feedback on an alert the store no longer has is skipped.
    """
    from vigil.errors import StateError

    try:
        rows = store.feedback()
    except StateError:
        # AlertStore.feedback joins the alert rows with SQLite's json_extract, which rejects the NaN that Python's
        # json writes for an alert with a missing score (the server pipeline's model_score without a served
        # model): read the feedback table alone; the alerts come from the revisions, parsed by Python
        rows = store._rows('SELECT id, fingerprint, alert_id, label, note, "by", at_ms FROM feedback ORDER BY id')
    out = []
    for row in rows:
        if since_ms is not None and int(row["at_ms"]) < since_ms:
            continue
        found = None
        for rev in reversed(store.revisions(row["fingerprint"])):
            a = rev.get("alert") or {}
            if row.get("alert_id") and a.get("id") == row["alert_id"]:
                found = a
                break
        if found is None:
            alert_row = store.alert(row["fingerprint"])
            found = (alert_row or {}).get("last_alert")
        if not found:
            continue
        out.append(Label(_alert_from_dict(found), row["label"], int(row["at_ms"]), row.get("by") or "",
                         row.get("note") or "", str(row["id"])))  # fmt: skip
    return out


def _alert_from_dict(d: dict[str, Any]) -> Alert:
    return Alert.from_dict(d)

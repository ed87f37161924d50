"""Ensemble: run several detectors on the same rows and combine their calibrated scores.

Members are registered detectors rebuilt from plain-data specs ``{"name", "kind", "params"}`` (so an
ensemble is configurable from YAML and its snapshot is plain data). Each member processes every row
prequentially on its own state; the ensemble combines their **calibrated** scores, which share one meaning
(a tail probability in [0, 1]):

* ``max``: the highest calibrated score among the ready members — any one confident member suffices.
* ``mean``: the mean calibrated score of the ready members (members not ready on a row don't vote).
* ``rank``: each member's calibrated score first becomes its **online percentile** among that member's last
  ``rank_window`` ready scores (over all keys, mid-rank for ties, scored before the row is added:
  prequential); the combined score is the highest percentile. This puts members whose calibrations differ
  (a Gaussian tail of a heavy-tailed value is near 1 too often; a velocity rule's calibrated score is small
  even for a clear burst) on one scale: each counts by how unusual its score is *for it*. A member joins the
  combination once its history holds ``rank_min_history`` scores. The history is global, not per key, so a
  reset key slot does not reset it (the ``check_reset_slots`` conformance check is skipped in this mode).

Readiness: a row is ready when **any** member is ready (ranked, in ``rank`` mode) — a velocity rule can
judge a key whose value model is still warming up. Members that read no fields (``velocity``) are ready
even on rows whose values are missing.

``flag`` = ready and combined score >= ``threshold``. ``fire`` = ``flag``, except on rows where some
member is in a continuing run (flagged without firing, like a velocity burst after its first row) and no
member fires: one alert per burst, not one per row.

``stats`` holds each member's calibrated score as ``member_<name>`` (0 where the member is not ready),
its percentile as ``rank_<name>`` in ``rank`` mode, every member's own stats as ``<name>.<stat>`` and, last,
each member's raw score as ``score_<name>`` (on the member's own scale; ``vigil score --members`` writes them).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register, registry
from vigil.detectors.explain import can_explain, ranked
from vigil.stats.slots import as_slots, split_none
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_COMBINES = ("max", "mean", "rank")


@numba.njit(cache=True)
def _rank_kernel(
    cal: Any, ready: Any, buf: Any, count: Any, j: int, min_history: int, out_pct: Any, out_ranked: Any
) -> None:  # pragma: no cover - compiled
    w = buf.shape[1]
    for i in range(cal.shape[0]):
        out_pct[i] = 0.0
        out_ranked[i] = False
        if not ready[i]:
            continue
        v = cal[i]
        h = min(count[j], w)
        if h >= min_history:
            less = 0
            eq = 0
            for t in range(h):
                b = buf[j, t]
                if b < v:
                    less += 1
                elif b == v:
                    eq += 1
            out_pct[i] = (less + 0.5 * eq) / h
            out_ranked[i] = True
        buf[j, count[j] % w] = v
        count[j] += 1


def _member_spec(spec: Any, i: int) -> tuple[str, Any]:
    if not isinstance(spec, dict):
        raise ValueError(f"`members[{i}]` must be a mapping {{name, kind, params}}; got {spec!r}")
    kinds = registry()
    kind = spec.get("kind")
    if kind not in kinds:
        raise ValueError(f"`members[{i}].kind` must be a registered detector, one of {sorted(kinds)}; got {kind!r}")
    unknown = sorted(set(spec) - {"name", "kind", "params"})
    if unknown:
        raise ValueError(f"`members[{i}]` has unknown keys {unknown}; a member is {{name, kind, params}}")
    name = spec.get("name", kind)
    if not isinstance(name, str) or not name or "." in name:
        raise ValueError(f"`members[{i}].name` must be a non-empty string without '.'; got {name!r}")
    try:
        det = kinds[kind](**(spec.get("params") or {}))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"`members[{i}]` ({name}, {kind}): {exc}") from exc
    return name, det


@register
class Ensemble(BaseDetector):
    """Combine the calibrated scores of several member detectors (see the module docstring).

    Args:
        members: ``[{"name": ..., "kind": ..., "params": {...}}, ...]``, at least one; names are unique
            (default: the kind).
        combine: ``"max"``, ``"mean"`` or ``"rank"``.
        threshold: flag when the combined score reaches it, in (0, 1].
        rank_window: recent scores per member that its percentile is taken against (``rank`` mode).
        rank_min_history: scores a member's history needs before it joins the combination (``rank`` mode).

    Score:
        the combined score in [0, 1] (calibrated is the same number).

    State:
        each member's state; in ``rank`` mode also ``rank_window`` recent calibrated scores per member.

    Warm-up:
        a row is ready when any member is ready (in ``rank`` mode: has enough history).

    Examples:
        >>> ens = Ensemble([
        ...     {"name": "z", "kind": "ew_zscore", "params": {"field": "amount", "halflife": 20, "min_count": 5}},
        ...     {"name": "cap", "kind": "threshold_rule", "params": {"field": "amount", "above": 1000}},
        ... ], combine="max", threshold=0.999)
        >>> x = np.array([10, 11, 9, 10, 11, 10, 9, 30, 2000.0])
        >>> v = ens.process_many(np.zeros(9, np.int32), np.arange(9), {"amount": x})
        >>> v.flag.tolist()[-3:], v.stats["member_cap"].round(3).tolist()[-2:], bool(v.ready.all())
        ([False, True, True], [0.0, 0.996], True)
    """

    kind: ClassVar[str] = "ensemble"
    state_version: ClassVar[int] = 1

    def __init__(
        self,
        members: list[dict[str, Any]],
        *,
        combine: str = "max",
        threshold: float = 0.999,
        rank_window: int = 1000,
        rank_min_history: int = 50,
    ) -> None:
        if not isinstance(members, list | tuple) or not members:
            raise ValueError(f"`members` must be a non-empty list of {{name, kind, params}}; got {members!r}")
        if combine not in _COMBINES:
            raise ValueError(f"`combine` must be one of {list(_COMBINES)}; got {combine!r}")
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"`threshold` is on the combined calibrated score, in (0, 1]; got {threshold!r}")
        if int(rank_window) != rank_window or rank_window < 2:
            raise ValueError(f"`rank_window` must be an int >= 2; got {rank_window!r}")
        if int(rank_min_history) != rank_min_history or not 1 <= rank_min_history <= rank_window:
            raise ValueError(f"`rank_min_history` must be an int in [1, rank_window]; got {rank_min_history!r}")
        built = [_member_spec(s, i) for i, s in enumerate(members)]
        names = [n for n, _ in built]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"`members` names must be unique; {dup} repeat (set `name` on each member)")
        self.names = names
        self.members = [d for _, d in built]
        self.combine = combine
        self.threshold = float(threshold)
        self.rank_window = int(rank_window)
        self.rank_min_history = int(rank_min_history)
        self.fields = tuple(dict.fromkeys(f for d in self.members for f in d.fields))
        self.rank_buf = np.zeros((len(self.members), self.rank_window if combine == "rank" else 0), np.float64)
        self.rank_count = np.zeros(len(self.members), np.int64)

    def params(self) -> dict[str, Any]:
        return {
            "members": [{"name": n, "kind": d.kind, "params": d.params()} for n, d in zip(self.names, self.members,
                                                                                          strict=True)],
            "combine": self.combine, "threshold": self.threshold, "rank_window": self.rank_window,
            "rank_min_history": self.rank_min_history,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        ewz = {"name": "ewz", "kind": "ew_zscore", "params": {"field": "value", "halflife": 20, "min_count": 5}}
        win = {"name": "win", "kind": "sliding_zscore",
               "params": {"field": "value", "window": "10s", "min_count": 3, "baseline_halflife": 20}}  # fmt: skip
        cap = {"name": "cap", "kind": "threshold_rule", "params": {"field": "value", "above": 70.0, "below": 10.0}}
        return [
            {"members": [ewz, cap], "combine": "max", "threshold": 0.999},
            {"members": [win, ewz], "combine": "mean", "threshold": 0.99},
            {"members": [ewz, win], "combine": "rank", "threshold": 0.99, "rank_window": 200, "rank_min_history": 20},
        ]

    def _skip_checks(self) -> dict[str, str]:
        skips = super()._skip_checks()
        if self.combine == "rank":
            why = "rank histories are per member over all keys, not per key"
            skips.update({"check_reset_slots": why, "check_import_none_resets": why})
        return skips

    def slice_caveat(self) -> str | None:
        if self.combine == "rank":
            return "rank mode ranks each member's score among recent scores of all keys: state no key's slice holds"
        for name, d in zip(self.names, self.members, strict=True):
            caveat = d.slice_caveat()
            if caveat is not None:
                return f"member {name}: {caveat}"
        return None

    def fresh(self) -> Ensemble:
        """An empty twin whose members are their own :meth:`~BaseDetector.fresh` twins."""
        twin = copy.copy(self)
        twin.members = [d.fresh() for d in self.members]
        twin.rank_buf = np.zeros_like(self.rank_buf)
        twin.rank_count = np.zeros_like(self.rank_count)
        return twin

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        """Per slot ``{"members": [member slices]}`` (in ``rank`` mode the shared rank history is not included)."""
        per_member = [d.export_slots(slots) for d in self.members]
        return [{"members": [m[i] for m in per_member]} for i in range(len(as_slots(slots)))]

    def import_slots(self, slots: Int32Array, states: Sequence[dict[str, Any] | None]) -> None:
        slots = as_slots(slots)
        split_none(slots, states)
        for j, d in enumerate(self.members):
            d.import_slots(slots, [None if s is None else s["members"][j] for s in states])

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        k = len(self.members)
        verdicts = [d.process_many(slots, ts_ms, X) for d in self.members]
        cal = np.zeros((k, m), np.float64)
        ok = np.zeros((k, m), np.bool_)
        stats: dict[str, np.ndarray] = {}
        for j, (name, v) in enumerate(zip(self.names, verdicts, strict=True)):
            cal[j] = np.where(v.ready, v.calibrated, 0.0)
            ok[j] = v.ready
            stats[f"member_{name}"] = cal[j].copy()
        if self.combine == "rank":
            pct = np.zeros((k, m), np.float64)
            ranked = np.zeros((k, m), np.bool_)
            for j in range(k):
                _rank_kernel(cal[j], ok[j], self.rank_buf, self.rank_count, j, self.rank_min_history, pct[j], ranked[j])
                stats[f"rank_{self.names[j]}"] = pct[j].copy()
            cal, ok = pct, ranked
        ready: np.ndarray = np.asarray(ok.any(axis=0), np.bool_)
        if self.combine == "mean":
            combined = np.where(ok, cal, 0.0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1)
        else:
            combined = np.where(ok, cal, 0.0).max(axis=0) if k else np.zeros(m)
        combined = np.where(ready, np.clip(combined, 0.0, 1.0), 0.0)
        flag = ready & (combined >= self.threshold)
        member_flag = np.zeros(m, np.bool_)
        member_fire = np.zeros(m, np.bool_)
        for name, v in zip(self.names, verdicts, strict=True):
            member_flag |= v.flag
            member_fire |= v.fire
            for s, col in v.stats.items():
                stats[f"{name}.{s}"] = col
        for name, v in zip(self.names, verdicts, strict=True):  # last: alerts show the leading stats first
            stats[f"score_{name}"] = v.score
        fire = flag & (member_fire | ~member_flag)
        return Verdicts(combined, combined.copy(), flag, fire, ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """The combined score and the sentence of the member that contributed most."""
        key = "rank_" if self.combine == "rank" else "member_"
        contrib = [float(stats.get(f"{key}{n}", 0.0)) for n in self.names]
        j = int(np.argmax(contrib))
        name = self.names[j]
        inner = {s[len(name) + 1 :]: v for s, v in stats.items() if s.startswith(f"{name}.")}
        inner["calibrated"] = float(stats.get(f"member_{name}", np.nan))
        parts = ", ".join(f"{n} {c:.3g}" for n, c in zip(self.names, contrib, strict=True))
        return f"ensemble ({self.combine}: {parts}); top {name}: {self.members[j].describe(inner)}"

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """One contribution per member, scored by what it put into the combination.

        The score is the member's calibrated score (its percentile in ``rank`` mode); value and expected come from
        the member's own top contribution, and ``flag`` says whether the member alone reaches the threshold.
        """
        rows = np.asarray(rows, np.int64)
        key = "rank_" if self.combine == "rank" else "member_"
        m = len(v)
        per_member = []
        for name, d in zip(self.names, self.members, strict=True):
            tops: list[list[Contribution]] = [[] for _ in rows.tolist()]
            if can_explain(d):
                inner = {s[len(name) + 1 :]: col for s, col in v.stats.items() if s.startswith(f"{name}.")}
                cal = v.stats[f"member_{name}"]
                view = Verdicts(np.full(m, np.nan), cal, np.zeros(m, bool), np.zeros(m, bool), cal > 0.0, inner)
                tops = d.explain_many(X, view, rows)
            per_member.append((name, v.stats[f"{key}{name}"], tops))
        out = []
        for j, i in enumerate(rows.tolist()):
            out.append(ranked([
                Contribution(name, float(score[i]), tops[j][0].value if tops[j] else None,
                             tops[j][0].expected if tops[j] else None, bool(score[i] >= self.threshold))
                for name, score, tops in per_member
            ]))  # fmt: skip
        return out

    def reset_slots(self, slots: Int32Array) -> None:
        for d in self.members:
            d.reset_slots(slots)

    def snapshot(self) -> dict[str, Any]:
        return {"members": [d.snapshot() for d in self.members], "rank_buf": self.rank_buf.copy(),
                "rank_count": self.rank_count.copy()}  # fmt: skip

    def _restore(self, state: dict[str, Any]) -> None:
        snaps = state["members"]
        if len(snaps) != len(self.members):
            raise ValueError(f"snapshot holds {len(snaps)} members, the ensemble has {len(self.members)}")
        self.members = [type(d).from_snapshot(d.params(), s) for d, s in zip(self.members, snaps, strict=True)]
        self.rank_buf = np.array(state["rank_buf"], np.float64).reshape(len(self.members), -1)
        self.rank_count = np.array(state["rank_count"], np.int64)

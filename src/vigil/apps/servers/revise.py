"""Late samples revise closed windows: the alert is updated, raised late, or retracted — never ignored.

A sample whose window has already been scored is normally *late* (routed to the late output). With a
revision horizon (``revise_windows`` > 0), the last windows scored are kept — per host, each metric's
mean and sample count, the votes, whether the host was alerting and whether an alert fired — and a late
sample for one of them is folded into its mean instead. The window is then scored again: every metric's
detector scores the revised mean *against the host's current baseline* (prequentially: nothing is
learned from it, the baseline having moved on since), the votes are recounted, and the outcome compared
with what was told:

* an alert fired for the window and the votes now fall short of ``k``: the alert is **retracted**;
* an alert fired and the votes changed but still reach ``k``: the alert is **revised**;
* no alert fired, the votes now reach ``k`` (holding in a neighbouring window when ``persist_windows`` >
  1), and none fired for the host within ``rearm_windows``: the alert is **raised late**.

Each outcome is an :class:`~vigil.types.Alert` carrying ``stats["revision"] = {"action": ...,
"why": ...}`` (and, for retractions and revisions, the id and severity of the alert it changes, so the
alert manager finds the same logical alert); the alert manager keeps the revision history and tells the
receivers. Second-order effects (a revised window changing its neighbours' persistence) are not chased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from vigil.dataflow.outputs import make_alert
from vigil.types import Alert, Contribution


@dataclass
class _Closed:
    """One scored window, every host in it (row-aligned arrays)."""

    slot: np.ndarray  # (n,)
    value: np.ndarray  # (n, m) means (NaN: missing)
    count: np.ndarray  # (n, m) samples
    votes: np.ndarray  # (n,)
    alerting: np.ndarray  # (n,)
    fired: np.ndarray  # (n,)
    severity: list[str]  # of the fired alert, per row ("" when none)


class WindowRevisions:
    """Keeps the last ``horizon`` scored windows and re-scores them when late samples arrive (module doc)."""

    def __init__(self, horizon: int, window_ms: int) -> None:
        self.horizon, self.window_ms = int(horizon), int(window_ms)
        self._closed: dict[int, _Closed] = {}
        self._dirty: set[tuple[int, int]] = set()
        self.revised_samples = 0
        self.outcomes = {"retracted": 0, "revised": 0, "raised_late": 0, "unchanged": 0}

    def keep(self, start_ms: np.ndarray, slot: np.ndarray, value: np.ndarray, count: np.ndarray, votes: np.ndarray,
             alerting: np.ndarray, fired: np.ndarray, severity: list[str]) -> None:  # fmt: skip
        """Remember freshly scored windows (rows of possibly several windows, oldest first)."""
        if not self.horizon:
            return
        for s in np.unique(start_ms).tolist():
            r = np.flatnonzero(start_ms == s)
            self._closed[int(s)] = _Closed(slot[r].copy(), value[r].copy(), count[r].copy(), votes[r].copy(),
                                           alerting[r].copy(), fired[r].copy(), [severity[i] for i in r])  # fmt: skip
        if self._closed:
            newest = max(self._closed)
            for s in [s for s in self._closed if s <= newest - self.horizon * self.window_ms]:
                del self._closed[s]

    def fold(self, slots: np.ndarray, metric: np.ndarray, ts_ms: np.ndarray, values: np.ndarray) -> np.ndarray:
        """Fold late samples into kept windows; return the mask of the samples taken (the rest stay late)."""
        taken = np.zeros(len(ts_ms), bool)
        if not self._closed or not len(ts_ms):
            return taken
        start = ts_ms // self.window_ms * self.window_ms
        for s in np.unique(start).tolist():
            w = self._closed.get(int(s))
            if w is None:
                continue
            rows = np.flatnonzero((start == s) & np.isfinite(values))
            pos = {int(sl): i for i, sl in enumerate(w.slot.tolist())}
            for i in rows.tolist():
                r = pos.get(int(slots[i]))
                if r is None:
                    continue  # the host had no window then: a late sample of a silent host stays late
                j = int(metric[i])
                c = w.count[r, j]
                old = w.value[r, j] if c > 0 else 0.0
                w.value[r, j] = (old * c + values[i]) / (c + 1)
                w.count[r, j] = c + 1
                taken[i] = True
                self._dirty.add((int(s), r))
        self.revised_samples += int(taken.sum())
        return taken

    def rescore(self, pipe: Any, host_name: Any) -> list[Alert]:
        """Score the windows late samples changed; return the retractions, revisions and late alerts.

        Every changed window of the batch is scored in one call per metric detector (one copy of its state
        each, whatever the number of windows); a host with several changed windows is scored in rounds, so
        no window is scored against another revised one.
        """
        cfg = pipe.config
        rate = [m in (cfg.rate_metrics or ()) for m in cfg.metrics]
        rows = []  # (start, row, slot, x, previous window, its row)
        for s, r in sorted(self._dirty):
            w = self._closed.get(s)
            if w is None:
                continue
            slot = int(w.slot[r])
            x = w.value[r].copy()
            prev = self._closed.get(s - self.window_ms)
            prev_row = _row(prev, slot)
            for j, is_rate in enumerate(rate):
                if is_rate:
                    x[j] = x[j] - prev.value[prev_row, j] if prev is not None and prev_row is not None else np.nan
            rows.append((s, r, slot, x, prev, prev_row))
        self._dirty.clear()
        if not rows:
            return []
        z = np.zeros((len(rows), len(cfg.metrics)))
        rounds = np.empty(len(rows), np.int64)  # a host's k-th changed window goes in round k
        count: dict[int, int] = {}
        for i, row in enumerate(rows):
            rounds[i] = count.get(row[2], 0)
            count[row[2]] = int(rounds[i]) + 1
        for k in np.unique(rounds).tolist():
            idx = np.flatnonzero(rounds == k)
            slots = np.array([rows[i][2] for i in idx], np.int32)
            ends = np.array([rows[i][0] + self.window_ms for i in idx], np.int64)
            for j, det in enumerate(pipe.detectors):  # prequential, on a copy: nothing is learned
                score = det.score_many(slots, ends, {"value": np.array([rows[i][3][j] for i in idx])})
                z[idx, j] = np.where(np.isfinite(score), score, 0.0)
        out: list[Alert] = []
        thresholds = np.array([det.threshold for det in pipe.detectors])
        directions = pipe._direction if hasattr(pipe, "_direction") else [0] * len(cfg.metrics)
        for i, (s, r, slot, x, prev, prev_row) in enumerate(rows):
            zs = z[i].copy()
            flags = np.abs(zs) > thresholds
            for j, direction in enumerate(directions):
                # score_many gives |z|; a one-sided metric (e.g. disk usage: only a rise votes) takes the sign of
                # its value, a rate of change whose baseline is near 0
                if direction:
                    zs[j] = abs(zs[j]) * (1.0 if x[j] >= 0 else -1.0)
                    flags[j] = flags[j] and np.sign(zs[j]) == direction
            out += self._decide(pipe, self._closed[s], r, s, slot, int(flags.sum()), zs, flags, host_name, prev,
                                prev_row)  # fmt: skip
        return out

    def _decide(self, pipe: Any, w: _Closed, r: int, s: int, slot: int, votes: int, zs: np.ndarray, flags: np.ndarray,
                host_name: Any, prev: _Closed | None, prev_row: int | None) -> list[Alert]:  # fmt: skip
        cfg = pipe.config
        host = str(host_name[slot]) if host_name is not None else f"slot-{slot}"
        old_votes, hit = int(w.votes[r]), votes >= cfg.k
        why = f"late samples revised window {s}: votes {old_votes} -> {votes} of {cfg.n_voters}"
        action = None
        if w.fired[r] and not hit:
            action, severity = "retracted", w.severity[r]
        elif w.fired[r] and votes != old_votes:
            action, severity = "revised", w.severity[r]
        elif not w.fired[r] and hit and not w.alerting[r]:
            nxt = self._closed.get(s + self.window_ms)
            nxt_row = _row(nxt, slot)
            held = (cfg.persist_windows <= 1
                    or (prev is not None and prev_row is not None and prev.votes[prev_row] >= cfg.k)
                    or (nxt is not None and nxt_row is not None and nxt.votes[nxt_row] >= cfg.k))  # fmt: skip
            span = cfg.rearm_windows * self.window_ms
            recent = any(c.fired[i] for st, c in self._closed.items() if abs(st - s) <= span
                         for i in [_row(c, slot)] if i is not None)  # fmt: skip
            if held and not recent:
                action, severity = "raised_late", "critical" if votes >= cfg.k + 1 else "warning"
        w.votes[r] = votes
        if action is None:
            self.outcomes["unchanged"] += 1
            return []
        self.outcomes[action] += 1
        if action == "raised_late":
            w.fired[r], w.alerting[r], w.severity[r] = True, True, severity
        elif action == "retracted":
            w.fired[r], w.alerting[r] = False, False
        top = sorted((m for j, m in enumerate(cfg.metrics) if flags[j]), key=lambda m: -abs(zs[cfg.metrics.index(m)]))
        metrics = {m: {"value": float(w.value[r, j]), "z": round(float(zs[j]), 3), "flag": bool(flags[j]),
                       "samples": int(w.count[r, j])} for j, m in enumerate(cfg.metrics)}  # fmt: skip
        verb = {"retracted": "retracted", "revised": "revised", "raised_late": "raised late"}[action]
        tops = ", ".join(f"{m} z={metrics[m]['z']:+.1f}" for m in top)
        msg = f"{host}: {verb} — {votes} of {cfg.n_voters} signals anomalous after late samples" + (
            f" ({tops})" if top else "")
        end = s + self.window_ms
        stats = {"window_start_ms": s, "window_end_ms": end, "k": cfg.k, "n": cfg.n_voters, "votes": votes,
                 "metrics": metrics, "revision": {"action": action, "why": why, "votes_before": old_votes}}
        contributions = sorted((Contribution(m, c["z"], c["value"], flag=bool(c["flag"])) for m, c in metrics.items()),
                               key=lambda c: -abs(c.score))  # fmt: skip
        # the same id as the window's first alert: a revision names the alert it changes
        pipeline, step = pipe.alert_ns
        return [make_alert(pipeline, step, host, str(s), detector="k_of_n", score=float(votes), threshold=float(cfg.k),
                           event_ts_ms=end, detect_ts_ms=end, severity=severity, message=msg, stats=stats,
                           contributions=contributions)]  # fmt: skip

    # -- per-key slices (Flink keyed state) -----------------------------------------------------------

    def export_slots(self, slots: np.ndarray) -> list[list[list[Any]]]:
        """Per host slot, its rows in the kept windows: ``[start, value, count, votes, alerting, fired, severity]``.

        Taken between two watermark advances (nothing left to re-score).
        """
        out: list[list[list[Any]]] = []
        for k in np.asarray(slots, np.int64).tolist():
            rows = []
            for s, w in sorted(self._closed.items()):
                r = _row(w, k)
                if r is not None:
                    rows.append([s, w.value[r].copy(), w.count[r].copy(), int(w.votes[r]), bool(w.alerting[r]),
                                 bool(w.fired[r]), w.severity[r]])  # fmt: skip
            out.append(rows)
        return out

    def import_slots(self, slots: np.ndarray, states: list[list[list[Any]] | None]) -> None:
        """Replace the rows of ``slots`` in the kept windows with :meth:`export_slots` output (``None``: none)."""
        slots = np.asarray(slots, np.int64)
        self.drop_slots(slots)
        for k, rows in zip(slots.tolist(), states, strict=True):
            for s, value, count, votes, alerting, fired, severity in rows or ():
                w = self._closed.get(int(s))
                if w is None:
                    m = len(value)
                    w = self._closed[int(s)] = _Closed(np.empty(0, np.int64), np.empty((0, m)),
                                                       np.empty((0, m), np.int64), np.empty(0, np.int64),
                                                       np.empty(0, bool), np.empty(0, bool), [])  # fmt: skip
                w.slot = np.append(w.slot, k)
                w.value = np.vstack([w.value, np.asarray(value, np.float64)[None]])
                w.count = np.vstack([w.count, np.asarray(count, np.int64)[None]])
                w.votes = np.append(w.votes, votes)
                w.alerting = np.append(w.alerting, alerting)
                w.fired = np.append(w.fired, fired)
                w.severity = [*w.severity, severity]

    def drop_slots(self, slots: np.ndarray) -> None:
        """Forget the rows of these hosts in every kept window (their slots may be reused)."""
        slots = np.asarray(slots, np.int64)
        if not len(slots):
            return
        for s, w in list(self._closed.items()):
            keep = ~np.isin(w.slot, slots)
            if keep.all():
                continue
            new_row = np.cumsum(keep) - 1
            self._dirty = {(ds, int(new_row[r])) if ds == s else (ds, r)
                           for ds, r in self._dirty if ds != s or keep[r]}  # fmt: skip
            self._closed[s] = _Closed(w.slot[keep], w.value[keep], w.count[keep], w.votes[keep], w.alerting[keep],
                                      w.fired[keep], [x for x, k in zip(w.severity, keep.tolist(), strict=True) if k])

    def snapshot(self) -> dict[str, Any]:
        """Plain data."""
        return {"closed": [[s, c.slot, c.value, c.count, c.votes, c.alerting, c.fired, c.severity]
                           for s, c in sorted(self._closed.items())], "revised_samples": self.revised_samples,
                "outcomes": dict(self.outcomes)}  # fmt: skip

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output."""
        self._closed = {int(s): _Closed(np.array(a), np.array(b), np.array(c), np.array(d), np.array(e, bool),
                                        np.array(f, bool), list(g)) for s, a, b, c, d, e, f, g in state["closed"]}
        self.revised_samples = int(state["revised_samples"])
        self.outcomes = dict(state["outcomes"])
        self._dirty = set()


def _row(w: _Closed | None, slot: int) -> int | None:
    if w is None:
        return None
    hit = np.flatnonzero(w.slot == slot)
    return int(hit[0]) if len(hit) else None

"""Score a run against the generator's labels: precision, recall (overall and per pattern), latency.

Event level: a payment counts as flagged when any detector flagged it, or when it lies inside the
window of a velocity alert of its user (the alert covers the burst), or inside the span of a pattern
match of its user (the alert covers every event of the matched sequence). Precision = flagged fraud /
flagged; recall = flagged fraud / fraud. For the legitimate-but-odd patterns the table gives the
share flagged (false positives), so one sees what the detectors get wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class LabelTap:
    """An engine tap that keeps, per on-time event, its key slot, label, pattern and verdicts.

    Only numeric arrays are kept (patterns as small integer codes): holding a million Python
    strings would make every full garbage collection walk them, which shows up as latency spikes.
    """

    velocity_step: str = "velocity"
    pattern_step: str = "test_then_cashout"
    parts: list[dict[str, np.ndarray]] = field(default_factory=list)
    codes: dict[str, int] = field(default_factory=dict)

    def __call__(self, batch: Any, keys: np.ndarray, verdicts: dict[str, Any]) -> None:
        """Keep this batch's rows."""
        flag = np.zeros(len(batch), bool)
        for v in verdicts.values():
            flag |= v.flag
        vel = verdicts.get(self.velocity_step)
        pat = verdicts.get(self.pattern_step)
        span = np.full(len(batch), -1, np.int64)
        if pat is not None and "span_ms" in pat.stats:
            span = np.where(pat.fire, np.asarray(pat.stats["span_ms"], np.int64), -1)
        codes = self.codes
        pattern = np.fromiter((codes.setdefault(p, len(codes)) for p in batch.extra["pattern"]), np.int16, len(batch))
        self.parts.append({
            "key": batch.slots, "ts": batch.ts_ms, "label": batch.extra["label"].astype(np.int8),
            "pattern": pattern, "flag": flag,
            "fire": vel.fire if vel is not None else np.zeros(len(batch), bool),
            "span": span,
        })  # fmt: skip

    def columns(self) -> dict[str, np.ndarray]:
        """All collected rows (``pattern`` decoded back to names)."""
        if not self.parts:
            return {k: np.empty(0) for k in ("key", "ts", "label", "pattern", "flag", "fire", "span")}
        cols = {k: np.concatenate([p[k] for p in self.parts]) for k in self.parts[0]}
        names = np.empty(len(self.codes), object)
        for name, code in self.codes.items():
            names[code] = name
        cols["pattern"] = names[cols["pattern"]]
        return cols


def covered(cols: dict[str, np.ndarray], window_ms: int) -> np.ndarray:
    """Flags widened by velocity alerts and pattern matches.

    A velocity alert covers every event of its user within ``window_ms`` up to it; a pattern match covers
    every event of its user within the match's span up to it.
    """
    flag = cols["flag"].copy()
    span = cols.get("span", np.full(len(flag), -1, np.int64))
    fires = np.flatnonzero(cols["fire"] | (span >= 0))
    if not len(fires):
        return flag
    keys = cols["key"]
    order = np.lexsort((cols["ts"], keys))
    k_sorted, t_sorted = keys[order], cols["ts"][order]
    for i in fires.tolist():
        k, t = keys[i], cols["ts"][i]
        lo = np.searchsorted(k_sorted, k, "left")
        hi = np.searchsorted(k_sorted, k, "right")
        if cols["fire"][i]:
            a = lo + np.searchsorted(t_sorted[lo:hi], t - window_ms, "right")
        else:
            a = lo + np.searchsorted(t_sorted[lo:hi], t - span[i], "left")
        b = lo + np.searchsorted(t_sorted[lo:hi], t, "right")
        flag[order[a:b]] = True
    return flag


def score_run(cols: dict[str, np.ndarray], window_ms: int = 60_000) -> dict[str, Any]:
    """Precision, recall and the per-pattern table."""
    flag = covered(cols, window_ms)
    label = cols["label"] == 1
    tp = int((flag & label).sum())
    fp = int((flag & ~label).sum())
    pos = int(label.sum())
    by_pattern: dict[str, Any] = {}
    for pat in sorted(set(cols["pattern"].tolist())):
        m = cols["pattern"] == pat
        n = int(m.sum())
        hit = int((flag & m).sum())
        fraud = bool(label[m].any())
        entry: dict[str, Any] = {"events": n, "flagged": hit, "fraud": fraud}
        entry["recall" if fraud else "flagged_share"] = round(hit / n, 4) if n else None
        by_pattern[pat] = entry
    return {
        "precision": round(tp / (tp + fp), 4) if tp + fp else None,
        "recall": round(tp / pos, 4) if pos else None,
        "flagged_events": tp + fp,
        "true_positives": tp,
        "false_positives": fp,
        "fraud_events": pos,
        "by_pattern": by_pattern,
    }

"""The k-of-n aggregator: a host alerts only when several signals agree (see the package doc)."""

from __future__ import annotations

from typing import Any

import numpy as np


class KOfN:
    """Per host and window: alerting when at least ``k`` of ``n`` voters flag; fire once per episode.

    Args:
        k: votes needed.
        n: number of voters (columns of ``votes``).
        rearm_windows: a host fires again only after this many windows without alerting.
        window_ms: window size (to count windows between alerting rows).
        persist_windows: the vote must hold in this many consecutive windows of the host before the host is
            alerting (2 filters chance coincidences of two unrelated one-window flags; costs one window of delay).

    Examples:
        >>> agg = KOfN(k=2, n=3, rearm_windows=2, window_ms=10)
        >>> votes = np.array([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0], [1, 1, 0]], bool)
        >>> alerting, fire = agg.process(np.zeros(5, np.int32), np.arange(5) * 10, votes)
        >>> alerting.tolist(), fire.tolist()
        ([True, False, True, False, True], [True, False, False, False, False])
    """

    def __init__(self, k: int, n: int, *, rearm_windows: int = 6, window_ms: int = 10_000,
                 persist_windows: int = 1) -> None:  # fmt: skip
        if not 1 <= k <= n:
            raise ValueError(f"`k` must be in 1..n ({n}); got {k!r}")
        if rearm_windows < 1 or persist_windows < 1:
            raise ValueError(f"`rearm_windows` and `persist_windows` must be >= 1; got {rearm_windows!r}, "
                             f"{persist_windows!r}")  # fmt: skip
        self.k, self.n = int(k), int(n)
        self.window_ms = int(window_ms)
        self.rearm_ms = int(rearm_windows) * int(window_ms)
        self.persist = int(persist_windows)
        never = np.iinfo(np.int64).min // 2
        self.last_alert_ms = np.full(64, never, np.int64)
        self.last_hit_ms = np.full(64, never, np.int64)
        self.run = np.zeros(64, np.int64)

    def snapshot(self) -> dict[str, Any]:
        """Plain data: per host, the last alerting and voting windows and the run of consecutive votes."""
        return {"last_alert_ms": self.last_alert_ms, "last_hit_ms": self.last_hit_ms, "run": self.run}

    def restore(self, state: dict[str, Any]) -> None:
        """Load :meth:`snapshot` output."""
        for n in ("last_alert_ms", "last_hit_ms", "run"):
            setattr(self, n, np.array(state[n], np.int64))

    def reset_slots(self, slots: np.ndarray) -> None:
        """Forget these hosts (their slots may be reused)."""
        s = np.asarray(slots, np.int64)
        s = s[s < self.run.shape[0]]
        never = np.iinfo(np.int64).min // 2
        self.last_alert_ms[s], self.last_hit_ms[s], self.run[s] = never, never, 0

    def export_slots(self, slots: np.ndarray) -> list[dict[str, Any]]:
        """Per host slot: its last alerting and voting windows and its run of votes."""
        never = np.iinfo(np.int64).min // 2
        cap = self.run.shape[0]
        return [{"last_alert_ms": int(self.last_alert_ms[k]), "last_hit_ms": int(self.last_hit_ms[k]),
                 "run": int(self.run[k])} if k < cap else {"last_alert_ms": never, "last_hit_ms": never, "run": 0}
                for k in np.asarray(slots, np.int64).tolist()]  # fmt: skip

    def import_slots(self, slots: np.ndarray, states: list[dict[str, Any] | None]) -> None:
        """Load :meth:`export_slots` output into ``slots`` (``None``: a host never seen)."""
        slots = np.asarray(slots, np.int64)
        self._grow(int(slots.max()) + 1 if len(slots) else 0)
        self.reset_slots(slots)
        for k, st in zip(slots.tolist(), states, strict=True):
            if st is not None:
                self.last_alert_ms[k], self.last_hit_ms[k] = st["last_alert_ms"], st["last_hit_ms"]
                self.run[k] = st["run"]

    def _grow(self, top: int) -> None:
        if top <= self.last_alert_ms.shape[0]:
            return
        cap = max(2 * self.last_alert_ms.shape[0], top)
        for name, fill in (("last_alert_ms", np.iinfo(np.int64).min // 2),
                           ("last_hit_ms", np.iinfo(np.int64).min // 2), ("run", 0)):  # fmt: skip
            old = getattr(self, name)
            grown = np.full(cap, fill, np.int64)
            grown[: old.shape[0]] = old
            setattr(self, name, grown)

    def process(self, slots: np.ndarray, start_ms: np.ndarray, votes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(alerting, fire)`` per row; rows sorted by ``(start_ms, slot)`` (one row per host and window)."""
        if votes.shape[1:] != (self.n,):
            raise ValueError(f"`votes` must have {self.n} columns; got shape {votes.shape}")
        slots = np.asarray(slots, np.int64)
        if len(slots):
            self._grow(int(slots.max()) + 1)
        hit = votes.sum(axis=1) >= self.k
        alerting = np.zeros(len(slots), bool)
        fire = np.zeros(len(slots), bool)
        if not len(slots):
            return alerting, fire
        bounds = np.flatnonzero(np.r_[True, start_ms[1:] != start_ms[:-1], True])
        for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
            idx = a + np.flatnonzero(hit[a:b])
            if not len(idx):
                continue
            s = slots[idx]
            t = np.asarray(start_ms[idx], np.int64)
            self.run[s] = np.where(self.last_hit_ms[s] == t - self.window_ms, self.run[s] + 1, 1)
            self.last_hit_ms[s] = t
            ok = self.run[s] >= self.persist
            idx, s, t = idx[ok], s[ok], t[ok]
            alerting[idx] = True
            fire[idx] = t - self.last_alert_ms[s] > self.rearm_ms
            self.last_alert_ms[s] = t
        return alerting, fire

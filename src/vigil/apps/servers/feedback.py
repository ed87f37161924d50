"""The server pipeline's side of the feedback loop: its base bars, and the bars applied before the k-of-n vote.

The feedback loop itself (:mod:`vigil.feedback`) is generic: it learns per-key, per-feature bars from labels
on *vote alerts* and re-counts their votes. Here is what only the server pipeline knows: the base bar of each
metric's voter (:func:`server_base`, what ``max_factor`` caps against), and how to apply learned bars to every
window's per-metric votes before they are counted (:func:`revote`, :func:`refire`), as an in-pipeline
integration would.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from vigil.apps.servers.pipeline import ServerConfig, WindowVerdicts
    from vigil.feedback.suppression import Suppressions

KOFN = "k_of_n"
"""The detector name of the server pipeline's alerts (their ``alertname``)."""


def server_base(config: ServerConfig) -> dict[str, dict[str, float]]:
    """Base thresholds of the server pipeline's per-metric voters: ``{"k_of_n": {metric: threshold}}``.

    Examples:
        >>> from vigil.apps.servers import ServerConfig
        >>> base = server_base(ServerConfig(threshold=4.5, per_metric={"cpu": {"threshold": 6.0}}))["k_of_n"]
        >>> base["cpu"], base["mem"]
        (6.0, 4.5)
    """
    per = config.per_metric or {}
    return {KOFN: {m: float(per.get(m, {}).get("threshold", config.threshold)) for m in config.metrics}}


def revote(suppressions: Suppressions, windows: WindowVerdicts, config: ServerConfig, host_names: Any, *,
           from_ms: int | None = None) -> np.ndarray:  # fmt: skip
    """The server pipeline's vote matrix with the bars applied to every window from ``from_ms`` on.

    A metric's flag stays only where its ``|z|`` is above its host's bar (in force at the window's end),
    unless another vote of the window is far beyond its own bar (as in :meth:`~vigil.feedback.Suppressions.check`);
    the model's column
    (``config.model_votes``) is unchanged. Feed the result to a fresh :class:`~vigil.apps.servers.KOfN`
    (:func:`refire`) to get the alerts the adjusted pipeline fires.
    """
    w = windows
    votes = np.array(w.votes(config.model_votes), bool, copy=True)
    n, m = len(w), len(config.metrics)
    col = {name: j for j, name in enumerate(config.metrics)}
    slot = np.asarray(w.joined.slot, np.int64)
    end = np.asarray(w.joined.end_ms, np.int64)
    active = end >= (np.iinfo(np.int64).min if from_ms is None else int(from_ms))
    names = {(str(host_names[s]) if host_names is not None else f"slot-{s}"): s for s in np.unique(slot).tolist()}
    bars = np.full((n, m), np.nan)
    for e in suppressions.entries.values():
        if e.detector == KOFN and e.feature in col and e.key in names:
            rows = active & (slot == names[e.key]) & (end < e.expires_ms)
            bars[rows, col[e.feature]] = e.bar
    az = np.abs(w.z)
    flag = votes[:, :m]
    with np.errstate(invalid="ignore"):
        under = flag & (az <= bars)
    guard = float(suppressions.meta.get("params", {}).get("max_factor", 0.0))
    if guard > 0:
        base = suppressions.meta.get("base", {}).get(KOFN, {})
        ref = np.where(np.isnan(bars), np.array([base.get(x, np.inf) for x in config.metrics], float), bars)
        far = (flag & ~under & (az >= guard * ref)).any(axis=1)
        under[far] = False
    flag[under] = False
    return votes

def refire(suppressions: Suppressions, windows: WindowVerdicts, config: ServerConfig, host_names: Any, *,
           from_ms: int | None = None) -> np.ndarray:  # fmt: skip
    """Fired rows of a fresh k-of-n aggregator over :func:`revote` (row-aligned with ``windows``)."""
    from vigil.apps.servers import KOfN

    agg = KOfN(config.k, config.n_voters, rearm_windows=config.rearm_windows, window_ms=config.window_ms,
               persist_windows=config.persist_windows)  # fmt: skip
    votes = revote(suppressions, windows, config, host_names, from_ms=from_ms)
    return agg.process(windows.joined.slot, windows.joined.start_ms, votes)[1]

"""Retraining the server pipeline's offline model with operator labels; promoted only when it does better.

:func:`retrain` refits the global Isolation Forest (the model over the per-metric z-vectors, see
:func:`~vigil.apps.servers.train_global_model`) on

* the original training windows (:func:`window_rows` over the training prefix, as ``train_global_model``
  selects them), **minus** every window labelled true positive (an incident is not normal), **plus**
* every window labelled false positive, as normal. A few labelled windows among tens of thousands would not
  move a forest that subsamples 256 rows per tree, and a small cluster far from the bulk is still isolated
  in a few splits (it stays "anomalous"), so each is added ``fp_weight x n / n_fp`` times with a small jitter
  (``jitter`` z units): the labels carry about ``fp_weight`` of the training mass (10 % by default: at 2 %
  the labelled region kept its short isolation paths and the refit ranked worse, at 5-30 % it ranked the
  labelled pattern as normal on the simulator and on synthetic data), and they say "this region is normal",
  not "this exact point".

It then scores a **held-back labelled slice** (windows the refit never saw) with the promoted model and the
new one and compares their **average precision** (how well the model's score ranks the anomalous windows
above the normal ones, over every cut), and reports each model's precision at the recall the promoted model
has at its serving threshold. The new version is registered with that evaluation in its metadata and promoted
only when its average precision is strictly better (by more than ``min_gain``); ``dry_run`` evaluates without
registering. Rolling back is the registry's own (``vigil models rollback``).

Examples:
    >>> import tempfile
    >>> from vigil.detectors.iforest import fit_isolation_forest
    >>> from vigil.models.registry import ModelRegistry
    >>> rng = np.random.default_rng(0)
    >>> normal = WindowRows.of(rng.standard_normal((2000, 2)), key="h1")
    >>> reg = ModelRegistry(tempfile.mkdtemp())
    >>> reg.promote("m", reg.register("m", fit_isolation_forest(normal.X, ["a", "b"], n_estimators=20)), "first")
    >>> # the operator says (4, 4) is normal on this fleet (a job), (-4, 4) is an incident
    >>> fp = WindowRows.of(np.array([[4.0, 4.0]]), key="h1", start_ms=[10], y=[0])
    >>> hold = WindowRows.of(np.array([[4.1, 3.9], [-4.0, 4.1], [0.1, 0.2], [3.9, 4.2], [-3.8, 3.9]]),
    ...                      key="h2", y=[0, 1, 0, 0, 1])
    >>> r = retrain(reg, "m", base=normal, labelled=fp, holdout=hold, n_estimators=20, who="ana", why="job")
    >>> r.promoted, r.candidate, r.current_eval["average_precision"] < r.candidate_eval["average_precision"]
    (True, 'v2', True)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from vigil.errors import ConfigError

if TYPE_CHECKING:
    from vigil.apps.servers import ServerConfig, ServerRun
    from vigil.feedback.suppression import Label
    from vigil.models.registry import ModelRegistry

__all__ = ["RetrainReport", "WindowRows", "evaluate", "label_by_incidents", "retrain", "rows_from_labels",
           "window_rows"]  # fmt: skip


@dataclass
class WindowRows:
    """Model rows of host windows: ``key`` (host), ``start_ms``, features ``X`` and optional labels ``y``.

    ``y`` is 1 for an anomalous window (true positive, incident), 0 for a normal one.
    """

    key: np.ndarray
    start_ms: np.ndarray
    X: np.ndarray
    y: np.ndarray | None = None

    @classmethod
    def of(cls, X: Any, *, key: Any = "", start_ms: Any = None, y: Any = None) -> WindowRows:
        """Rows from arrays (a scalar ``key`` is every row's; ``start_ms`` defaults to the row number)."""
        X = np.asarray(X, np.float64)
        n = X.shape[0]
        keys = np.full(n, key, object) if isinstance(key, str) else np.asarray(key, object)
        start = np.arange(n, dtype=np.int64) if start_ms is None else np.asarray(start_ms, np.int64)
        return cls(keys, start, X, None if y is None else np.asarray(y, np.int8))

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def take(self, mask: np.ndarray) -> WindowRows:
        """The rows where ``mask`` (bool or indices)."""
        return WindowRows(self.key[mask], self.start_ms[mask], self.X[mask], None if self.y is None else self.y[mask])

    def ids(self) -> np.ndarray:
        """``"host@start_ms"`` per row, to match windows between sets."""
        return np.char.add(np.char.add(self.key.astype(str), "@"), self.start_ms.astype(str))


def window_rows(run: ServerRun, config: ServerConfig, *, until_ms: int | None = None,
                from_ms: int | None = None) -> WindowRows:  # fmt: skip
    """Every window of a run whose per-metric detectors were all ready, as model rows (z clipped to +-z_clip).

    ``from_ms`` / ``until_ms`` keep windows starting in ``[from_ms, until_ms)``.
    """
    w, j = run.windows, run.windows.joined
    keep = w.ready.all(axis=1)
    if from_ms is not None:
        keep &= j.start_ms >= from_ms
    if until_ms is not None:
        keep &= j.start_ms < until_ms
    idx = np.flatnonzero(keep)
    names = run.host_names
    slot = np.asarray(j.slot[idx], np.int64)
    keys = names[slot] if len(names) else np.array([f"slot-{s}" for s in slot.tolist()], object)
    X = np.clip(w.z[idx], -config.z_clip, config.z_clip)
    return WindowRows(np.asarray(keys, object), np.asarray(j.start_ms[idx], np.int64), X)


def rows_from_labels(labels: list[Label], config: ServerConfig) -> WindowRows:
    """The labelled ``k_of_n`` alerts' windows as model rows: their z-vectors (from the alerts' own stats).

    ``y`` is 1 for a true positive, 0 for a false positive; alerts of other detectors are left out.
    """
    keys, starts, xs, ys = [], [], [], []
    for x in labels:
        a = x.alert
        metrics = a.stats.get("metrics") if isinstance(a.stats, dict) else None
        if a.detector != "k_of_n" or not isinstance(metrics, dict) or "window_start_ms" not in a.stats:
            continue
        z = [float(metrics.get(m, {}).get("z", np.nan)) for m in config.metrics]
        keys.append(a.key)
        starts.append(int(a.stats["window_start_ms"]))
        xs.append(np.clip(z, -config.z_clip, config.z_clip))
        ys.append(1 if x.label == "true_positive" else 0)
    X = np.array(xs, np.float64).reshape(len(xs), len(config.metrics))
    return WindowRows(np.array(keys, object), np.array(starts, np.int64), X, np.array(ys, np.int8))


def label_by_incidents(rows: WindowRows, incidents: dict[str, Any], *, window_ms: int,
                       grace_ms: int = 0) -> np.ndarray:  # fmt: skip
    """``y`` per row: 1 when the window overlaps ``[start_ms, end_ms + grace_ms]`` of an incident of its host.

    ``incidents`` has ``host``, ``start_ms`` and ``end_ms`` columns (e.g. the incident table of
    ``vigil generate fleet --labels``).
    """
    y = np.zeros(len(rows), np.int8)
    hosts = np.asarray(incidents["host"]).astype(str)
    end = rows.start_ms + int(window_ms)
    keys = rows.key.astype(str)
    for h, a, b in zip(hosts.tolist(), np.asarray(incidents["start_ms"]).tolist(),
                       np.asarray(incidents["end_ms"]).tolist(), strict=True):  # fmt: skip
        y[(keys == h) & (end > a) & (rows.start_ms <= b + grace_ms)] = 1
    return y


def evaluate(artifact: dict[str, Any], holdout: WindowRows, *, threshold: float = 0.999,
             at_recall: float | None = None) -> dict[str, Any]:  # fmt: skip
    """A model judged on labelled rows.

    Returns the average precision (of the raw score), precision and recall at ``threshold`` (on the
    calibrated score, as served) and, with ``at_recall``, the precision at the highest cut of the raw score
    that reaches that recall.

    Examples:
        >>> from vigil.detectors.iforest import fit_isolation_forest
        >>> art = fit_isolation_forest(np.random.default_rng(1).standard_normal((500, 1)), ["a"], n_estimators=20)
        >>> e = evaluate(art, WindowRows.of([[0.0], [5.0], [0.2], [-6.0]], y=[0, 1, 0, 1]))
        >>> e["average_precision"], e["positives"]
        (1.0, 2)
    """
    from sklearn.metrics import average_precision_score

    from vigil.detectors.iforest import IsolationForestDetector

    if holdout.y is None or len(holdout) == 0:
        raise ConfigError("needs labelled rows", field="holdout", value=len(holdout))
    pos = int(holdout.y.sum())
    if pos == 0 or pos == len(holdout):
        raise ConfigError("needs both anomalous and normal rows", field="holdout",
                          value={"rows": len(holdout), "positives": pos},
                          hint="label more alerts, or give an incident table")  # fmt: skip
    det = IsolationForestDetector(artifact, threshold=threshold)
    feats = list(artifact["features"])
    n = len(holdout)
    v = det.process_many(np.zeros(n, np.int32), np.zeros(n, np.int64), {f: holdout.X[:, j] for j, f in
                                                                         enumerate(feats)})  # fmt: skip
    y = holdout.y.astype(bool)
    flag = np.asarray(v.flag, bool)
    tp = int((flag & y).sum())
    out: dict[str, Any] = {
        "rows": n, "positives": pos,
        "average_precision": round(float(average_precision_score(y, v.score)), 4),
        "precision_at_threshold": round(tp / int(flag.sum()), 4) if flag.any() else None,
        "recall_at_threshold": round(tp / pos, 4), "threshold": threshold,
    }  # fmt: skip
    if at_recall is not None:
        out["at_recall"] = round(float(at_recall), 4)
        out["precision_at_recall"] = _precision_at_recall(np.asarray(v.score), y, float(at_recall))
    return out


def _precision_at_recall(score: np.ndarray, y: np.ndarray, recall: float) -> float | None:
    """Precision at the highest score cut whose recall reaches ``recall`` (ties cut together)."""
    if recall <= 0:
        return None
    order = np.argsort(-score, kind="stable")
    s, hits = score[order], np.cumsum(y[order])
    last = np.r_[s[1:] != s[:-1], True]  # the end of each run of tied scores
    k = np.flatnonzero(last & (hits >= recall * y.sum() - 1e-9))
    return round(float(hits[k[0]] / (k[0] + 1)), 4) if len(k) else None


@dataclass
class RetrainReport:
    """What :func:`retrain` did and why."""

    name: str
    current: str | None
    candidate: str | None
    promoted: bool
    decision: str
    current_eval: dict[str, Any] | None
    candidate_eval: dict[str, Any]
    training: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    control_eval: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "current": self.current, "candidate": self.candidate, "promoted": self.promoted,
                "decision": self.decision, "current_eval": self.current_eval, "candidate_eval": self.candidate_eval,
                "control_eval": self.control_eval, "training": self.training, "dry_run": self.dry_run}  # fmt: skip


def retrain(registry: ModelRegistry, name: str, *, base: WindowRows, labelled: WindowRows, holdout: WindowRows,
            features: list[str] | None = None, fp_weight: float = 0.1, jitter: float = 0.25,
            n_estimators: int = 100, seed: int = 42, threshold: float = 0.999, min_gain: float = 0.0,
            who: str = "", why: str = "retrained with feedback", dry_run: bool = False,
            control: bool = False) -> RetrainReport:  # fmt: skip
    """Refit with the labels, evaluate against the promoted version, register, promote only if better.

    Args:
        registry: the model registry.
        name: the model's name in it.
        base: the original training rows (normal windows).
        labelled: labelled windows (``y``: 1 true positive, 0 false positive) to learn from; none of them may
            be in ``holdout``.
        holdout: the held-back labelled slice both models are judged on.
        features: the model's features (default: the promoted model's; required when nothing is promoted).
        fp_weight: the share of the training mass the false-positive windows carry together.
        jitter: standard deviation of the jitter around each added copy of a false-positive window.
        n_estimators: trees of the new forest.
        seed: the new forest's seed (and the jitter's).
        threshold: the serving threshold on the calibrated score (for recall/precision at threshold).
        min_gain: the new average precision must beat the promoted one's by more than this.
        who: recorded in the registry history on promotion.
        why: the promotion's reason (the evaluation is appended).
        dry_run: evaluate only; register and promote nothing.
        control: also refit on the same rows *without* the labels (same trees and seed) and report its
            evaluation: a forest's average precision moves by a few points from one fit to the next, so the
            control tells the labels' effect from the refit's noise (it does not enter the decision).
    """
    from vigil.detectors.iforest import fit_isolation_forest
    from vigil.models.registry import ModelNotFoundError

    if labelled.y is None:
        raise ConfigError("needs y (1 true positive, 0 false positive)", field="labelled", value=None)
    if not 0.0 <= fp_weight < 0.5:
        raise ConfigError("must be in [0, 0.5)", field="fp_weight", value=fp_weight, hint="e.g. 0.1")
    overlap = np.isin(labelled.ids(), holdout.ids())
    if overlap.any():
        raise ConfigError("share windows with the held-back slice (it would judge on what it learned)",
                          field="labelled", value=labelled.ids()[overlap][:3].tolist())  # fmt: skip
    try:
        current: str | None = registry.promoted(name)[0]
        cur_art: dict[str, Any] | None = registry.load(name, current)
    except ModelNotFoundError:
        current, cur_art = None, None
    feats = list(features or (cur_art["features"] if cur_art else []))
    if not feats:
        raise ConfigError("is required when nothing is promoted", field="features", value=features)
    tp, fp = labelled.take(labelled.y == 1), labelled.take(labelled.y == 0)
    keep = ~np.isin(base.ids(), tp.ids())
    X = base.X[keep]
    rng = np.random.default_rng(seed)
    copies = max(1, int(round(fp_weight * len(X) / max(len(fp), 1)))) if len(fp) else 0
    if copies:
        extra = np.repeat(fp.X, copies, axis=0)
        extra[len(fp) :] += rng.normal(0.0, jitter, extra[len(fp) :].shape)  # the originals stay exact
        X = np.vstack([X, extra])
    artifact = fit_isolation_forest(X, feats, n_estimators=n_estimators, seed=seed)
    cur_eval = evaluate(cur_art, holdout, threshold=threshold) if cur_art else None
    at = cur_eval["recall_at_threshold"] if cur_eval else None
    if cur_art is not None and cur_eval is not None:
        cur_eval = evaluate(cur_art, holdout, threshold=threshold, at_recall=at)
    new_eval = evaluate(artifact, holdout, threshold=threshold, at_recall=at)
    ctrl_eval = None
    if control:
        plain = fit_isolation_forest(base.X, feats, n_estimators=n_estimators, seed=seed)
        ctrl_eval = evaluate(plain, holdout, threshold=threshold, at_recall=at)
    training = {"base_rows": len(base), "tp_windows_removed": int((~keep).sum()), "fp_windows": len(fp),
                "fp_copies": copies, "rows": int(X.shape[0]), "fp_weight": fp_weight, "jitter": jitter,
                "n_estimators": n_estimators, "seed": seed}  # fmt: skip
    if cur_eval is None:
        better = False
        decision = "nothing is promoted to compare with: " + ("would register it" if dry_run else "registered") + (
            ", promote it by hand")  # fmt: skip
    else:
        gain = new_eval["average_precision"] - cur_eval["average_precision"]
        better = gain > min_gain
        verdict = (("better, would promote" if dry_run else "better, promoted") if better
                   else f"not better (needs > {min_gain:+g}), kept {current}")  # fmt: skip
        decision = (f"average precision {new_eval['average_precision']:.4f} vs {cur_eval['average_precision']:.4f} "
                    f"({current}) on {len(holdout)} held-back windows: {verdict}")  # fmt: skip
    if dry_run:
        return RetrainReport(name, current, None, False, "dry run: " + decision, cur_eval, new_eval, training,
                             dry_run=True, control_eval=ctrl_eval)  # fmt: skip
    meta = {"algorithm": "isolation_forest", "retrained_from": current, "features": feats, "training": training,
            "n_rows": int(X.shape[0]), "evaluation": {"metric": "average_precision", "current": cur_eval,
                                                      "candidate": new_eval, "control": ctrl_eval,
                                                      "min_gain": min_gain, "decision": decision}}  # fmt: skip
    version = registry.register(name, artifact, meta)
    if better:
        registry.promote(name, version, reason=f"{why}: {decision}", who=who or None)
    return RetrainReport(name, current, version, better, decision, cur_eval, new_eval, training,
                         control_eval=ctrl_eval)  # fmt: skip

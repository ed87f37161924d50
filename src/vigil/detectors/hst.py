"""Half-Space Trees (Tan, Ting & Liu 2011), River's ``anomaly.HalfSpaceTrees`` vectorized over key slots.

A half-space tree is a complete binary tree of random axis-parallel splits over the feature space,
built before any data is seen: each internal node picks a feature (weighted by the width of its
current range) and a split point uniformly inside the middle 70 % of that range (River's padding of
0.15), then its children halve the range. Every node counts the events that reach it in two mass
profiles: ``l`` counts the *latest* window (being filled) and ``r`` the *reference* window (the last
complete one). After every ``window_size`` learned events, ``r ← l`` and ``l ← 0``.

The score of an event walks each tree from the root, adding ``r(node) · 2**depth``, and stops at the
first node whose reference mass is below ``0.1 · window_size`` (or at the leaf, depth ``height``).
Dense regions keep a large mass deep down the tree; an isolated point leaves the mass early. Like
River's ``score_one``, the raw score is ``1 - S / (n_trees · window_size · (2**(height+1) - 1))``:
higher is more anomalous, in [0, 1].

How this matches River (0.26):

* **Same trees, same scores.** The trees are built by the same recursion with the same calls to
  ``random.Random(seed)`` (``choices`` weighted by the range widths, then ``uniform``), over the
  fields in sorted order like River's ``sorted(x)``. With ``per_key=False`` the verdicts' ``score``
  is bit-for-bit River's: with ``limits`` given, ``HalfSpaceTrees(limits=..., seed=...)``; with
  ``limits=None`` and ``margin=0``, River's documented pipeline ``MinMaxScaler() | HalfSpaceTrees(seed=...)``
  (each field scaled by its running min and max before the trees, which then split the unit range).
  ``tests/test_hst.py`` checks both.
* **Learned limits leave a margin** (``margin``, default 1, our addition). Min/max scaling maps the
  values seen so far onto the whole unit range, so a new extreme lands in the outermost cell
  together with the previous extremes and looks only mildly odd (per key on the shared workload:
  ROC AUC 0.84 on ready rows). With ``margin=m`` the learned range is mapped onto
  ``[m/(1+2m), (1+m)/(1+2m)]`` (the middle third for m=1), so the trees also split the space
  beyond it; the AUC rises to 0.997. ``margin=0`` is River's scaling.
* **Per key** (``per_key=True``, the default): the tree structure is shared by all keys and each key
  slot has its own masses, window counter and (with ``limits=None``) its own running min/max: one
  River model per key, in one array. Memory per key is ``2 · n_trees · (2**(height+1) - 1)`` counters
  (uint16 when ``window_size`` < 65,536): 20 KB at River's defaults, which suit one global model;
  per key, a smaller window (a key becomes ready after ``window_size`` events) and height fit better,
  e.g. ``window_size=20, height=6`` (~5 KB per key).
* **Missing values**: a row with a NaN (or infinite) field is neither scored nor learned. River
  instead walks a missing feature towards the child with the larger latest mass.
* **Ready**: a key is ready once its first window is complete (River returns 0 before that).

``calibrated`` maps the mass sum into [0, 1] on a log scale, independent of the tree size:
``1 - log2(S / (n_trees · window_size)) / log2(2**(height+1) - 1)``. It is 1 when, in every tree, the
event leaves the reference mass right below the root, and 0 when every reference event shared the
event's whole path. It is a monotone function of the raw score, so both rank events alike.
**The threshold applies to ``calibrated``**: River's raw score crowds near 1 for tall trees (normal
events score about 0.99 at height 8), so a raw threshold would not carry over between tree sizes.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import feature_shares
from vigil.detectors.hst_explain import attribution
from vigil.stats.slots import as_slots, split_none
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

PADDING = 0.15  # River's: split points fall in the middle 70 % of a node's range


def build_trees(
    features: Sequence[str], limits: Mapping[str, Sequence[float]], n_trees: int, height: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split feature (index into ``features``) and threshold of every internal node, River's way.

    Trees are complete and stored heap-style (node ``i`` has children ``2i+1`` and ``2i+2``); the
    random calls are made in River's order (pre-order: node, left subtree, right subtree; tree by tree).

    Examples:
        >>> feat, thr = build_trees(["x"], {"x": (0.0, 1.0)}, n_trees=2, height=2, seed=42)
        >>> feat.shape, bool(((thr[:, 0] > 0.15) & (thr[:, 0] < 0.85)).all()), bool((thr[:, 1] < thr[:, 0]).all())
        ((2, 3), True, True)
    """
    rng = random.Random(seed)
    n_internal = 2**height - 1
    feat = np.zeros((n_trees, n_internal), np.int32)
    thr = np.zeros((n_trees, n_internal), np.float64)
    index = {f: i for i, f in enumerate(features)}
    lim = {f: (float(limits[f][0]), float(limits[f][1])) for f in features}

    def grow(t: int, node: int, levels: int) -> None:
        if levels == 0:
            return
        on = rng.choices(population=list(lim.keys()), weights=[lim[i][1] - lim[i][0] for i in lim])[0]
        a, b = lim[on]
        at = rng.uniform(a + PADDING * (b - a), b - PADDING * (b - a))
        feat[t, node] = index[on]
        thr[t, node] = at
        lim[on] = (a, at)
        grow(t, 2 * node + 1, levels - 1)
        lim[on] = (at, b)
        grow(t, 2 * node + 2, levels - 1)
        lim[on] = (a, b)

    for t in range(n_trees):
        grow(t, 0, height)
    return feat, thr


@numba.njit(cache=True, inline="always")
def _verdict(i: int, total: float, depth_sum: float, mass_sum: float, n_trees: int, window: int, max_score: float,
             log_span: float, out_score: Any, out_cal: Any, out_ready: Any, out_depth: Any, out_mass: Any) -> None:
    """Row i's outputs from the summed masses of its tree walks (shared by both kernels)."""
    out_score[i] = 1.0 - total / max_score
    ratio = total / (n_trees * window)
    cal = 1.0 - math.log2(ratio) / log_span if ratio > 0.0 else 1.0
    out_cal[i] = min(1.0, max(0.0, cal))
    out_ready[i] = True
    out_depth[i] = depth_sum / n_trees
    out_mass[i] = mass_sum / (n_trees * window)


@numba.njit(cache=True)
def _hst_kernel(
    slots: Any, X: Any, feat: Any, thr: Any, mass: Any, count: Any, warm: Any, lo: Any, hi: Any,
    learn_limits: bool, margin: float, window: int, height: int, size_limit: float, max_score: float, log_span: float,
    out_score: Any, out_cal: Any, out_ready: Any, out_depth: Any, out_mass: Any,
) -> None:  # fmt: skip
    n_trees = feat.shape[0]
    d = X.shape[1]
    u = np.empty(d, np.float64)
    squeeze = 1.0 / (1.0 + 2.0 * margin)
    shift = margin * squeeze
    for i in range(slots.shape[0]):
        k = slots[i]
        finite = True
        for j in range(d):
            if not math.isfinite(X[i, j]):
                finite = False
        out_score[i] = 0.0
        out_cal[i] = 0.0
        out_ready[i] = False
        out_depth[i] = np.nan
        out_mass[i] = np.nan
        if not finite:  # missing: neither scored nor learned
            continue
        # score against the reference masses (River's pipeline scales with the limits learned so far)
        if warm[k]:
            for j in range(d):
                if learn_limits:
                    span = hi[k, j] - lo[k, j]
                    u[j] = ((X[i, j] - lo[k, j]) / span if span != 0.0 else 0.0) * squeeze + shift
                else:
                    u[j] = X[i, j]
            total = 0.0
            depth_sum = 0.0
            mass_sum = 0.0
            for t in range(n_trees):
                node = 0
                depth = 0
                s = 0
                rm = 0
                while True:
                    rm = int(mass[k, t, node, 0])
                    s += rm << depth
                    if depth == height or rm < size_limit:
                        break
                    node = 2 * node + 1 if u[feat[t, node]] < thr[t, node] else 2 * node + 2
                    depth += 1
                total += s
                depth_sum += depth
                mass_sum += rm
            _verdict(i, total, depth_sum, mass_sum, n_trees, window, max_score, log_span,
                     out_score, out_cal, out_ready, out_depth, out_mass)
        # learn: River's pipeline learns the scaler first, then walks the scaled value into `l`
        for j in range(d):
            if learn_limits:
                v = X[i, j]
                if v < lo[k, j]:
                    lo[k, j] = v
                if v > hi[k, j]:
                    hi[k, j] = v
                span = hi[k, j] - lo[k, j]
                u[j] = ((v - lo[k, j]) / span if span != 0.0 else 0.0) * squeeze + shift
            else:
                u[j] = X[i, j]
        for t in range(n_trees):
            node = 0
            for _ in range(height):
                mass[k, t, node, 1] += 1
                node = 2 * node + 1 if u[feat[t, node]] < thr[t, node] else 2 * node + 2
            mass[k, t, node, 1] += 1
        count[k] += 1
        if count[k] == window:
            for t in range(n_trees):  # the latest window becomes the reference
                for node in range(mass.shape[2]):
                    mass[k, t, node, 0] = mass[k, t, node, 1]
                    mass[k, t, node, 1] = 0
            count[k] = 0
            warm[k] = True


@numba.njit(cache=True, inline="always")
def _rank(x: float, cuts: Any, first: Any, base: float, scale: float) -> int:
    """``#{c in cuts : c <= x}`` for sorted ``cuts``: a grid guess, corrected by a short scan (always exact)."""
    b = (x - base) * scale
    nb = first.shape[0]
    p = first[0] if b < 0.0 else (first[nb - 1] if b >= nb - 1 else first[int(b)])
    m = cuts.shape[0]
    while p < m and cuts[p] <= x:
        p += 1
    while p > 0 and cuts[p - 1] > x:
        p -= 1
    return p


@numba.njit(cache=True)
def _hst_kernel_1d(
    slots: Any, X: Any, leaf: Any, cuts: Any, first: Any, base: float, scale: float, mass: Any, count: Any,
    warm: Any, lo: Any, hi: Any, learn_limits: bool, margin: float, window: int, height: int, min_mass: int,
    max_score: float, log_span: float, out_score: Any, out_cal: Any, out_ready: Any, out_depth: Any, out_mass: Any,
) -> None:  # fmt: skip
    """``_hst_kernel`` for one feature: no walk, the path comes from the leaf (see ``_index_1d``)."""
    n_trees = leaf.shape[1]
    n_nodes = mass.shape[2]
    top = 1 << height
    squeeze = 1.0 / (1.0 + 2.0 * margin)
    shift = margin * squeeze
    for i in range(slots.shape[0]):
        k = slots[i]
        x = X[i, 0]
        out_score[i] = 0.0
        out_cal[i] = 0.0
        out_ready[i] = False
        out_depth[i] = np.nan
        out_mass[i] = np.nan
        if not math.isfinite(x):  # missing: neither scored nor learned
            continue
        # River's pipeline scores with the limits learned so far, then learns the scaler, then the trees
        if learn_limits:
            a = lo[k, 0]
            b = hi[k, 0]
            span = b - a
            u = ((x - a) / span if span != 0.0 else 0.0) * squeeze + shift
            if x < a:
                a = x
                lo[k, 0] = x
            if x > b:
                b = x
                hi[k, 0] = x
            span = b - a
            v = ((x - a) / span if span != 0.0 else 0.0) * squeeze + shift
        else:
            u = x
            v = x
        pv = _rank(v, cuts, first, base, scale)
        mk = mass[k]
        if warm[k]:
            pu = pv if u == v else _rank(u, cuts, first, base, scale)
            total = 0.0
            depth_sum = 0.0
            mass_sum = 0.0
            for t in range(n_trees):
                mt = mk[t]
                h1 = top + leaf[pu, t]  # 1-based heap index of the leaf; its ancestor at depth d is h1 >> (height - d)
                depth = 0
                s = 0
                rm = 0
                while True:
                    rm = int(mt[(h1 >> (height - depth)) - 1, 0])
                    s += rm << depth
                    if depth == height or rm < min_mass:
                        break
                    depth += 1
                total += s
                depth_sum += depth
                mass_sum += rm
            _verdict(i, total, depth_sum, mass_sum, n_trees, window, max_score, log_span,
                     out_score, out_cal, out_ready, out_depth, out_mass)
        for t in range(n_trees):
            mt = mk[t]
            h1 = top + leaf[pv, t]
            for depth in range(height + 1):
                mt[(h1 >> (height - depth)) - 1, 1] += 1
        count[k] += 1
        if count[k] == window:
            for t in range(n_trees):  # the latest window becomes the reference
                mt = mk[t]
                for node in range(n_nodes):
                    mt[node, 0] = mt[node, 1]
                    mt[node, 1] = 0
            count[k] = 0
            warm[k] = True


def _index_1d(thr: np.ndarray, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, float] | None:
    """Leaf lookup for trees over one feature, or ``None`` if their splits are not nested (never with River's trees).

    Over one feature, a tree's in-order thresholds increase (each split falls inside its parent's half), so the
    leaf an event reaches is the number of the tree's thresholds ``<= x``, and the walk's nodes are the leaf's
    ancestors. ``cuts`` merges every tree's thresholds; ``leaf[p, t]`` is tree ``t``'s leaf for an ``x`` with
    ``p`` cuts ``<= x``; ``first`` maps a grid over the cuts' range to a rank to start scanning from.
    """

    def inorder(node: int) -> list[int]:
        return [] if node >= 2**height - 1 else [*inorder(2 * node + 1), node, *inorder(2 * node + 2)]

    order = inorder(0)
    sorted_thr = thr[:, order]
    if not (np.diff(sorted_thr, axis=1) > 0).all():
        return None
    cuts = np.sort(sorted_thr.ravel())
    reps = np.concatenate([[-np.inf], cuts])  # a value of each gap between cuts (ties grouped: side="right")
    leaf = np.stack([np.searchsorted(row, reps, side="right") for row in sorted_thr], axis=1).astype(np.int32)
    n_grid = 4 * len(cuts)
    base, span = float(cuts[0]), float(cuts[-1] - cuts[0])
    scale = n_grid / span if span > 0.0 else 0.0
    first = np.searchsorted(cuts, base + np.arange(n_grid) * (span / n_grid), side="right").astype(np.int64)
    return np.ascontiguousarray(leaf), cuts, first, base, scale


@register
class HalfSpaceTrees(BaseDetector):
    """Half-Space Trees over one or more fields, per key or global (see the module docstring).

    Args:
        fields: the fields to score (a name or a list of names).
        n_trees: trees in the forest.
        height: depth of each tree (a tree has ``2**(height+1) - 1`` nodes).
        window_size: events per mass window; a key is ready after its first window.
        limits: ``{field: (lo, hi)}`` ranges the trees split, for every field; ``None`` learns each
            field's running min/max (per key when ``per_key``) and splits the unit range.
        seed: seed of the trees (the same seed gives River's trees).
        threshold: flag when the **calibrated** score exceeds it (in (0, 1)).
        per_key: one model per key slot (shared trees, own masses), or one model for all events.
        margin: with learned limits, the share of the learned range left free on each side of it in
            the unit range the trees split (0 = River's ``MinMaxScaler``); unused with ``limits``.

    Score: River's ``1 - S / max``; calibrated: log-scaled mass sum (module docstring). Stats:
    ``depth`` (mean depth where the walks stopped) and ``mass`` (mean share of the reference window
    in the region where they stopped); with several fields, ``attr_<field>`` on flagged rows: each
    field's share of the isolation (:mod:`vigil.detectors.hst_explain`, what :meth:`explain_many` reports).

    Examples:
        >>> det = HalfSpaceTrees(fields="value", n_trees=5, height=4, window_size=20)
        >>> rng = np.random.default_rng(0)
        >>> x = np.append(20 + rng.standard_normal(60), 45.0)
        >>> v = det.process_many(np.zeros(61, np.int32), np.arange(61) * 1000, {"value": x})
        >>> bool(v.ready[19]), bool(v.ready[20]), bool(v.flag[-1]), int(v.flag[:-1].sum())
        (False, True, True, 0)
        >>> round(float(v.calibrated[-1]), 2), round(float(v.calibrated[20:-1].max()), 2)
        (0.77, 0.52)
    """

    kind: ClassVar[str] = "half_space_trees"
    state_version: ClassVar[int] = 1
    _slot_arrays: ClassVar[tuple[str, ...]] = ("mass", "count", "warm", "lo", "hi")

    def __init__(
        self,
        *,
        fields: str | Sequence[str] = ("value",),
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
        limits: Mapping[str, Sequence[float]] | None = None,
        seed: int = 42,
        threshold: float = 0.7,
        per_key: bool = True,
        margin: float = 1.0,
    ) -> None:
        names = (fields,) if isinstance(fields, str) else tuple(fields)
        if not names or len(set(names)) != len(names):
            raise ValueError(f"`fields` must name distinct fields; got {fields!r}")
        for name, value, low in (("n_trees", n_trees, 1), ("height", height, 1), ("window_size", window_size, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"`{name}` must be an integer >= {low}; got {value!r}")
        if height > 20:
            raise ValueError(f"`height` must be <= 20 (a tree has 2**(height+1) - 1 nodes); got {height!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` applies to the calibrated score and must be in (0, 1); got {threshold!r}")
        if not (math.isfinite(margin) and margin >= 0.0):
            raise ValueError(f"`margin` must be >= 0 (share of the learned range free on each side); got {margin!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"`seed` must be an integer (the trees are built from it); got {seed!r}")
        self.fields = names
        self.features = tuple(sorted(names))  # River builds its trees over sorted(x)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size
        self.limits: dict[str, list[float]] | None = None
        if limits is not None:
            self.limits = {}
            for f in self.features:
                if f not in limits:
                    raise ValueError(f"`limits` must give (lo, hi) for every field; missing {f!r}")
                lo_hi = [float(v) for v in limits[f]]
                if len(lo_hi) != 2 or not (math.isfinite(lo_hi[0]) and math.isfinite(lo_hi[1]) and lo_hi[0] < lo_hi[1]):
                    raise ValueError(f"`limits[{f!r}]` must be (lo, hi) with lo < hi; got {limits[f]!r}")
                self.limits[f] = lo_hi
            extra = sorted(set(limits) - set(self.features))
            if extra:
                raise ValueError(f"`limits` names fields that are not in `fields`: {extra}")
        self.seed = seed
        self.threshold = float(threshold)
        self.per_key = bool(per_key)
        self.margin = float(margin)
        unit = {f: (0.0, 1.0) for f in self.features}
        self.feat, self.thr = build_trees(self.features, self.limits or unit, n_trees, height, seed)
        # counters as narrow as the window allows (a walk touches fewer cache lines); snapshots keep uint16/uint32
        self._snap_dtype = np.uint16 if window_size < 2**16 else np.uint32
        self._mass_dtype = np.uint8 if window_size < 2**8 else self._snap_dtype
        self._n_nodes = 2 ** (height + 1) - 1
        self._max_score = float(n_trees * window_size * self._n_nodes)
        self._log_span = math.log2(self._n_nodes)
        # River stops a walk at r < 0.1 * window_size; for integer masses that is r < ceil(0.1 * window_size)
        self._min_mass = math.ceil(0.1 * window_size)
        self._index = _index_1d(self.thr, height) if len(self.features) == 1 else None
        self._alloc(1)

    def _alloc(self, capacity: int) -> None:
        d = len(self.features)
        # reference (r) and latest (l) mass side by side: a walk touches both in one cache line; one unused
        # node pads each tree to 2**(height+1) nodes, so the trees (and their top levels) are cache-line aligned
        self.mass = np.zeros((capacity, self.n_trees, self._n_nodes + 1, 2), self._mass_dtype)
        self.count = np.zeros(capacity, np.int64)
        self.warm = np.zeros(capacity, np.bool_)
        self.lo = np.full((capacity, d), np.inf)
        self.hi = np.full((capacity, d), -np.inf)

    def params(self) -> dict[str, Any]:
        return {
            "fields": list(self.fields), "n_trees": self.n_trees, "height": self.height,
            "window_size": self.window_size, "limits": self.limits, "seed": self.seed,
            "threshold": self.threshold, "per_key": self.per_key, "margin": self.margin,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"fields": ["value"], "n_trees": 5, "height": 5, "window_size": 20},
            {"fields": ["value"], "n_trees": 4, "height": 6, "window_size": 16, "limits": {"value": [0.0, 200.0]},
             "seed": 7},
            {"fields": ["value"], "n_trees": 10, "height": 8, "window_size": 50, "per_key": False},
        ]

    def _skip_checks(self) -> dict[str, str]:
        if self.per_key:
            return super()._skip_checks()
        why = "per_key=False keeps one model for all keys: there is no per-slot state to reset"
        return {**super()._skip_checks(), "check_reset_slots": why, "check_import_none_resets": why}

    def slice_caveat(self) -> str | None:
        return None if self.per_key else "per_key=False keeps one model for all keys: a key's slice is empty"

    def fresh(self) -> HalfSpaceTrees:
        """An empty twin sharing the (immutable) trees and their leaf index; no tree is rebuilt."""
        twin = copy.copy(self)
        twin._alloc(1)
        return twin

    def export_slots(self, slots: Int32Array) -> list[dict[str, Any]]:
        if not self.per_key:
            return [{} for _ in as_slots(slots).tolist()]
        return super().export_slots(slots)

    def import_slots(self, slots: Int32Array, states: Sequence[dict[str, Any] | None]) -> None:
        if not self.per_key:
            split_none(as_slots(slots), states)  # checks the lengths; the one global model is not a key's
            return
        super().import_slots(slots, states)

    def _ensure(self, slots: Int32Array) -> None:
        if self.per_key and len(slots):
            self._grow_slots(int(slots.max()) + 1)

    def _grow_slots(self, top: int) -> None:
        cap = self.count.shape[0]
        if top <= cap:
            return
        new_cap = max(top, 2 * cap)
        old = (self.mass, self.count, self.warm, self.lo, self.hi)
        self._alloc(new_cap)
        for dst, src in zip((self.mass, self.count, self.warm, self.lo, self.hi), old, strict=True):
            dst[:cap] = src

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        cols = np.empty((m, len(self.features)), np.float64)
        for j, f in enumerate(self.features):
            cols[:, j] = X[f]
        self._ensure(slots)
        idx = np.asarray(slots, np.int32) if self.per_key else np.zeros(m, np.int32)
        multi = len(self.features) > 1
        # learned limits before the batch: what flagged rows were scored with, for their attribution
        lo0, hi0 = (self.lo[idx], self.hi[idx]) if multi and self.limits is None else (None, None)
        score = np.empty(m, np.float64)
        calibrated = np.empty(m, np.float64)
        ready = np.empty(m, np.bool_)
        depth = np.empty(m, np.float64)
        mass = np.empty(m, np.float64)
        if self._index is not None:
            leaf, cuts, first, base, scale = self._index
            _hst_kernel_1d(
                idx, cols, leaf, cuts, first, base, scale, self.mass, self.count, self.warm, self.lo, self.hi,
                self.limits is None, self.margin, self.window_size, self.height, self._min_mass, self._max_score,
                self._log_span, score, calibrated, ready, depth, mass,
            )  # fmt: skip
        else:
            _hst_kernel(
                idx, cols, self.feat, self.thr, self.mass, self.count, self.warm, self.lo, self.hi,
                self.limits is None, self.margin, self.window_size, self.height, 0.1 * self.window_size,
                self._max_score, self._log_span, score, calibrated, ready, depth, mass,
            )  # fmt: skip
        flag = ready & (calibrated > self.threshold)
        stats = {f: np.asarray(X[f], np.float64) for f in self.fields}
        stats.update({"depth": depth, "mass": mass})
        if multi:  # each field's share of the flagged rows' isolation (vigil.detectors.hst_explain)
            attr = attribution(self, idx, cols, lo0, hi0, flag)
            stats.update({f"attr_{f}": attr[:, j] for j, f in enumerate(self.features)})
        return Verdicts(score, calibrated, flag, flag.copy(), ready, stats)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """Per field, its share of the row's isolation bits (see :mod:`vigil.detectors.hst_explain`), largest first.

        Rows that were not flagged carry no attribution (score 0 for every field); with one field, it is that field.
        """
        rows = np.asarray(rows, np.int64)
        if len(self.features) == 1:
            shares = np.ones((len(rows), 1))
        else:
            shares = np.column_stack([v.stats[f"attr_{f}"][rows] for f in self.features]) if len(rows) else (
                np.zeros((0, len(self.features))))  # fmt: skip
        return feature_shares(self.features, X, rows, shares)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "amount=412 is isolated: 0.4% of the reference window shares its region (depth 1.2, 10 trees)"."""
        values = ", ".join(f"{f}={float(stats.get(f, math.nan)):.6g}" for f in self.fields)
        return (f"{values} is isolated: {100 * float(stats.get('mass', math.nan)):.1f}% of the reference window "
                f"shares its region (depth {float(stats.get('depth', math.nan)):.1f}, {self.n_trees} trees)")

    def reset_slots(self, slots: Int32Array) -> None:
        if not self.per_key:
            return
        slots = slots[slots < self.count.shape[0]]
        self.mass[slots] = 0
        self.count[slots] = 0
        self.warm[slots] = False
        self.lo[slots] = np.inf
        self.hi[slots] = -np.inf

    def snapshot(self) -> dict[str, Any]:
        return {
            "feat": self.feat.copy(), "thr": self.thr.copy(),
            "r": self.mass[:, :, : self._n_nodes, 0].astype(self._snap_dtype),
            "l": self.mass[:, :, : self._n_nodes, 1].astype(self._snap_dtype),
            "count": self.count.copy(), "warm": self.warm.copy(), "lo": self.lo.copy(), "hi": self.hi.copy(),
        }  # fmt: skip

    def _restore(self, state: dict[str, Any]) -> None:
        # the trees come from the snapshot: masses are only meaningful with the trees that counted them
        feat = np.ascontiguousarray(state["feat"], np.int32)
        if feat.shape != self.feat.shape:
            raise ValueError(f"snapshot's trees have shape {feat.shape}; these params build {self.feat.shape}")
        self.feat, self.thr = feat, np.ascontiguousarray(state["thr"], np.float64)
        self._index = _index_1d(self.thr, self.height) if len(self.features) == 1 else None
        rl = np.stack([state["r"], state["l"]], axis=-1)
        self.mass = np.zeros((*rl.shape[:2], self._n_nodes + 1, 2), self._mass_dtype)
        self.mass[:, :, : self._n_nodes] = rl
        self.count = np.ascontiguousarray(state["count"], np.int64)
        self.warm = np.ascontiguousarray(state["warm"], np.bool_)
        self.lo = np.ascontiguousarray(state["lo"], np.float64)
        self.hi = np.ascontiguousarray(state["hi"], np.float64)

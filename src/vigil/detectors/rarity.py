"""Level rarity: how seldom has this key's recent level been seen before, overall and at this time of day?

A streaming novelty detector built for the Numenta Anomaly Benchmark (NAB) and similar metric streams. Per key:

* **Levels.** The first ``warmup`` values fix a bin width, ``(max - min) / bins`` of those values (a flat warm-up
  falls back to 1 % of the level). Values are averaged over consecutive **blocks** of ``S`` rows, one block length
  per time scale (``blocks``, e.g. ``[6, 2]``); each finished block mean falls into an integer level
  ``floor(u)``, ``u = (mean - min) / width`` (so the warm-up range spans levels ``0 .. bins``). Beyond that range the
  levels grow logarithmically (**tail compression**: ``u = bins + t log(1 + (u - bins) / t)`` above it and
  ``-t log(1 - u / t)`` below it, ``t = tail_compression``): a heavy-tailed key does not meet a brand-new level at
  every new extreme, while a far excursion still lands on levels never seen.
* **Rarity.** Each scale counts how often every level occurred (a hashed table per key), overall and jointly with
  the hour-of-day bucket of the block's last row (``context_hours`` wide; hour of day of the event time in UTC, so
  daily patterns in local time work when event times are local clock times). Neighbouring levels count with
  weight ``smoothing``, so a value next to a well-populated level is less surprising than one far away. The rarity
  of a block is ``-log10((c + alpha) / (n + 1))`` with ``c`` the smoothed count of its level among the ``n`` earlier
  blocks (per time bucket: among ``n / buckets``), i.e. *"nines"* of a tail probability, on the same scale for every
  key; the overall and the contextual rarity are combined by a maximum (the contextual one weighted by
  ``context_weight``), and the scales by a maximum too (scale ``j`` weighted by ``scale_weights[j]``).
* **History rarity** (optional, ``history_weight`` ``w > 0``). How seldom the key has produced a rarity this high
  before: each row that ends a block (after the warm-up) puts its rarity ``r`` into a per-key histogram
  (``history_bin`` nines wide, 256 bins, the last open-ended), and ``h = -log10((a + history_alpha) / (N + 1))``
  with ``a`` the count of earlier such rows in ``r``'s bin or above and ``N`` of all of them. The score blends the
  two, ``(1 - w) r + w h``: in a heavy-tailed key, where rare levels come every few hundred rows, a rare level is
  routine and ``h`` is low; in a quiet key its first rare level has a high ``h``. It makes keys comparable under one
  threshold beyond what the repeat penalty (which counts detections only) does.
* **Detections and suppression.** A row whose score reaches ``threshold`` is a detection; the next ``suppress``
  rows of the key score 0 (one anomaly raises one alert instead of a burst). Each detection also raises the bar
  of later ones: the score is lowered by ``repeat_penalty * log(1 + d)`` with ``d`` the key's (optionally
  decaying, ``repeat_halflife`` rows) count of earlier detections, so a key that keeps producing rare levels
  (heavy tails) ranks below one whose first rare level this is.

Scores are prequential (each block is scored against the counts of earlier blocks only, then counted) and depend
only on the key's past rows: no look-ahead, no file length, no global min/max.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import one_feature, score_or
from vigil.stats.slots import grow_rows
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

_BASE = 6  # per-key state columns before the per-scale ones: rows, lo, hi, width, suppression left, detections
_PER_SCALE = 3  # block sum, block rows, blocks counted
_MS_PER_HOUR = 3_600_000
_HIST = 256  # bins of the per-key histogram of block rarities (the last one is open-ended), plus their total


@numba.njit(cache=True, inline="always")
def _slot(level: int, ctx: int, mask: int) -> int:  # pragma: no cover - compiled
    """Hash of (level, context) into a table of ``mask + 1`` cells (FNV-1a over two 32-bit words)."""
    h = np.uint64(1469598103934665603)
    h = (h ^ np.uint64(level & 0xFFFFFFFF)) * np.uint64(1099511628211)
    h = (h ^ np.uint64(ctx & 0xFFFFFFFF)) * np.uint64(1099511628211)
    h ^= h >> np.uint64(29)
    return int(h & np.uint64(mask))


@numba.njit(cache=True)
def _smoothed(cnt: Any, k: int, t: int, lv: int, ctx: int, mask: int, smoothing: float) -> float:  # pragma: no cover
    c = float(cnt[k, t, _slot(lv, ctx, mask)])
    if smoothing > 0.0:
        c += smoothing * (cnt[k, t, _slot(lv - 1, ctx, mask)] + cnt[k, t, _slot(lv + 1, ctx, mask)])
    return c / (1.0 + 2.0 * smoothing)


@numba.njit(cache=True)
def _rarity_kernel(
    slots: Any, ts: Any, x: Any, warmup: int, bins: float, blocks: Any, scale_w: Any, alpha: float,
    smoothing: float, tail: float, ctx_hours: int, ctx_w: float, threshold: float, suppress: int, penalty: float,
    decay: float, h_w: float, h_alpha: float, h_bin: float, st: Any, cnt: Any, hist: Any,
    out_score: Any, out_ready: Any, out_rarity: Any, out_level: Any, out_det: Any, out_hist: Any,
) -> None:  # pragma: no cover - compiled  # fmt: skip
    mask = cnt.shape[2] - 1
    n_ctx = 24 // ctx_hours if ctx_hours > 0 else 1
    for i in range(slots.shape[0]):
        k = slots[i]
        v = x[i]
        out_score[i] = 0.0
        out_ready[i] = False
        out_rarity[i] = 0.0
        out_level[i] = np.nan
        out_det[i] = st[k, 5]
        out_hist[i] = 0.0
        if not math.isfinite(v):  # missing: neither scored nor learned, the key's clock does not move
            continue
        rows = int(st[k, 0])
        if rows == 0:
            st[k, 1] = v
            st[k, 2] = v
        if rows < warmup:
            st[k, 1] = min(st[k, 1], v)
            st[k, 2] = max(st[k, 2], v)
            if rows == warmup - 1:
                width = (st[k, 2] - st[k, 1]) / bins
                if not width > 0.0:
                    width = max(abs(st[k, 2]) * 0.01, 1e-9)
                st[k, 3] = width
        st[k, 0] = rows + 1
        lo = st[k, 1]
        width = st[k, 3]
        raw = 0.0
        ended = False
        for j in range(blocks.shape[0]):
            c0 = _BASE + _PER_SCALE * j
            st[k, c0] += v
            st[k, c0 + 1] += 1.0
            if st[k, c0 + 1] < blocks[j]:
                continue
            mean = st[k, c0] / st[k, c0 + 1]
            st[k, c0] = 0.0
            st[k, c0 + 1] = 0.0
            if rows < warmup:  # blocks ending in the warm-up only fix the width
                continue
            u = min(max((mean - lo) / width, -1e12), 1e12)
            if tail > 0.0:
                if u > bins:
                    u = bins + tail * math.log1p((u - bins) / tail)
                elif u < 0.0:
                    u = -tail * math.log1p(-u / tail)
            lv = int(math.floor(u))
            nb = st[k, c0 + 2]
            s = -math.log10((_smoothed(cnt, k, 2 * j, lv, 0, mask, smoothing) + alpha) / (nb + 1.0))
            cnt[k, 2 * j, _slot(lv, 0, mask)] += 1
            if ctx_hours > 0:
                ctx = int((ts[i] // _MS_PER_HOUR) % 24) // ctx_hours
                sc = _smoothed(cnt, k, 2 * j + 1, lv, ctx, mask, smoothing)
                s = max(s, ctx_w * -math.log10((sc + alpha) / (nb / n_ctx + 1.0)))
                cnt[k, 2 * j + 1, _slot(lv, ctx, mask)] += 1
            st[k, c0 + 2] = nb + 1.0
            raw = max(raw, scale_w[j] * max(s, 0.0))
            ended = True
            if j == 0:
                out_level[i] = lv
        if rows < warmup:
            continue
        out_ready[i] = True
        out_rarity[i] = raw
        if h_w > 0.0 and ended:  # rarity of this row's rarity among the key's earlier block-ending rows
            b = min(int(raw / h_bin), _HIST - 1)
            above = 0.0
            for q in range(b, _HIST):
                above += hist[k, q]
            hr = -math.log10((above + h_alpha) / (hist[k, _HIST] + 1.0))
            hist[k, b] += 1.0
            hist[k, _HIST] += 1.0
            out_hist[i] = hr
            raw = (1.0 - h_w) * raw + h_w * hr
        d = st[k, 5]
        o = raw - penalty * math.log1p(d)
        st[k, 5] = d * decay
        if st[k, 4] > 0.0:
            st[k, 4] -= 1.0
        else:
            out_score[i] = max(o, 0.0)
            if o >= threshold:
                st[k, 4] = suppress
                st[k, 5] += 1.0


@register
class LevelRarity(BaseDetector):
    """Rarity of a key's recent level, overall and per time of day, at several time scales (module docstring).

    Args:
        field: the value to score.
        warmup: rows of a key before it is scored; their range fixes the level width (``range / bins``).
        bins: levels across the warm-up range.
        blocks: rows averaged per level, one entry per time scale.
        scale_weights: weight of each scale's rarity (same length as ``blocks``).
        alpha: pseudo-count of an unseen level (caps the rarity of a first occurrence at ``log10((n+1)/alpha)``).
        smoothing: weight of the two neighbouring levels' counts.
        tail_compression: scale (in levels) of the logarithmic compression beyond the warm-up range (0: none).
        context_hours: width of the hour-of-day buckets of the contextual rarity (a divisor of 24; 0: none).
        context_weight: weight of the contextual rarity.
        threshold: score of a detection (flag); it starts the suppression.
        suppress: rows scored 0 after a detection.
        repeat_penalty: the score is lowered by ``repeat_penalty * log(1 + earlier detections)``.
        repeat_halflife: half-life in rows of the detection count (0: never forgets).
        table_bits: log2 of the hashed count table size per key, scale and table.
        history_weight: weight ``w`` of the history rarity in the score ``(1 - w) rarity + w history_rarity``
            (0: off, today's plain rarity).
        history_alpha: pseudo-count of the history rarity (caps it at ``log10((N + 1) / history_alpha)``).
        history_bin: width in nines of the bins of the per-key histogram of block rarities.

    Score:
        rarity in "nines" (``-log10`` of a smoothed frequency; blended with the history rarity when
        ``history_weight > 0``) after suppression and the repeat penalty; 0 on rows that end no block.
        Calibrated: ``score / (1 + score)``, strictly increasing in the score and comparable across keys (never
        saturates at 1).

    State:
        per key ``6 + 3 * len(blocks)`` numbers, ``2 * len(blocks)`` tables of ``2**table_bits`` int32 counts
        (64 KiB per key with the defaults) and a histogram of 257 float64 (2 KiB).

    Warm-up:
        the first ``warmup`` finite rows of a key are not ready (score 0). NaN and inf are neither scored nor
        learned. ``fire`` equals ``flag``.

    Examples:
        >>> det = LevelRarity(warmup=20, bins=4, blocks=[1], scale_weights=[1.0], context_hours=0, suppress=5)
        >>> rng = np.random.default_rng(0)
        >>> x = 10 + rng.standard_normal(300)
        >>> x[250] = 25.0
        >>> v = det.process_many(np.zeros(300, np.int32), np.arange(300) * 60_000, {"value": x})
        >>> int(v.ready.argmax()), np.flatnonzero(v.flag).tolist(), round(float(v.score[250]), 2)
        (20, [250], 3.36)
    """

    kind: ClassVar[str] = "level_rarity"
    state_version: ClassVar[int] = 2
    _slot_arrays: ClassVar[tuple[str, ...]] = ("st", "cnt", "hist")

    def __init__(
        self,
        *,
        field: str = "value",
        warmup: int = 150,
        bins: float = 20.0,
        blocks: list[int] | tuple[int, ...] = (6, 2),
        scale_weights: list[float] | tuple[float, ...] = (1.0, 0.9),
        alpha: float = 0.1,
        smoothing: float = 0.5,
        tail_compression: float = 20.0,
        context_hours: int = 4,
        context_weight: float = 0.85,
        threshold: float = 2.5,
        suppress: int = 100,
        repeat_penalty: float = 0.25,
        repeat_halflife: float = 0.0,
        table_bits: int = 12,
        history_weight: float = 0.0,
        history_alpha: float = 1.0,
        history_bin: float = 0.05,
    ) -> None:
        if int(warmup) != warmup or warmup < 2:
            raise ValueError(f"`warmup` must be an int >= 2; got {warmup!r}")
        if not bins > 0:
            raise ValueError(f"`bins` must be > 0; got {bins!r}")
        blocks = [int(b) for b in blocks]
        if not blocks or any(b < 1 for b in blocks):
            raise ValueError(f"`blocks` must be a non-empty list of ints >= 1; got {blocks!r}")
        scale_weights = [float(w) for w in scale_weights]
        if len(scale_weights) != len(blocks) or any(not w >= 0 for w in scale_weights):
            raise ValueError(f"`scale_weights` must be {len(blocks)} numbers >= 0; got {scale_weights!r}")
        if not alpha > 0:
            raise ValueError(f"`alpha` must be > 0; got {alpha!r}")
        if not smoothing >= 0:
            raise ValueError(f"`smoothing` must be >= 0; got {smoothing!r}")
        if not tail_compression >= 0:
            raise ValueError(f"`tail_compression` must be >= 0 levels (0: none); got {tail_compression!r}")
        if int(context_hours) != context_hours or (context_hours != 0 and 24 % int(context_hours) != 0):
            raise ValueError(f"`context_hours` must be 0 or a divisor of 24; got {context_hours!r}")
        if not context_weight >= 0:
            raise ValueError(f"`context_weight` must be >= 0; got {context_weight!r}")
        if int(suppress) != suppress or suppress < 0:
            raise ValueError(f"`suppress` must be an int >= 0; got {suppress!r}")
        if not repeat_penalty >= 0:
            raise ValueError(f"`repeat_penalty` must be >= 0; got {repeat_penalty!r}")
        if not repeat_halflife >= 0:
            raise ValueError(f"`repeat_halflife` must be >= 0 rows (0: never forget); got {repeat_halflife!r}")
        if int(table_bits) != table_bits or not 4 <= table_bits <= 20:
            raise ValueError(f"`table_bits` must be an int in [4, 20]; got {table_bits!r}")
        if not 0 <= history_weight <= 1:
            raise ValueError(f"`history_weight` must be in [0, 1]; got {history_weight!r}")
        if not history_alpha > 0:
            raise ValueError(f"`history_alpha` must be > 0; got {history_alpha!r}")
        if not history_bin > 0:
            raise ValueError(f"`history_bin` must be > 0; got {history_bin!r}")
        self.field = field
        self.warmup = int(warmup)
        self.bins = float(bins)
        self.blocks = blocks
        self.scale_weights = scale_weights
        self.alpha = float(alpha)
        self.smoothing = float(smoothing)
        self.tail_compression = float(tail_compression)
        self.context_hours = int(context_hours)
        self.context_weight = float(context_weight)
        self.threshold = float(threshold)
        self.suppress = int(suppress)
        self.repeat_penalty = float(repeat_penalty)
        self.repeat_halflife = float(repeat_halflife)
        self.table_bits = int(table_bits)
        self.history_weight = float(history_weight)
        self.history_alpha = float(history_alpha)
        self.history_bin = float(history_bin)
        self.fields = (field,)
        self._blocks = np.array(blocks, np.float64)
        self._scale_w = np.array(scale_weights, np.float64)
        self._decay = 2.0 ** (-1.0 / self.repeat_halflife) if self.repeat_halflife > 0 else 1.0
        self.st = np.zeros((0, _BASE + _PER_SCALE * len(blocks)), np.float64)
        self.cnt = np.zeros((0, 2 * len(blocks), 1 << self.table_bits), np.int32)
        self.hist = np.zeros((0, _HIST + 1), np.float64)

    def params(self) -> dict[str, Any]:
        return {
            "field": self.field, "warmup": self.warmup, "bins": self.bins, "blocks": list(self.blocks),
            "scale_weights": list(self.scale_weights), "alpha": self.alpha, "smoothing": self.smoothing,
            "tail_compression": self.tail_compression,
            "context_hours": self.context_hours, "context_weight": self.context_weight, "threshold": self.threshold,
            "suppress": self.suppress, "repeat_penalty": self.repeat_penalty, "repeat_halflife": self.repeat_halflife,
            "table_bits": self.table_bits, "history_weight": self.history_weight,
            "history_alpha": self.history_alpha, "history_bin": self.history_bin,
        }  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [
            {"warmup": 20, "bins": 10, "blocks": [1], "scale_weights": [1.0], "context_hours": 0, "suppress": 3,
             "table_bits": 8},
            {"warmup": 30, "bins": 8, "blocks": [1, 3], "scale_weights": [1.0, 0.9], "context_hours": 6,
             "suppress": 2, "repeat_halflife": 50, "table_bits": 9},
            {"warmup": 25, "bins": 8, "blocks": [2, 1], "scale_weights": [1.0, 0.9], "context_hours": 4,
             "suppress": 4, "table_bits": 8, "history_weight": 0.3, "history_alpha": 1.0, "history_bin": 0.1},
        ]  # fmt: skip

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        x = np.asarray(X[self.field], np.float64)
        m = len(slots)
        if m:
            self._grow_slots(int(slots.max()) + 1)
        score, rarity, level, det, hrar = (np.empty(m, np.float64) for _ in range(5))
        ready = np.empty(m, np.bool_)
        _rarity_kernel(
            slots, np.asarray(ts_ms, np.int64), x, self.warmup, self.bins, self._blocks, self._scale_w, self.alpha,
            self.smoothing, self.tail_compression, self.context_hours, self.context_weight, self.threshold,
            self.suppress, self.repeat_penalty, self._decay, self.history_weight, self.history_alpha, self.history_bin,
            self.st, self.cnt, self.hist, score, ready, rarity, level, det, hrar,
        )  # fmt: skip
        flag = ready & (score >= self.threshold)
        cal = score / (1.0 + score)
        stats = {"value": x, "rarity": rarity, "history_rarity": hrar, "level": level, "detections": det}
        return Verdicts(score, cal, flag, flag.copy(), ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "value 912 is at a rare level (12, rarity 3.4 nines; 2 earlier detections)"."""
        return (
            f"{self.field} {float(stats.get('value', np.nan)):.6g} is at a rare level "
            f"({float(stats.get('level', np.nan)):g}, rarity {float(stats.get('rarity', np.nan)):.1f} nines; "
            f"{float(stats.get('detections', 0.0)):g} earlier detections)"
        )

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """The field, scored by the rarity of its level in nines (no expected value: rarity has no centre)."""
        s = v.stats
        return one_feature(self.field, rows, score_or(v, s["rarity"]), s["value"], None, v.flag)

    def _grow_slots(self, top: int) -> None:
        self.st = grow_rows(self.st, top)
        self.cnt = grow_rows(self.cnt, top)
        self.hist = grow_rows(self.hist, top)

    def reset_slots(self, slots: Int32Array) -> None:
        slots = slots[(slots >= 0) & (slots < self.st.shape[0])]
        self.st[slots] = 0.0
        self.cnt[slots] = 0
        self.hist[slots] = 0.0

    def snapshot(self) -> dict[str, Any]:
        return {"st": self.st.copy(), "cnt": self.cnt.copy(), "hist": self.hist.copy()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.st = np.array(state["st"], np.float64).reshape(-1, _BASE + _PER_SCALE * len(self.blocks))
        self.cnt = np.array(state["cnt"], np.int32).reshape(-1, 2 * len(self.blocks), 1 << self.table_bits)
        self.hist = np.array(state["hist"], np.float64).reshape(-1, _HIST + 1)

"""``vigil bench detectors``: events/s and ROC AUC of every registered detector on the shared workload.

Each Vigil detector runs per key over the workload (``amount``, micro-batches of 16,384 rows, after a
warm-up call that compiles its kernels), and River's ``HalfSpaceTrees`` (10 trees, height 8, window
250, limits from the data: ``bench_river.py``'s configuration) runs event by event on the first
``river_n`` events. The AUC is of the raw scores against the injected spikes (``label``), over all
rows (a row that is not ready scores 0, as in a deployment). The last line printed with ``as_json``
is one JSON object: ``{"detectors": {name: {"eps", "auc", ...}}, "river_hst": {...},
"hst_speedup_vs_river": ...}``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vigil.cli.bench_engine import _import_shared, find_shared
from vigil.cli.common import strict_json

BATCH_ROWS = 16_384

# the workload's configuration of each detector; kinds not listed run their first _test_params() on `amount`
CONFIGS: dict[str, dict[str, Any]] = {
    "sliding_zscore": {"field": "amount", "window": "60s", "threshold": 4.0, "min_count": 10,
                       "baseline_halflife": None, "protect": False},
    "half_space_trees": {"fields": ["amount"], "n_trees": 10, "height": 6, "window_size": 20, "per_key": True},
}  # fmt: skip
EXTRA = {  # more configurations, named
    "half_space_trees[5 trees]": ("half_space_trees", {
        "fields": ["amount"], "n_trees": 5, "height": 6, "window_size": 20, "per_key": True}),
    "half_space_trees[global, River's config]": ("half_space_trees", {
        "fields": ["amount"], "n_trees": 10, "height": 8, "window_size": 250, "per_key": False, "limits": None}),
}  # fmt: skip
SKIP = {"river": "River's per-event speed is measured by river_hst below"}


def roc_auc(score: np.ndarray, label: np.ndarray) -> float:
    """ROC AUC with ties counted half (Mann-Whitney U).

    Examples:
        >>> roc_auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        0.75
    """
    y = label.astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if not pos or not neg:
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    ranks = np.empty(len(s), np.float64)
    # average ranks over ties
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    ends = np.r_[starts[1:], len(s)]
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - pos * (pos + 1) / 2.0) / (pos * neg))


def _amount_params(params: Any) -> Any:
    """Test params rewritten for the workload: the field ``value`` becomes ``amount``, at any depth."""
    if params == "value":
        return "amount"
    if isinstance(params, dict):
        return {k: _amount_params(v) for k, v in params.items()}
    if isinstance(params, list | tuple):
        return [_amount_params(v) for v in params]
    return params


def _run_vigil(cls: type[Any], params: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    key, ts, amount = ev["key"], ev["ts"], ev["amount"]
    det = cls(**params)
    # every field the detector reads gets the workload's amount (test params may name it `value`)
    names = {"amount", *getattr(det, "fields", ())}
    cls(**params).process_many(key[:64], ts[:64], {f: amount[:64] for f in names})  # compile the kernels first
    n = len(key)
    scores = []
    t0 = time.perf_counter()
    for a in range(0, n, BATCH_ROWS):
        b = a + BATCH_ROWS
        scores.append(det.process_many(key[a:b], ts[a:b], {f: amount[a:b] for f in names}).score)
    dt = time.perf_counter() - t0
    score = np.concatenate(scores)
    return {"eps": round(n / dt, 1), "auc": round(roc_auc(score, ev["label"]), 4), "seconds": round(dt, 3),
            "params": params}  # fmt: skip


def _run_river(ev: dict[str, Any], n: int) -> dict[str, Any]:
    from river import anomaly

    amounts = ev["amount"][:n].tolist()
    xs = [{"amount": v} for v in amounts]
    model = anomaly.HalfSpaceTrees(n_trees=10, height=8, window_size=250, seed=42,
                                   limits={"amount": (min(amounts), max(amounts))})  # fmt: skip
    score = np.empty(n, np.float64)
    t0 = time.perf_counter()
    for i, x in enumerate(xs):
        score[i] = model.score_one(x)
        model.learn_one(x)
    dt = time.perf_counter() - t0
    return {"eps": round(n / dt, 1), "auc": round(roc_auc(score, ev["label"][:n]), 4), "events": n,
            "seconds": round(dt, 3), "params": {"n_trees": 10, "height": 8, "window_size": 250, "seed": 42,
                                                "limits": "min/max of the events"}}  # fmt: skip


def run_detectors_bench(
    n: int, keys: int, shared: Path | None, as_json: bool, out: Path | None, river_n: int = 100_000
) -> dict[str, Any]:
    """Measure every registered detector and River's HalfSpaceTrees; print a summary, save and return it.

    Args:
        n: events in the workload (1M in the anchors).
        keys: keys in the workload (10k in the anchors).
        shared: the shared bench folder with ``workload.py`` (default: ``../shared/bench/perf``).
        as_json: print the result as one JSON object on the last line.
        out: where to write the result JSON (``None``: don't write).
        river_n: events River scores (River is ~50× slower; the anchors use 100k).
    """
    from vigil.detectors import registry

    perf = find_shared(shared, "bench", "perf")
    _import_shared(perf)
    from workload import generate  # type: ignore[import-not-found]

    log = (lambda s: print(s, file=sys.stderr, flush=True)) if as_json else (lambda s: print(s, flush=True))
    ev = generate(n, keys)
    results: dict[str, Any] = {}
    runs: list[tuple[str, type[Any], dict[str, Any]]] = []
    for kind, cls in sorted(registry().items()):
        if kind in SKIP:
            continue
        if kind in CONFIGS:
            params = CONFIGS[kind]
        else:
            tests = cls._test_params()
            if not tests:
                continue
            params = _amount_params(tests[0])
        runs.append((kind, cls, params))
    reg = registry()
    runs += [(name, reg[kind], params) for name, (kind, params) in EXTRA.items() if kind in reg]
    for name, cls, params in runs:
        try:
            results[name] = _run_vigil(cls, params, ev)
            log(f"{name:45s} {results[name]['eps']:>14,.0f} events/s   AUC {results[name]['auc']:.4f}")
        except Exception as exc:  # a detector that can't run on this workload is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
            log(f"{name:45s} failed: {results[name]['error']}")
    river: dict[str, Any] | None
    try:
        river = _run_river(ev, min(river_n, n))
        log(f"{'River HalfSpaceTrees (first ' + format(river['events'], ',') + ')':45s} "
            f"{river['eps']:>14,.0f} events/s   AUC {river['auc']:.4f}")  # fmt: skip
    except ImportError:
        river = None
        log("River is not installed (`pip install vigil[river]`): no River comparison")
    hst = results.get("half_space_trees", {})
    speedup = round(hst["eps"] / river["eps"], 1) if river and "eps" in hst else None
    result = {
        "events": n, "keys": keys, "batch_rows": BATCH_ROWS, "detectors": results, "river_hst": river,
        "hst_speedup_vs_river": speedup, "python": sys.version.split()[0], "cpu_count": os.cpu_count(),
    }  # fmt: skip
    if speedup is not None:
        log(f"HalfSpaceTrees per key vs River's: {speedup}× events/s, AUC {hst['auc']} vs {river['auc']}")  # type: ignore[index]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(strict_json(result, indent=1) + "\n")
    if as_json:
        print(strict_json(result), flush=True)
    return result


if __name__ == "__main__":  # pragma: no cover
    run_detectors_bench(1_000_000, 10_000, None, True, None)


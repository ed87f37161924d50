"""``vigil bench nab``: a detector config on the Numenta Anomaly Benchmark, beside NAB's published scoreboard.

How a run works:

* **One fresh detector per file.** Each of NAB's 58 files (``data/<category>/<file>.csv``, columns
  ``timestamp,value``) is one series, scored by a new detector built from the same fixed config; labels
  and later rows are never seen at scoring time (the detector is prequential: each row is scored, then
  learned). Rows stream in **file order**, NAB's definition of the stream (its scorer matches rows by
  position); the few clock-change timestamps that repeat or step back are clamped to the latest time seen
  (``ts = max(ts, previous ts)``), so time-based state never sees time go backwards.
* **Anomaly score.** NAB sweeps one threshold over all files, so only the *ranking* of scores across files
  matters, and saturated scores (many rows tied at 1.0) lose badly. We write a strictly increasing
  transform of the calibrated score ``c`` in [0, 1]: ``n / (1 + n)`` with ``n = -log10(1 - c)`` (the
  "nines"). Where ``c`` rounds to exactly 1 the rows would tie, so ``n`` comes from the unsaturated
  ``stats["nines"]`` when the detector reports it (:class:`~vigil.detectors.Calibrated` does), else ties
  at ``c == 1`` are broken by the raw score (``n = 17 + log1p(score)``, above any unsaturated ``n``).
  Rows that are not ready score 0.
* **Scoring** with the shared NAB scorer (``nab_score.py`` in ``../shared/bench/nab``, found like
  :func:`vigil.cli.bench_engine.find_shared`), in memory; result files in NAB's format
  (``timestamp,value,anomaly_score``) are also written to ``results_dir/<category>/<file>.csv`` so the
  scorer's command line can re-score them, with ``nab_scores.json`` beside them.
* **Speed**: points/s = total rows / detector wall time (``process_many`` calls only: no file I/O, no
  scoring; numba kernels are warmed up on a short synthetic series first).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from vigil.cli.common import strict_json
from vigil.errors import VigilError

PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")

HELP_DATA = (
    "the NAB data was not found; pass --data DIR (and --labels FILE). In this project's workspace it is "
    "../shared/datasets/nab/data; otherwise use a checkout of https://github.com/numenta/NAB: its data/ folder "
    "and labels/combined_windows.json"
)
HELP_SCORER = "the NAB scorer (nab_score.py) was not found; pass --scorer DIR (in this workspace ../shared/bench/nab)"

# NAB v1.1's published scoreboard (results/final_results.json), copied from the table in
# ../shared/bench/nab/README.md section 5 ("Published scoreboard"): standard, reward_low_FP_rate, reward_low_FN_rate.
SCOREBOARD: list[tuple[str, float, float, float]] = [
    ("Perfect", 100.00, 100.00, 100.00),
    ("ARTime", 74.85, 65.15, 80.36),
    ("Numenta HTM", 70.10, 63.12, 74.32),
    ("CAD OSE", 69.90, 66.98, 73.18),
    ("HTM Java", 65.55, 53.26, 70.42),
    ("NumentaTM HTM", 64.55, 56.67, 69.19),
    ("earthgecko Skyline", 58.20, 46.20, 63.80),
    ("KNN CAD", 57.99, 43.41, 64.81),
    ("Relative Entropy", 54.64, 47.60, 58.84),
    ("Random Cut Forest", 51.72, 38.36, 59.75),
    ("Twitter ADVec v1.0.0", 47.06, 33.61, 53.50),
    ("Windowed Gaussian", 39.65, 20.87, 47.41),
    ("Etsy Skyline", 35.69, 27.08, 44.48),
    ("Bayesian Changepoint", 17.71, 3.21, 32.26),
    ("Random", 16.83, 5.76, 25.88),
    ("EXPoSE", 16.44, 3.19, 26.92),
    ("Null", 0.00, 0.00, 0.00),
]


def _shared_dir(given: Path | str | None, *parts: str, help_text: str) -> Path:
    from vigil.cli.bench_engine import find_shared

    try:
        return find_shared(Path(given) if given else None, *parts)
    except VigilError:
        raise VigilError(help_text) from None


def load_scorer(scorer_dir: Path | str | None = None) -> Any:
    """The shared ``nab_score`` module (from ``scorer_dir``, else ``../shared/bench/nab``)."""
    d = _shared_dir(scorer_dir, "bench", "nab", help_text=HELP_SCORER)
    path = d / "nab_score.py"
    if not path.is_file():
        raise VigilError(HELP_SCORER)
    spec = importlib.util.spec_from_file_location("nab_score", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("nab_score", mod)
    spec.loader.exec_module(mod)
    return mod


def nab_anomaly_score(v: Any) -> np.ndarray:
    """The NAB anomaly score of verdicts: a strictly increasing, non-saturating transform (module docstring).

    Examples:
        >>> from vigil.detectors.base import Verdicts
        >>> c = np.array([0.0, 0.9, 0.999, 1.0, 1.0])
        >>> v = Verdicts(np.array([0, 1, 3, 40, 50.0]), c, c > 1, c > 1, np.array([False, True, True, True, True]))
        >>> s = nab_anomaly_score(v)
        >>> s.round(4).tolist(), bool(np.all(np.diff(s) > 0))
        ([0.0, 0.5, 0.75, 0.9539, 0.9544], True)
    """
    c = np.clip(np.nan_to_num(np.asarray(v.calibrated, np.float64), nan=0.0), 0.0, 1.0)
    if "nines" in v.stats:
        n = np.asarray(v.stats["nines"], np.float64).copy()
    else:
        with np.errstate(divide="ignore"):
            n = -np.log10(1.0 - c)
        sat = ~np.isfinite(n)
        n[sat] = 17.0 + np.log1p(np.maximum(np.nan_to_num(np.asarray(v.score, np.float64)[sat]), 0.0))
    n = np.where(np.asarray(v.ready, bool) & np.isfinite(n), np.maximum(n, 0.0), 0.0)
    return n / (1.0 + n)


def _warm_up(factory: Any, fields: tuple[str, ...]) -> None:
    """Run a fresh detector on a short synthetic series so numba compiles/loads its kernels before timing."""
    from vigil.cli.score_file import run_detector

    rng = np.random.default_rng(0)
    m = 3000
    X = {f: 10 + rng.standard_normal(m) for f in fields}
    run_detector(factory(), np.zeros(m, np.int32), np.arange(m, dtype=np.int64) * 300_000, X, batch_rows=1024)


def run_nab_bench(
    config_path: str | os.PathLike[str],
    *,
    data_dir: str | os.PathLike[str] | None = None,
    labels: str | os.PathLike[str] | None = None,
    scorer_dir: str | os.PathLike[str] | None = None,
    results_dir: str | os.PathLike[str],
    as_json: bool = False,
    files: list[str] | None = None,
    batch_rows: int = 65_536,
    quiet: bool = False,
) -> dict[str, Any]:
    """Score a detector config on NAB and print our three profile scores beside the published scoreboard.

    Args:
        config_path: a detector config file (:mod:`vigil.config.detector`) or a bundled name such as ``nab``.
        data_dir: NAB's ``data`` folder (default ``../shared/datasets/nab/data``).
        labels: the windows JSON (default ``<data_dir>/../labels/combined_windows.json``).
        scorer_dir: the folder holding ``nab_score.py`` (default ``../shared/bench/nab``).
        results_dir: where NAB-format result files and ``nab_scores.json`` are written.
        as_json: print a last line ``{"standard", "reward_low_FP_rate", "reward_low_FN_rate", "points_per_s"}``.
        files: score only these files (names as in the windows JSON); such a score is not comparable with
            the scoreboard (``subset`` is true in the result).
        batch_rows: micro-batch size.
        quiet: don't print the table.

    Returns:
        The three profile scores, ``points_per_s``, and details (per-profile threshold, windows hit,
        false-positive rows, files, rows, detector seconds).
    """
    from vigil.cli.score_file import run_detector
    from vigil.config.detector import load_detector_config, resolve_config

    cfg_path = resolve_config(config_path)
    factory, cols = load_detector_config(cfg_path)
    if cols.key_column is not None:
        raise VigilError("a NAB config scores one series per file: drop `key_column`")
    if data_dir is None:
        data = _shared_dir(None, "datasets", "nab", help_text=HELP_DATA) / "data"
    else:
        data = Path(data_dir)
    if not data.is_dir():
        raise VigilError(f"{HELP_DATA} (looked in {data})")
    windows = Path(labels) if labels is not None else data.parent / "labels" / "combined_windows.json"
    if not windows.is_file():
        raise VigilError(f"{HELP_DATA} (no labels file {windows})")
    nab = load_scorer(None if scorer_dir is None else Path(scorer_dir))
    corpus = nab.load_corpus(str(data), str(windows))
    names = list(corpus) if files is None else list(files)
    unknown = [f for f in names if f not in corpus]
    if unknown:
        raise VigilError(f"not in the NAB corpus: {unknown[:5]}")
    value_col = cols.value_columns[0]
    if len(cols.value_columns) != 1:
        raise VigilError(f"NAB files have one value column; the config reads {list(cols.value_columns)}")
    _warm_up(factory, cols.value_columns)
    scores: dict[str, np.ndarray] = {}
    t_det = 0.0
    rows = 0
    out_dir = Path(results_dir)
    for name in names:
        df = corpus[name]
        ts = np.maximum.accumulate(df.timestamps.astype("datetime64[ms]").astype(np.int64))
        x = np.asarray(df.values, np.float64)
        det = factory()
        t0 = time.perf_counter()
        v = run_detector(det, np.zeros(len(x), np.int32), ts, {value_col: x}, batch_rows=batch_rows)
        t_det += time.perf_counter() - t0
        rows += len(x)
        scores[name] = nab_anomaly_score(v)
        _write_result(out_dir / name, df.timestamps, x, scores[name])
    res = nab.score(scores, corpus, per_file=True)
    result: dict[str, Any] = {p: round(float(res[p]["score"]), 3) for p in PROFILES}
    result["points_per_s"] = round(rows / t_det, 1) if t_det > 0 else None
    result.update(
        config=str(cfg_path), files=len(names), rows=rows, detector_s=round(t_det, 4), subset=files is not None,
        profiles={p: {k: res[p][k] for k in ("score", "raw", "threshold", "windows", "windows_detected", "fp_rows")}
                  for p in PROFILES},
    )  # fmt: skip
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "nab_scores.json").write_text(json.dumps({**result, "nab": res}, indent=1, default=float) + "\n")
    if not quiet:
        _print_table(result, cfg_path.stem)
    if as_json:
        print(strict_json({k: result[k] for k in (*PROFILES, "points_per_s")}), flush=True)
    return result


def _write_result(path: Path, timestamps: np.ndarray, values: np.ndarray, score: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    ts_text = np.char.replace(np.datetime_as_string(timestamps, unit="s"), "T", " ")
    with open(path, "w", encoding="utf-8") as f:
        f.write("timestamp,value,anomaly_score\n")
        f.writelines(
            f"{t},{v:.17g},{s:.17g}\n"
            for t, v, s in zip(ts_text.tolist(), values.tolist(), score.tolist(), strict=True)
        )


def _print_table(result: dict[str, Any], label: str) -> None:
    from rich.console import Console
    from rich.table import Table

    ours: tuple[str, float, float, float] = (f"Vigil: {label}", *(float(result[p]) for p in PROFILES))  # type: ignore[assignment]
    board = sorted([*SCOREBOARD, ours], key=lambda r: -r[1])
    title = f"NAB v1.1 — {result['files']} files, {result['rows']:,} points"
    if result["subset"]:
        title += " (SUBSET: not comparable with the scoreboard)"
    t = Table(title=title, caption="published figures: NAB results/final_results.json (shared/bench/nab/README.md)")
    t.add_column("detector")
    for p in PROFILES:
        t.add_column(p, justify="right")
    for r in board:
        style = "bold green" if r is ours else None
        t.add_row(r[0], *(f"{s:.2f}" for s in r[1:]), style=style)
    console = Console(stderr=True, highlight=False)
    console.print(t)
    pps = result["points_per_s"]
    console.print(f"detector speed: {pps:,.0f} points/s ({result['detector_s']:.2f} s)" if pps else "")
    for p in PROFILES:
        d = result["profiles"][p]
        thr = "none" if d["threshold"] is None else f"{d['threshold']:.6g}"
        if not math.isnan(d["score"]):
            console.print(f"  {p}: threshold {thr}, windows {d['windows_detected']}/{d['windows']}, "
                          f"FP rows {d['fp_rows']}")  # fmt: skip

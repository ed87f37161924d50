"""``vigil bench multivariate``: detector configs on SMAP/MSL spacecraft telemetry, beside two controls.

The data (``../shared/datasets/smap_msl``, or ``--data``): 82 channels, each a ``train/<chan>.npy`` and a
``test/<chan>.npy`` of shape ``(rows, features)`` (column 0 the telemetry value, the others one-hot command
flags), and ``labeled_anomalies.csv`` with the anomalous row ranges of each test split.

How a run works:

* **Columns** are named ``c0, c1, ...`` (``c0`` the telemetry value). A config's field lists may use shell
  wildcards (``fields: ["c*"]`` is every column of the channel, which has 25 or 55); they are expanded per
  channel (:func:`expand_fields`). Rows get synthetic event times one minute apart (the data has none),
  the test rows continuing after the training rows.
* **One fresh detector per channel**, built from the config. A detector with ``fit_from_frame`` (offline
  trained) is fitted on the channel's training split; any other detector is **warmed up** on it (the
  training rows stream through it first, their verdicts discarded). Then the test rows stream through it
  in order, micro-batch by micro-batch: every score is causal (row ``t`` is scored from the training
  split and test rows ``< t`` only; the detector contract's prequential rule). No label is ever seen.
* **The score ranked** is the detector's unbounded tail surprise ``stats["surprise"]`` (``-log10`` of the
  tail probability) when it reports one, else its calibrated score (ties at 1 broken by the raw score,
  as :func:`vigil.cli.bench_nab.nab_anomaly_score`); rows that are not ready score 0.
* **Metrics** (:mod:`vigil.cli.bench_metrics`), per channel, then averaged over channels (macro):
  best F1 without point adjustment (an oracle: per-channel best threshold), AUC-PR, AUC-ROC, best F1
  *with* point adjustment (inflated: a random score gets a high one; shown for comparison with papers),
  and precision/recall/F1 of the detector's **own flags** at its default threshold (no oracle).
* **Controls in the same run**: scikit-learn's ``IsolationForest`` (default parameters, seed 0) fitted on
  each channel's training split (all columns) and scored on its test split, and seeded uniform random
  scores. Their figures use the same metric code.
* **Speed**: rows/s = (training + test rows) / detector wall time (``process_many`` and fitting only).

Caveats printed with the table: labels are per channel range, not per feature; per-channel best F1 is an
oracle threshold; the labelled ranges are long (median 121 rows), which rewards detectors that keep flagging
through a shift and penalises those that re-learn.
"""

from __future__ import annotations

import csv
import fnmatch
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vigil.cli.bench_metrics import series_metrics
from vigil.errors import VigilError

HELP_DATA = (
    "the SMAP/MSL data was not found; pass --data DIR (a folder with train/, test/ and labeled_anomalies.csv; "
    "in this project's workspace ../shared/datasets/smap_msl)"
)
DEFAULT_CONFIGS = ("smap_msl",)
MINUTE_MS = 60_000
METRICS = ("f1_nopa", "auc_pr", "auc_roc", "f1_pa", "p_default", "r_default", "f1_default")


@dataclass
class Channel:
    """One labelled series: training rows, test rows (float64, ``(rows, features)``), test labels."""

    name: str
    spacecraft: str
    train: np.ndarray
    test: np.ndarray
    labels: np.ndarray

    @property
    def columns(self) -> list[str]:
        """Column names ``c0 .. c<d-1>`` (``c0`` the telemetry value)."""
        return [f"c{j}" for j in range(self.train.shape[1])]


def load_channels(data_dir: str | os.PathLike[str] | None = None, names: list[str] | None = None) -> list[Channel]:
    """The SMAP/MSL channels (all, in the labels file's order, or only ``names``)."""
    if data_dir is None:
        from vigil.cli.bench_engine import find_shared

        try:
            data = find_shared(None, "datasets", "smap_msl")
        except VigilError:
            raise VigilError(HELP_DATA) from None
    else:
        data = Path(data_dir)
    labels = data / "labeled_anomalies.csv"
    if not labels.is_file():
        raise VigilError(f"{HELP_DATA} (no {labels})")
    out = []
    with open(labels, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            name = row["chan_id"]
            if names is not None and name not in names:
                continue
            train = np.load(data / "train" / f"{name}.npy").astype(np.float64)
            test = np.load(data / "test" / f"{name}.npy").astype(np.float64)
            lab = np.zeros(len(test), bool)
            for a, b in json.loads(row["anomaly_sequences"]):
                lab[a : b + 1] = True
            out.append(Channel(name, row["spacecraft"], train, test, lab))
    if names is not None:
        unknown = sorted(set(names) - {c.name for c in out})
        if unknown:
            raise VigilError(f"not SMAP/MSL channels: {unknown[:5]}")
    return out


def _natural(name: str) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def expand_fields(params: Any, columns: list[str]) -> Any:
    """Expand shell wildcards in ``fields`` lists (and nested member specs) against ``columns``.

    Examples:
        >>> expand_fields({"fields": ["c*"], "k": 1}, ["c0", "c1", "c10", "c2"])
        {'fields': ['c0', 'c1', 'c2', 'c10'], 'k': 1}
        >>> expand_fields({"members": [{"params": {"fields": ["c0", "c1?"]}}]}, ["c0", "c1", "c10"])
        {'members': [{'params': {'fields': ['c0', 'c10']}}]}
    """
    if isinstance(params, dict):
        out = {}
        for k, v in params.items():
            if k == "fields" and isinstance(v, list | tuple):
                names: list[str] = []
                for pat in v:
                    hits = sorted(fnmatch.filter(columns, pat), key=_natural) if any(c in pat for c in "*?[") else [pat]
                    if not hits:
                        raise VigilError(f"`fields` pattern {pat!r} matches no column of {columns[:3]}...")
                    names.extend(h for h in hits if h not in names)
                out[k] = names
            else:
                out[k] = expand_fields(v, columns)
        return out
    if isinstance(params, list):
        return [expand_fields(v, columns) for v in params]
    return params


def per_channel(params: Any, channel: str) -> Any:
    """``{channel}`` in string params becomes the channel's name (a per-channel trained model's path).

    Examples:
        >>> per_channel({"model": "models/{channel}", "k": [1, "x"]}, "A-1")
        {'model': 'models/A-1', 'k': [1, 'x']}
    """
    if isinstance(params, dict):
        return {k: per_channel(v, channel) for k, v in params.items()}
    if isinstance(params, list):
        return [per_channel(v, channel) for v in params]
    return params.replace("{channel}", channel) if isinstance(params, str) else params


def ranking_score(v: Any) -> np.ndarray:
    """The score a run is ranked by: ``stats["surprise"]`` if reported, else the NAB transform (module docstring)."""
    from vigil.cli.bench_nab import nab_anomaly_score

    if "surprise" in v.stats:
        s = np.nan_to_num(np.asarray(v.stats["surprise"], np.float64), nan=0.0, posinf=1e300)
        return np.where(np.asarray(v.ready, bool), np.maximum(s, 0.0), 0.0)
    return nab_anomaly_score(v)


def _value_columns(cols: Any, columns: list[str]) -> list[str]:
    names = expand_fields({"fields": list(cols.value_columns)}, columns)["fields"]
    return [str(n) for n in names]


def run_config(config: str | os.PathLike[str], channels: list[Channel], *, batch_rows: int = 4096) -> dict[str, Any]:
    """Score every channel with one detector config: per-channel metrics, macro means and timing."""
    from vigil.cli.score_file import run_detector
    from vigil.config.detector import load_detector_config, parse_detector_config, resolve_config
    from vigil.yamlfile import read_yaml

    path = resolve_config(config)
    raw = read_yaml(str(path), "detector config")
    templated = "{channel}" in json.dumps(raw)  # per-channel models: parsed (and checked) per channel
    factory, cols = (None, None) if templated else load_detector_config(path)
    rows: list[dict[str, Any]] = []
    t_det = 0.0
    n_rows = 0
    for ch in channels:
        if templated:
            factory, cols = parse_detector_config(per_channel(raw, ch.name), origin=f"{Path(path).name} ({ch.name})")
        assert factory is not None and cols is not None
        columns = ch.columns
        params = expand_fields(factory.params, columns)
        value_cols = _value_columns(cols, columns)
        idx = [columns.index(c) for c in value_cols]
        t0 = time.perf_counter()
        if factory.trainable:
            fitted = factory.cls.fit_from_frame({c: ch.train[:, j] for c, j in zip(value_cols, idx, strict=True)})
            det = factory.cls(**{**params, **fitted})
        else:
            det = factory.cls(**params)
            m = len(ch.train)
            run_detector(det, np.zeros(m, np.int32), np.arange(m, dtype=np.int64) * MINUTE_MS,
                         {c: np.ascontiguousarray(ch.train[:, j]) for c, j in zip(value_cols, idx, strict=True)},
                         batch_rows=batch_rows)  # fmt: skip
        m0, m = len(ch.train), len(ch.test)
        v = run_detector(det, np.zeros(m, np.int32), (m0 + np.arange(m, dtype=np.int64)) * MINUTE_MS,
                         {c: np.ascontiguousarray(ch.test[:, j]) for c, j in zip(value_cols, idx, strict=True)},
                         batch_rows=batch_rows)  # fmt: skip
        t_det += time.perf_counter() - t0
        n_rows += m0 + m
        flag = v.flag if cols.threshold is None else (v.ready & (v.calibrated >= cols.threshold))
        met = series_metrics(ranking_score(v), ch.labels, flag)
        met["f1_nopa_raw"] = series_metrics(np.where(v.ready, v.score, -np.inf), ch.labels)["f1_nopa"]
        rows.append({"channel": ch.name, "flagged": float(flag.mean()), **met})
    out = _macro(rows)
    out.update(config=str(path), name=Path(path).stem, rows_per_s=round(n_rows / t_det, 1) if t_det else None,
               detector_s=round(t_det, 3), channels=rows)  # fmt: skip
    return out


def _macro(rows: list[dict[str, Any]]) -> dict[str, Any]:
    keys = [k for k in rows[0] if k != "channel"]
    return {k: float(np.nanmean([r[k] for r in rows])) for k in keys}


def run_controls(channels: list[Channel], seed: int = 0) -> dict[str, dict[str, Any]]:
    """scikit-learn's Isolation Forest (fitted on each training split, all columns) and seeded random scores."""
    from sklearn.ensemble import IsolationForest

    rng = np.random.default_rng(seed)
    iso_rows, rnd_rows = [], []
    t_iso = 0.0
    for ch in channels:
        t0 = time.perf_counter()
        model = IsolationForest(random_state=seed).fit(ch.train)
        s = -model.score_samples(ch.test)
        t_iso += time.perf_counter() - t0
        # sklearn's own cut (`predict`, contamination "auto": score_samples < -0.5) as its default threshold
        iso_rows.append({"channel": ch.name, **series_metrics(s, ch.labels, s > 0.5)})
        r = rng.random(len(ch.test))
        rnd_rows.append({"channel": ch.name, **series_metrics(r, ch.labels, r > 0.999)})
    n = sum(len(c.train) + len(c.test) for c in channels)
    iso = {**_macro(iso_rows), "name": "sklearn IsolationForest", "rows_per_s": round(n / t_iso, 1),
           "channels": iso_rows}  # fmt: skip
    rnd = {**_macro(rnd_rows), "name": f"random (seed {seed})", "rows_per_s": None, "channels": rnd_rows}
    return {"iforest": iso, "random": rnd}


def run_multivariate_bench(
    configs: list[str] | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    channels: list[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    as_json: bool = False,
    quiet: bool = False,
) -> dict[str, Any]:
    """Run configs and the controls on SMAP/MSL; print the table and (``as_json``) a summary as the last line.

    Returns:
        ``{"configs": [...], "iforest": ..., "random": ..., "summary": {...}}``; the summary holds
        ``f1_nopa_best`` (the best config's macro best-F1 without point adjustment), ``best_config``,
        ``f1_nopa_iforest``, ``f1_nopa_random``, ``auc_pr_best``, ``f1_default_best`` and the target ratios.
    """
    chans = load_channels(data_dir, channels)
    results = [run_config(c, chans) for c in (configs or list(DEFAULT_CONFIGS))]
    controls = run_controls(chans)
    best = max(results, key=lambda r: r["f1_nopa"])
    iso, rnd = controls["iforest"], controls["random"]
    summary = {
        "best_config": best["name"],
        "f1_nopa_best": round(best["f1_nopa"], 4),
        "f1_nopa_iforest": round(iso["f1_nopa"], 4),
        "f1_nopa_random": round(rnd["f1_nopa"], 4),
        "auc_pr_best": round(best["auc_pr"], 4),
        "auc_roc_best": round(best["auc_roc"], 4),
        "f1_pa_best_inflated": round(best["f1_pa"], 4),
        "f1_default_best": round(best["f1_default"], 4),
        "p_default_best": round(best["p_default"], 4),
        "r_default_best": round(best["r_default"], 4),
        "ratio_vs_iforest": round(best["f1_nopa"] / iso["f1_nopa"], 3) if iso["f1_nopa"] else None,
        "ratio_default_vs_oracle": round(best["f1_default"] / best["f1_nopa"], 3) if best["f1_nopa"] else None,
        "rows_per_s_best": best["rows_per_s"],
        "channels": len(chans),
    }
    report = {"configs": results, **controls, "summary": summary}
    if out is not None:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(json.dumps(report, indent=1, default=float) + "\n")
    if not quiet:
        _print_table(results, controls, len(chans))
    if as_json:
        print(json.dumps(summary), flush=True)
    return report


def _print_table(results: list[dict[str, Any]], controls: dict[str, dict[str, Any]], n: int) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(
        title=f"SMAP/MSL — {n} channels, macro over channels, no point adjustment unless marked",
        caption="f1_pa is point-adjusted (inflated: see the random row); default = the detector's own flags",
    )
    t.add_column("config")
    for k in ("f1_nopa", "auc_pr", "auc_roc", "f1_pa (inflated)", "P default", "R default", "F1 default", "rows/s"):
        t.add_column(k, justify="right")
    for r in [*results, controls["iforest"], controls["random"]]:
        pps = r.get("rows_per_s")
        t.add_row(r["name"], *(f"{r[k]:.3f}" for k in METRICS), f"{pps:,.0f}" if pps else "-")
    Console(stderr=True, highlight=False).print(t)

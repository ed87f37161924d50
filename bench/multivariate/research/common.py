"""Research helpers: load SMAP/MSL, evaluate score functions (macro metrics over the 82 channels)."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np

from vigil.cli.bench_metrics import series_metrics

DATA = Path("/work/shared/datasets/smap_msl")


def load(data=DATA):
    out = []
    for r in csv.DictReader(open(data / "labeled_anomalies.csv")):
        c = r["chan_id"]
        tr = np.load(data / "train" / f"{c}.npy").astype(np.float64)
        te = np.load(data / "test" / f"{c}.npy").astype(np.float64)
        lab = np.zeros(len(te), bool)
        for s, e in json.loads(r["anomaly_sequences"]):
            lab[s : e + 1] = True
        out.append((c, r["spacecraft"], tr, te, lab))
    return out


def evaluate(fn, chans, name="", flags_fn=None, verbose=False):
    rows = []
    t0 = time.perf_counter()
    for c, _sc, tr, te, lab in chans:
        out = fn(tr, te)
        if isinstance(out, tuple):
            s, fl = out
        else:
            s, fl = out, None
        s = np.nan_to_num(np.asarray(s, np.float64), nan=0.0, posinf=1e300)
        m = series_metrics(s, lab, fl)
        m["chan"] = c
        rows.append(m)
        if verbose:
            print(c, {k: round(v, 3) for k, v in m.items() if k != "chan"})
    dt = time.perf_counter() - t0
    agg = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k != "chan"}
    agg["s"] = dt
    print(f"{name:40s} " + " ".join(f"{k}={v:.3f}" for k, v in agg.items()), flush=True)
    return agg, rows

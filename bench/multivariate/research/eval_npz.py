"""Evaluate per-channel score arrays saved by torch_ae.py (column j of each channel's array), causally calibrated."""

import math
import sys

import numpy as np
from common import load

from vigil.cli.bench_metrics import series_metrics
from vigil.detectors.tailcal import _wrap_kernel


def calibrate(s, thr=0.999, hold=0.8, history=2000, tail_rows=50, min_history=100, tail_scale_min=0.0):
    m = len(s)
    hist = np.zeros((1, history))
    count = np.zeros(1, np.int64)
    fit = np.zeros((1, 3))
    run = np.zeros(1, np.bool_)
    lp = np.zeros(m)
    ready = np.zeros(m, np.bool_)
    flag = np.zeros(m, np.bool_)
    _wrap_kernel(
        np.zeros(m, np.int32),
        s,
        np.isfinite(s),
        math.log10(1 - thr),
        math.log10(1 - hold),
        tail_rows,
        min_history,
        tail_scale_min,
        hist,
        count,
        fit,
        run,
        lp,
        ready,
        flag,
    )
    return -lp, flag


chans = load()
data = np.load(sys.argv[1])
for j, name in enumerate(sys.argv[2].split(",")):
    rows = []
    for c, _sc, _tr, _te, lab in chans:
        s = data[c][:, j].astype(np.float64)
        sur, fl = calibrate(s)
        m = series_metrics(sur, lab, fl)
        m["raw"] = series_metrics(s, lab)["f1_nopa"]
        rows.append(m)
    agg = {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0]}
    print(sys.argv[1], name, agg)

"""Research kernel: the streaming Mahalanobis detector's design space, one channel at a time (numba).

The prototype of ``vigil.detectors.mahalanobis`` with every option that was tried (NOTES.md, "streaming
research"): an expanding or EW mean/covariance of the c0 lag embedding, a causal tail calibration of the
squared distance (empirical body, exponential tail over the top ``ktail`` with scale >= ``beta_min``),
flags at ``thr`` nines with hysteresis ``thr_off``, learning delayed by ``delay`` rows (quarantine),
re-learning when ``relearn_frac`` of the last ``relearn_win`` rows were flagged (re-seeding the baseline
from them with ``reseed``, else learning them), and post-hoc debouncing / two-member ensembles.
Unlike the detector, flagged scores are left out of the calibration history (not censored).

    PYTHONPATH=src .venv/bin/python bench/multivariate/research/stream_sim.py "[{'thr': 3, 'thr_off': 0.7}]"
    ... stream_sim.py --debounce "{'thr': 3, 'thr_off': 0.7}"
    ... stream_sim.py --ensemble "[{'w': 30, 'thr': 3, 'thr_off': 0.7}, {'w': 5, 'thr': 3, 'thr_off': 0.7}]"
"""

import math
import sys

import numba
import numpy as np
from common import load

from vigil.cli.bench_metrics import auc_pr, best_f1, prf


@numba.njit(cache=True)
def tailprob(hist, nh, s, ktail, beta_min=0.0):
    """P(score >= s) among the history, exponential tail beyond its top ktail."""
    n = min(nh, hist.shape[0])
    if n == 0:
        return 1.0
    ge = 0
    for j in range(n):
        if hist[j] >= s:
            ge += 1
    k = min(ktail, n)
    if ge >= k:
        return (ge + 0.5) / (n + 1.0)
    # top-k exceedances: threshold u = k-th largest
    top = np.sort(hist[:n])[n - k :]
    u = top[0]
    beta = 0.0
    for j in range(1, k):
        beta += top[j] - u
    beta = beta / max(k - 1, 1)
    if beta < beta_min:
        beta = beta_min
    if beta <= 0:
        beta = 1e-12 + abs(u) * 1e-6
    return (k - 0.5) / (n + 1.0) * math.exp(-(s - u) / beta)


@numba.njit(cache=True)
def run(
    x,
    w,
    alpha,
    shrink,
    floor,
    nhist,
    ktail,
    thr,
    delay,
    relearn_win,
    relearn_frac,
    refit,
    warm,
    beta_min,
    reseed,
    thr_off,
):
    n = x.shape[0]
    d = w
    mu = np.zeros(d)
    C = np.zeros((d, d))
    P = np.eye(d)
    wsum = 0.0
    buf = np.zeros(n + w)  # whole series, simpler for delayed learning
    for i in range(w):
        buf[i] = x[0]
    buf[w:] = x
    hist = np.zeros(nhist)
    nh = 0
    out = np.zeros(n)
    raw = np.zeros(n)
    flag = np.zeros(n, np.bool_)
    D = np.zeros(d)
    last_flag = -(10**9)
    recent = np.zeros(relearn_win, np.bool_)
    nrec = 0
    learned = 0  # rows learned so far (index of next row to learn)
    force_until = -1
    prev_fl = False
    for i in range(n):
        ready = i >= warm
        fl = False
        s = 0.0
        if ready:
            for j in range(d):
                D[j] = buf[i + 1 + j] - mu[j]
            for a in range(d):
                acc = 0.0
                for b in range(d):
                    acc += P[a, b] * D[b]
                s += D[a] * acc
            raw[i] = s
            p = tailprob(hist, nh, s, ktail, beta_min)
            out[i] = -math.log10(max(p, 1e-300))
            fl = out[i] >= thr or (prev_fl and out[i] >= thr_off)
            prev_fl = fl
            flag[i] = fl
        # flag-rate relearn: too many flags recently -> the reference is stale, learn everything pending
        if recent[i % relearn_win]:
            nrec -= 1
        recent[i % relearn_win] = fl
        if fl:
            nrec += 1
            last_flag = i
        if nrec >= relearn_frac * relearn_win and reseed:
            # sustained shift: re-seed the baseline from the last relearn_win rows
            m0 = i - relearn_win + 1
            for j in range(d):
                mu[j] = 0.0
            for t in range(m0, i + 1):
                for j in range(d):
                    mu[j] += buf[t + 1 + j] / relearn_win
            for a in range(d):
                for b in range(d):
                    acc = 0.0
                    for t in range(m0, i + 1):
                        acc += (buf[t + 1 + a] - mu[a]) * (buf[t + 1 + b] - mu[b])
                    C[a, b] = acc / relearn_win
            wsum = float(relearn_win)
            tr = 0.0
            for j in range(d):
                tr += C[j, j]
            M = (1 - shrink) * C
            for j in range(d):
                M[j, j] += shrink * tr / d + floor * floor
            P = np.linalg.inv(M)
            recent[:] = False
            nrec = 0
            learned = i + 1
            last_flag = -(10**9)
        elif nrec >= relearn_frac * relearn_win:
            force_until = i
        # learn rows up to i - delay that were not within `delay` rows before a flag (quarantine)
        target = i - delay
        while learned <= target:
            r_i = learned
            learned += 1
            ok = (last_flag < r_i) or (last_flag - r_i > delay and not flag[r_i])
            ok = ok and not flag[r_i]
            if r_i <= force_until:
                ok = True
            if not ok:
                continue
            if r_i >= warm:
                hist[nh % nhist] = raw[r_i]
                nh += 1
            wsum = wsum * (1 - alpha) + 1.0 if alpha > 0 else wsum + 1.0
            r = 1.0 / wsum
            for j in range(d):
                D[j] = buf[r_i + 1 + j] - mu[j]
            for j in range(d):
                mu[j] += r * D[j]
            for a in range(d):
                for b in range(d):
                    C[a, b] = (1 - r) * (C[a, b] + r * D[a] * D[b])
            if r_i % refit == 0 or r_i < warm:
                tr = 0.0
                for j in range(d):
                    tr += C[j, j]
                M = (1 - shrink) * C
                for j in range(d):
                    M[j, j] += shrink * tr / d + floor * floor
                P = np.linalg.inv(M)
    return out, raw, flag


def mk(
    w=30,
    halflife=0,
    shrink=0.5,
    floor=0.01,
    nhist=2000,
    ktail=50,
    thr=3.0,
    delay=0,
    relearn_win=500,
    relearn_frac=2.0,
    refit=10,
    warm=200,
    beta_min=2.0,
    reseed=True,
    thr_off=1e9,
):
    alpha = 1 - 2 ** (-1 / halflife) if halflife > 0 else 0.0

    def f(tr, te):
        x = np.r_[tr[:, 0], te[:, 0]]
        o, raw, fl = run(
            x,
            w,
            alpha,
            shrink,
            floor,
            nhist,
            ktail,
            thr,
            delay,
            relearn_win,
            relearn_frac,
            refit,
            warm,
            beta_min,
            reseed,
            thr_off,
        )
        return o[len(tr) :], raw[len(tr) :], fl[len(tr) :]

    return f


GRID = [1.5, 2, 2.5, 3, 3.5, 4, 5, 6, 8]


def sweep(fn, chans, label):
    f1s = {t: [] for t in GRID}
    orac = []
    orac_raw = []
    dflt = []
    ap = []
    for _c, _sc, tr, te, lab in chans:
        s, raw, fl = fn(tr, te)
        orac.append(best_f1(s, lab)[0])
        orac_raw.append(best_f1(raw, lab)[0])
        ap.append(auc_pr(s, lab))
        dflt.append(prf(fl, lab)[2])
        for t in GRID:
            f1s[t].append(prf(s >= t, lab)[2])
    print(
        f"{label}: oracle(nines)={np.mean(orac):.3f} oracle(raw)={np.mean(orac_raw):.3f} ap={np.mean(ap):.3f} "
        f"default={np.mean(dflt):.3f} ratio={np.mean(dflt) / np.mean(orac):.2f} | "
        + " ".join(f"{t}:{np.mean(v):.3f}" for t, v in f1s.items()),
        flush=True,
    )


@numba.njit(cache=True)
def debounce(S, thr, thr_off, m):
    """Flags that need m consecutive rows at >= thr nines to start, then hold while >= thr_off."""
    fl = np.zeros(len(S), np.bool_)
    cnt = 0
    run = False
    for i in range(len(S)):
        if run:
            run = S[i] >= thr_off
        else:
            cnt = cnt + 1 if S[i] >= thr else 0
            run = cnt >= m
        fl[i] = run
    return fl


def debounce_table(cfg, chans):
    fn = mk(**cfg)
    outs = [(fn(tr, te), lab) for _, _, tr, te, lab in chans]
    print("oracle", round(float(np.mean([best_f1(o[0], lab)[0] for o, lab in outs])), 3))
    for thr in (2, 2.5, 3, 4):
        cells = [
            f"m={m}: {np.mean([prf(debounce(o[0], thr, 0.7, m), lab)[2] for o, lab in outs]):.3f}"
            for m in (1, 3, 10, 30)
        ]
        print(f"thr {thr}: " + " | ".join(cells))


def ensemble(cfgs, chans, thr=3.0, thr_off=0.7):
    """Max of the members' nines minus log10(members) (Bonferroni), with the same hysteresis."""
    fns = [mk(**c) for c in cfgs]
    orac, dflt, ap = [], [], []
    for _, _, tr, te, lab in chans:
        S = np.max([f(tr, te)[0] for f in fns], 0) - np.log10(len(fns))
        fl = debounce(S, thr, thr_off, 1)
        orac.append(best_f1(S, lab)[0])
        dflt.append(prf(fl, lab)[2])
        ap.append(auc_pr(S, lab))
    print(cfgs, f"oracle={np.mean(orac):.3f} ap={np.mean(ap):.3f} default={np.mean(dflt):.3f}")


if __name__ == "__main__":
    chans = load()
    if sys.argv[1] == "--debounce":
        debounce_table(eval(sys.argv[2]), chans)
    elif sys.argv[1] == "--ensemble":
        ensemble(eval(sys.argv[2]), chans)
    else:
        for cfg in eval(sys.argv[1]):
            sweep(mk(**cfg), chans, str(cfg))

import numpy as np
from common import evaluate, load
from sklearn.ensemble import IsolationForest

chans = load()


def oor(X, lo, hi, sd, min_std):
    scale = np.maximum(sd, min_std)
    return np.maximum(0, np.maximum(X - hi, lo - X)) / scale


def mk(cols, min_std):
    def f(tr, te):
        A, B = tr[:, cols], te[:, cols]
        m = IsolationForest(random_state=0).fit(A)
        s_if = -m.score_samples(B)
        cal = np.sort(-m.score_samples(A))
        # training ECDF tail prob with exponential tail over the top 50
        k = 50
        u = cal[-k]
        beta = max(np.mean(cal[-k:] - u), 1e-6)
        p_if = np.where(
            s_if > u,
            k / len(cal) * np.exp(-(s_if - u) / beta),
            1 - np.searchsorted(cal, s_if) / len(cal) + 0.5 / len(cal),
        )
        e = oor(B, A.min(0), A.max(0), A.std(0), min_std).max(1)
        # one-sided gaussian tail beyond the range, Bonferroni over features
        from scipy.stats import norm

        p_oor = np.minimum(1.0, 2 * norm.sf(e) * A.shape[1])
        p_oor = np.where(e > 0, p_oor, 1.0)
        return -np.log10(np.maximum(np.minimum(p_if, p_oor), 1e-300))

    return f


evaluate(mk(slice(None), 0.01), chans, "IF+OOR all cols min_std .01")
evaluate(mk(slice(0, 1), 0.01), chans, "IF+OOR c0 min_std .01")

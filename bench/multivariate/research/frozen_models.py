"""Research: score functions fitted on each channel's training split and frozen (no learning on the test split).

Prints the macro metrics of every method (the "frozen" rows of NOTES.md). Causal: a test row's score uses the
training split and the test rows up to it (windows end at the scored row).

    PYTHONPATH=src .venv/bin/python bench/multivariate/research/frozen_models.py [name ...]
"""

import sys

import numpy as np
from common import evaluate, load
from numpy.lib.stride_tricks import sliding_window_view as swv
from scipy.spatial import cKDTree
from sklearn.ensemble import IsolationForest


def lag_embedding(tr, te, w, cols=slice(0, 1)):
    """Windows of the last w rows (of `cols`) ending at each row; the first row repeated before the start."""
    X = np.r_[np.repeat(tr[:1, cols], w - 1, 0), tr[:, cols], te[:, cols]]
    W = swv(X, w, axis=0).reshape(len(X) - w + 1, -1)
    return W[: len(tr)], W[len(tr) :]


def mahalanobis(A, B, shrink=0.5, floor=0.01):
    d = A.shape[1]
    mu = A.mean(0)
    C = np.cov(A, rowvar=False).reshape(d, d)
    C = (1 - shrink) * C + shrink * np.trace(C) / d * np.eye(d) + floor**2 * np.eye(d)
    D = B - mu
    return np.einsum("ij,jk,ik->i", D, np.linalg.inv(C), D)


def m_random(tr, te, _r=np.random.default_rng(0)):  # noqa: B008 - one seeded stream for the whole run
    return _r.random(len(te))


def m_iforest(tr, te):
    return -IsolationForest(random_state=0).fit(tr).score_samples(te)


def m_iforest_c0(tr, te):
    return -IsolationForest(random_state=0).fit(tr[:, :1]).score_samples(te[:, :1])


def m_absz_c0(tr, te):
    return np.abs(te[:, 0] - tr[:, 0].mean()) / (tr[:, 0].std() + 1e-9)


def m_nearest_train_value(tr, te):
    v = np.sort(tr[:, 0])
    i = np.clip(np.searchsorted(v, te[:, 0]), 1, len(v) - 1)
    return np.minimum(np.abs(te[:, 0] - v[i - 1]), np.abs(te[:, 0] - v[i]))


def m_flags_new(tr, te):
    """Command flags constant in training that change in test."""
    const = tr[:, 1:].std(0) == 0
    return (np.abs(te[:, 1:] - tr[0, 1:]) * const).sum(1)


def m_window_mean_z(w):
    def f(tr, te):
        A, B = lag_embedding(tr, te, w)
        m = A.mean(1)
        return np.abs(B.mean(1) - m.mean()) / (m.std() + 1e-9)

    return f


def m_knn(w):
    def f(tr, te):
        A, B = lag_embedding(tr, te, w)
        return cKDTree(A).query(B, k=1)[0]

    return f


def m_maha(w, shrink=0.5, cols=slice(0, 1)):
    def f(tr, te):
        return mahalanobis(*lag_embedding(tr, te, w, cols), shrink=shrink)

    return f


def m_pca(w, k):
    def f(tr, te):
        A, B = lag_embedding(tr, te, w)
        mu = A.mean(0)
        _, S, Vt = np.linalg.svd(A - mu, full_matrices=False)
        V = Vt[:k].T
        lam = S[:k] ** 2 / len(A) + 1e-9
        res = (S[k:] ** 2).sum() / len(A) / max(w - k, 1) + 1e-9
        D = B - mu
        Z = D @ V
        return (Z**2 / lam).sum(1) + ((D - Z @ V.T) ** 2).sum(1) / res

    return f


def m_maha_multires(w):
    """The last 10 values and the means of the earlier blocks of 10 (w a multiple of 10)."""

    def f(tr, te):
        A, B = lag_embedding(tr, te, w)
        feat = lambda W: np.c_[W[:, -10:], W[:, : w - 10].reshape(len(W), -1, 10).mean(2)]  # noqa: E731
        return mahalanobis(feat(A), feat(B))

    return f


METHODS = {
    "random": m_random,
    "sklearn iforest, all columns": m_iforest,
    "sklearn iforest, c0": m_iforest_c0,
    "|z| of c0 vs training": m_absz_c0,
    "distance to nearest training value of c0": m_nearest_train_value,
    "command flags new in test": m_flags_new,
    "|z| of the 20-row mean of c0": m_window_mean_z(20),
    "|z| of the 50-row mean of c0": m_window_mean_z(50),
    "1-NN distance to training windows, w=10": m_knn(10),
    "1-NN distance to training windows, w=30": m_knn(30),
    "1-NN distance to training windows, w=100": m_knn(100),
    "Mahalanobis, c0 lags w=10": m_maha(10),
    "Mahalanobis, c0 lags w=30": m_maha(30),
    "Mahalanobis, c0 lags w=30, shrinkage 0.1": m_maha(30, 0.1),
    "Mahalanobis, c0 lags w=45": m_maha(45),
    "Mahalanobis, c0 multires w=50": m_maha_multires(50),
    "Mahalanobis, all columns, w=1": m_maha(1, cols=slice(None)),
    "Mahalanobis, all columns, w=10": m_maha(10, cols=slice(None)),
    "PCA T2+SPE, c0 lags w=30, k=1": m_pca(30, 1),
    "PCA T2+SPE, c0 lags w=30, k=3": m_pca(30, 3),
    "PCA T2+SPE, c0 lags w=60, k=3": m_pca(60, 3),
}

if __name__ == "__main__":
    chans = load()
    for name in sys.argv[1:] or list(METHODS):
        evaluate(METHODS[name], chans, name)

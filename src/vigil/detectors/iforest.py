"""Isolation Forest trained offline, served in the stream with ONNX Runtime.

**Offline**: :func:`fit_isolation_forest` fits scikit-learn's ``IsolationForest`` on a table of feature
rows and returns an *artifact*, a plain-data dict (no pickle, storable with :func:`save_model` in the
snapshot codec's msgpack envelope):

* ``onnx``: the model converted with skl2onnx (bytes; opsets ``{"": 17, "ai.onnx.ml": 3}``, which the
  onnxruntime versions we support run). Its ``scores`` output is sklearn's ``decision_function``,
  ``score_samples(x) - offset``; ``offset`` is stored alongside.
* the **score convention**: sklearn's ``score_samples`` is ``-s(x)``, with ``s(x) = 2 ** (-E[h(x)] / c(psi))``
  the anomaly score of Liu et al. (2008) in (0, 1] (``E[h]``: mean path length; ``c``: its expectation for
  ``psi = max_samples`` points). Vigil's raw score is ``s(x) = -(scores + offset)``: higher = more anomalous,
  about 0.5 for ordinary points, towards 1 for isolated ones.
* ``features``: the feature names in column order; ``train``: per-feature mean, std, min, max and ``n_rows``;
* ``score_quantiles``: the quantiles of ``s`` over the training rows (1001 probabilities), used to
  **calibrate**: ``calibrated(x)`` = the empirical CDF of the training scores at ``s(x)`` (linear between the
  stored quantiles, 1 beyond the largest training score) — the fraction of training rows less anomalous
  than ``x``, a tail probability in [0, 1].
* ``format``/``version`` and the library versions that produced it (no timestamp: the same rows and seed
  give the same artifact).

**Online**: :class:`IsolationForestDetector` is one global model (not per key). It is stateless across
events — ``learn`` does nothing — so prequential semantics hold trivially, any batch split gives the same
scores (one ``session.run`` per micro-batch, 1 intra-op thread: deterministic), and a snapshot holds no state.

Missing features (NaN or inf): a row with *every* feature missing is not scored (not ready). A row with
some features missing is scored with each missing feature **imputed by its training mean** (the value that
isolates least surprisingly in expectation), and ``stats["imputed"]`` counts the imputed features of the row.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import os
from typing import Any, ClassVar

import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.explain import feature_shares
from vigil.detectors.iforest_explain import forest, isolation_shares
from vigil.state import codec
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

FORMAT = "vigil.iforest"
ARTIFACT_VERSION = 1
TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}
SCORE_CONVENTION = (
    "onnx output `scores` = sklearn decision_function = score_samples - offset; "
    "sklearn score_samples = -s(x), s(x) = 2 ** (-E[h(x)] / c(max_samples)) in (0, 1]; "
    "vigil raw score = s(x) = -(scores + offset), higher = more anomalous"
)
_N_QUANTILES = 1001


def _need_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "the isolation_forest detector runs its model with onnxruntime, which is not installed; "
            "install the ML extras: pip install 'vigil[ml]'"
        ) from exc
    return onnxruntime


_SESSIONS: dict[str, Any] = {}


def _session(sha256: str, model: bytes) -> Any:
    """One ONNX Runtime session per model (sessions are safe to share; building one costs tens of ms)."""
    sess = _SESSIONS.get(sha256)
    if sess is not None:
        return sess
    ort = _need_onnxruntime()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    if len(_SESSIONS) >= 16:
        _SESSIONS.pop(next(iter(_SESSIONS)))
    _SESSIONS[sha256] = sess
    return sess


def _onnx_scores(artifact: dict[str, Any], X32: np.ndarray, batch_size: int) -> Float64Array:
    """Vigil raw scores ``s(x)`` of float32 rows, one ``session.run`` per ``batch_size`` rows."""
    sess = _session(artifact["onnx_sha256"], artifact["onnx"])
    name = sess.get_inputs()[0].name
    out = np.empty(X32.shape[0], np.float64)
    for a in range(0, X32.shape[0], batch_size):
        dec = sess.run(["scores"], {name: X32[a : a + batch_size]})[0]
        out[a : a + batch_size] = np.asarray(dec, np.float64).ravel()
    return -(out + float(artifact["offset"]))


def fit_isolation_forest(
    X: np.ndarray,
    fields: list[str],
    *,
    n_estimators: int = 100,
    contamination: float | str = "auto",
    seed: int = 42,
    max_samples: int | str = "auto",
) -> dict[str, Any]:
    """Fit an Isolation Forest on rows ``X`` (columns = ``fields``) and return its artifact (module docstring).

    Rows with a missing (non-finite) value are left out of the fit. ``contamination`` only moves sklearn's
    ``offset`` (its ``predict`` cut); Vigil's threshold is on the calibrated score.

    Examples:
        >>> X = np.random.default_rng(0).standard_normal((300, 2))
        >>> art = fit_isolation_forest(X, ["a", "b"], n_estimators=10)
        >>> art["features"], art["train"]["n_rows"], len(art["score_quantiles"]["values"])
        (['a', 'b'], 300, 1001)
    """
    from sklearn import __version__ as sklearn_version
    from sklearn.ensemble import IsolationForest

    try:
        from skl2onnx import __version__ as skl2onnx_version
        from skl2onnx import to_onnx
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("fitting needs skl2onnx: pip install 'vigil[ml]'") from exc
    X = np.asarray(X, np.float64)
    fields = [str(f) for f in fields]
    if X.ndim != 2 or X.shape[1] != len(fields):
        raise ValueError(f"`X` must be 2-D with one column per field ({len(fields)}); got shape {X.shape}")
    if len(set(fields)) != len(fields):
        raise ValueError(f"`fields` must be distinct; got {fields}")
    X = X[np.isfinite(X).all(axis=1)]
    if X.shape[0] < 2:
        raise ValueError(f"need at least 2 complete rows to fit; got {X.shape[0]}")
    X32 = X.astype(np.float32)
    model = IsolationForest(
        n_estimators=int(n_estimators), contamination=contamination, max_samples=max_samples,
        random_state=int(seed), n_jobs=1,
    ).fit(X32)  # fmt: skip
    onx = to_onnx(model, X32[:1], target_opset=TARGET_OPSET)
    blob = onx.SerializeToString()
    artifact: dict[str, Any] = {
        "format": FORMAT,
        "version": ARTIFACT_VERSION,
        "onnx": blob,
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        "offset": float(model.offset_),
        "score_convention": SCORE_CONVENTION,
        "features": fields,
        "train": {
            "n_rows": int(X.shape[0]),
            "mean": X.mean(axis=0).tolist(), "std": X.std(axis=0).tolist(),
            "min": X.min(axis=0).tolist(), "max": X.max(axis=0).tolist(),
        },
        "params": {"n_estimators": int(n_estimators), "contamination": contamination, "seed": int(seed),
                   "max_samples": max_samples, "max_samples_used": int(model.max_samples_)},
        "versions": {"sklearn": sklearn_version, "skl2onnx": skl2onnx_version, "opset": dict(TARGET_OPSET)},
    }  # fmt: skip
    s = _onnx_scores(artifact, X32, 65536)
    probs = np.linspace(0.0, 1.0, _N_QUANTILES)
    artifact["score_quantiles"] = {"probs": probs.tolist(), "values": np.quantile(s, probs).tolist()}
    return artifact


def save_model(artifact: dict[str, Any], path: str) -> None:
    """Write an artifact to one file (msgpack envelope of :mod:`vigil.state.codec`; atomic rename)."""
    check_artifact(artifact)
    blob = codec.encode(f"model/{FORMAT}", ARTIFACT_VERSION, {}, artifact)
    tmp = f"{path}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(blob)
    os.replace(tmp, path)


def load_model(path: str) -> dict[str, Any]:
    """Read an artifact written by :func:`save_model` (checks format, version and the model's checksum)."""
    with open(path, "rb") as fh:
        env = codec.decode(fh.read(), kind=f"model/{FORMAT}", version=ARTIFACT_VERSION)
    artifact: dict[str, Any] = env["state"]
    check_artifact(artifact)
    return artifact


def check_artifact(artifact: dict[str, Any]) -> None:
    """Raise ``ValueError`` if ``artifact`` is not a readable Isolation Forest artifact."""
    if not isinstance(artifact, dict) or artifact.get("format") != FORMAT:
        raise ValueError(f"`model` is not a {FORMAT} artifact (make one with fit_isolation_forest)")
    if artifact.get("version") != ARTIFACT_VERSION:
        raise ValueError(f"`model` artifact is version {artifact.get('version')!r}; Vigil reads {ARTIFACT_VERSION}")
    required = ("onnx", "onnx_sha256", "offset", "features", "train", "score_quantiles")
    missing = [k for k in required if k not in artifact]
    if missing:
        raise ValueError(f"`model` artifact lacks {missing}")
    if hashlib.sha256(artifact["onnx"]).hexdigest() != artifact["onnx_sha256"]:
        raise ValueError("`model` artifact is corrupt: the ONNX bytes do not match their sha256")


def _ecdf_grid(values: list[float], probs: list[float]) -> tuple[Float64Array, Float64Array]:
    """Strictly increasing knots of the (right-continuous) empirical CDF from a quantile table."""
    v = np.asarray(values, np.float64)
    p = np.asarray(probs, np.float64)
    # equal quantiles (ties among training scores): keep the highest probability at that value
    last = np.r_[v[1:] != v[:-1], True]
    return v[last], p[last]


@register
class IsolationForestDetector(BaseDetector):
    """An offline-trained Isolation Forest scoring rows of several fields (see the module docstring).

    Args:
        model: an artifact from :func:`fit_isolation_forest`, or the path of one saved by :func:`save_model`.
        fields: the stream fields fed to the model; default the model's features. Given, they must be exactly
            the model's features (any order; they are fed in the model's order), else construction fails.
        threshold: flag when the calibrated score exceeds it (0.99: rarer than 99 % of the training rows).
        batch_size: rows per ``session.run`` (a micro-batch larger than this is run in chunks).

    Score:
        ``s(x)`` in (0, 1], the Isolation Forest anomaly score (higher = more anomalous); calibrated: the
        empirical CDF of the training scores at ``s(x)``. ``self.threshold`` is the same bar in score units
        (the training-score quantile at ``threshold``), for alert annotations.

    State:
        none (one global model; ``learn`` does nothing).

    Warm-up:
        none; a row is ready unless all its features are missing (partly missing rows are imputed with the
        training mean). ``fire`` equals ``flag``. ``stats["z_<field>"]`` is each feature's z against the
        training mean and std; :meth:`explain_many` attributes a row to its features by the forest's own
        splits (:mod:`vigil.detectors.iforest_explain`).

    Examples:
        >>> rng = np.random.default_rng(0)
        >>> art = fit_isolation_forest(rng.standard_normal((500, 2)), ["a", "b"], n_estimators=20)
        >>> det = IsolationForestDetector(art, threshold=0.99)
        >>> v = det.process_many(np.zeros(3, np.int32), np.arange(3), {"a": np.array([0.1, 6.0, np.nan]),
        ...                                                          "b": np.array([0.0, 6.0, np.nan])})
        >>> v.flag.tolist(), v.ready.tolist(), round(float(v.stats["z_a"][1]), 1) > 5
        ([False, True, False], [True, True, False], True)
    """

    kind: ClassVar[str] = "isolation_forest"
    state_version: ClassVar[int] = 1

    @classmethod
    def fit_from_frame(cls, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        """Fit on training columns (``vigil score --train``): every given column is a feature.

        Returns the constructor params (``{"model": artifact}``) that the config's own params extend.
        """
        fields = sorted(columns)
        if not fields:
            raise ValueError("`fields` can't be empty: no value columns to train on")
        X = np.column_stack([np.asarray(columns[f], np.float64) for f in fields])
        return {"model": fit_isolation_forest(X, fields)}

    def __init__(
        self,
        model: str | dict[str, Any],
        *,
        fields: list[str] | None = None,
        threshold: float = 0.99,
        batch_size: int = 65536,
    ) -> None:
        _need_onnxruntime()
        if isinstance(model, str):
            artifact = load_model(model)
        elif isinstance(model, dict):
            artifact = model
            check_artifact(artifact)
        else:
            raise ValueError(f"`model` must be a path or an artifact dict; got {type(model).__name__}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` is on the calibrated score, in (0, 1), e.g. 0.99; got {threshold!r}")
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}")
        features = [str(f) for f in artifact["features"]]
        if fields is not None:
            given = [fields] if isinstance(fields, str) else list(fields)
            missing = [f for f in features if f not in given]
            extra = [f for f in given if f not in features]
            if missing or extra:
                raise ValueError(
                    f"`fields` do not match the model's features {features}: "
                    + "; ".join(([f"missing {missing}"] if missing else []) + ([f"unknown {extra}"] if extra else []))
                    + f"; got {given!r} (omit `fields` to use the model's)"
                )
        self.model = model
        self.artifact = artifact
        self._fields_param = None if fields is None else ([fields] if isinstance(fields, str) else list(fields))
        self.fields = tuple(features)
        self.calibrated_threshold = float(threshold)
        self.batch_size = int(batch_size)
        q = artifact["score_quantiles"]
        self._knots, self._probs = _ecdf_grid(q["values"], q["probs"])
        self.threshold = float(np.interp(self.calibrated_threshold, q["probs"], q["values"]))
        train = artifact["train"]
        self._mean = np.asarray(train["mean"], np.float64)
        self._std = np.asarray(train["std"], np.float64)

    def params(self) -> dict[str, Any]:
        return {"model": self.model, "fields": self._fields_param, "threshold": self.calibrated_threshold,
                "batch_size": self.batch_size}  # fmt: skip

    def __repr__(self) -> str:
        src = self.model if isinstance(self.model, str) else f"<artifact {self.artifact['onnx_sha256'][:12]}>"
        return (f"IsolationForestDetector(model={src!r}, fields={list(self.fields)}, "
                f"threshold={self.calibrated_threshold!r}, batch_size={self.batch_size})")  # fmt: skip

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        return [{"model": _test_artifact(), "threshold": 0.99}, {"model": _test_artifact(), "batch_size": 7}]

    def calibrate(self, score: Float64Array) -> Float64Array:
        """Empirical CDF of the training scores at ``score`` (0 below the smallest, 1 beyond the largest)."""
        if len(self._knots) == 1:
            return np.where(score >= self._knots[0], 1.0, 0.0)
        return np.interp(score, self._knots, self._probs, left=0.0, right=1.0)

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        absent = [f for f in self.fields if f not in X]
        if absent:
            raise ValueError(f"isolation_forest: the batch lacks the model's fields {absent}; it has {sorted(X)}")
        m = len(slots)
        raw = np.empty((m, len(self.fields)), np.float64)
        for j, f in enumerate(self.fields):
            raw[:, j] = X[f]
        missing = ~np.isfinite(raw)
        n_missing = missing.sum(axis=1)
        ready = n_missing < len(self.fields)
        filled = np.where(missing, self._mean, raw)
        score = np.zeros(m, np.float64)
        idx = np.flatnonzero(ready)
        if len(idx):
            with np.errstate(over="ignore"):
                X32 = np.ascontiguousarray(filled[idx], np.float32)
            score[idx] = _onnx_scores(self.artifact, X32, self.batch_size)
        calibrated = np.where(ready, self.calibrate(score), 0.0)
        flag = ready & (calibrated > self.calibrated_threshold)
        safe_std = np.where(self._std > 0, self._std, np.inf)
        z = (raw - self._mean) / safe_std
        stats = {f"z_{f}": z[:, j] for j, f in enumerate(self.fields)}
        stats["imputed"] = np.where(ready, n_missing, 0).astype(np.float64)
        return Verdicts(score, calibrated, flag, flag.copy(), ready, stats)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "isolation forest: rarer than 99.9% of training rows; most unusual: amount z=+8.2, gap z=-0.4"."""
        zs = sorted(((f, float(stats.get(f"z_{f}", np.nan))) for f in self.fields),
                    key=lambda t: -abs(t[1]) if math.isfinite(t[1]) else 0.0)  # fmt: skip
        top = ", ".join(f"{f} z={z:+.1f}" for f, z in zs[:3] if math.isfinite(z))
        cal = float(stats.get("calibrated", np.nan))
        imputed = int(stats.get("imputed", 0) or 0)
        note = f" ({imputed} missing feature(s) imputed)" if imputed else ""
        return f"isolation forest: rarer than {100 * cal:.3g}% of training rows{note}; most unusual: {top}"

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """Per feature, its share of the isolation bits along the forest's paths; expected: the training mean.

        See :mod:`vigil.detectors.iforest_explain`. If the model's trees can't be read, the score is the feature's
        z against the training mean and standard deviation instead.
        """
        rows = np.asarray(rows, np.int64)
        raw = np.column_stack([np.asarray(X[f], np.float64)[rows] for f in self.fields])
        filled = np.where(np.isfinite(raw), raw, self._mean)  # imputed as when the row was scored
        trees = forest(self.artifact)
        if trees is None:
            shares = (raw - self._mean) / np.where(self._std > 0, self._std, np.inf)
        else:
            with np.errstate(over="ignore"):
                shares = isolation_shares(trees, np.ascontiguousarray(filled, np.float32))
        return feature_shares(self.fields, X, rows, shares, self._mean)

    def reset_slots(self, slots: Int32Array) -> None:
        return None  # no per-key state

    def fresh(self) -> IsolationForestDetector:
        """A twin sharing the loaded artifact and its ONNX session (the detector has no state to empty)."""
        return copy.copy(self)

    def snapshot(self) -> dict[str, Any]:
        return {}

    def _restore(self, state: dict[str, Any]) -> None:
        return None


@functools.lru_cache(maxsize=1)
def _test_artifact() -> dict[str, Any]:
    """A small model for the conformance suite, built once per process, no files.

    Trained on the *normal* regime of :func:`vigil.testing.detectors.synthetic_stream` (field ``value``:
    ``20..40 * exp(0.1 N(0, 1))``), so the stream's injected spikes (x0.2, x4) lie outside it. A model of
    N(0, 1) would rank every row of that stream as equally extreme.
    """
    rng = np.random.default_rng(7)
    value = (20.0 + 5.0 * rng.integers(0, 5, 2000)) * np.exp(0.1 * rng.standard_normal(2000))
    return fit_isolation_forest(value[:, None], ["value"], n_estimators=50, seed=42)

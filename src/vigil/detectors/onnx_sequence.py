"""A sequence model served by ONNX Runtime: reconstruction error of each key's last ``window`` rows.

The model is trained offline (``vigil train`` with ``algorithm: tcn_autoencoder``, in the PyTorch venv that
``make torch-venv`` builds: :mod:`vigil.models.sequence`) and exported to ONNX; serving needs only
``onnxruntime`` (no PyTorch in the core install). A model is a folder (or its ``model.onnx``) holding:

* ``model.onnx``: input ``x`` of shape ``(batch, fields, window)`` (float32, the fields standardised with the
  training mean and standard deviation), output ``y`` of the same shape (the reconstruction);
* ``model.json``: ``format`` (``vigil-sequence/1``), ``fields`` (in the model's channel order), ``window``,
  ``mean``, ``std``, ``train_scores`` (quantiles of the raw score on the training windows, which seed the
  calibration), ``onnx_sha256`` (checked on load) and a ``training`` report.

Per key the detector keeps a ring of the last ``window`` complete rows. A row whose key has ``window`` rows
(itself included) is **ready**: its window goes into one ``session.run`` per micro-batch (all ready rows of the
batch at once, in chunks of ``batch_size``). Raw score = the mean squared reconstruction error over the
window, in standardised units; ``contrib_<field>`` = that field's share (the mean of its own squared errors
divided by the number of fields: the shares add up to the score), which is the attribution (``explain_many``).

``calibrated`` follows the calibration contract (:mod:`vigil.detectors.calibration`): one minus the tail
probability of the raw score among the key's recent scores, the history of a new key seeded with the training
scores (so a key is calibrated from its first window, and a model's threshold means the false-alarm rate it
had on its training data), then learned causally from the key's own scores (flagged rows censored; after a
sustained shift, ``relearn_after`` rows, the history re-learns); ``stats["surprise"]`` is ``-log10`` of it.
A missing value (NaN in any field) is neither scored nor learned.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numba
import numpy as np

from vigil.detectors.base import BaseDetector, Verdicts, register
from vigil.detectors.calibration import TailCalibrator, to_calibrated
from vigil.detectors.explain import feature_shares
from vigil.stats.slots import grow_rows
from vigil.types import Contribution, Float64Array, Int32Array, Int64Array

FORMAT = "vigil-sequence/1"
MODEL_FILE = "model.onnx"
META_FILE = "model.json"
_SESSIONS: dict[str, Any] = {}


def model_paths(model: str | os.PathLike[str]) -> tuple[Path, Path]:
    """``(model.onnx, model.json)`` of a model folder, or of a ``.onnx`` file and the ``model.json`` beside it."""
    p = Path(model)
    if p.is_dir():
        return p / MODEL_FILE, p / META_FILE
    return p, p.with_name(META_FILE)


def load_sequence_model(model: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """``(onnx bytes, meta)`` of a sequence model, checked (format, fields, window, checksum)."""
    onnx_path, meta_path = model_paths(model)
    if not onnx_path.is_file() or not meta_path.is_file():
        raise ValueError(f"`model`: {os.fspath(model)!r} is not a sequence model (want {MODEL_FILE} and {META_FILE}; "
                         "train one with `vigil train` and `algorithm: tcn_autoencoder`)")  # fmt: skip
    blob = onnx_path.read_bytes()
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"`model`: {meta_path} has format {meta.get('format')!r}, want {FORMAT!r}")
    if hashlib.sha256(blob).hexdigest() != meta.get("onnx_sha256"):
        raise ValueError(f"`model`: {onnx_path} does not match the checksum in {meta_path} (corrupt or replaced)")
    for key in ("fields", "window", "mean", "std", "train_scores"):
        if key not in meta:
            raise ValueError(f"`model`: {meta_path} lacks {key!r}")
    return blob, meta


def _session(sha256: str, blob: bytes) -> Any:
    """One ONNX Runtime session per model (shared by detectors and keys; one intra-op thread)."""
    sess = _SESSIONS.get(sha256)
    if sess is not None:
        return sess
    try:
        import onnxruntime as ort
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("the onnx_sequence detector needs onnxruntime: pip install 'vigil[ml]'") from exc
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
    if len(_SESSIONS) >= 16:
        _SESSIONS.pop(next(iter(_SESSIONS)))
    _SESSIONS[sha256] = sess
    return sess


def reconstruction_errors(sess: Any, windows: np.ndarray, batch_size: int) -> np.ndarray:
    """Per window and field, the mean squared reconstruction error: ``(n, fields)`` from ``(n, fields, window)``."""
    out = np.empty(windows.shape[:2], np.float64)
    name = sess.get_inputs()[0].name
    for a in range(0, windows.shape[0], batch_size):
        x = windows[a : a + batch_size]
        y = sess.run(None, {name: x})[0]
        out[a : a + batch_size] = np.mean((np.asarray(y, np.float64) - x) ** 2, axis=2)
    return out


@numba.njit(cache=True)
def _window_kernel(slots: Any, A: Any, buf: Any, cnt: Any, out_win: Any, out_ok: Any) -> None:  # pragma: no cover
    """Push each complete row into its key's ring; a key with ``window`` rows gets its window in time order."""
    w = buf.shape[1]
    nf = A.shape[1]
    for i in range(slots.shape[0]):
        k = slots[i]
        out_ok[i] = False
        bad = False
        for f in range(nf):
            if not A[i, f] == A[i, f]:
                bad = True
        if bad:
            continue
        pos = cnt[k] % w
        for f in range(nf):
            buf[k, pos, f] = A[i, f]
        cnt[k] += 1
        if cnt[k] >= w:
            out_ok[i] = True
            for t in range(w):
                src = (cnt[k] + t) % w  # oldest first
                for f in range(nf):
                    out_win[i, f, t] = buf[k, src, f]


@register
class OnnxSequence(BaseDetector):
    """Reconstruction error of a sequence autoencoder (ONNX) over each key's last ``window`` rows.

    Params:
        model: a model folder (``model.onnx`` + ``model.json``, written by ``vigil train`` with
            ``algorithm: tcn_autoencoder``) or the path of its ``model.onnx``.
        threshold: flag when the calibrated score (the contract's ``1 - p``) reaches it, in (0, 1).
        history: learned raw scores per key for the calibration (seeded with the training scores).
        relearn_after: rows of a sustained run of flags after which the calibration re-learns (0: never).
        batch_size: windows per ``session.run``.

    Score: mean squared reconstruction error of the window (standardised units); calibrated: the contract's
    tail probability. Stats: ``surprise`` and ``contrib_<field>`` (additive shares of the score).

    State: per key the last ``window`` rows and the calibration history (about ``8 * window * fields + 4 *
    history`` bytes).

    Ready: from a key's ``window``-th complete row.

    Examples:
        >>> det = OnnxSequence(model=OnnxSequence._test_params()[0]["model"])
        >>> rng = np.random.default_rng(0)
        >>> x = 20 + rng.standard_normal(300)
        >>> x[250] = 60.0                                   # one spike
        >>> v = det.process_many(np.zeros(300, np.int32), np.arange(300), {"value": x})
        >>> bool(v.ready[:3].any()), bool(v.ready[3:].all()), bool(v.flag[250]), int(v.flag.sum()) <= 6
        (False, True, True, True)
    """

    kind: ClassVar[str] = "onnx_sequence"
    state_version: ClassVar[int] = 1
    live_params: ClassVar[frozenset[str]] = frozenset({"threshold", "batch_size"})
    _slot_arrays: ClassVar[tuple[str, ...]] = ("buf", "cnt")
    _slot_parts: ClassVar[tuple[str, ...]] = ("cal",)

    def __init__(
        self,
        model: str,
        *,
        threshold: float = 0.999,
        history: int = 1000,
        relearn_after: int = 1440,
        batch_size: int = 4096,
    ) -> None:
        if not isinstance(model, str | os.PathLike):
            raise ValueError(f"`model` must be a model folder or its model.onnx path; got {model!r}")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"`threshold` is a calibrated score in (0, 1), e.g. 0.999; got {threshold!r}")
        if isinstance(batch_size, bool) or int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"`batch_size` must be an int >= 1; got {batch_size!r}")
        self.model = os.fspath(model)
        self._blob, self.meta = load_sequence_model(self.model)
        self.fields = tuple(str(f) for f in self.meta["fields"])
        self.window = int(self.meta["window"])
        self._mean = np.asarray(self.meta["mean"], np.float64)
        self._std = np.maximum(np.asarray(self.meta["std"], np.float64), 1e-12)
        self.threshold = float(threshold)
        self.history = int(history)
        self.relearn_after = int(relearn_after)
        self.batch_size = int(batch_size)
        seed = np.asarray(self.meta["train_scores"], np.float64)
        rows = min(50, self.history)
        self.cal = TailCalibrator(history=self.history, tail_rows=rows, min_history=rows,
                                  relearn_after=self.relearn_after, seed=seed)  # fmt: skip
        self.buf = np.zeros((0, self.window, len(self.fields)), np.float64)
        self.cnt = np.zeros(0, np.int64)

    def params(self) -> dict[str, Any]:
        return {"model": self.model, "threshold": self.threshold, "history": self.history,
                "relearn_after": self.relearn_after, "batch_size": self.batch_size}  # fmt: skip

    def __repr__(self) -> str:
        return f"OnnxSequence(model={self.model!r}, fields={list(self.fields)}, window={self.window})"

    @classmethod
    def _test_params(cls) -> list[dict[str, Any]]:
        path = _toy_model(window=4, fields=("value",))
        return [{"model": path}, {"model": path, "threshold": 0.99, "history": 300, "relearn_after": 0,
                                  "batch_size": 7}]  # fmt: skip

    def _grow_slots(self, top: int) -> None:
        if self.cnt.shape[0] >= top:
            return
        self.buf = grow_rows(self.buf, top)
        self.cnt = grow_rows(self.cnt, top)

    def process_many(self, slots: Int32Array, ts_ms: Int64Array, X: dict[str, Float64Array]) -> Verdicts:
        m = len(slots)
        absent = [f for f in self.fields if f not in X]
        if absent:
            raise ValueError(f"onnx_sequence: the batch lacks fields {absent}; it has {sorted(X)}")
        A = np.empty((m, len(self.fields)), np.float64)
        for j, f in enumerate(self.fields):
            A[:, j] = (np.asarray(X[f], np.float64) - self._mean[j]) / self._std[j]
        if m:
            self._grow_slots(int(slots.max()) + 1)
        win = np.zeros((m, len(self.fields), self.window), np.float32)
        ok = np.zeros(m, np.bool_)
        _window_kernel(np.asarray(slots, np.int32), A, self.buf, self.cnt, win, ok)
        contrib = np.zeros((m, len(self.fields)), np.float64)
        idx = np.flatnonzero(ok)
        if len(idx):
            err = reconstruction_errors(_session(self.meta["onnx_sha256"], self._blob), win[idx], self.batch_size)
            contrib[idx] = err / len(self.fields)
        score = contrib.sum(axis=1)
        lp, ready, flag = self.cal.calibrate_and_flag(np.asarray(slots, np.int32), score, self.threshold, valid=ok)
        calibrated, surprise = to_calibrated(lp)
        ready = ready & ok
        flag = flag & ready
        stats: dict[str, np.ndarray] = {"surprise": np.where(ready, surprise, 0.0)}
        for j, f in enumerate(self.fields):
            stats[f"contrib_{f}"] = contrib[:, j]
        return Verdicts(np.where(ready, score, 0.0), np.where(ready, calibrated, 0.0), flag, flag.copy(), ready, stats)

    def explain_many(self, X: dict[str, Float64Array], v: Verdicts, rows: np.ndarray) -> list[list[Contribution]]:
        """Each field's share of the window's reconstruction error (``stats["contrib_<field>"]``), largest first."""
        rows = np.asarray(rows, np.int64)
        shares = np.column_stack([v.stats[f"contrib_{f}"][rows] for f in self.fields]) if len(rows) else (
            np.zeros((0, len(self.fields))))  # fmt: skip
        return feature_shares(self.fields, X, rows, shares, expected=self._mean)

    def describe(self, stats: dict[str, Any]) -> str:
        """E.g. "sequence reconstruction rarer than 1 in 2.1e+04 (surprise 4.3); worst: cpu (0.91), mem (0.02)"."""
        contrib = sorted(((f, float(stats.get(f"contrib_{f}", 0.0))) for f in self.fields), key=lambda t: -t[1])
        top = ", ".join(f"{f} ({c:.3g})" for f, c in contrib[:3])
        nines = float(stats.get("surprise", 0.0))
        odds = 10 ** min(nines, 300)
        return f"sequence reconstruction rarer than 1 in {odds:.2g} (surprise {nines:.1f}); worst: {top}"

    def reset_slots(self, slots: Int32Array) -> None:
        slots = np.asarray(slots, np.int64)
        slots = slots[(slots >= 0) & (slots < self.cnt.shape[0])]
        self.buf[slots] = 0.0
        self.cnt[slots] = 0
        self.cal.reset_slots(slots)

    def fresh(self) -> OnnxSequence:
        twin = type(self).__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.cal = TailCalibrator(**self.cal.params(), seed=self.cal.seed)
        twin.buf = np.zeros((0, self.window, len(self.fields)), np.float64)
        twin.cnt = np.zeros(0, np.int64)
        return twin

    def snapshot(self) -> dict[str, Any]:
        return {"buf": self.buf.copy(), "cnt": self.cnt.copy(), "cal": self.cal.snapshot()}

    def _restore(self, state: dict[str, Any]) -> None:
        self.buf = np.array(state["buf"], np.float64).reshape(-1, self.window, len(self.fields))
        self.cnt = np.array(state["cnt"], np.int64)
        self.cal.restore(state["cal"])


def _toy_model(window: int, fields: tuple[str, ...]) -> str:
    """A tiny hand-built model (reconstructs each window by its mean) in a temp folder, for tests and docs.

    Needs the ``onnx`` package (it comes with the ML extras); real models come from ``vigil train``.
    """
    import onnx
    from onnx import TensorProto, helper

    folder = Path(tempfile.gettempdir()) / f"vigil-toy-sequence-{window}-{'-'.join(fields)}"
    if (folder / META_FILE).is_file():
        return str(folder)
    nf = len(fields)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", nf, window])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", nf, window])
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2], keepdims=1),
             helper.make_node("Mul", ["x", "zero"], ["z"]), helper.make_node("Add", ["z", "m"], ["y"])]  # fmt: skip
    graph = helper.make_graph(nodes, "window_mean", [x], [y], initializer=[zero])
    blob = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8).SerializeToString()
    onnx.checker.check_model(onnx.load_from_string(blob))
    # training scores of N(0, 1) rows: the variance of `window` of them (quantiles, from a fixed sample)
    rng = np.random.default_rng(0)
    sample = np.var(rng.standard_normal((20_000, window)), axis=1)
    meta = {"format": FORMAT, "fields": list(fields), "window": window, "mean": [20.0] * nf, "std": [3.0] * nf,
            "train_scores": np.quantile(sample, np.linspace(0, 1, 1000)).tolist(),
            "onnx_sha256": hashlib.sha256(blob).hexdigest(),
            "training": {"algorithm": "window_mean (toy)"}}  # fmt: skip
    tmp = Path(tempfile.mkdtemp(dir=tempfile.gettempdir()))
    (tmp / MODEL_FILE).write_bytes(blob)
    (tmp / META_FILE).write_text(json.dumps(meta))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process made it first
        pass
    return str(folder) if (folder / META_FILE).is_file() else str(tmp)

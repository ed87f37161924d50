"""Offline training of a sequence autoencoder with PyTorch, exported to ONNX for :class:`~vigil.detectors.OnnxSequence`.

PyTorch is **not** a dependency of the core install (its PyPI wheel brings ~2.5 GB of CUDA libraries): this
module runs in the venv that ``make torch-venv`` builds (``.venv-torch/bin/vigil train ...``); serving the
exported model needs only ``onnxruntime``.

The model: a temporal-convolution autoencoder over a window of the standardised fields (channels), from
``bench/multivariate/research/torch_ae.py``: two convolutions (the second dilated), a stride-4 bottleneck of
``code`` channels (``window / 4`` steps), and a mirrored decoder. Trained with Adam on every window of the
(time-ordered) training rows, mean squared error; deterministic for a given ``seed`` (one CPU thread).

Export: ONNX opset 17, input ``x`` ``(batch, fields, window)`` with a dynamic batch axis, output ``y`` the
reconstruction; checked against PyTorch on the training windows (``max_abs_diff_onnx`` in the report). The
folder gets ``model.onnx`` and ``model.json`` (:mod:`vigil.detectors.onnx_sequence` documents it): fields,
window, standardisation, 1000 quantiles of the training windows' scores (the calibration's seed) and the
training report (rows, epochs, loss, seconds, versions).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from vigil.detectors.onnx_sequence import FORMAT, META_FILE, MODEL_FILE
from vigil.errors import ConfigError


def _need_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "needs PyTorch, which is not in the core install", field="algorithm", value="tcn_autoencoder",
            hint="run `make torch-venv`, then `.venv-torch/bin/vigil train ...` (serving needs only onnxruntime)",
        ) from None  # fmt: skip
    return torch


def windows_of(A: np.ndarray, window: int) -> np.ndarray:
    """Every complete window of the rows of ``A`` ``(rows, fields)``: ``(rows - window + 1, fields, window)``."""
    v = np.lib.stride_tricks.sliding_window_view(A, window, axis=0)  # (n, fields, window)
    return np.ascontiguousarray(v, dtype=np.float32)


def build_tcn_autoencoder(fields: int, hidden: int = 16, code: int = 4) -> Any:
    """The temporal-convolution autoencoder (module docstring); the window must be a multiple of 4."""
    torch = _need_torch()
    nn = torch.nn
    return nn.Sequential(
        nn.Conv1d(fields, hidden, 5, padding=2), nn.ReLU(),
        nn.Conv1d(hidden, hidden, 5, padding=4, dilation=2), nn.ReLU(),
        nn.Conv1d(hidden, hidden, 4, stride=4), nn.ReLU(),
        nn.Conv1d(hidden, code, 1),
        nn.ConvTranspose1d(code, hidden, 4, stride=4), nn.ReLU(),
        nn.Conv1d(hidden, hidden, 5, padding=2), nn.ReLU(),
        nn.Conv1d(hidden, fields, 5, padding=2),
    )  # fmt: skip


def train_tcn_autoencoder(
    columns: dict[str, np.ndarray],
    *,
    features: list[str],
    out: str | os.PathLike[str],
    window: int = 32,
    epochs: int = 10,
    hidden: int = 16,
    code: int = 4,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    max_windows: int = 200_000,
    seed: int = 42,
    keys: np.ndarray | None = None,
) -> dict[str, Any]:
    """Train on ``columns`` (time-ordered rows), export ``out/model.onnx`` + ``model.json``; return the meta."""
    torch = _need_torch()
    if window < 4 or window % 4:
        raise ConfigError("must be a multiple of 4, at least 4 (the stride-4 bottleneck)", field="window", value=window)
    if epochs < 1:
        raise ConfigError("must be >= 1", field="epochs", value=epochs)
    A = np.column_stack([np.asarray(columns[f], np.float64) for f in features])
    complete = np.isfinite(A).all(axis=1)
    A = A[complete]
    if len(A) < window + 1:
        raise ConfigError(f"needs more than `window` complete rows; got {len(A)}", field="input", value=None)
    mean, std = A.mean(axis=0), A.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)  # a constant field: deviations from it stay in its own units
    Z = (A - mean) / std
    if keys is None:
        W = windows_of(Z, window)
    else:  # one sequence per key (e.g. a card holder's transactions), in the rows' order within each key
        k = np.asarray(keys)[complete]
        order = np.argsort(k, kind="stable")
        bounds = np.flatnonzero(k[order][1:] != k[order][:-1]) + 1
        parts = [windows_of(Z[g], window) for g in np.split(order, bounds) if len(g) >= window]
        if not parts:
            raise ConfigError(f"no key has `window` ({window}) complete rows", field="window", value=window)
        W = np.concatenate(parts)
    if len(W) > max_windows:  # evenly spaced windows: the whole period, bounded cost
        W = W[np.linspace(0, len(W) - 1, max_windows).astype(np.int64)]
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    net = build_tcn_autoencoder(len(features), hidden, code)
    opt = torch.optim.Adam(net.parameters(), lr=learning_rate)
    X = torch.from_numpy(W)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    loss_v = float("nan")
    for _ in range(epochs):
        perm = torch.randperm(len(X), generator=gen)
        total = 0.0
        for a in range(0, len(X), batch_size):
            xb = X[perm[a : a + batch_size]]
            opt.zero_grad()
            loss = ((net(xb) - xb) ** 2).mean()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(xb)
        loss_v = total / len(X)
    train_s = time.perf_counter() - t0
    net.eval()
    with torch.no_grad():
        ref = np.concatenate([net(X[a : a + 8192]).numpy() for a in range(0, len(X), 8192)])
    scores = np.mean((ref.astype(np.float64) - W) ** 2, axis=(1, 2))
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    onnx_path = folder / MODEL_FILE
    torch.onnx.export(net, (X[:2],), str(onnx_path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}}, dynamo=False)  # fmt: skip
    blob = onnx_path.read_bytes()
    import onnxruntime as ort

    sess = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
    probe = W[: min(len(W), 4096)]
    diff = float(np.max(np.abs(sess.run(None, {"x": probe})[0] - ref[: len(probe)])))
    meta = {
        "format": FORMAT, "fields": list(features), "window": int(window), "mean": mean.tolist(), "std": std.tolist(),
        "train_scores": np.quantile(scores, np.linspace(0.0, 1.0, 1000)).tolist(),
        "onnx_sha256": hashlib.sha256(blob).hexdigest(),
        "training": {
            "algorithm": "tcn_autoencoder", "rows": int(len(A)), "windows": int(len(W)), "epochs": int(epochs),
            "keys": None if keys is None else int(len(np.unique(np.asarray(keys)[complete]))),
            "hidden": int(hidden), "code": int(code), "batch_size": int(batch_size), "learning_rate": learning_rate,
            "seed": int(seed), "final_loss": loss_v, "train_seconds": round(train_s, 3),
            "max_abs_diff_onnx": diff, "onnx_bytes": len(blob), "opset": 17,
            "versions": {"torch": torch.__version__, "onnxruntime": ort.__version__},
        },
    }  # fmt: skip
    (folder / META_FILE).write_text(json.dumps(meta, indent=2))
    return meta

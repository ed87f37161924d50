"""The PyTorch route: `vigil train` (algorithm tcn_autoencoder) in the torch venv, served by ONNX Runtime here.

The training runs for real in the venv of `make torch-venv` (``$VIGIL_TORCH_PYTHON``, which `make test` sets,
else ``.venv-torch/bin/python``): 2 epochs on 3,000 rows of three fields, a few seconds. The core venv then
serves the exported ``model.onnx`` with the ``onnx_sequence`` detector, without PyTorch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from vigil.detectors import OnnxSequence
from vigil.detectors.onnx_sequence import load_sequence_model

ROOT = Path(__file__).resolve().parents[2]
TORCH_PY = os.environ.get("VIGIL_TORCH_PYTHON") or str(ROOT / ".venv-torch" / "bin" / "python")
needs_torch = pytest.mark.skipif(not Path(TORCH_PY).is_file(), reason="no torch venv (make torch-venv)")


def _series(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return {"a": np.sin(t / 10) + 0.1 * rng.standard_normal(n), "b": np.cos(t / 15) + 0.1 * rng.standard_normal(n),
            "c": 0.5 * np.sin(t / 10) + 0.1 * rng.standard_normal(n)}  # fmt: skip


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("seq")
    cols = _series(3000, 0)
    with open(tmp / "normal.csv", "w") as fh:
        fh.write("timestamp,a,b,c\n")
        for i in range(3000):
            fh.write(f"{1_700_000_000_000 + 60_000 * i},{cols['a'][i]:.6f},{cols['b'][i]:.6f},{cols['c'][i]:.6f}\n")
    (tmp / "seq.yaml").write_text("name: demo_seq\nalgorithm: tcn_autoencoder\nfeatures: [a, b, c]\n"
                                  "window: 16\nepochs: 2\nout: model\n")  # fmt: skip
    vigil = str(Path(TORCH_PY).parent / "vigil")
    res = subprocess.run([vigil, "train", "--config", str(tmp / "seq.yaml"), "--input", str(tmp / "normal.csv"),
                          "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    return tmp / "model", json.loads(res.stdout)


@needs_torch
def test_train_in_the_torch_venv_exports_a_checked_onnx_model(trained):
    folder, report = trained
    assert (folder / "model.onnx").is_file() and report["fields"] == ["a", "b", "c"] and report["window"] == 16
    t = report["training"]
    assert t["epochs"] == 2 and t["rows"] == 3000 and t["max_abs_diff_onnx"] < 1e-4  # ONNX Runtime == PyTorch
    _, meta = load_sequence_model(folder)
    assert len(meta["train_scores"]) == 1000 and np.all(np.diff(meta["train_scores"]) >= 0)


@needs_torch
def test_served_by_onnxruntime_without_torch_flags_and_attributes(trained):
    folder, _ = trained
    det = OnnxSequence(model=str(folder), threshold=0.999)
    n = 2000
    cols = _series(n, 1)
    cols["b"][1500:1520] += 3.0  # field b breaks away from its pattern for 20 rows
    v = det.process_many(np.zeros(n, np.int32), np.arange(n, dtype=np.int64) * 60_000, cols)
    assert "torch" not in sys.modules
    assert not v.ready[:15].any() and v.ready[15:].all()
    assert v.flag[1500:1520].mean() > 0.5
    assert v.flag[:1490].mean() < 0.01  # about 1 - threshold of ordinary rows, calibrated on the training scores
    [top, *_] = det.explain_many(cols, v, np.array([1510]))[0]
    assert top.feature == "b"
    parts = sum(v.stats[f"contrib_{f}"] for f in "abc")
    np.testing.assert_allclose(parts[v.ready], v.score[v.ready], rtol=1e-9)


def test_a_missing_model_names_the_param(tmp_path):
    with pytest.raises(ValueError, match="`model`"):
        OnnxSequence(model=str(tmp_path / "nope"))


def test_training_without_torch_says_how_to_get_it(tmp_path):
    try:
        import torch  # noqa: F401
    except ImportError:
        from vigil.errors import ConfigError
        from vigil.models.sequence import train_tcn_autoencoder

        with pytest.raises(ConfigError, match="make torch-venv"):
            train_tcn_autoencoder({"a": np.zeros(100)}, features=["a"], out=tmp_path)
    else:  # pragma: no cover - the core venv has no torch
        pytest.skip("torch is installed here")


@needs_torch
def test_fraud_route_a_sequence_model_per_card_holder(tmp_path):
    """The same route over each card holder's recent transactions: windows per `user`, served keyed by user."""
    r = subprocess.run([sys.executable, "-m", "vigil.cli.main", "generate", "transactions", "-o",
                        str(tmp_path / "tx.jsonl"), "--events", "6000", "--users", "100"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr
    rows = sorted((json.loads(line) for line in open(tmp_path / "tx.jsonl")), key=lambda d: d["ts"])
    cut = len(rows) // 2
    with open(tmp_path / "train.jsonl", "w") as fh:
        fh.writelines(json.dumps(d) + "\n" for d in rows[:cut])
    (tmp_path / "cards.yaml").write_text("name: cards_seq\nalgorithm: tcn_autoencoder\nfeatures: [amount]\n"
                                         "key_column: user\ntime_column: ts\nwindow: 8\nepochs: 2\nout: m\n")  # fmt: skip
    vigil = str(Path(TORCH_PY).parent / "vigil")
    res = subprocess.run([vigil, "train", "--config", str(tmp_path / "cards.yaml"), "--input",
                          str(tmp_path / "train.jsonl"), "--json"], capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout)["training"]["keys"] > 50
    det = OnnxSequence(model=str(tmp_path / "m"), threshold=0.99)
    users = {u: i for i, u in enumerate(dict.fromkeys(d["user"] for d in rows))}
    slots = np.array([users[d["user"]] for d in rows], np.int32)
    amount = np.array([d["amount"] for d in rows])
    label = np.array([d["label"] for d in rows])
    ts = np.array([d["ts"] for d in rows], np.int64)
    det.process_many(slots[:cut], ts[:cut], {"amount": amount[:cut]})  # the training period: warms the windows
    v = det.process_many(slots[cut:], ts[cut:], {"amount": amount[cut:]})
    s, y = v.score[v.ready], label[cut:][v.ready]
    order = np.argsort(s, kind="stable")
    ranks = np.empty(len(s))
    ranks[order] = np.arange(1, len(s) + 1)
    auc = (ranks[y == 1].sum() - y.sum() * (y.sum() + 1) / 2) / (y.sum() * (len(y) - y.sum()))
    assert auc > 0.6, auc  # fraud ranks above normal transactions by the holder's recent sequence

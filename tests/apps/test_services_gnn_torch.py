"""The GNN trained for real with PyTorch in its own virtualenv, exported to ONNX, served by ONNX Runtime here.

Needs PyTorch's interpreter: ``$VIGIL_TORCH_PYTHON`` (``make test`` sets it) or ``.venv-torch/bin/python``;
skipped without one. A small data set (one short run of a 12-service shop) and two epochs: seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from vigil.apps.services.gnn import FEATURES, GnnServer, adjacency
from vigil.apps.services.gnn_data import make_dataset


def _torch_python() -> str | None:
    env = os.environ.get("VIGIL_TORCH_PYTHON")
    if env and Path(env).is_file():
        return env
    local = Path(__file__).resolve().parents[2] / ".venv-torch" / "bin" / "python"
    return str(local) if local.is_file() else None


@pytest.mark.skipif(_torch_python() is None, reason="no PyTorch virtualenv ($VIGIL_TORCH_PYTHON / .venv-torch)")
def test_train_with_torch_export_onnx_and_serve(tmp_path):
    data = tmp_path / "gnn.npz"
    summary = make_dataset(data, seeds=1, services=(12,), per_fault_min=4.0)
    assert summary["snapshots"] > 50 and summary["positives"] > 0
    d = np.load(data)
    assert d["x"].shape[2] == len(FEATURES) and list(d["features"]) == list(FEATURES)
    out = tmp_path / "gnn.onnx"
    script = Path(__file__).resolve().parents[2] / "src" / "vigil" / "apps" / "services" / "gnn_train.py"
    proc = subprocess.run([str(_torch_python()), str(script), "--data", str(data), "--out", str(out), "--epochs", "2"],
                          capture_output=True, text=True, timeout=600, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    assert res["snapshots"] == summary["snapshots"] and np.isfinite(res["loss"])
    server = GnnServer(out)  # the torch export loads, with its feature list in the metadata
    n = 12
    svcs = [f"s{i}" for i in range(n)]
    ai, ao = adjacency(svcs, [(f"s{i}", f"s{i + 1}") for i in range(n - 1)])
    x = d["x"][:8, :n]
    scores = server.score(x, np.broadcast_to(ai, (8, n, n)), np.broadcast_to(ao, (8, n, n)))
    assert scores.shape == (8, n) and np.all((scores >= 0) & (scores <= 1))

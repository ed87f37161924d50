"""Train the product's sequence model (vigil.models.sequence, TCN autoencoder on c0) for every SMAP/MSL channel.

Run in the torch venv (``make torch-venv``), from the repo root:
    .venv-torch/bin/python bench/multivariate/research/train_smap_tcn.py [OUT_DIR] [EPOCHS] [WINDOW] [reverse]
Writes OUT_DIR/<channel>/model.onnx + model.json (default bench/results/smap_tcn, not in git), which
``bench/multivariate/configs/onnx_tcn_c0.yaml`` serves (``{channel}`` in its ``model`` path).
"""

import csv
import sys
import time
from pathlib import Path

import numpy as np

from vigil.models.sequence import train_tcn_autoencoder

DATA = Path(__file__).resolve().parents[4] / "shared" / "datasets" / "smap_msl"
out = Path(sys.argv[1] if len(sys.argv) > 1 else "bench/results/smap_tcn")
epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 10
window = int(sys.argv[3]) if len(sys.argv) > 3 else 32
reverse = len(sys.argv) > 4 and sys.argv[4] == "reverse"  # a second worker from the other end
t0 = time.time()
total_train = 0.0
with open(DATA / "labeled_anomalies.csv") as fh:
    rows = list(csv.DictReader(fh))
    for r in reversed(rows) if reverse else rows:
        c = r["chan_id"]
        if (out / c / "model.json").is_file():
            continue
        tr = np.load(DATA / "train" / f"{c}.npy")[:, 0].astype(np.float64)
        meta = train_tcn_autoencoder({"c0": tr}, features=["c0"], out=out / c, window=window, epochs=epochs, seed=0)
        t = meta["training"]
        total_train += t["train_seconds"]
        print(
            c,
            t["rows"],
            f"loss {t['final_loss']:.4g}",
            f"train {t['train_seconds']:.1f}s",
            f"onnx diff {t['max_abs_diff_onnx']:.1e}",
            f"elapsed {time.time() - t0:.0f}s",
            flush=True,
        )
print(f"done: training {total_train:.0f}s, wall {time.time() - t0:.0f}s")

"""Latency of the served PyTorch model: onnx_sequence.process_many per micro-batch (p50 / p99), core venv only.

    .venv/bin/python bench/multivariate/research/serve_latency.py [MODEL_DIR] [KEYS]
MODEL_DIR: a model from `vigil train` (default bench/results/smap_tcn/P-1, see train_smap_tcn.py). Each micro-batch
holds rows of KEYS keys (default 100) in turn; all keys are warm (their windows full) before timing. The time
covers everything the detector does per batch: window gathering, one session.run per 4096 windows, the
calibration; ONNX Runtime on one intra-op thread.
"""

import json
import sys
import time

import numpy as np

from vigil.detectors import OnnxSequence

model = sys.argv[1] if len(sys.argv) > 1 else "bench/results/smap_tcn/P-1"
keys = int(sys.argv[2]) if len(sys.argv) > 2 else 100
det = OnnxSequence(model=model)
f = det.fields[0]
rng = np.random.default_rng(0)
warm = det.window * keys * 2
det.process_many(np.tile(np.arange(keys, dtype=np.int32), warm // keys), np.arange(warm), {f: rng.uniform(-1, 1, warm)})
out = {"model": model, "keys": keys, "window": det.window}
for m in (1, 64, 1024, 4096):
    reps = max(20, min(2000, 200_000 // m))
    lat = np.empty(reps)
    for r in range(reps):
        slots = ((np.arange(m) + r * m) % keys).astype(np.int32)
        x = {f: rng.uniform(-1, 1, m)}
        ts = np.arange(m, dtype=np.int64)
        t0 = time.perf_counter()
        det.process_many(slots, ts, x)
        lat[r] = time.perf_counter() - t0
    p50, p99 = np.percentile(lat, [50, 99]) * 1e3
    out[str(m)] = {
        "p50_ms": round(float(p50), 3),
        "p99_ms": round(float(p99), 3),
        "rows_per_s_at_p50": round(float(m / p50 * 1e3)),
    }
    print(m, out[str(m)], flush=True)
print(json.dumps(out))

"""Research: export the TCN autoencoder of torch_ae.py to ONNX; ONNX Runtime latency per micro-batch (p50/p99).

../../.venv-torch/bin/python onnx_latency.py
"""

import io
import json
import time

import numpy as np
import onnxruntime as ort
import torch
from torch_ae import TCNAE

torch.manual_seed(0)
W = 32
net = TCNAE().eval()
buf = io.BytesIO()
torch.onnx.export(
    net,
    torch.zeros(1, 1, W),
    buf,
    input_names=["x"],
    output_names=["y"],
    dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}},
    opset_version=17,
    dynamo=False,
)
blob = buf.getvalue()
so = ort.SessionOptions()
so.intra_op_num_threads = 1
so.inter_op_num_threads = 1
sess = ort.InferenceSession(blob, so, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal((4096, 1, W)).astype(np.float32)
with torch.no_grad():
    ref = net(torch.from_numpy(x[:256])).numpy()
got = sess.run(["y"], {"x": x[:256]})[0]
out = {"onnx_bytes": len(blob), "max_abs_diff_vs_torch": float(np.abs(ref - got).max())}
for batch in (1, 64, 1024, 4096):
    xb = x[:batch]
    for _ in range(20):
        sess.run(["y"], {"x": xb})
    t = []
    for _ in range(300 if batch <= 1024 else 100):
        t0 = time.perf_counter()
        sess.run(["y"], {"x": xb})
        t.append(time.perf_counter() - t0)
    t = np.array(t) * 1e3
    out[f"batch_{batch}"] = {
        "p50_ms": round(float(np.percentile(t, 50)), 4),
        "p99_ms": round(float(np.percentile(t, 99)), 4),
        "rows_per_s_p50": round(batch / np.percentile(t, 50) * 1e3),
    }
print(json.dumps(out, indent=1))

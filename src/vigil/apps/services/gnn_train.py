"""Train the L3 GNN with PyTorch and export it to ONNX — run by PyTorch's own interpreter, not Vigil's.

PyTorch stays out of the core install (its wheel brings ~2.5 GB of CUDA libraries): ``vigil train
--services-gnn`` makes the data set in the core virtualenv (:mod:`.gnn_data`), then runs **this file** with the
interpreter of ``.venv-torch`` (``$VIGIL_TORCH_PYTHON``) as a script. It imports only torch, numpy and onnx
(no ``vigil``), so it needs nothing installed there but those.

The model is the one of :mod:`.gnn` (two message-passing layers over callers and callees, then a per-node
logistic output), trained with a masked, positive-weighted binary cross-entropy (Adam), seeded. The export is
``torch.onnx.export`` (opset 17, dynamic B and N) with the feature names in the model's metadata, so serving
refuses a model trained on other features. A JSON summary (loss, train AUC-free figures: positives, snapshots,
seconds) goes to stdout.

Usage: ``python gnn_train.py --data gnn.npz --out services-gnn.onnx [--epochs 30] [--hidden 16] [--seed 0]``.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any


def main(argv: list[str] | None = None) -> int:
    """Parse the arguments, train, export; 0 on success."""
    import numpy as np
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=16)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=5e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--pos-weight", type=float, default=1.0, help="weight of a positive (root) node; 0 = balance")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    d = np.load(args.data)
    x = torch.tensor(d["x"], dtype=torch.float32)
    y = torch.tensor(d["y"], dtype=torch.float32)
    mask = torch.tensor(d["mask"], dtype=torch.float32)
    run = torch.tensor(d["run"], dtype=torch.long)
    a_in = torch.tensor(d["a_in"], dtype=torch.float32)
    a_out = torch.tensor(d["a_out"], dtype=torch.float32)
    features = [str(f) for f in d["features"]]
    F = x.shape[2]

    class Gnn(torch.nn.Module):
        def __init__(self, f: int, h: int) -> None:
            super().__init__()
            self.ws1, self.wi1, self.wo1 = (torch.nn.Linear(f, h, bias=False) for _ in range(3))
            self.b1 = torch.nn.Parameter(torch.zeros(h))
            self.ws2, self.wi2, self.wo2 = (torch.nn.Linear(h, h, bias=False) for _ in range(3))
            self.b2 = torch.nn.Parameter(torch.zeros(h))
            self.out = torch.nn.Linear(h, 1)

        def logits(self, x: Any, a_in: Any, a_out: Any) -> Any:
            h = torch.relu(self.ws1(x) + self.wi1(a_in @ x) + self.wo1(a_out @ x) + self.b1)
            h = torch.relu(self.ws2(h) + self.wi2(a_in @ h) + self.wo2(a_out @ h) + self.b2)
            return self.out(h).squeeze(-1)

        def forward(self, x: Any, a_in: Any, a_out: Any) -> Any:
            return torch.sigmoid(self.logits(x, a_in, a_out))

    model = Gnn(F, args.hidden)
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    pos = float((y * mask).sum())
    neg = float(((1 - y) * mask).sum())
    pos_weight = torch.tensor(min(neg / max(pos, 1.0), 50.0) if args.pos_weight <= 0 else args.pos_weight)
    loss_fn = torch.nn.BCEWithLogitsLoss(reduction="none", pos_weight=pos_weight)
    T = x.shape[0]
    gen = torch.Generator().manual_seed(args.seed)
    last = 0.0
    for _ in range(args.epochs):
        perm = torch.randperm(T, generator=gen)
        total = 0.0
        for i in range(0, T, args.batch):
            idx = perm[i : i + args.batch]
            r = run[idx]
            lg = model.logits(x[idx], a_in[r], a_out[r])
            loss = (loss_fn(lg, y[idx]) * mask[idx]).sum() / mask[idx].sum().clamp(min=1.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss) * len(idx)
        last = total / T
    model.eval()
    with torch.no_grad():
        p = model(x, a_in[run], a_out[run])
        m = mask > 0
        hit = ((p >= 0.5) == (y > 0.5)) & m
        tp = int(((p >= 0.5) & (y > 0.5) & m).sum())
        fp = int(((p >= 0.5) & (y < 0.5) & m).sum())
    sample = (x[:2], a_in[run[:2]], a_out[run[:2]])
    torch.onnx.export(model, sample, args.out, input_names=["x", "a_in", "a_out"], output_names=["score"],
                      dynamic_axes={"x": {0: "B", 1: "N"}, "a_in": {0: "B", 1: "N", 2: "N"},
                                    "a_out": {0: "B", 1: "N", 2: "N"}, "score": {0: "B", 1: "N"}},
                      opset_version=17, dynamo=False)  # fmt: skip
    import onnx

    mod = onnx.load(args.out)
    entry = mod.metadata_props.add()
    entry.key, entry.value = "features", json.dumps(features)
    onnx.save(mod, args.out)
    print(
        json.dumps(
            {
                "loss": round(last, 5),
                "snapshots": T,
                "positives": int(pos),
                "train_accuracy": round(float(hit.sum()) / max(int(m.sum()), 1), 4),
                "train_tp": tp,
                "train_fp": fp,
                "seconds": round(time.perf_counter() - t0, 2),
                "torch": torch.__version__,
                "out": args.out,
            }
        )
    )
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

"""Research: small temporal-convolution autoencoder / forecaster per channel (PyTorch), scores saved to npz.

Run with the separate torch venv:  ../../.venv-torch/bin/python torch_ae.py OUT.npz [mode] [window]
"""

import csv
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

torch.set_num_threads(1)
DATA = Path("/work/shared/datasets/smap_msl")
out = sys.argv[1] if len(sys.argv) > 1 else ""
mode = sys.argv[2] if len(sys.argv) > 2 else "ae"
W = int(sys.argv[3]) if len(sys.argv) > 3 else 32
EPOCHS = int(sys.argv[4]) if len(sys.argv) > 4 else 30


class TCNAE(nn.Module):
    def __init__(self, ch=1, hid=16, code=4):
        super().__init__()
        self.enc = nn.Sequential(
            nn.Conv1d(ch, hid, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(hid, hid, 5, padding=4, dilation=2),
            nn.ReLU(),
            nn.Conv1d(hid, hid, 4, stride=4),
            nn.ReLU(),  # W -> W/4
            nn.Conv1d(hid, code, 1),
        )
        self.dec = nn.Sequential(
            nn.ConvTranspose1d(code, hid, 4, stride=4),
            nn.ReLU(),
            nn.Conv1d(hid, hid, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(hid, ch, 5, padding=2),
        )

    def forward(self, x):
        return self.dec(self.enc(x))


class TCNF(nn.Module):  # forecaster: window -> next value
    def __init__(self, ch=1, hid=16, W=32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(ch, hid, 5, padding=2),
            nn.ReLU(),
            nn.Conv1d(hid, hid, 5, padding=4, dilation=2),
            nn.ReLU(),
            nn.Conv1d(hid, hid, 5, padding=8, dilation=4),
            nn.ReLU(),
        )
        self.head = nn.Linear(hid * W, ch)

    def forward(self, x):
        return self.head(self.net(x).flatten(1))


def windows(x, w):
    xp = np.r_[np.full(w - 1, x[0]), x]
    return np.lib.stride_tricks.sliding_window_view(xp, w).astype(np.float32)


def main():
    res = {}
    t0 = time.time()
    for r in csv.DictReader(open(DATA / "labeled_anomalies.csv")):
        c = r["chan_id"]
        tr = np.load(DATA / "train" / f"{c}.npy")[:, 0].astype(np.float64)
        te = np.load(DATA / "test" / f"{c}.npy")[:, 0].astype(np.float64)
        torch.manual_seed(0)
        A = windows(tr, W)
        B = windows(np.r_[tr, te], W)[len(tr) :]
        if mode == "ae":
            net = TCNAE()
            X, Y = torch.from_numpy(A[:, None, :]), torch.from_numpy(A[:, None, :])
        else:
            net = TCNF(W=W)
            X = torch.from_numpy(A[:-1, None, :])
            Y = torch.from_numpy(A[1:, -1:])
        opt = torch.optim.Adam(net.parameters(), lr=2e-3)
        n = len(X)
        for _ep in range(EPOCHS):
            perm = torch.randperm(n)
            for a in range(0, n, 64):
                idx = perm[a : a + 64]
                opt.zero_grad()
                loss = ((net(X[idx]) - Y[idx]) ** 2).mean()
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            if mode == "ae":
                Bt = torch.from_numpy(B[:, None, :])
                err = ((net(Bt) - Bt) ** 2).numpy()[:, 0, :]  # (rows, W)
                s_win = err.mean(1)
                s_last = err[:, -1]
                res[c] = np.c_[s_win, s_last]
            else:
                # forecast of row t from the window ending at t-1
                prev = windows(np.r_[tr, te], W)[len(tr) - 1 : -1]
                pred = net(torch.from_numpy(prev[:, None, :])).numpy()[:, 0]
                e = (te - pred) ** 2
                res[c] = np.c_[e, e]
        print(c, f"{time.time() - t0:.0f}s", flush=True)
    np.savez(out, **res)


if __name__ == "__main__":
    main()

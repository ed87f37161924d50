"""Sensitivity of the bundled smap_msl config to its threshold and re-learning horizon (the NOTES.md table).

PYTHONPATH=src .venv/bin/python bench/multivariate/sensitivity.py
"""

import itertools
import tempfile
from pathlib import Path

import yaml

from vigil.cli.bench_multivariate import load_channels, run_config
from vigil.config.detector import bundled_config

base = yaml.safe_load(bundled_config("smap_msl").read_text())
chans = load_channels()
with tempfile.TemporaryDirectory() as tmp:
    for t, r in itertools.product((0.99, 0.995, 0.999, 0.9999), (0, 360, 1440, 2880, 5760)):
        cfg = {
            **base,
            "detector": {
                **base["detector"],
                "params": {**base["detector"]["params"], "threshold": t, "relearn_after": r},
            },
        }
        path = Path(tmp) / f"t{t}_r{r}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        res = run_config(path, chans)
        print(
            f"| {t} | {r} | {res['f1_nopa']:.3f} | {res['auc_pr']:.3f} | {res['p_default']:.3f} | "
            f"{res['r_default']:.3f} | {res['f1_default']:.3f} | {res['f1_default'] / res['f1_nopa']:.2f} | "
            f"{100 * res['flagged']:.1f} |",
            flush=True,
        )

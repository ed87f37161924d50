"""`vigil bench multivariate` on a small SMAP/MSL-shaped corpus (and on the real one, when present, marked slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vigil.cli.bench_multivariate import load_channels, run_multivariate_bench
from vigil.errors import VigilError

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "smap_msl"
CONFIG = """detector:
  kind: mahalanobis
  params: {fields: [c0], window: 5, warmup: 50, min_history: 50, history: 500, threshold: 0.999, hold_threshold: 0.8}
value_columns: [c0]
"""
ALL_COLUMNS = """detector:
  kind: mahalanobis
  params: {fields: ["c*"], window: 1, shrinkage: 0.5, min_std: 0.01, warmup: 50, min_history: 50, history: 500}
value_columns: ["c*"]
"""


def _corpus(root: Path) -> Path:
    """Two channels (3 and 5 columns): noisy telemetry, one labelled level excursion in each test split."""
    rng = np.random.default_rng(0)
    (root / "train").mkdir(parents=True)
    (root / "test").mkdir()
    lines = ["chan_id,spacecraft,anomaly_sequences,class,num_values"]
    for name, d, (a, b) in (("A-1", 3, (700, 760)), ("B-2", 5, (300, 420))):
        train = np.zeros((1500, d), np.float32)
        train[:, 0] = np.sin(np.arange(1500) / 20) + 0.1 * rng.standard_normal(1500)
        test = np.zeros((1000, d), np.float32)
        test[:, 0] = np.sin(np.arange(1500, 2500) / 20) + 0.1 * rng.standard_normal(1000)
        test[a : b + 1, 0] += 2.5
        test[rng.integers(0, 1000, 40), 1] = 1.0  # a command flag, unrelated to the labels
        np.save(root / "train" / f"{name}.npy", train)
        np.save(root / "test" / f"{name}.npy", test)
        lines.append(f'{name},SMAP,"[[{a}, {b}]]",[point],1000')
    (root / "labeled_anomalies.csv").write_text("\n".join(lines) + "\n")
    return root


def test_harness_on_a_synthetic_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = _corpus(tmp_path / "smap")
    cfg = tmp_path / "maha.yaml"
    cfg.write_text(CONFIG)
    wide = tmp_path / "wide.yaml"
    wide.write_text(ALL_COLUMNS)
    rep = run_multivariate_bench([str(cfg), str(wide)], data_dir=data, out=tmp_path / "r.json", as_json=True,
                                 quiet=True)  # fmt: skip
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    for key in ("f1_nopa_best", "f1_nopa_iforest", "f1_nopa_random", "auc_pr_best", "f1_default_best", "best_config"):
        assert key in last
    assert last["best_config"] == "maha"
    best = rep["configs"][0]
    assert best["f1_nopa"] > 0.8 and best["f1_default"] > 0.6  # an obvious excursion, found without an oracle
    assert last["f1_nopa_best"] > last["f1_nopa_random"]
    assert {c["channel"] for c in best["channels"]} == {"A-1", "B-2"}
    assert json.loads((tmp_path / "r.json").read_text())["summary"] == last
    # the wildcard config used every column of each channel (3 and 5)
    assert rep["configs"][1]["name"] == "wide"


def test_channels_and_errors(tmp_path: Path) -> None:
    data = _corpus(tmp_path / "smap")
    chans = load_channels(data, ["B-2"])
    assert [c.name for c in chans] == ["B-2"] and chans[0].columns == [f"c{j}" for j in range(5)]
    assert chans[0].labels.sum() == 121
    with pytest.raises(VigilError, match="not SMAP/MSL channels"):
        load_channels(data, ["Z-9"])
    with pytest.raises(VigilError, match="--data"):
        load_channels(tmp_path / "nowhere")


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "labeled_anomalies.csv").is_file(), reason="the shared SMAP/MSL data is absent")
def test_bundled_config_beats_the_controls_on_smap_msl(tmp_path: Path) -> None:
    rep = run_multivariate_bench(["smap_msl"], out=tmp_path / "r.json", quiet=True)
    s = rep["summary"]
    assert s["channels"] == 82
    assert s["f1_nopa_best"] >= 1.5 * s["f1_nopa_iforest"]
    assert s["f1_nopa_random"] < s["f1_nopa_iforest"]

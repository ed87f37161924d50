"""`vigil bench nab` (vigil.cli.bench_nab.run_nab_bench): the harness on a synthetic NAB-shaped corpus and on NAB."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from vigil.cli.bench_nab import PROFILES, load_scorer, run_nab_bench
from vigil.config.detector import bundled_config, load_detector_config
from vigil.errors import VigilError

try:
    load_scorer()
    HAVE_SCORER = True
except VigilError:
    HAVE_SCORER = False

SHARED_NAB = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "nab"
HAVE_NAB = (SHARED_NAB / "labels" / "combined_windows.json").is_file()
needs_scorer = pytest.mark.skipif(not HAVE_SCORER, reason="the shared NAB scorer (../shared/bench/nab) is absent")

CONFIG = "kind: ew_zscore\nparams: {field: value, halflife: 100, min_count: 10, protect: false}\n"


def _synthetic_corpus(root: Path) -> tuple[Path, Path]:
    """Two categories, three files of timestamp,value with a spike each (two labelled), plus a windows JSON."""
    rng = np.random.default_rng(5)
    windows: dict[str, list[list[str]]] = {}
    t0 = np.datetime64("2020-01-01T00:00:00")
    for name, spike, labelled in [
        ("catA/one.csv", 700, True),
        ("catA/two.csv", 800, True),
        ("catB/three.csv", 650, False),
    ]:
        n = 1000
        ts = t0 + np.arange(n) * np.timedelta64(5, "m")
        x = 50 + rng.standard_normal(n)
        x[spike : spike + 3] += 15
        path = root / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        text = [f"{str(t).replace('T', ' ')},{v:.4f}" for t, v in zip(ts, x)]
        path.write_text("timestamp,value\n" + "\n".join(text) + "\n")
        fmt = [str(ts[i]).replace("T", " ") + ".000000" for i in (spike - 50, spike + 49)]
        windows[name] = [fmt] if labelled else []
    labels = root / "labels" / "combined_windows.json"
    labels.parent.mkdir(parents=True)
    labels.write_text(json.dumps(windows))
    return root / "data", labels


@needs_scorer
def test_harness_on_synthetic_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, labels = _synthetic_corpus(tmp_path / "nab")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    res = run_nab_bench(cfg, data_dir=data, labels=labels, results_dir=tmp_path / "results", as_json=True)
    last = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(last) == {*PROFILES, "points_per_s"}
    assert all(last[p] == res[p] for p in PROFILES) and last["points_per_s"] > 0
    assert res["files"] == 3 and res["rows"] == 3000 and not res["subset"]
    assert res["standard"] > 90  # both spikes found at the start of their windows, nothing else fires
    out = (tmp_path / "results" / "catA" / "one.csv").read_text().splitlines()
    assert out[0] == "timestamp,value,anomaly_score" and len(out) == 1001
    assert out[1].startswith("2020-01-01 00:00:00,")
    scores = np.array([float(line.split(",")[2]) for line in out[1:]])
    assert scores.min() >= 0 and scores.max() < 1 and int(scores.argmax()) == 700
    saved = json.loads((tmp_path / "results" / "nab_scores.json").read_text())
    assert saved["standard"] == res["standard"]


@needs_scorer
def test_result_files_rescore_with_the_scorer_cli(tmp_path: Path) -> None:
    data, labels = _synthetic_corpus(tmp_path / "nab")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(CONFIG)
    res = run_nab_bench(cfg, data_dir=data, labels=labels, results_dir=tmp_path / "r", quiet=True)
    nab = load_scorer()
    corpus = nab.load_corpus(str(data), str(labels))
    again = nab.score(nab.read_results(str(tmp_path / "r"), corpus), corpus)
    assert all(round(again[p]["score"], 3) == res[p] for p in PROFILES)


def test_bundled_config_loads() -> None:
    path = bundled_config("nab")
    assert path is not None
    factory, cols = load_detector_config(path)
    assert factory().fields == ("value",) and cols.time_column == "timestamp" and cols.key_column is None


def test_missing_data_explains_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(VigilError, match="numenta/NAB"):
        run_nab_bench("nab", data_dir=tmp_path / "nope", results_dir=tmp_path / "r", quiet=True)


@needs_scorer
@pytest.mark.skipif(not HAVE_NAB, reason="the shared NAB corpus (../shared/datasets/nab) is absent")
def test_nab_subset_of_three_files(tmp_path: Path) -> None:
    files = [
        "realKnownCause/nyc_taxi.csv",
        "realAWSCloudwatch/ec2_cpu_utilization_24ae8d.csv",
        "artificialWithAnomaly/art_daily_jumpsup.csv",
    ]
    res = run_nab_bench("nab", results_dir=tmp_path, files=files, quiet=True)
    assert res["subset"] and res["files"] == 3
    assert all(0 <= res[p] <= 100 for p in PROFILES)


# The full run (58 files, 365,558 points) takes about 3 s with the bundled config, so it is not marked slow.
@needs_scorer
@pytest.mark.skipif(not HAVE_NAB, reason="the shared NAB corpus (../shared/datasets/nab) is absent")
def test_full_nab_with_bundled_config(tmp_path: Path) -> None:
    res = run_nab_bench("nab", results_dir=tmp_path, quiet=True)
    assert res["files"] == 58 and res["rows"] == 365_558 and not res["subset"]
    assert all(0 <= res[p] <= 100 for p in PROFILES)
    assert res["standard"] > 16.83  # better than NAB's random detector

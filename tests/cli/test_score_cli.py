"""`vigil score` (vigil.cli.score_file.score_file): batch scoring == streaming process_many in event-time order."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from vigil.cli.score_file import score_file
from vigil.config.detector import ColumnsConfig, DetectorFactory, load_detector_config, parse_detector_config
from vigil.detectors import EWZScore
from vigil.detectors.base import Verdicts
from vigil.errors import ConfigError
from vigil.state.keyindex import KeyIndex

CONFIG = """
detector:
  kind: ew_zscore
  params: {field: value, halflife: 20, min_count: 5, protect: false}
time_column: ts
key_column: host
"""


def _data(n: int = 500, seed: int = 3) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    ts = 1_700_000_000_000 + rng.integers(0, 3_600_000, n)  # unsorted, with ties
    ts[10:20] = ts[9]
    host = np.array([f"h{k}" for k in rng.integers(0, 4, n)], object)
    value = 10 + rng.standard_normal(n)
    value[rng.integers(0, n, 5)] += 20
    return {"ts": ts, "host": host, "value": value}


def _write(d: dict[str, Any], path: Path) -> Path:
    table = pa.table({"ts": d["ts"], "host": d["host"].tolist(), "value": d["value"]})
    if path.suffix == ".csv":
        pacsv.write_csv(table, path)
    elif path.suffix == ".parquet":
        pq.write_table(table, path)
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    return path


def _read(path: Path) -> dict[str, list[Any]]:
    if path.suffix == ".csv":
        return pacsv.read_csv(path).to_pydict()
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pydict()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {k: [r[k] for r in rows] for k in rows[0]}


def _direct(d: dict[str, Any], det: Any) -> Verdicts:
    """The streaming reference: rows in stable event-time order through one process_many call."""
    order = np.argsort(d["ts"], kind="stable")
    slots = KeyIndex().slots_for(d["host"][order].tolist())
    v = det.process_many(slots, d["ts"][order], {"value": d["value"][order]})
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return Verdicts(v.score[inv], v.calibrated[inv], v.flag[inv], v.fire[inv], v.ready[inv])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    p = tmp_path / "det.yaml"
    p.write_text(CONFIG)
    return p


@pytest.mark.parametrize("in_ext", [".csv", ".jsonl", ".parquet"])
@pytest.mark.parametrize("out_ext", [".csv", ".jsonl", ".parquet"])
def test_matches_process_many_in_event_time_order(tmp_path: Path, config: Path, in_ext: str, out_ext: str) -> None:
    d = _data()
    inp = _write(d, tmp_path / f"in{in_ext}")
    out = tmp_path / f"out{out_ext}"
    summary = score_file(config, inp, out, progress=False, batch_rows=37)
    ref = _direct(d, EWZScore(field="value", halflife=20, min_count=5, protect=False))
    got = _read(out)
    assert summary["rows"] == summary["scored"] == len(d["ts"]) and summary["unreadable"] == 0
    assert summary["keys"] == 4 and summary["time_unit"] == "ms"
    assert got["row"] == list(range(len(d["ts"])))  # input order
    assert got["ts_ms"] == d["ts"].tolist()
    assert [str(h) for h in got["host"]] == d["host"].tolist()
    np.testing.assert_array_equal(np.array(got["score"], float), ref.score)
    np.testing.assert_array_equal(np.array(got["calibrated"], float), ref.calibrated)
    assert [bool(f) for f in got["flag"]] == ref.flag.tolist()
    assert [bool(r) for r in got["ready"]] == ref.ready.tolist()
    assert ref.flag.sum() >= 3


def test_batch_size_does_not_change_results(tmp_path: Path, config: Path) -> None:
    inp = _write(_data(), tmp_path / "in.parquet")
    score_file(config, inp, tmp_path / "a.parquet", progress=False, batch_rows=1)
    score_file(config, inp, tmp_path / "b.parquet", progress=True, batch_rows=100_000)
    assert pq.read_table(tmp_path / "a.parquet").equals(pq.read_table(tmp_path / "b.parquet"))


def test_causality_prefix_gives_first_rows(tmp_path: Path, config: Path) -> None:
    d = _data()
    order = np.argsort(d["ts"], kind="stable")
    d = {k: v[order] for k, v in d.items()}  # a file already in event-time order
    full = _write(d, tmp_path / "full.csv")
    k = 321
    prefix = _write({c: v[:k] for c, v in d.items()}, tmp_path / "prefix.csv")
    score_file(config, full, tmp_path / "full_out.csv", progress=False)
    score_file(config, prefix, tmp_path / "prefix_out.csv", progress=False)
    a, b = _read(tmp_path / "full_out.csv"), _read(tmp_path / "prefix_out.csv")
    for col in ("score", "calibrated", "flag", "ready"):
        assert b[col] == a[col][:k]


def test_bad_rows_are_reported_not_fatal(tmp_path: Path) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text("kind: ew_zscore\nparams: {field: value, halflife: 10, min_count: 3}\n")
    lines = ["timestamp,value"] + [f"2024-01-01T00:{m:02d}:00,{10 + m % 3}" for m in range(20)]
    lines[5] = "2024-01-01T00:04:00,abc"  # not a number
    lines[8] = "not-a-time,3"
    lines[11] = "2024-01-01T00:10:00,1,2"  # malformed line
    lines[14] = "2024-01-01T00:13:00,"  # missing value: not scored, but not unreadable
    lines[16] = "2024-01-01T00:15:00,inf"
    inp = tmp_path / "in.csv"
    inp.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.jsonl"
    s = score_file(cfg, inp, out, progress=False)
    assert s["rows"] == 20 and s["unreadable"] == 4 and s["missing"] == 1 and s["scored"] == 15
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["row"] for r in rows] == list(range(20))
    bad = {r["row"]: r["reason"] for r in rows if r["reason"]}
    assert set(bad) == {4, 7, 10, 13, 15}
    assert "not a number" in bad[4] and "ISO 8601" in bad[7] and "malformed" in bad[10] and "finite" in bad[15]
    assert all(rows[i]["score"] is None and rows[i]["flag"] is None for i in bad if i != 13)
    assert rows[13]["reason"] == "`value` missing (empty or NaN): not scored" and rows[13]["ready"] is False
    assert rows[13]["score"] is None and rows[13]["flag"] is False
    assert bad[15] == "`value` is not finite: inf"  # the value, not numpy's repr (np.float64(inf))
    assert rows[19]["ready"] is True


def test_time_units_epoch_seconds_and_iso(tmp_path: Path) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text("kind: ew_zscore\nparams: {field: v, min_count: 3}\n")
    base = 1_700_000_000
    secs = tmp_path / "s.jsonl"
    secs.write_text("".join(json.dumps({"timestamp": base + 60 * i, "v": i % 4}) + "\n" for i in range(10)))
    iso = tmp_path / "iso.jsonl"
    iso.write_text(
        "".join(json.dumps({"timestamp": f"2023-11-14T22:{13 + i:02d}:20Z", "v": i % 4}) + "\n" for i in range(10))
    )
    a = score_file(cfg, secs, tmp_path / "a.csv", progress=False)
    b = score_file(cfg, iso, tmp_path / "b.csv", progress=False)
    assert a["time_unit"] == "s" and b["time_unit"] == "iso8601"
    ta, tb = _read(tmp_path / "a.csv"), _read(tmp_path / "b.csv")
    assert ta["ts_ms"] == tb["ts_ms"] == [(base + 60 * i) * 1000 for i in range(10)]
    assert ta["score"] == tb["score"]


class _Fitted:
    """A two-column detector fitted offline (not registered): z-scores against means/stds from training data."""

    kind: ClassVar[str] = "test_fitted"
    fields = ("a", "b")
    threshold = 3.0

    def __init__(self, *, mean: list[float] | None = None, std: list[float] | None = None) -> None:
        self.mean = np.array(mean or [0.0, 0.0])
        self.std = np.array(std or [1.0, 1.0])

    @classmethod
    def fit_from_frame(cls, columns: dict[str, np.ndarray]) -> dict[str, Any]:
        assert set(columns) == {"a", "b"}  # the hook gets the value columns (features) only
        return {
            "mean": [float(np.mean(columns[f])) for f in cls.fields],
            "std": [float(np.std(columns[f])) for f in cls.fields],
        }

    def process_many(self, slots: Any, ts_ms: Any, X: dict[str, np.ndarray]) -> Verdicts:
        za = (X["a"] - self.mean[0]) / self.std[0]
        zb = (X["b"] - self.mean[1]) / self.std[1]
        score = np.hypot(za, zb)
        flag = score > self.threshold
        return Verdicts(score, 1 - np.exp(-score), flag, flag, np.ones(len(score), bool), {"z_a": za, "z_b": zb})


def test_train_hook_fits_and_writes_contributions(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    train = tmp_path / "train.csv"
    pacsv.write_csv(
        pa.table(
            {"t": np.arange(1000) * 1000, "a": 5 + 2 * rng.standard_normal(1000), "b": -3 + rng.standard_normal(1000)}
        ),
        train,
    )
    inp = tmp_path / "in.csv"
    pacsv.write_csv(pa.table({"t": np.arange(3) * 1000, "a": [5.0, 25.0, 5.0], "b": [-3.0, -3.0, 7.0]}), inp)
    factory = DetectorFactory("test_fitted", _Fitted, {})
    cols = ColumnsConfig(time_column="t", value_columns=("a", "b"))
    s = score_file((factory, cols), inp, tmp_path / "out.csv", train_path=train, progress=False)
    assert s["train"] == "fit" and factory.fitted["mean"][0] == pytest.approx(5, abs=0.3)
    out = _read(tmp_path / "out.csv")
    assert out["flag"] == [False, True, True]
    assert abs(out["z_a"][1]) > 8 > abs(out["z_b"][1]) and abs(out["z_b"][2]) > 8


def test_train_without_hook_warms_up(tmp_path: Path, config: Path) -> None:
    d = _data(600)
    order = np.argsort(d["ts"], kind="stable")
    d = {k: v[order] for k, v in d.items()}
    train = _write({k: v[:400] for k, v in d.items()}, tmp_path / "train.parquet")
    inp = _write({k: v[400:] for k, v in d.items()}, tmp_path / "in.parquet")
    s = score_file(config, inp, tmp_path / "out.parquet", train_path=train, progress=False)
    assert s["train"] == "warmup"
    # throughput counts the scored rows over the scoring time alone; the warm-up is timed apart
    assert s["train_s"] > 0 and s["rows_per_s"] == pytest.approx(200 / s["detector_s"], rel=0.05)
    ref = _direct(d, EWZScore(field="value", halflife=20, min_count=5, protect=False))
    np.testing.assert_array_equal(pq.read_table(tmp_path / "out.parquet")["score"].to_numpy(), ref.score[400:])


def test_threshold_override_flags_on_calibrated(tmp_path: Path) -> None:
    cfg = tmp_path / "d.yaml"
    cfg.write_text(CONFIG + "threshold: 0.5\n")
    inp = _write(_data(), tmp_path / "in.parquet")
    score_file(cfg, inp, tmp_path / "o.parquet", progress=False)
    t = pq.read_table(tmp_path / "o.parquet").to_pydict()
    assert t["flag"] == [bool(r and c >= 0.5) for r, c in zip(t["ready"], t["calibrated"])]


def test_config_shapes_and_errors(tmp_path: Path) -> None:
    f, cols = parse_detector_config({"kind": "ew_zscore", "params": {"field": "cpu"}})
    assert cols == ColumnsConfig(value_columns=("cpu",))
    with pytest.raises(ConfigError, match=r"`detector.kind` is not a known detector.*got 'ew_zscor'.*'ew_zscore'"):
        parse_detector_config({"detector": {"kind": "ew_zscor"}})
    with pytest.raises(ConfigError, match=r"`params.halflif` is not a parameter.*did you mean `halflife`"):
        parse_detector_config({"kind": "ew_zscore", "params": {"halflif": 3}})
    with pytest.raises(ConfigError, match=r"`detector.params.inner.kind` is not a known detector.*'ew_zscore'"):
        parse_detector_config({"detector": {"kind": "calibrated", "params": {"inner": {"kind": "ewzscore"}}}})
    with pytest.raises(ConfigError, match=r"`value_columns` must include the detector's fields"):
        parse_detector_config({"detector": {"kind": "ew_zscore"}, "value_columns": ["x"]})
    with pytest.raises(ConfigError, match=r"`time_colum`.*did you mean `time_column`"):
        parse_detector_config({"detector": {"kind": "ew_zscore"}, "time_colum": "t"})
    with pytest.raises(ConfigError, match=r"`params.halflife` must be > 0"):
        parse_detector_config({"kind": "ew_zscore", "params": {"halflife": -1}})
    p = tmp_path / "x.yaml"
    p.write_text("detector: {kind: ew_zscore}\nkey_column: host\n")
    assert load_detector_config(p)[1].key_column == "host"


def test_missing_column_is_a_config_error(tmp_path: Path, config: Path) -> None:
    inp = tmp_path / "in.csv"
    inp.write_text("ts,hots,value\n1,a,2\n")
    with pytest.raises(ConfigError, match=r"`column` is not a column of in.csv; got 'host'.*'hots'"):
        score_file(config, inp, tmp_path / "o.csv", progress=False)


def test_score_trains_an_offline_detector_first(tmp_path):
    """`vigil score --train`: an Isolation Forest is fitted on normal data, then scores the input."""
    import csv as _csv
    import json as _json
    import subprocess as _sp
    import sys as _sys

    import numpy as _np

    rng = _np.random.default_rng(0)

    def write(path, n, spikes):
        with open(path, "w", newline="") as f:
            w = _csv.writer(f)
            w.writerow(["timestamp", "cpu", "mem"])
            for i in range(n):
                cpu, mem = rng.normal(50, 5), rng.normal(30, 3)
                if spikes and i % 200 == 100:
                    cpu, mem = cpu + 60, mem + 40
                w.writerow([1_700_000_000_000 + i * 1000, round(cpu, 3), round(mem, 3)])

    write(tmp_path / "train.csv", 3000, False)
    write(tmp_path / "test.csv", 2000, True)
    (tmp_path / "if.yaml").write_text("detector: {kind: isolation_forest, params: {threshold: 0.99}}\n"
                                      "time_column: timestamp\nvalue_columns: [cpu, mem]\n")
    cmd = [_sys.executable, "-m", "vigil.cli.main", "score", str(tmp_path / "if.yaml"), str(tmp_path / "test.csv"),
           str(tmp_path / "out.csv"), "--json"]
    r = _sp.run(cmd, capture_output=True, text=True)
    assert r.returncode == 2 and "--train" in r.stderr  # an untrained model is refused clearly
    env = {**os.environ, "VIGIL_CACHE_DIR": str(tmp_path / "cache"), "VIGIL_FIT_CACHE": "1"}
    r = _sp.run([*cmd, "--train", str(tmp_path / "train.csv")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    first = _json.loads(r.stdout.strip().splitlines()[-1])
    assert first["train"] == "fit" and first["fit_cached"] is False
    rows = list(_csv.DictReader(open(tmp_path / "out.csv")))
    flagged = {int(row["row"]) for row in rows if row["flag"].lower() == "true"}
    assert {i for i in range(2000) if i % 200 == 100} <= flagged
    # the same training data again: the fitted (ONNX-converted) model comes from the cache, same results
    r = _sp.run([*cmd, "--train", str(tmp_path / "train.csv")], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert _json.loads(r.stdout.strip().splitlines()[-1])["fit_cached"] is True
    assert list(_csv.DictReader(open(tmp_path / "out.csv"))) == rows
    assert len(list((tmp_path / "cache" / "fits").glob("*.fit"))) == 1


def test_nan_and_empty_values_are_missing_not_scored_and_no_output_folder_is_made(tmp_path: Path) -> None:
    """Was: NaN and empty values counted as "scored" while inf was "unreadable"; any missing folder was created."""
    import subprocess
    import sys

    cfg = tmp_path / "d.yaml"
    cfg.write_text("kind: ew_zscore\nparams: {field: value, halflife: 10, min_count: 2}\n")
    inp = tmp_path / "in.csv"
    inp.write_text("timestamp,value\n" + "".join(f"2024-01-01T00:{m:02d}:00,{v}\n" for m, v in
                                                 enumerate(["1", "nan", "", "inf", "-inf", "2", "NaN", "3"])))
    s = score_file(cfg, inp, tmp_path / "o.csv", progress=False)
    assert (s["rows"], s["scored"], s["missing"], s["unreadable"]) == (8, 3, 3, 2)
    assert s["unreadable_reasons"] == {"`value` is not finite": 2}

    def vigil(*args):
        return subprocess.run([sys.executable, "-m", "vigil.cli.main", *args], capture_output=True, text=True,
                              cwd=tmp_path, timeout=300)

    r = vigil("score", str(cfg), str(inp), str(tmp_path / "no" / "such" / "out.csv"))
    assert r.returncode == 2 and not (tmp_path / "no").exists()
    assert r.stderr.strip() == (f"error: `output` is in a folder that does not exist ({tmp_path / 'no' / 'such'}); "
                                f"got '{tmp_path / 'no' / 'such' / 'out.csv'}' (hint: create the folder first)")
    r = vigil("score", str(cfg), str(inp), "out.jsonl", "--json")
    assert r.returncode == 0
    summary = json.loads(r.stdout.strip().splitlines()[-1])  # strict JSON: no bare NaN anywhere
    assert summary["missing"] == 3
    for line in (tmp_path / "out.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"not strict JSON: {c}"))


# --- `vigil score` for real use (issue 13): globs, --scores-only, --members, an honest throughput -------------


def _vigil(*args: str, env: dict[str, str] | None = None) -> Any:
    from typer.testing import CliRunner

    from vigil.cli.main import app

    return CliRunner(env={"COLUMNS": "200", **(env or {})}).invoke(app, list(args))


def _wide(path: Path, n: int = 300, spike: int | None = 200, spike_all: bool = False) -> Path:
    """A time column, a key, three numeric columns (two cpu_*; a spike in cpu_a, or all), and a text column."""
    rng = np.random.default_rng(7 if spike is not None else 8)
    x = {"cpu_a": 50 + rng.standard_normal(n), "cpu_b": 20 + rng.standard_normal(n), "mem": 70 + rng.standard_normal(n)}
    if spike is not None:
        for c in x if spike_all else ["cpu_a"]:
            x[c][spike] += 30
    table = pa.table({"ts": 1_700_000_000_000 + np.arange(n) * 1000, "host": [f"h{i % 2}" for i in range(n)],
                      **x, "note": [f"n{i}" for i in range(n)]})  # fmt: skip
    pacsv.write_csv(table, path)
    return path


def _cfg(path: Path, value_columns: str, field: str = "cpu_a", detector: str | None = None) -> Path:
    det = detector or f"{{kind: ew_zscore, params: {{field: {field}, halflife: 20, min_count: 5, protect: false}}}}"
    path.write_text(f"detector: {det}\ntime_column: ts\nkey_column: host\nvalue_columns: {value_columns}\n")
    return path


def test_value_column_globs_expand_to_numeric_columns(tmp_path: Path) -> None:
    inp = _wide(tmp_path / "in.csv")
    named = _vigil("score", str(_cfg(tmp_path / "n.yaml", "[cpu_a, cpu_b, mem]")), str(inp), str(tmp_path / "n.csv"))
    assert named.exit_code == 0, named.output
    ref = _read(tmp_path / "n.csv")
    # "*": every numeric column but the time and key columns (the text column `note` is left out)
    r = _vigil("score", str(_cfg(tmp_path / "s.yaml", '"*"')), str(inp), str(tmp_path / "s.csv"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["unreadable"] == 0
    out = _read(tmp_path / "s.csv")
    assert list(out) == list(ref) and "note" not in out and out["score"] == ref["score"]
    # a glob per entry, mixed with names, in file order
    r = _vigil("score", str(_cfg(tmp_path / "g.yaml", '["cpu_*", mem]')), str(inp), str(tmp_path / "g.csv"))
    assert r.exit_code == 0, r.output
    assert list(_read(tmp_path / "g.csv")) == list(ref)
    r = _vigil("score", str(_cfg(tmp_path / "p.yaml", "cpu_?")), str(inp), str(tmp_path / "p.csv"))
    assert r.exit_code == 0, r.output
    assert [c for c in _read(tmp_path / "p.csv") if c.startswith("cpu")] == ["cpu_a", "cpu_b"]


def test_value_column_globs_that_match_nothing_are_one_clear_error(tmp_path: Path) -> None:
    inp = _wide(tmp_path / "in.csv")
    r = _vigil("score", str(_cfg(tmp_path / "d.yaml", '["disk_*"]')), str(inp), str(tmp_path / "o.csv"))
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.strip() == ("error: `value_columns` matches no numeric column of in.csv; got 'disk_*' "
                                "(hint: columns: cpu_a, cpu_b, mem, note)")  # fmt: skip
    r = _vigil("score", str(_cfg(tmp_path / "t.yaml", "no*")), str(inp), str(tmp_path / "o.csv"))
    assert r.exit_code == 2
    assert r.stderr.strip() == ("error: `value_columns` matches no numeric column of in.csv; got 'no*' "
                                "(hint: it matches only non-numeric note)")  # fmt: skip
    # the detector's own field must be among the expanded columns
    r = _vigil("score", str(_cfg(tmp_path / "f.yaml", '["cpu_*"]', field="mem")), str(inp), str(tmp_path / "o.csv"))
    assert r.exit_code == 2 and len(r.stderr.strip().splitlines()) == 1
    assert r.stderr.startswith("error: `value_columns` must include the detector's fields ['mem']")
    assert not (tmp_path / "o.csv").exists()


def test_value_column_glob_trains_an_offline_model_on_every_numeric_column(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    train, inp = _wide(tmp_path / "train.csv", 1000, spike=None), _wide(tmp_path / "in.csv", spike_all=True)
    cfg = _cfg(tmp_path / "if.yaml", '"*"', detector="{kind: isolation_forest, params: {threshold: 0.99}}")
    env = {"VIGIL_CACHE_DIR": str(tmp_path / "cache")}
    r = _vigil("score", str(cfg), str(inp), str(tmp_path / "o.csv"), "--train", str(train), "--json", env=env)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["train"] == "fit"
    out = _read(tmp_path / "o.csv")
    assert {"cpu_a", "cpu_b", "mem"} <= set(out) and "note" not in out
    assert out["flag"][200] is True  # a spike in all three, seen by a model fitted on the three numeric columns


def test_scores_only_writes_the_verdicts_without_the_input_values(tmp_path: Path) -> None:
    inp = _wide(tmp_path / "in.csv")
    cfg = _cfg(tmp_path / "c.yaml", "[cpu_a, mem]")
    assert _vigil("score", str(cfg), str(inp), str(tmp_path / "full.csv")).exit_code == 0
    r = _vigil("score", str(cfg), str(inp), str(tmp_path / "o.parquet"), "--scores-only")
    assert r.exit_code == 0, r.output
    out, full = pq.read_table(tmp_path / "o.parquet").to_pydict(), _read(tmp_path / "full.csv")
    assert list(out) == ["row", "ts_ms", "ts", "host", "score", "calibrated", "flag", "ready", "reason"]
    assert out["score"] == pytest.approx(full["score"]) and out["flag"] == full["flag"]
    assert "--scores-only" in _vigil("score", "--help").stdout


def test_members_writes_each_ensemble_members_raw_score(tmp_path: Path) -> None:
    inp = _wide(tmp_path / "in.csv")

    def member(name: str, field: str, halflife: int) -> str:
        return (f"{{name: {name}, kind: ew_zscore, params: {{field: {field}, halflife: {halflife}, min_count: 5, "
                f"protect: false}}}}")  # fmt: skip

    ens = f"{{kind: ensemble, params: {{members: [{member('a', 'cpu_a', 20)}, {member('m', 'mem', 50)}]}}}}"
    r = _vigil("score", str(_cfg(tmp_path / "e.yaml", '"*"', detector=ens)), str(inp), str(tmp_path / "o.csv"),
               "--members", "--scores-only")  # fmt: skip
    assert r.exit_code == 0, r.output
    out = _read(tmp_path / "o.csv")
    assert list(out)[-3:] == ["score.a", "score.m", "reason"]
    for name, field, halflife in (("a", "cpu_a", 20), ("m", "mem", 50)):  # each equals the member scored alone
        det = f"{{kind: ew_zscore, params: {{field: {field}, halflife: {halflife}, min_count: 5, protect: false}}}}"
        alone = tmp_path / f"{name}.csv"
        assert _vigil("score", str(_cfg(tmp_path / f"{name}.yaml", "[cpu_a, mem]", detector=det)), str(inp),
                      str(alone)).exit_code == 0  # fmt: skip
        np.testing.assert_allclose(np.asarray(out[f"score.{name}"], float), np.asarray(_read(alone)["score"], float))
    r = _vigil("score", str(_cfg(tmp_path / "z.yaml", "[cpu_a]")), str(inp), str(tmp_path / "z.csv"), "--members")
    assert r.exit_code == 2 and not (tmp_path / "z.csv").exists()
    assert r.stderr.strip() == ("error: `--members` needs an `ensemble` detector (it writes each member's raw "
                                "score); got 'ew_zscore' (hint: drop --members, or score an ensemble)")  # fmt: skip


def test_throughput_is_the_detectors_alone_and_says_so(tmp_path: Path) -> None:
    inp = _wide(tmp_path / "in.csv")
    inp.write_text(inp.read_text() + "1700000300000,h0,abc,2,3,x\n")  # one unreadable row: not in the throughput
    cfg = _cfg(tmp_path / "c.yaml", "[cpu_a]")
    r = _vigil("score", str(cfg), str(inp), str(tmp_path / "o.csv"), "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["rows"] == 301 and s["unreadable"] == 1 and s["read_s"] >= 0 and s["write_s"] >= 0
    assert s["rows_per_s"] == pytest.approx(300 / s["detector_s"], rel=0.02)  # scored rows over detector time
    r = _vigil("score", str(cfg), str(inp), str(tmp_path / "o.csv"), "--no-progress")
    assert r.exit_code == 0, r.output
    lines = r.stderr.strip().splitlines()
    assert lines[0].startswith(f"wrote {tmp_path / 'o.csv'}: detector ew_zscore, rows 301,") and "_s " not in lines[0]
    assert lines[-1].startswith("detector throughput: ") and " rows/s (300 rows in " in lines[-1]
    assert "not counted: reading " in lines[-1] and ", writing " in lines[-1]


@pytest.mark.parametrize("ext", [".jsonl", ".parquet"])
def test_value_column_globs_read_jsonl_and_parquet_headers(tmp_path: Path, ext: str) -> None:
    table = pacsv.read_csv(_wide(tmp_path / "in.csv"))
    inp = tmp_path / f"in{ext}"
    if ext == ".parquet":
        pq.write_table(table, inp)
    else:
        inp.write_text("".join(json.dumps(r) + "\n" for r in table.to_pylist()))
    cfg = _cfg(tmp_path / "s.yaml", '"*"')
    assert _vigil("score", str(cfg), str(tmp_path / "in.csv"), str(tmp_path / "ref.csv")).exit_code == 0
    r = _vigil("score", str(cfg), str(inp), str(tmp_path / "o.csv"))
    assert r.exit_code == 0, r.output
    out, ref = _read(tmp_path / "o.csv"), _read(tmp_path / "ref.csv")
    assert list(out) == list(ref) and "note" not in out and out["score"] == ref["score"]

"""Model registry, training into it, and serving the promoted version live (vigil.models, vigil.cli.models_admin)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from vigil.detectors.iforest import IsolationForestDetector, fit_isolation_forest
from vigil.errors import VigilError
from vigil.models import CorruptModelError, ModelNotFoundError, ModelRegistry, RegistryError
from vigil.models.serving import RegistryModelDetector
from vigil.models.training import train_isolation_forest
from vigil.testing.clock import ManualClock
from vigil.testing.detectors import yield_checks


def Clock(t=1000.0):  # noqa: N802 - reads like the class it makes
    return ManualClock(t)


@pytest.fixture(scope="module")
def arts():
    rng = np.random.default_rng(1)
    v1 = fit_isolation_forest(rng.normal(50, 5, (400, 1)), ["cpu"], n_estimators=15, seed=1)
    v2 = fit_isolation_forest(rng.normal(100, 5, (400, 1)), ["cpu"], n_estimators=15, seed=2)
    two = fit_isolation_forest(rng.normal(0, 1, (400, 2)), ["cpu", "mem"], n_estimators=10, seed=3)
    return {"v1": v1, "v2": v2, "two": two}



def _ticking_now():
    t = [datetime(2024, 5, 1, 12, 0, tzinfo=UTC)]

    def now():
        t[0] += timedelta(seconds=1)
        return t[0]

    return now


def _batch(values, start=0):
    x = np.asarray(values, np.float64)
    return np.zeros(len(x), np.int32), np.arange(start, start + len(x), dtype=np.int64), {"cpu": x}


# ---- registry ----------------------------------------------------------------------------------------------


def test_register_list_show_promote_rollback_round_trip(tmp_path, arts):
    reg = ModelRegistry(tmp_path, now=_ticking_now())
    assert reg.list() == []
    assert reg.register("cpu", arts["v1"], {"contamination": "auto", "n_rows": 400}) == "v1"
    assert reg.register("cpu", arts["v2"], {"n_rows": 400, "validation": {"flag_share": 0.012}}) == "v2"
    assert reg.register("cpu", arts["v1"], {}) == "v3"
    assert sorted(os.listdir(tmp_path / "cpu")) == [".lock", "v1", "v2", "v3"]  # no staging left over
    assert sorted(os.listdir(tmp_path / "cpu" / "v2")) == ["meta.json", "model.vmodel"]

    meta = json.loads((tmp_path / "cpu" / "v2" / "meta.json").read_text())
    assert meta["name"] == "cpu" and meta["version"] == "v2" and meta["features"] == ["cpu"]
    assert meta["model_sha256"] == arts["v2"]["onnx_sha256"] and meta["created"].startswith("2024-05-01T12:00")

    reg.promote("cpu", "v1", reason="first")
    reg.promote("cpu", "v2", reason="retrained on May")
    reg.promote("cpu", "v3", reason="experiment")
    assert (tmp_path / "cpu" / "PROMOTED").read_text() == "v3\n"
    assert reg.rollback("cpu", reason="experiment flags too much") == "v2"
    assert reg.rollback("cpu", reason="May data was bad") == "v1"
    with pytest.raises(ModelNotFoundError, match="no earlier promotion"):
        reg.rollback("cpu", reason="nothing left")

    version, path = reg.promoted("cpu")
    assert version == "v1" and path == tmp_path / "cpu" / "v1"
    assert reg.load("cpu")["onnx_sha256"] == arts["v1"]["onnx_sha256"]
    assert reg.load("cpu", "v2")["onnx_sha256"] == arts["v2"]["onnx_sha256"]

    hist = reg.history("cpu")
    assert [(h["action"], h["from"], h["to"]) for h in hist] == [
        ("promote", None, "v1"), ("promote", "v1", "v2"), ("promote", "v2", "v3"),
        ("rollback", "v3", "v2"), ("rollback", "v2", "v1"),
    ]
    assert hist[1]["reason"] == "retrained on May" and hist[0]["who"] and hist[0]["ts"] < hist[-1]["ts"]

    [row] = reg.list()
    assert row["name"] == "cpu" and row["promoted"] == "v1" and row["latest"] == "v3"
    assert [v["version"] for v in row["versions"]] == ["v1", "v2", "v3"]
    assert row["versions"][1]["holdout_flag_share"] == 0.012 and row["versions"][0]["promoted"]

    shown = reg.show("cpu")
    assert shown["version"] == "v1" and shown["promoted"] and shown["model_bytes"] > 1000
    assert reg.show("cpu", "v2")["validation"] == {"flag_share": 0.012} and not reg.show("cpu", "v2")["promoted"]


def test_registry_errors_name_the_path_and_the_fix(tmp_path, arts):
    reg = ModelRegistry(tmp_path)
    with pytest.raises(ModelNotFoundError, match="no model 'nope'.*vigil train"):
        reg.load("nope")
    with pytest.raises(RegistryError, match="not a valid model name"):
        reg.register("../escape", arts["v1"], {})
    with pytest.raises(RegistryError, match="can't register"):
        reg.register("cpu", {"format": "something else"}, {})
    reg.register("cpu", arts["v1"], {})
    with pytest.raises(ModelNotFoundError, match="no promoted version.*PROMOTED.*vigil models promote cpu v1"):
        reg.promoted("cpu")
    with pytest.raises(ModelNotFoundError, match="no version 'v9'.*versions: v1"):
        reg.promote("cpu", "v9", reason="x")

    model_file = tmp_path / "cpu" / "v1" / "model.vmodel"
    blob = model_file.read_bytes()
    model_file.write_bytes(blob[: len(blob) // 2])  # truncated
    with pytest.raises(CorruptModelError, match=r"model\.vmodel' is corrupt.*rollback"):
        reg.load("cpu", "v1")
    with pytest.raises(CorruptModelError):
        reg.promote("cpu", "v1", reason="never promote what can't load")
    assert not (tmp_path / "cpu" / "PROMOTED").exists()
    model_file.unlink()
    with pytest.raises(CorruptModelError, match="is missing"):
        reg.load("cpu", "v1")

    reg.register("cpu", arts["v2"], {})
    reg.promote("cpu", "v2", reason="ok")
    (tmp_path / "cpu" / "PROMOTED").write_text("latest, please")
    with pytest.raises(CorruptModelError, match="should name a version.*vigil models promote cpu"):
        reg.promoted("cpu")
    (tmp_path / "cpu" / "v2" / "meta.json").write_text("{not json")
    with pytest.raises(CorruptModelError, match=r"meta\.json' is not readable JSON"):
        reg.meta("cpu", "v2")
    listed = reg.list()[0]
    assert "pointer_error" in listed and "error" in listed["versions"][1]  # listed, not hidden
    assert issubclass(CorruptModelError, VigilError)


# ---- training -----------------------------------------------------------------------------------------------


def _write_table(path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    ts = 1_714_564_800_000 + np.arange(n) * 60_000
    amount = rng.lognormal(3, 0.3, n)
    gap = rng.exponential(30, n)
    ext = os.path.splitext(path)[1]
    if ext == ".csv":
        lines = ["ts,amount,gap_s"] + [f"{t},{a},{g}" for t, a, g in zip(ts, amount, gap)]
        lines[5] = f"{ts[4]},oops,1.0"  # an unreadable cell: the row is left out, not fatal
        path.write_text("\n".join(lines) + "\n")
    elif ext == ".jsonl":
        path.write_text("".join(json.dumps({"ts": int(t), "amount": a, "gap_s": g}) + "\n"
                                for t, a, g in zip(ts, amount, gap)))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"ts": ts, "amount": amount, "gap_s": gap}), path)


@pytest.mark.parametrize("ext", [".csv", ".jsonl", ".parquet"])
def test_train_registers_with_window_stats_and_validation(tmp_path, ext):
    data = tmp_path / f"train{ext}"
    _write_table(data)
    version, meta = train_isolation_forest(str(data), features=["amount", "gap_s"], name="fraud",
                                           registry_root=tmp_path / "reg", n_estimators=20, time_column="ts")
    assert version == "v1"
    n_ok = 599 if ext == ".csv" else 600
    assert meta["n_rows"] + meta["validation"]["n_rows"] == n_ok
    assert meta["validation"]["n_rows"] == int(n_ok * 0.2)
    assert meta["features"] == ["amount", "gap_s"] and meta["contamination"] == "auto"
    w = meta["training_window"]
    assert w["first_ts_ms"] == 1_714_564_800_000 and w["first"].startswith("2024-05-01T12:00")
    assert meta["validation"]["window"]["first_ts_ms"] > w["last_ts_ms"]  # held back = the later rows
    assert 0.0 <= meta["validation"]["flag_share"] < 0.1
    assert set(meta["validation"]["calibrated_quantiles"]) == {"0.5", "0.9", "0.99", "0.999"}
    assert meta["training_stats"]["amount"]["mean"] > 0
    assert ModelRegistry(tmp_path / "reg").load("fraud", "v1")["features"] == ["amount", "gap_s"]


def test_train_errors(tmp_path):
    data = tmp_path / "t.csv"
    _write_table(data)
    with pytest.raises(VigilError, match="are not columns of t.csv"):
        train_isolation_forest(str(data), features=["amount", "nope"], name="x", registry_root=tmp_path)
    with pytest.raises(VigilError, match="does not exist"):
        train_isolation_forest(str(tmp_path / "missing.csv"), features=["amount"], name="x", registry_root=tmp_path)
    with pytest.raises(VigilError, match="holdout"):
        train_isolation_forest(str(data), features=["amount"], name="x", registry_root=tmp_path, holdout=0.95)


# ---- serving ------------------------------------------------------------------------------------------------


def _registry_with(tmp_path, arts, *names, promote=None):
    reg = ModelRegistry(tmp_path)
    for n in names:
        reg.register("cpu", arts[n], {})
    if promote:
        reg.promote("cpu", promote, reason="test")
    return reg


def test_promotion_mid_stream_is_picked_up_between_batches(tmp_path, arts):
    reg = _registry_with(tmp_path, arts, "v1", "v2", promote="v1")
    clock = Clock()
    det = RegistryModelDetector("cpu", str(tmp_path), check_interval_s=5, clock=clock)
    ref1 = IsolationForestDetector(arts["v1"])
    ref2 = IsolationForestDetector(arts["v2"])
    x = np.array([50.0, 100.0, 75.0, 20.0])

    b1 = det.process_many(*_batch(x))
    assert b1.stats["model_version"].tolist() == [1.0] * 4 and not b1.stats["model_fallback"].any()
    np.testing.assert_array_equal(b1.score, ref1.process_many(*_batch(x)).calibrated)

    reg.promote("cpu", "v2", reason="retrained")
    clock.t += 4.9  # not yet due: the pointer is read at most every check_interval_s
    b2 = det.process_many(*_batch(x, 4))
    assert b2.stats["model_version"].tolist() == [1.0] * 4 and det.model_version == "v1"

    clock.t += 0.2  # due: the swap happens before this batch, never inside it
    b3 = det.process_many(*_batch(x, 8))
    assert b3.stats["model_version"].tolist() == [2.0] * 4 and det.model_version == "v2"
    np.testing.assert_array_equal(b3.score, ref2.process_many(*_batch(x)).calibrated)
    assert b1.score[1] > b1.score[0] and b3.score[0] > b3.score[1]  # v1 knows 50, v2 knows 100
    h = det.health()
    assert h == {"healthy": True, "version": "v2", "reason": "serving the promoted version", "since": clock.t}

    reg.rollback("cpu", reason="v2 was wrong")
    clock.t += 5
    assert det.process_many(*_batch(x, 12)).stats["model_version"].tolist() == [1.0] * 4


def test_corrupt_model_falls_back_with_a_health_reason_and_heals(tmp_path, arts):
    reg = _registry_with(tmp_path, arts, "v1", "v2", promote="v1")
    clock = Clock()
    det = RegistryModelDetector("cpu", str(tmp_path), check_interval_s=1, clock=clock)
    rng = np.random.default_rng(0)
    warm = rng.normal(50, 5, 50)
    det.process_many(*_batch(warm))  # the model serves; the fallback learns alongside (warm)

    reg.promote("cpu", "v2", reason="new")
    blob = (tmp_path / "cpu" / "v2" / "model.vmodel").read_bytes()
    (tmp_path / "cpu" / "v2" / "model.vmodel").write_bytes(blob[:100])  # corrupted after promotion
    clock.t += 1
    out = det.process_many(*_batch([50.0, 51.0, 500.0], 50))
    assert out.stats["model_fallback"].tolist() == [1.0, 1.0, 1.0]
    assert out.stats["model_version"].tolist() == [0.0, 0.0, 0.0]
    assert out.ready.all() and out.flag.tolist() == [False, False, True]  # the warm ew_zscore scores at once
    assert out.stats["z_cpu"][2] > 10
    h = det.health()
    assert h["healthy"] is False and h["version"] is None and h["since"] == clock.t
    assert "cpu v2 can't be served" in h["reason"] and "model.vmodel" in h["reason"] and "corrupt" in h["reason"]
    assert "fallback statistics" in det.describe({k: a[2] for k, a in out.stats.items()})

    clock.t += 1
    det.process_many(*_batch([50.0], 53))
    assert det.health()["since"] == clock.t - 1  # unchanged state: `since` stays

    reg.rollback("cpu", reason="v2 is corrupt")  # the operator's fix, no restart
    clock.t += 1
    out = det.process_many(*_batch([50.0], 54))
    assert out.stats["model_version"].tolist() == [1.0] and det.health()["healthy"]


def test_missing_registry_or_pointer_never_stops_the_pipeline(tmp_path, arts):
    det = RegistryModelDetector("cpu", str(tmp_path / "empty"), fields=["cpu"], check_interval_s=0)
    assert det.health()["healthy"] is False and "no model 'cpu'" in det.health()["reason"]
    out = det.process_many(*_batch(np.r_[np.full(20, 10.0) + np.arange(20) % 3, 99.0]))
    assert out.stats["model_fallback"].all() and out.flag[-1]
    with pytest.raises(ValueError, match="`fields` must be given"):
        RegistryModelDetector("cpu", str(tmp_path / "empty"))
    _registry_with(tmp_path / "empty", arts, "v1", promote="v1")
    out = det.process_many(*_batch([50.0], 30))
    assert out.stats["model_version"].tolist() == [1.0] and det.health()["healthy"]


def test_feature_incompatible_model_falls_back(tmp_path, arts):
    reg = ModelRegistry(tmp_path)
    reg.register("cpu", arts["v1"], {})
    reg.register("cpu", arts["two"], {})  # features [cpu, mem]
    reg.promote("cpu", "v1", reason="ok")
    clock = Clock()
    det = RegistryModelDetector("cpu", str(tmp_path), check_interval_s=5, clock=clock)
    assert det.fields == ("cpu",)
    reg.promote("cpu", "v2", reason="added mem")
    clock.t += 5
    out = det.process_many(*_batch([50.0, 51.0]))
    assert out.stats["model_fallback"].all()
    reason = det.health()["reason"]
    assert "features ['cpu', 'mem'] differ from the served fields ['cpu']" in reason

    pinned = RegistryModelDetector("cpu", str(tmp_path), fields=["cpu"], check_interval_s=0)
    assert not pinned.health()["healthy"] and "do not match the model's features" in pinned.health()["reason"]


def test_model_failing_while_scoring_falls_back(tmp_path, arts, monkeypatch):
    _registry_with(tmp_path, arts, "v1", promote="v1")
    det = RegistryModelDetector("cpu", str(tmp_path), check_interval_s=3600)

    def boom(*a, **k):
        raise RuntimeError("onnxruntime exploded")

    monkeypatch.setattr(det._model, "process_many", boom)
    out = det.process_many(*_batch([50.0, 51.0]))
    assert out.stats["model_fallback"].all() and "onnxruntime exploded" in det.health()["reason"]


def test_snapshot_keeps_the_version_in_use_then_follows_the_pointer(tmp_path, arts):
    reg = _registry_with(tmp_path, arts, "v1", "v2", promote="v1")
    clock = Clock()
    det = RegistryModelDetector("cpu", str(tmp_path), check_interval_s=5, clock=clock)
    det.process_many(*_batch([50.0, 52.0, 48.0]))
    snap = det.snapshot()
    assert snap["version"] == "v1" and len(snap["fallback"]) == 1
    reg.promote("cpu", "v2", reason="new")
    twin = RegistryModelDetector.from_snapshot({**det.params(), "clock": clock}, snap)
    assert twin.process_many(*_batch([50.0], 3)).stats["model_version"].tolist() == [1.0]
    clock.t += 5
    assert twin.process_many(*_batch([50.0], 4)).stats["model_version"].tolist() == [2.0]


def test_bad_fallback_spec_is_a_config_time_error(tmp_path, arts):
    _registry_with(tmp_path, arts, "v1", promote="v1")
    with pytest.raises(ValueError, match=r"`fallback\[0\]` must be \{kind, params\}"):
        RegistryModelDetector("cpu", str(tmp_path), fallback=[{"kind": "nope"}])
    with pytest.raises(ValueError, match="threshold"):
        RegistryModelDetector("cpu", str(tmp_path), threshold=4)


@pytest.mark.parametrize("params", RegistryModelDetector._test_params(), ids=["model", "fallback"])
def test_conformance(params):
    det = RegistryModelDetector(**params)
    checks = list(yield_checks(det))
    assert len(checks) >= 12
    for check in checks:
        check(lambda: RegistryModelDetector(**params))


# ---- CLI functions --------------------------------------------------------------------------------------------


def test_cli_functions_train_list_show_promote_rollback(tmp_path, capsys):
    from vigil.cli.models_admin import list_cmd, promote_cmd, rollback_cmd, show_cmd, train_cmd

    data = tmp_path / "t.jsonl"
    _write_table(data)
    cfg = tmp_path / "train.yaml"
    cfg.write_text("name: fraud\nregistry: reg\nfeatures: [amount, gap_s]\ntime_column: ts\nn_estimators: 10\n")
    r1 = train_cmd(str(cfg), str(data), as_json=True)
    r2 = train_cmd(str(cfg), str(data), promote=True, reason="first")
    assert (r1["version"], r2["version"]) == ("v1", "v2") and r1["registry"] == str(tmp_path / "reg")
    out = capsys.readouterr().out
    assert json.loads(out.splitlines()[0])["version"] == "v1" and "registered" in out

    root = str(tmp_path / "reg")
    rows = list_cmd(root, as_json=True)
    assert json.loads(capsys.readouterr().out)[0]["promoted"] == "v2" and rows[0]["latest"] == "v2"
    promote_cmd("fraud", "v1", "prefer v1", root)
    assert "v2 → v1" in capsys.readouterr().out
    rec = rollback_cmd("fraud", "no, v2", root, as_json=True)
    assert rec["to"] == "v2" and json.loads(capsys.readouterr().out)["action"] == "rollback"
    info = show_cmd("fraud", None, root)
    text = capsys.readouterr().out
    assert info["version"] == "v2" and "history" in text and "rollback" in text
    list_cmd(root)
    assert "fraud" in capsys.readouterr().out

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfeatures: [a]\nn_estimator: 3\n")
    with pytest.raises(VigilError, match="n_estimator.*known fields"):
        train_cmd(str(bad), str(data))

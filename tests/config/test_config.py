"""YAML pipelines: load, build, and fail at load with the step, field and value named."""

from pathlib import Path

import pytest
import yaml

from vigil.config import load_pipeline, parse_spec
from vigil.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_shipped_fraud_pipeline_loads():
    p = load_pipeline(str(ROOT / "pipelines" / "fraud.yaml"))
    assert [s.name for s in p.steps] == ["amount_z", "velocity", "test_then_cashout", "spend_per_minute"]
    assert p.event_time.max_delay_ms == 2000 and p.key_ttl_ms == 6 * 3600_000 and p.id_field == "txn_id"
    z = p.steps[0].detector
    assert z.window_ms == 60_000 and z.threshold == 3 and z.transform == "log"


def _spec(**over):
    base = {
        "name": "p",
        "source": {"kind": "jsonl", "path": "x.jsonl", "schema": {"key": "user", "time": "ts", "fields": ["amount"]}},
        "steps": [{"name": "amount_z", "detector": "sliding_zscore", "params": {"field": "amount", "window": "60s"}}],
    }
    base.update(over)
    return base


def _load(tmp_path, doc):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(doc))
    return load_pipeline(str(f))


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (_spec(steps=[{"name": "amount_z", "detector": "sliding_zscore", "params": {"window": "0s"}}]),
         "step `amount_z`: `params.window` must be > 0; got '0s'"),
        (_spec(steps=[{"name": "amount_z", "detector": "sliding_zscore", "params": {"window": "soon"}}]),
         "step `amount_z`: `params.window`"),
        (_spec(steps=[{"name": "amount_z", "detector": "sliding_zscore", "params": {"treshold": 3}}]),
         "step `amount_z`: `params.treshold` is not a parameter of `sliding_zscore`; got 3 (hint: did you mean `threshold`?)"),
        (_spec(steps=[{"name": "z", "detector": "slidng_zscore"}]),
         "step `z`: `detector` is not a known detector; got 'slidng_zscore' (hint: did you mean 'sliding_zscore'?)"),
        (_spec(steps=[{"name": "v", "detector": "velocity", "params": {"max_count": 0}}]),
         "step `v`: `params.max_count` must be >= 1; got 0"),
        (_spec(steps=[{"name": "v", "detector": "velocity", "severty": "high"}]),
         "step `v`: `severty` Extra inputs are not permitted"),
        (_spec(event_time={"max_delay": "2 parsecs"}), "`max_delay` is not a duration; got '2 parsecs'"),
        (_spec(source={"kind": "kafkaa", "path": "x"}), "source: `kind`"),
        (_spec(source={"kind": "jsonl", "path": "x.jsonl"}), "needs `schema`"),
        (_spec(steps=[{"name": "w", "window": {"kind": "tumbling", "size": "-1s"}, "field": "amount",
                       "to": {"kind": "jsonl", "path": "w.jsonl"}}]), "step `w`: `window.size`"),
        (_spec(steps=[]), "has no steps"),
    ],
)
def test_bad_config_fails_at_load_naming_step_field_value(tmp_path, doc, expected):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, doc)
    assert expected in str(exc.value)


def test_severity_typo_gets_a_hint(tmp_path):
    doc = _spec(steps=[{"name": "v", "detector": "velocity", "severty": "high"}])
    with pytest.raises(ConfigError, match="did you mean `severity`"):
        _load(tmp_path, doc)


def test_not_yaml_and_missing_file(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("steps: [unclosed")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_pipeline(str(f))
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(str(tmp_path / "nope.yaml"))
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_spec(["a", "list"])


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({"keys": {"ttl": "soon"}}, "keys: `ttl` is not a duration; got 'soon'"),
        ({"event_time": {"max_delay": "2 parsecs"}}, "event_time: `max_delay` is not a duration; got '2 parsecs'"),
        ({"batching": {"max_rows": 0}}, "batching: `max_rows` must be >= 1; got 0"),
        ({"checkpoints": {"dir": "c", "keep": 1}}, "checkpoints: `keep` must be >= 2"),
        ({"source": {"kind": "jsonl", "path": "x.jsonl", "speed": 0,
                     "schema": {"key": "user", "time": "ts", "fields": ["amount"]}}}, "source: `speed` must be > 0"),
        ({"source": {"kind": "jsonl", "path": "x.jsonl",
                     "schema": {"key": "user", "time": "ts", "fields": ["amount", "user"]}}},
         "source: `schema.fields` names `user` twice"),
        ({"source": {"kind": "kafka", "url": "nope", "schema": {"key": "user", "time": "ts", "fields": ["amount"]}}},
         "source: `url` must start with kafka://"),
        ({"alerts": [{"kind": "console"}, {"kind": "kafka", "url": "nope"}]}, "alerts[1]: `url` must start with"),
        ({"alerting": {"clock": "wall"}}, "alerting: `clock` must be 'processing' or 'event'; got 'wall'"),
        ({"late": {"kind": "jsonl", "path": "/etc/passwd/late.jsonl"}},
         "late: `path` can't be created: /etc/passwd is a file, not a folder"),
    ],
)
def test_errors_in_a_section_name_the_section_not_a_step(tmp_path, over, expected):
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, _spec(**over))
    assert str(exc.value).startswith(expected)
    assert "step" not in str(exc.value).split(":")[0]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"threshold": "three"}, "step `amount_z`: `params.threshold` must be a number; got 'three'"),
        ({"min_count": "5"}, "`params.min_count` must be an integer; got '5' (hint: write it without quotes: 5)"),
        ({"min_count": 5.5}, "`params.min_count` must be an integer; got 5.5"),
        ({"min_count": 5.0}, "`params.min_count` must be an integer; got 5.0 (hint: write it as a whole number: 5)"),
        ({"protect": "yes"}, "`params.protect` must be true or false; got 'yes'"),
        ({"min_count": True}, "`params.min_count` must be an integer; got True"),
    ],
)
def test_param_types_are_checked_against_the_detector_signature(tmp_path, params, expected):
    doc = _spec(steps=[{"name": "amount_z", "detector": "sliding_zscore",
                        "params": {"field": "amount", "window": "60s", **params}}])
    with pytest.raises(ConfigError) as exc:
        _load(tmp_path, doc)
    assert expected in str(exc.value)


def test_param_types_of_detector_configs_and_nested_detectors():
    from vigil.config.detector import parse_detector_config

    with pytest.raises(ConfigError, match=r"`params.max_count` must be an integer \(in detector config\); got 5.5"):
        parse_detector_config({"kind": "velocity", "params": {"max_count": 5.5}})
    with pytest.raises(ConfigError, match=r"`params.inner.params.halflife` must be a number or null \(in detector "
                                          r"config\); got 'long'"):
        parse_detector_config({"kind": "calibrated", "params": {"inner": {"kind": "ew_zscore",
                                                                          "params": {"halflife": "long"}}}})
    factory, _ = parse_detector_config({"kind": "sliding_zscore", "params": {"field": "cpu", "window": 60_000,
                                                                             "threshold": 4}})
    assert factory().threshold == 4  # an int is a number, an int duration is fine


def test_the_source_check_and_reads_of_every_step_kind(tmp_path):
    servers = yaml.safe_load((ROOT / "pipelines" / "servers.yaml").read_text())
    servers["source"]["path"] = str(ROOT / "pipelines" / servers["source"]["path"])
    _load(tmp_path, servers)  # the servers step reads `value`, which every metric sample has
    doc = _spec(steps=[{"name": "w", "window": {"kind": "tumbling", "size": "1m"}, "field": "amout",
                        "to": {"kind": "jsonl", "path": "w.jsonl"}}])
    with pytest.raises(ConfigError, match=r"step `w`: `field` is not a field of the source's records; got 'amout'"):
        _load(tmp_path, doc)
    assert not (tmp_path / "w.jsonl").exists()

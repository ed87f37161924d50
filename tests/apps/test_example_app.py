"""A second app plugs in with its own folder and one registry line: no edit anywhere else in Vigil."""

from __future__ import annotations

import yaml

from vigil.config import load_pipeline, parse_spec
from vigil.config.registry import load, step_kinds
from vigil.control import plan_changes
from vigil.engine import EmbeddedRunner
from vigil.io.sinks import MemorySink


def test_an_app_registers_its_step_kind_and_runs_from_yaml(tmp_path):
    load(apps=("example_app.spec",))  # the one registry line (a plugin outside the package)
    assert "every_nth" in step_kinds()
    doc = {"name": "toy", "source": {"kind": "transactions", "events": 3000, "users": 10, "seed": 1},
           "steps": [{"name": "tenth", "every_nth": 10}], "alerts": [{"kind": "jsonl", "path": "a.jsonl"}]}
    (tmp_path / "toy.yaml").write_text(yaml.safe_dump(doc))
    p = load_pipeline(str(tmp_path / "toy.yaml"))
    sink = MemorySink()
    p.alert_sinks = [sink]
    st = EmbeddedRunner(p, out_dir=str(tmp_path)).run()
    assert st.events_in == 3000 and st.alerts == len(sink.items) > 250
    per_key: dict[str, list[float]] = {}
    for a in sink.items:
        per_key.setdefault(a.key, []).append(a.score)
    assert all(scores == [10.0 * (i + 1) for i in range(len(scores))] for scores in per_key.values())
    assert len({a.id for a in sink.items}) == len(sink.items)  # ids made of pipeline, step, key and event
    new = {**doc, "steps": [{"name": "tenth", "every_nth": 20}]}
    assert plan_changes(parse_spec(doc), parse_spec(new)).changes == ["step `tenth`: every_nth 10 -> 20"]

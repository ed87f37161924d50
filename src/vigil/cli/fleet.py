"""`vigil generate fleet`: the server simulator's samples as Influx line protocol, to a file or a Kafka topic."""

from __future__ import annotations

import sys
from typing import Any

from rich.console import Console

from vigil.io.generators.fleet import FleetSpec, host_names, incident_table, simulate_fleet, to_influx_lines


def generate_fleet(*, hosts: int, days: float, step_s: int, seed: int, out: str, to: str | None,
                   labels: str | None, err: Console, scheduled_jobs: float = 0.0) -> dict[str, Any]:  # fmt: skip
    """Simulate, write the samples (and optionally the incident table as CSV); return a summary."""
    cols = simulate_fleet(FleetSpec(hosts=hosts, days=days, step_s=step_s, seed=seed,
                                    scheduled_job_hosts=scheduled_jobs))  # fmt: skip
    lines = to_influx_lines(cols)
    inc = incident_table(cols)
    inc["host"] = host_names(hosts)[inc["host_id"]]
    summary = {"samples": len(lines), "hosts": hosts, "days": days, "incidents": len(inc["incident_id"])}
    if labels:
        with open(labels, "w", encoding="utf-8") as f:
            f.write("incident_id,host,type,start_ms,end_ms\n")
            for row in zip(*(inc[c].tolist() for c in ("incident_id", "host", "type", "start_ms", "end_ms")),
                           strict=True):  # fmt: skip
                f.write(",".join(str(x) for x in row) + "\n")
    if to is not None:
        from rich.progress import Progress

        from vigil.io.kafka import parse_kafka_url
        from vigil.io.kafka_sink import produce_records

        bootstrap, topic = parse_kafka_url(to)
        with Progress(console=err, transient=True) as bar:
            task = bar.add_task(f"producing to {topic}", total=len(lines))
            produce_records(bootstrap, topic, lines, progress=lambda k: bar.update(task, completed=k))
        err.print(f"produced {len(lines):,} samples of {hosts} hosts ({summary['incidents']} incidents) to {to}")
        return summary
    if out == "-":
        w = sys.stdout
        w.write("\n".join(lines) + "\n")
        w.flush()
    else:
        with open(out, "w", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
        err.print(f"wrote {len(lines):,} samples of {hosts} hosts ({summary['incidents']} incidents) to {out}")
    return summary


def read_metric_columns(path: str, fmt: str = "influx") -> dict[str, Any]:
    """Every sample of an Influx or Telegraf file as long-form columns (host, metric, ts_ms, value), in file order."""
    import numpy as np

    from vigil.io.metrics import InfluxLineFileSource, TelegrafJsonFileSource

    if path.startswith("kafka://"):  # every message of the topic, earliest to end
        from vigil.io.metrics import decode_kafka_values
        from vigil.models.training import kafka_values

        recs, _ = decode_kafka_values(kafka_values(path), "influx" if fmt == "influx" else "json")
        return {"host": np.asarray(recs.keys, object), "ts_ms": recs.ts_ms, "metric": recs.extra["metric"],
                "value": recs.cols["value"]}
    src = (InfluxLineFileSource if fmt == "influx" else TelegrafJsonFileSource)(path)
    r = src.open()
    parts = []
    while not r.at_end:
        b = r.read_batch(65_536, 0)
        if b is not None and len(b):
            parts.append((b.keys, b.ts_ms, b.extra["metric"], b.cols["value"]))
    r.close()
    if not parts:
        return {"host": np.empty(0, object), "metric": np.empty(0, object), "ts_ms": np.empty(0, np.int64),
                "value": np.empty(0)}  # fmt: skip
    return {name: np.concatenate([p[i] for p in parts]) for i, name in enumerate(("host", "ts_ms", "metric", "value"))}


def train_servers_cmd(pipeline: str, input_path: str, *, step: str | None = None, until: str = "4h",
                      promote: bool = False, reason: str = "trained", n_estimators: int = 100,
                      console: Console) -> dict[str, Any]:  # fmt: skip
    """``vigil train --pipeline servers.yaml --input FILE``: the servers step's global model on the first ``until``.

    The per-metric detectors of the step run over the first part of the input; the Isolation Forest is fitted on
    the z-vectors of the windows where every detector was ready, and registered under the step's ``model``
    (registry and name). Serving pipelines follow it once promoted.
    """
    import os

    import numpy as np

    from vigil.apps.servers import spec as servers
    from vigil.apps.servers import train_global_model
    from vigil.config.spec import PipelineContext, load_spec
    from vigil.errors import ConfigError
    from vigil.models import ModelRegistry
    from vigil.types import parse_duration_ms

    spec = load_spec(pipeline)
    st = servers.find(spec, step, origin=pipeline)
    if st.model is None:
        raise ConfigError("has no `model: {registry, name}` to train", step=st.name, field="model", value=None)
    base = os.path.dirname(os.path.abspath(pipeline))
    op = servers.build(st, PipelineContext(base, spec.name), open_sink=False)
    telegraf = spec.source.kind == "telegraf" or getattr(spec.source, "metrics", None) == "telegraf"
    fmt = "json" if telegraf or input_path.endswith(".json") else "influx"
    cols = read_metric_columns(input_path, fmt)
    names = np.asarray(cols["metric"]).astype(str)
    alias = op.metric_aliases
    cols["metric"] = np.array([alias.get(n, n) for n in names.tolist()], object)
    if not len(cols["ts_ms"]):
        raise ConfigError("holds no samples", field="--input", value=input_path)
    until_ms = int(cols["ts_ms"].min()) + parse_duration_ms(until)
    artifact = train_global_model(cols, op.config, until_ms=until_ms, n_estimators=n_estimators)
    root = st.model.registry if os.path.isabs(st.model.registry) else os.path.join(base, st.model.registry)
    reg = ModelRegistry(root)
    meta = {"features": [f"z_{m}" for m in op.config.metrics], "trained_on": os.path.abspath(input_path),
            "until": until, "pipeline": os.path.abspath(pipeline), "step": st.name}  # fmt: skip
    version = reg.register(st.model.name, artifact, meta)
    if promote:
        reg.promote(st.model.name, version, reason=reason)
    console.print(f"registered [bold]{st.model.name} {version}[/] in {root} (step `{st.name}`, the first {until} of "
                  f"{input_path})" + ("; promoted" if promote else
                                      f"; not promoted yet: vigil models promote {st.model.name} {version}"))
    return {"name": st.model.name, "version": version, "registry": root, "promoted": promote}

"""`vigil rca`: rank the root causes of an incident from metric series (offline prototype)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True, highlight=False, soft_wrap=True)


def _time_ms(value: str) -> int:
    """Epoch ms, epoch s, or ISO 8601."""
    try:
        x = float(value)
        return int(x * 1000) if x < 1e11 else int(x)
    except ValueError:
        return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


_TRACE_FILES = ("traces.otlp", "traces.jsonl", "traces.json", "traces.otlp.gz", "traces.jsonl.gz")


def _is_otlp(path: str) -> bool:
    """A file that is not CSV: gzip, JSON or binary (OTLP); a CSV starts with a text header."""
    if path.lower().endswith(".csv"):
        return False
    with open(path, "rb") as f:
        head = f.read(512)
    text = head.lstrip()
    return head[:2] == b"\x1f\x8b" or text[:1] in (b"{", b"[") or b"\x00" in head or not head.isascii()


def _load(data: str, step_s: int, until_ms: int | None, metrics: str | None) -> Any:
    from vigil.rca.frame import read_csv_folder, read_wide_csv
    from vigil.rca.otlp import frame_from_otlp
    from vigil.rca.series import frame_from_columns

    step_ms = step_s * 1000
    if os.path.isdir(data):
        if os.path.exists(os.path.join(data, "spans.npz")):
            return frame_from_columns(data, step_ms=step_ms, until_ms=until_ms)
        for name in _TRACE_FILES:
            if os.path.exists(os.path.join(data, name)):
                beside = os.path.join(data, "metrics." + name.split(".", 1)[1])
                mpath = metrics or (beside if os.path.exists(beside) else None)
                return frame_from_otlp(os.path.join(data, name), mpath, step_ms=step_ms, until_ms=until_ms)
        return read_csv_folder(data)
    if _is_otlp(data):
        return frame_from_otlp(data, metrics, step_ms=step_ms, until_ms=until_ms)
    if metrics:
        raise ValueError("--metrics goes with an OTLP traces file, not a CSV")
    return read_wide_csv(data)


def _evidence(ev: dict[str, Any]) -> str:
    parts = [", ".join(f"{k} z={v}" for k, v in ev.get("z", {}).items())]
    x = ev.get("explained_by_callees", {})
    if any(v > 0 for v in x.values()):
        parts.append("explained by callees " + ", ".join(f"{k} {v:.0%}" for k, v in x.items() if v > 0))
    if ev.get("explained_by_load"):
        parts.append(f"load {ev['explained_by_load']:.0%}")
    if ev.get("network_from"):
        parts.append(f"network from {ev['network_from']}")
    if ev.get("memory_climbing"):
        parts.append("memory climbing")
    if ev.get("deploy"):
        d = ev["deploy"]
        when = datetime.fromtimestamp(d["ts_ms"] / 1000, UTC)
        fading = " (fading since: a warm-up?)" if d.get("fading") else ""
        parts.append(f"deploy {d['detail']} at {when:%H:%M:%S}{fading}")
    if ev.get("onset_ms"):
        parts.append(f"onset {datetime.fromtimestamp(ev['onset_ms'] / 1000, UTC):%H:%M:%S}")
    return "; ".join(p for p in parts if p)


def rca_cmd(
    data: Annotated[str, typer.Argument(
        help="Wide CSV, folder of per-service CSVs, OTLP traces file (protobuf or JSON), or a folder of them.")],
    at: Annotated[str | None, typer.Option(help="Incident time (epoch s/ms or ISO 8601); default: detect it.")] = None,
    since: Annotated[str | None, typer.Option(
        "--from", help="With no --at: look for the incident from here (default: a quarter into the data).")] = None,
    graph: Annotated[str | None, typer.Option(help="Edge list CSV (caller,callee); default: from the data.")] = None,
    top: Annotated[int, typer.Option(help="How many causes to show.")] = 5,
    metrics: Annotated[str | None, typer.Option(
        help="With an OTLP traces file: an OTLP metrics file (CPU, memory, GC, CPU pressure).")] = None,
    step: Annotated[int, typer.Option(help="Span input (OTLP, columns): seconds per bin.")] = 10,
    lookback: Annotated[float, typer.Option(help="Seconds before --at to look for the change.")] = 300.0,
    baseline: Annotated[float, typer.Option(help="Seconds of normal behaviour before that.")] = 1200.0,
    priors: Annotated[str | None, typer.Option(
        "--priors", help="An incident store (vigil-out/incidents.db): break near-ties with the RCA priors in force "
        "beside it (learned from post-mortems by `vigil retrain --postmortems`); none in force: no prior.")] = None,
    json_: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Rank the root causes of an incident: service, kind (latency, errors, saturation, deploy), evidence.

    Input: a wide CSV (a `time` column and one `<service>_<metric>` column each, e.g. `carts_cpu`,
    `frontend_latency-p99`, `frontend->cart_errors` for call edges; RCAEval's layout works), a folder of
    per-service CSVs (`<service>.csv` with `time` and metric columns), a file of recorded OTLP spans
    (protobuf, length-delimited as the Collector's file exporter writes it or one bare request; or OTLP/JSON,
    one request per line; gzip is fine) with optional `--metrics`, or a folder holding `traces.otlp` /
    `traces.jsonl` (+ `metrics.*`) or the span columns of `vigil generate services --format columns`. From
    spans, RED series per service and call edge are built (`--step` bins) and the call graph is read off the
    traces. Otherwise the graph comes from the edge columns or `--graph`. Deploys come from
    `<service>_version` columns, `service.version` in spans, or a folder's changes.jsonl. Only data before
    `--at` is used. `--priors` adds the priors learned from post-mortems (at most +0.05 on a 0..1 score).

    Examples: `vigil rca metrics.csv --at 2026-03-02T12:31:00Z` · `vigil rca sim/ --json` ·
    `vigil rca traces.otlp --metrics metrics.otlp --at 2026-03-02T12:31:00Z` ·
    `vigil rca data/ --graph edges.csv --at 1772455860`
    """
    from vigil.errors import ConfigError
    from vigil.rca.detect import detect_incident
    from vigil.rca.frame import read_edges
    from vigil.rca.priors import active_priors
    from vigil.rca.rank import RcaParams, rank_causes

    def fail(exc: Exception) -> None:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2)

    try:
        at_ms = _time_ms(at) if at else None
        frame = _load(data, step, at_ms, metrics)
        g = read_edges(graph) if graph else None
        params = RcaParams(lookback_s=lookback, baseline_s=baseline)
        if at_ms is None:
            span_ms = int(frame.ts_ms[-1] - frame.ts_ms[0])
            start = _time_ms(since) if since else int(frame.ts_ms[0]) + max(300_000, min(int(baseline * 1000),
                                                                                         span_ms // 4))
            found = detect_incident(frame, start, baseline_s=baseline)
            if found is None:
                fail(ConfigError("found no incident in the data; give its time", field="--at", value=None))
                return
            at_ms = found
            err.print(f"incident detected at {datetime.fromtimestamp(at_ms / 1000, UTC):%Y-%m-%d %H:%M:%S}Z")
        learned = active_priors(priors) if priors else None
        if priors and learned is None:
            err.print(f"no RCA priors in force beside {priors}: ranking on the evidence alone")
        res = rank_causes(frame, at_ms, graph=g, params=params, priors=learned)
    except (OSError, ValueError, KeyError) as exc:
        fail(ConfigError(str(exc), field="data", value=data))
        return
    if json_:
        out = res.to_dict()
        out["causes"] = out["causes"][:top]
        typer.echo(json.dumps(out))
        return
    t = Table(title=f"root causes at {datetime.fromtimestamp(res.at_ms / 1000, UTC):%Y-%m-%d %H:%M:%S}Z")
    for col in ("rank", "service", "kind", "score", "evidence"):
        t.add_column(col)
    for i, c in enumerate(res.causes[:top]):
        t.add_row(str(i + 1), c.service, c.kind, f"{c.score:.2f}", _evidence(c.evidence))
    Console(soft_wrap=True).print(t)


def register(root: typer.Typer) -> None:
    """``vigil rca``."""
    root.command("rca")(rca_cmd)

"""``vigil collect``: sample this machine's metrics as Telegraf would, to stdout, a file or Kafka."""

from __future__ import annotations

from typing import Annotated

import typer

from vigil.cli.common import check_output_file, err, fail
from vigil.errors import VigilError

app = typer.Typer(help="Collect metrics from this machine.", no_args_is_help=True)


@app.command("host")
def collect_host_cmd(
    interval: Annotated[float, typer.Option("--interval", "-i", help="Seconds between samples.")] = 1.0,
    fmt: Annotated[str, typer.Option("--format", help="influx (line protocol) or json (Telegraf's JSON).")] = "influx",
    out: Annotated[str, typer.Option("--out", "-o", help="-, a file (appended), or kafka://HOST:PORT/TOPIC.")] = "-",
    count: Annotated[int | None, typer.Option(help="Stop after this many samples (default: until Ctrl-C).")] = None,
    host: Annotated[str | None, typer.Option(help="Host tag (default: this machine's name).")] = None,
) -> None:
    """Sample this machine (CPU per mode, memory, disk and network I/O rates, load) at an interval.

    Writes what Telegraf would: Influx line protocol or Telegraf-style JSON, to stdout, a file or a
    Kafka topic. Examples: `vigil collect host --count 5` ·
    `vigil collect host -i 10 -o kafka://127.0.0.1:9092/metrics`
    """
    from vigil.cli.collect_host import collect_host

    try:
        if out != "-" and not out.startswith("kafka://"):
            check_output_file(out, "--out")  # before the first sample, not a traceback after it
        n = collect_host(interval_s=interval, format=fmt, out=out, count=count, host=host)  # type: ignore[arg-type]
    except VigilError as exc:
        fail(exc)
    if out != "-":
        err.print(f"{n} samples written to {out}")


def register(root: typer.Typer) -> None:
    """``vigil collect ...``."""
    root.add_typer(app, name="collect")

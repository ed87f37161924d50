"""``vigil score``: backtest a detector on a file, with the streaming code, strictly causal."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from vigil.cli.common import err, fail, strict_json
from vigil.errors import ConfigError, VigilError


def score(
    config: Annotated[str, typer.Argument(help="Detector config YAML ({kind, params} or the full shape), or a "
                                               "bundled name such as `nab`.")],
    input: Annotated[Path, typer.Argument(help="CSV, JSON lines or Parquet: a time column, value column(s), "
                                               "optionally a key column.")],
    output: Annotated[Path, typer.Argument(help="Where to write per-row scores (.csv, .jsonl or .parquet).")],
    train: Annotated[Path | None, typer.Option(help="Fit offline-trained detectors on this file first.")] = None,
    batch_rows: Annotated[int, typer.Option(help="Rows per micro-batch.")] = 65_536,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
    json_: Annotated[bool, typer.Option("--json", help="Print the summary as JSON on the last line.")] = False,
    scores_only: Annotated[bool, typer.Option(
        "--scores-only", help="Write only row, ts_ms, the time and key columns, score, calibrated, flag, ready and "
                              "reason: no input values, no contributions.")] = False,
    members: Annotated[bool, typer.Option(
        "--members", help="Also write each ensemble member's raw score as `score.<member>` (the detector must be "
                          "an `ensemble`).")] = False,
) -> None:
    """Backtest a detector on a file: the batch face of the streaming engine, strictly causal.

    Rows are replayed in event-time order through the same detector code as a live pipeline and
    each row gets its raw score, calibrated score, alert flag and (for multi-column input) per-column
    contributions, written in the input's row order. Unreadable rows are reported, never fatal.
    The config's `value_columns` may use globs: `"*"` is every numeric column but the time and key
    columns, `[cpu_*]` every numeric column starting with cpu_.

    The summary's throughput is the detector's alone (rows over the scoring time); reading the file,
    training and writing are timed apart.

    Example: `vigil score nab ../shared/datasets/nab/data/realKnownCause/nyc_taxi.csv taxi-scores.csv`

    Only the verdicts: `vigil score nab nyc_taxi.csv flags.parquet --scores-only`

    Each ensemble member's raw score too: `vigil score ensemble.yaml in.csv out.csv --members --scores-only`
    """
    from vigil.cli.score_file import score_file

    try:
        summary = score_file(config, str(input), str(output), train_path=str(train) if train else None,
                             progress=progress and not json_, batch_rows=batch_rows, scores_only=scores_only,
                             members=members)  # fmt: skip
    except ConfigError as exc:
        fail(exc)
    except VigilError as exc:
        fail(exc, 1)
    if json_:
        print(strict_json(summary))
    else:
        timing = {"read_s", "detector_s", "write_s", "train_s", "rows_per_s", "input", "output"}
        err.print(f"wrote {output}: " + ", ".join(f"{k} {v}" for k, v in summary.items()
                                                 if not isinstance(v, dict) and k not in timing))  # fmt: skip
        err.print(_throughput(summary))


def _throughput(s: dict[str, Any]) -> str:
    """The detector's rows/s, labelled as such: reading, training and writing are timed apart, not counted."""
    scored = s["rows"] - s["unreadable"]
    rate = f"{s['rows_per_s']:,.0f} rows/s" if s["rows_per_s"] is not None else "n/a rows/s"
    extra = f", {s['train']} {s['train_s']:.3f} s" if s.get("train_s") is not None else ""  # fit or warmup
    return (f"detector throughput: {rate} ({scored} rows in {s['detector_s']:.3f} s; not counted: reading "
            f"{s['read_s']:.3f} s{extra}, writing {s['write_s']:.3f} s)")  # fmt: skip


def register(root: typer.Typer) -> None:
    """``vigil score``."""
    root.command("score")(score)

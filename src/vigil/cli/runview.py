"""Run a pipeline with a live progress line and a closing summary."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def _line(st: Any) -> Table:
    t = Table.grid(padding=(0, 3))
    wm = "-" if st.watermark_ms < -(2**62) else str(st.watermark_ms)
    t.add_row(
        f"events [b]{st.events_in:,}[/]", f"[b]{st.events_per_s:,.0f}[/]/s", f"alerts [b]{st.alerts:,}[/]",
        f"late [b]{st.late_events:,}[/]", f"dead letters [b]{st.dead_letters:,}[/]", f"keys [b]{st.keys:,}[/]",
        f"watermark {wm}",
    )  # fmt: skip
    return t


def run_with_view(pipeline: Any, *, out_dir: str, quiet: bool, console: Console,
                  attach: Callable[[Any], Callable[[], None] | None] | None = None) -> Any:  # fmt: skip
    """Run on the embedded runtime; Ctrl-C stops after the current batch and flushes outputs.

    ``attach(runner)`` is called before the run to hook things onto the runner (metrics, live
    reconfiguration, the console); it may return a cleanup, called after the run whatever happens.
    """
    from vigil.engine.runner import EmbeddedRunner

    live = None if quiet else Live(console=console, refresh_per_second=8)

    def on_progress(st: Any) -> None:
        if live is not None:
            live.update(_line(st))

    runner = EmbeddedRunner(pipeline, progress=on_progress, out_dir=out_dir)
    cleanup = attach(runner) if attach is not None else None
    try:
        if live is not None:
            with live:
                st = runner.run()
        else:
            st = runner.run()
    except KeyboardInterrupt:
        runner.stop()
        console.print("[yellow]stopped[/]")
        raise
    finally:
        if cleanup is not None:
            cleanup()
    console.print(
        f"done: {st.events_in:,} events in {st.elapsed_s:.1f}s ({st.events_per_s:,.0f}/s), {st.alerts:,} alerts, "
        f"{st.late_events:,} late, {st.dead_letters:,} dead letters"
    )
    return st

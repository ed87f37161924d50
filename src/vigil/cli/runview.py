"""Run a pipeline's worker with a live progress line and a closing summary."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table


def progress_line(st: Any) -> Table:
    """One line of the run's counters."""
    t = Table.grid(padding=(0, 3))
    wm = "-" if st.watermark_ms < -(2**62) else str(st.watermark_ms)
    t.add_row(
        f"events [b]{st.events_in:,}[/]", f"[b]{st.events_per_s:,.0f}[/]/s", f"alerts [b]{st.alerts:,}[/]",
        f"late [b]{st.late_events:,}[/]", f"dead letters [b]{st.dead_letters:,}[/]", f"keys [b]{st.keys:,}[/]",
        f"watermark {wm}",
    )  # fmt: skip
    return t


class ProgressView:
    """The live progress line (nothing when ``quiet``): pass :meth:`update` as the worker's ``progress``."""

    def __init__(self, console: Console, quiet: bool) -> None:
        self.live = None if quiet else Live(console=console, refresh_per_second=8)

    def update(self, st: Any) -> None:
        """Show the latest counters."""
        if self.live is not None:
            self.live.update(progress_line(st))


@contextmanager
def graceful_stop(worker: Any, console: Console) -> Iterator[list[str]]:
    """Ctrl-C and SIGTERM (systemd, Docker, Kubernetes) stop the worker cleanly, as one another.

    The run stops after the current batch, with outputs flushed and a final checkpoint. A second signal stops at
    once. Yields the signals received.
    """
    got: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        got.append(name)
        if len(got) > 1:
            raise KeyboardInterrupt
        console.print(f"[yellow]{name}: stopping after the current batch (again to stop at once)[/]")
        worker.stop()

    if threading.current_thread() is not threading.main_thread():  # signals only reach the main thread
        yield got
        return
    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield got
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_with_view(worker: Any, view: ProgressView, *, console: Console) -> Any:
    """Run the worker (a signal stops it cleanly, see :func:`graceful_stop`); then the summary."""
    with graceful_stop(worker, console) as got:
        if view.live is not None:
            with view.live:
                st = worker.run()
        else:
            st = worker.run()
    if got:
        console.print("[yellow]stopped[/]: outputs flushed, final checkpoint written")
    console.print(
        f"done: {st.events_in:,} events in {st.elapsed_s:.1f}s ({st.events_per_s:,.0f}/s), {st.alerts:,} alerts, "
        f"{st.late_events:,} late, {st.dead_letters:,} dead letters"
    )
    for step, n in sorted(st.unscored.items()):
        console.print(f"[yellow]step `{step}` could not score {n:,} events[/] (values it can't take, e.g. <= 0 under "
                      "`transform: log`): they raise no alert")  # fmt: skip
    return st

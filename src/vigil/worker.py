"""A running pipeline: the embedded runner with its alert manager, metrics, live control and console.

Everything ``vigil run`` does besides the terminal display is here, so that a container entrypoint, a test
or another launcher assembles a pipeline the same way. The pipeline file is read **once**: its text is the
configuration version recorded in the history (``vigil apply`` compares against it), and the spec parsed
from that same text builds the pipeline.

Examples:
    >>> import tempfile, os
    >>> d = tempfile.mkdtemp()
    >>> path = os.path.join(d, "p.yaml")
    >>> _ = open(path, "w").write('''
    ... name: tiny
    ... source: {kind: transactions, events: 2000, users: 50}
    ... steps: [{name: burst, detector: velocity, params: {window: 10s, max_count: 3}}]
    ... alerts: [{kind: jsonl, path: alerts.jsonl}]
    ... ''')
    >>> w = Worker.from_file(path, out_dir=os.path.join(d, "out"), console_port=None)
    >>> st = w.run()
    >>> st.events_in, w.alerts.store_path.name
    (2000, 'alerts.db')
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.alerting.runtime import DEFAULT_GROUP_BY, ManagedAlerts
from vigil.config.spec import PipelineSpec, build_pipeline, feedback_base, managed_alerts, parse_spec
from vigil.control import LiveControl, history_for
from vigil.dataflow.capabilities import CheckedSource, having
from vigil.engine.runner import EmbeddedRunner, RunStats
from vigil.errors import ConfigError
from vigil.state.runlock import RunLock
from vigil.yamlfile import parse_yaml, read_text

log = logging.getLogger("vigil.worker")


def check_out_dir(out_dir: Path) -> None:
    """Fail (a ConfigError naming ``--out``) if the output folder can't be made or written; make nothing."""
    probe = out_dir if out_dir.exists() else out_dir.absolute().parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"can't be a folder: {probe} is a file", field="--out", value=str(out_dir))
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"can't be written (no permission in {probe})", field="--out", value=str(out_dir))


def _nonempty(path: Path) -> bool:
    try:
        return any(path.iterdir()) if path.is_dir() else path.stat().st_size > 0
    except OSError:
        return False


def move_aside(paths: list[Path], dest: Path) -> list[Path]:
    """Move ``paths`` into the folder ``dest`` (made); names that clash get their parent's name in front."""
    dest.mkdir(parents=True, exist_ok=True)
    moved = []
    for p in paths:
        target = dest / p.name
        if target.exists():
            target = dest / f"{p.parent.name}-{p.name}"
        shutil.move(str(p), str(target))
        moved.append(target)
    return moved


def settle_gc() -> None:
    """Before a long run: what is loaded so far stays out of garbage collections, and young ones are rarer.

    A run's modules, pipeline and models (about a million objects with numpy, scipy and numba) live until it ends,
    yet every full collection walked them again; and in an alert storm every alert is a handful of short-lived
    objects, so collections ran thousands of times. Together about 15% of a storm's CPU. Called by ``vigil run``
    and the benchmarks that stand for it, not by a library user's process.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)


#: the alert policy of a pipeline without ``alerting:``: one group per detector and key
DEFAULT_POLICY: dict[str, Any] = {"route": {"group_by": list(DEFAULT_GROUP_BY)}}


class Worker:
    """A pipeline and everything that runs beside it (see the module docstring).

    Args:
        spec: the validated pipeline spec.
        text: the file's text (its configuration version); ``None``: no live control.
        path: the pipeline file (its folder resolves relative paths).
        out_dir: where late events, dead letters, the alert store and the configuration history go.
        overrides: run-time overrides of the spec (``stop_at_end``, ``rate``).
        metrics_registry: a Prometheus ``CollectorRegistry`` to publish the pipeline's metrics in, or ``None``.
        console_port: serve the web console on this port (``0``: any free one), or ``None``: no console.
        console_may_move: if ``console_port`` is taken, serve on any free port (the default port may move; one
            the user chose must be free, or the run fails before it starts).
        fresh: move the outputs and alert state of an earlier run aside (``<out>/<name>/previous/<time>/``)
            before starting, instead of appending to them.
        progress: called with the run's statistics every ``progress_interval_s`` (the terminal display).
        say: where to tell people things (console URL, config versions); default: the log.
    """

    def __init__(self, spec: PipelineSpec, *, text: str | None = None, path: str | os.PathLike[str] = ".",
                 out_dir: str | os.PathLike[str] = "vigil-out", overrides: dict[str, Any] | None = None,
                 metrics_registry: Any = None, console_port: int | None = None, console_may_move: bool = True,
                 progress: Callable[[RunStats], None] | None = None, progress_interval_s: float = 0.2,
                 say: Callable[[str], None] | None = None, fresh: bool = False) -> None:  # fmt: skip
        self.spec, self.text = spec, text
        self.path = Path(path)
        self.base_dir = str(self.path.resolve().parent) if self.path.suffix else str(self.path.resolve())
        self.out_dir = Path(out_dir)
        self.say = say or log.warning
        check_out_dir(self.out_dir)
        self.pipeline = build_pipeline(spec, base_dir=self.base_dir, overrides=overrides)
        for src in having([self.pipeline.source_], CheckedSource):
            src.check()  # a missing input fails here, before anything is written
        self.alerts = self._alert_manager()
        self.runner = EmbeddedRunner(self.pipeline, progress=progress, progress_interval_s=progress_interval_s,
                                     out_dir=str(self.out_dir))  # fmt: skip
        self.metrics_registry = metrics_registry
        self.console_port, self.console_may_move = console_port, console_may_move
        self.fresh = fresh
        store = self.alerts.store_path
        self.lock = RunLock(store.with_name(store.name + ".lock"), what=f"pipeline `{self.pipeline.name}`")
        self._cleanups: list[Callable[[], Any]] = []

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], **kw: Any) -> Worker:
        """Read the pipeline file once, validate it, and build the worker."""
        path = Path(path)
        text = read_text(path, "pipeline file")
        return cls(parse_spec(parse_yaml(text, "pipeline file", path), origin=str(path)), text=text, path=path, **kw)

    def _alert_manager(self) -> ManagedAlerts:
        """The pipeline's alert manager: its ``alerting:`` one, or a default recording in ``<out>/<name>/alerts.db``.

        Every run then has an alert lifecycle, ``vigil alerts`` and the console.
        """
        for sink in self.pipeline.alert_sinks:
            if isinstance(sink, ManagedAlerts):
                return sink
        managed = managed_alerts(DEFAULT_POLICY, self.pipeline, store=self.out_dir / self.pipeline.name / "alerts.db",
                                 base=feedback_base(self.spec, self.pipeline))  # fmt: skip
        self.pipeline.alerts_to(managed)
        return managed

    def _attach(self) -> None:
        """Metrics, the console and live reconfiguration, hooked onto the runner before it starts."""
        runner = self.runner
        if self.metrics_registry is not None:
            from vigil.ops.metrics import PipelineMetrics

            metrics = PipelineMetrics(runner, self.metrics_registry)
            self.alerts.state_listeners.append(metrics.set_alert_states)
            self._cleanups.append(metrics.close)
        if self.console_port is not None:
            self._start_console(self.console_port)
        if self.text is not None:
            h = history_for(self.spec.name, str(self.out_dir))
            cur = h.current()
            if cur is not None and cur[1] == self.text:
                version = cur[0]
            else:
                version = h.record(self.text, action="start", who="vigil run", why=str(self.path))
                if cur is not None:
                    self.say(f"config {version} from {self.path} (it differs from {cur[0]}, in force before; "
                             f"see `vigil apply {self.path} --history`)")  # fmt: skip
            runner.control = LiveControl(h, self.spec, version, base_dir=self.base_dir, alerts=self.alerts)

    def _start_console(self, port: int) -> None:
        """Serve the console beside the run (a recorder tap feeds its live charts)."""
        from vigil.alerting.store import AlertStore
        from vigil.console.launch import start_console
        from vigil.console.recorder import StreamRecorder
        from vigil.errors import VigilError

        recorder = StreamRecorder()
        self.runner.taps = (*self.runner.taps, recorder)
        self.alerts.store_path.parent.mkdir(parents=True, exist_ok=True)
        store = AlertStore(str(self.alerts.store_path))
        try:
            handle, _ = start_console(store=store, runner=self.runner, recorder=recorder,
                                      pipeline_name=self.pipeline.name, port=port)  # fmt: skip
        except VigilError as exc:
            if not self.console_may_move:
                store.close()
                raise ConfigError(f"is not free: {exc}", field="console port", value=port,
                                  hint="pick another one, 0 for any free port, or --no-console") from None
            try:
                handle, _ = start_console(store=store, runner=self.runner, recorder=recorder,
                                          pipeline_name=self.pipeline.name, port=0)  # fmt: skip
            except VigilError as exc:
                self.say(f"no console: {exc}")
                store.close()
                return
        self._cleanups += [handle.stop, store.close]

    def run(self) -> RunStats:
        """Run until the source ends (or :meth:`stop`); what ran beside it is stopped whatever happens.

        Raises:
            StateError: another run of this pipeline (the same alert store) is going on.
        """
        stale = self.lock.acquire()
        try:
            if stale is not None:
                self.say(f"took over the lock of an earlier run that is gone (pid {stale.get('pid')})")
            self._earlier_outputs()
            self._attach()
            return self.runner.run()
        finally:
            self.close()
            self.lock.release()

    def outputs(self) -> list[Path]:
        """The files and folders this run writes: its outputs, the alert store and state, the checkpoints."""
        paths = [Path(p) for s in self.runner.sinks() if isinstance(p := getattr(s, "path", None), str | Path)]
        store = self.alerts.store_path
        paths += [store, Path(f"{store}-wal"), Path(f"{store}-shm"), self.alerts.state_path]
        if self.runner.store is not None:
            paths.append(self.runner.store.dir)
        return list(dict.fromkeys(paths))

    def _earlier_outputs(self) -> None:
        """Say that an earlier run's outputs are appended to (when not resuming), or move them aside (``fresh``)."""
        found = [p for p in self.outputs() if _nonempty(p)]
        if not found:
            return
        if self.fresh:
            dest = self.out_dir / self.pipeline.name / "previous" / time.strftime("%Y%m%d-%H%M%S")
            moved = move_aside(found, dest)
            self.say(f"--fresh: moved {len(moved)} outputs and state of the earlier run to {dest}")
            return
        resumes = self.runner.store is not None and bool(self.runner.store.list())
        if not resumes:
            names = ", ".join(str(p) for p in found if p != self.alerts.state_path)
            self.say(f"outputs of an earlier run exist and this run adds to them, reading its input from the start "
                     f"({names}); `vigil run --fresh` moves them aside first")  # fmt: skip

    def stop(self) -> None:
        """Stop after the current batch; outputs are flushed and the final checkpoint written."""
        self.runner.stop()

    def close(self) -> None:
        """Stop what runs beside the pipeline (metrics, console)."""
        while self._cleanups:
            try:
                self._cleanups.pop()()
            except Exception:  # noqa: BLE001 - a failing cleanup must not hide the run's own outcome
                log.warning("cleanup failed", exc_info=True)

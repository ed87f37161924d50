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

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from vigil.alerting.runtime import ManagedAlerts
from vigil.config.spec import PipelineSpec, build_pipeline, feedback_base, managed_alerts, parse_spec
from vigil.control import LiveControl, history_for
from vigil.engine.runner import EmbeddedRunner, RunStats
from vigil.yamlfile import parse_yaml, read_text

log = logging.getLogger("vigil.worker")

#: the alert policy of a pipeline without ``alerting:``: one group per detector and key
DEFAULT_POLICY: dict[str, Any] = {"route": {"group_by": ["alertname", "key"]}}


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
        progress: called with the run's statistics every ``progress_interval_s`` (the terminal display).
        say: where to tell people things (console URL, config versions); default: the log.
    """

    def __init__(self, spec: PipelineSpec, *, text: str | None = None, path: str | os.PathLike[str] = ".",
                 out_dir: str | os.PathLike[str] = "vigil-out", overrides: dict[str, Any] | None = None,
                 metrics_registry: Any = None, console_port: int | None = None,
                 progress: Callable[[RunStats], None] | None = None, progress_interval_s: float = 0.2,
                 say: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.spec, self.text = spec, text
        self.path = Path(path)
        self.base_dir = str(self.path.resolve().parent) if self.path.suffix else str(self.path.resolve())
        self.out_dir = Path(out_dir)
        self.say = say or log.warning
        self.pipeline = build_pipeline(spec, base_dir=self.base_dir, overrides=overrides)
        self.alerts = self._alert_manager()
        self.runner = EmbeddedRunner(self.pipeline, progress=progress, progress_interval_s=progress_interval_s,
                                     out_dir=str(self.out_dir))  # fmt: skip
        self.metrics_registry = metrics_registry
        self.console_port = console_port
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
        except VigilError:
            try:
                handle, _ = start_console(store=store, runner=self.runner, recorder=recorder,
                                          pipeline_name=self.pipeline.name, port=0)  # fmt: skip
            except VigilError as exc:
                self.say(f"no console: {exc}")
                store.close()
                return
        self._cleanups += [handle.stop, store.close]

    def run(self) -> RunStats:
        """Run until the source ends (or :meth:`stop`); what ran beside it is stopped whatever happens."""
        self._attach()
        try:
            return self.runner.run()
        finally:
            self.close()

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

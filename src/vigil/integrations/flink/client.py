"""Talk to a Flink cluster: submit a pipeline as a job (Flink's own ``flink run``), and its REST API for the rest.

Submitting needs a Flink distribution and a Python with PyFlink (the client builds the job graph): found as
``$FLINK_HOME/bin/flink`` (the official Flink image sets it) or the one inside the apache-flink wheel of the PyFlink
virtualenv (``.venv-flink``, made by ``make flink-venv``; another with ``VIGIL_FLINK_VENV``). Everything else
(list, status, savepoint, stop, cancel) is plain HTTP to the JobManager's REST API: no PyFlink needed.

Examples:
    >>> parse_jobmanager("127.0.0.1:8081")
    ('127.0.0.1', 8081)
    >>> submit_command(Path("/v/bin/python"), Path("/f/bin/flink"), "p.yaml", jobmanager=("jm", 8081),
    ...                parallelism=2, options=FlinkOptions(bounded=True), jar=None, savepoint=None)[1:8]
    ['run', '-d', '-Drest.address=jm', '-Drest.port=8081', '-Dpython.client.executable=/v/bin/python', '-p', '2']
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vigil.errors import ConfigError, VigilError
from vigil.integrations.flink.options import FlinkOptions

JOB_MODULE = "vigil.integrations.flink.job"
_SUBMITTED = re.compile(r"JobID ([0-9a-f]{32})")


class FlinkError(VigilError):
    """The cluster refused or failed a request (the message says which and why)."""


def parse_jobmanager(text: str) -> tuple[str, int]:
    """``HOST:PORT`` of the JobManager's REST API (raises :class:`ConfigError` naming the option)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError("must be HOST:PORT (the JobManager's REST address, e.g. 127.0.0.1:8081)",
                          field="--jobmanager", value=text)  # fmt: skip
    return host, int(port)


def default_jobmanager() -> str:
    """``127.0.0.1:$VIGIL_FLINK_REST_PORT`` (8081 unless set; the port ``make flink-up`` uses)."""
    return f"127.0.0.1:{os.environ.get('VIGIL_FLINK_REST_PORT', '8081')}"


def _repo_root() -> Path | None:
    here = Path(__file__).resolve()
    root = here.parents[4] if len(here.parents) > 4 else None
    return root if root is not None and (root / "deploy" / "flink" / "flink.sh").exists() else None


def flink_python() -> Path:
    """The Python with PyFlink that builds the job graph (raises :class:`VigilError` saying how to get one)."""
    env = os.environ.get("VIGIL_FLINK_VENV")
    candidates = [Path(env) / "bin" / "python"] if env else []
    root = _repo_root()
    if root is not None:
        candidates.append(root / ".venv-flink" / "bin" / "python")
    for c in candidates:
        if c.exists():
            return c
    try:
        import importlib.util

        if importlib.util.find_spec("pyflink") is not None:
            return Path(sys.executable)
    except (ImportError, ValueError):
        pass
    raise VigilError("no Python with PyFlink found: run `make flink-venv` (it makes .venv-flink), or point "
                     "VIGIL_FLINK_VENV at a virtualenv with apache-flink and Vigil installed")  # fmt: skip


def flink_bin(python: Path) -> Path:
    """Flink's ``flink`` command: ``$FLINK_HOME/bin/flink``, else the one in the apache-flink wheel."""
    home = os.environ.get("FLINK_HOME")
    if home and (Path(home) / "bin" / "flink").exists():
        return Path(home) / "bin" / "flink"
    out = subprocess.run([str(python), "-c", "import pyflink, os; print(os.path.dirname(pyflink.__file__))"],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if out.returncode != 0:
        raise VigilError(f"{python} can't import pyflink: {out.stderr.strip().splitlines()[-1:]}")
    return Path(out.stdout.strip()) / "bin" / "flink"


def connector_jar() -> Path | None:
    """The Kafka connector jar ``make flink-up`` resolves (``None`` when absent: a cluster image has it in lib/)."""
    env = os.environ.get("VIGIL_FLINK_CONNECTOR_JAR")
    if env:
        return Path(env)
    root = _repo_root()
    if root is None:
        return None
    jars = sorted((root / "deploy" / "flink" / "target" / "libs").glob("flink-sql-connector-kafka-*.jar"))
    return jars[-1] if jars else None


def submit_command(python: Path, flink: Path, pipeline: str, *, jobmanager: tuple[str, int], parallelism: int | None,
                   options: FlinkOptions, jar: Path | None, savepoint: str | None,
                   detached: bool = True) -> list[str]:  # fmt: skip
    """The ``flink run`` command line that submits ``pipeline`` (see the module docstring)."""
    host, port = jobmanager
    cmd = [str(flink), "run"]
    if detached:
        cmd.append("-d")
    cmd += [f"-Drest.address={host}", f"-Drest.port={port}", f"-Dpython.client.executable={python}"]
    if parallelism is not None:
        cmd += ["-p", str(parallelism)]
    if jar is not None:
        cmd += ["-j", str(jar)]
    if savepoint is not None:
        cmd += ["-s", savepoint]
    cmd += ["-pym", JOB_MODULE, "--pipeline", str(Path(pipeline).resolve()), *options.to_args()]
    return cmd


def submit(pipeline: str, *, jobmanager: str, parallelism: int | None = None, options: FlinkOptions | None = None,
           savepoint: str | None = None, jar: Path | None = None, timeout_s: float = 600) -> str:  # fmt: skip
    """Submit ``pipeline`` to the cluster, detached; returns the job id."""
    options = options or FlinkOptions()
    from vigil.integrations.flink.spec import load_job

    load_job(pipeline, late_topic=options.late_topic)  # the file's errors here, not in a Java stack trace
    python = flink_python()
    cmd = submit_command(python, flink_bin(python), pipeline, jobmanager=parse_jobmanager(jobmanager),
                         parallelism=parallelism, options=options, jar=jar if jar is not None else connector_jar(),
                         savepoint=savepoint)  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("FLINK_CONF_DIR",)}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    found = _SUBMITTED.search(out.stdout + out.stderr)
    if out.returncode != 0 or found is None:
        raise FlinkError(f"`flink run` failed (exit {out.returncode}): {_cause(out.stdout + out.stderr)}")
    return found.group(1)


def submit_module(module: str, args: list[str], *, jobmanager: str, parallelism: int | None = None,
                  timeout_s: float = 600) -> str:  # fmt: skip
    """Submit any PyFlink job module (``flink run -d -pym MODULE ARGS``), e.g. the benchmark's anchor; the job id."""
    python = flink_python()
    host, port = parse_jobmanager(jobmanager)
    cmd = [str(flink_bin(python)), "run", "-d", f"-Drest.address={host}", f"-Drest.port={port}",
           f"-Dpython.client.executable={python}"]  # fmt: skip
    if parallelism is not None:
        cmd += ["-p", str(parallelism)]
    jar = connector_jar()
    if jar is not None:
        cmd += ["-j", str(jar)]
    cmd += ["-pym", module, *args]
    env = {k: v for k, v in os.environ.items() if k != "FLINK_CONF_DIR"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, env=env, check=False)
    found = _SUBMITTED.search(out.stdout + out.stderr)
    if out.returncode != 0 or found is None:
        raise FlinkError(f"`flink run` failed (exit {out.returncode}): {_cause(out.stdout + out.stderr)}")
    return found.group(1)


def run_local(pipeline: str, *, parallelism: int | None = None, options: FlinkOptions | None = None) -> int:
    """Run ``pipeline`` in a local Flink mini-cluster in a child process (blocks until the job ends)."""
    options = options or FlinkOptions()
    python = flink_python()
    cmd = [str(python), "-m", JOB_MODULE, "--pipeline", str(Path(pipeline).resolve()), *options.to_args()]
    env = dict(os.environ)
    jar = connector_jar()
    if jar is not None:
        env["VIGIL_FLINK_CONNECTOR_JAR"] = str(jar)
    if parallelism is not None:
        env["VIGIL_FLINK_PARALLELISM"] = str(parallelism)
    return subprocess.run(cmd, env=env, check=False).returncode


def _cause(text: str) -> str:
    """The most telling line of a Flink client's output (the deepest ``Caused by``, else the last error line)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("at ")]
    python = [ln for ln in lines if re.match(r"^[A-Za-z_.]*(Error|Exception): ", ln) and not ln.startswith("py4j")]
    if python:  # the first: the job module's own traceback (an import error) comes before Java's wrapper of it
        return python[0][:500]
    causes = [ln for ln in lines if ln.startswith("Caused by:") or "Exception:" in ln or "Error:" in ln]
    return (causes[-1] if causes else (lines[-1] if lines else "no output"))[:500]


# -- the REST API ------------------------------------------------------------------------------------------------


@dataclass
class Rest:
    """The JobManager's REST API at ``HOST:PORT``."""

    address: str
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        host, port = parse_jobmanager(self.address)
        self.base = f"http://{host}:{port}"

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            r = httpx.request(method, self.base + path, json=body, timeout=self.timeout_s)
        except httpx.HTTPError as exc:
            raise FlinkError(f"no Flink JobManager answers at {self.base} ({exc}); start one with `make flink-up` "
                             "or pass --jobmanager HOST:PORT") from None  # fmt: skip
        if r.status_code >= 400:
            errors = (
                r.json().get("errors", [r.text])
                if r.headers.get("content-type", "").startswith("application/json")
                else [r.text]
            )  # noqa: E501
            raise FlinkError(f"{method} {path}: HTTP {r.status_code}: {_cause(str(errors[0]))}")
        return r.json() if r.content else {}

    def jobs(self) -> list[dict[str, Any]]:
        """Every job the cluster knows, newest first: ``jid``, ``name``, ``state``, ``start-time``, ``duration``."""
        jobs = self._call("GET", "/jobs/overview")["jobs"]
        return sorted(jobs, key=lambda j: -int(j.get("start-time", 0)))

    def job(self, jid: str) -> dict[str, Any]:
        """One job's details (state, vertices with their parallelism and metrics)."""
        return dict(self._call("GET", f"/jobs/{jid}"))

    def checkpoints(self, jid: str) -> dict[str, Any]:
        """The job's checkpoint counts and the latest completed/restored ones."""
        return dict(self._call("GET", f"/jobs/{jid}/checkpoints"))

    def exceptions(self, jid: str) -> list[str]:
        """The job's recent failures, newest first (the root exception's first lines)."""
        d = self._call("GET", f"/jobs/{jid}/exceptions")
        return [str(e.get("stacktrace", ""))[:2000] for e in d.get("exceptionHistory", {}).get("entries", [])]

    def cancel(self, jid: str) -> None:
        """Cancel the job (no savepoint)."""
        self._call("PATCH", f"/jobs/{jid}?mode=cancel")

    def savepoint(self, jid: str, *, directory: str | None = None, stop: bool = False, drain: bool = False,
                  timeout_s: float = 300) -> str:  # fmt: skip
        """Take a savepoint (and with ``stop``, stop the job with it); returns its location when complete.

        Right after a restart (a TaskManager lost, the job restored) the job reads RUNNING while some of its tasks
        are still being deployed, and Flink refuses the savepoint ("... is not being executed at the moment"):
        that refusal is retried until the tasks run or ``timeout_s`` passes.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return self._savepoint_once(jid, directory, stop, drain, deadline)
            except FlinkError as exc:
                if "is not being executed at the moment" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    def _savepoint_once(self, jid: str, directory: str | None, stop: bool, drain: bool, deadline: float) -> str:
        if stop:
            body: dict[str, Any] = {"drain": drain}
            if directory is not None:
                body["targetDirectory"] = directory
            trigger = self._call("POST", f"/jobs/{jid}/stop", body)["request-id"]
        else:
            body = {"cancel-job": False}
            if directory is not None:
                body["target-directory"] = directory
            trigger = self._call("POST", f"/jobs/{jid}/savepoints", body)["request-id"]
        while time.monotonic() < deadline:
            st = self._call("GET", f"/jobs/{jid}/savepoints/{trigger}")
            if st["status"]["id"] == "COMPLETED":
                op = st.get("operation", {})
                if "failure-cause" in op:
                    cause = op["failure-cause"].get("stack-trace", str(op["failure-cause"]))
                    raise FlinkError(f"the savepoint of job {jid} failed: {_cause(cause)}")
                return str(op["location"])
            time.sleep(0.5)
        raise FlinkError(f"the savepoint of job {jid} did not complete in time")

    def wait(self, jid: str, states: tuple[str, ...], timeout_s: float) -> str:
        """Wait until the job is in one of ``states``; returns it (raises :class:`FlinkError` on timeout)."""
        deadline = time.monotonic() + timeout_s
        state = "?"
        while time.monotonic() < deadline:
            state = str(self.job(jid)["state"])
            if state in states:
                return state
            if state in ("FAILED", "CANCELED", "FINISHED"):
                break
            time.sleep(0.5)
        raise FlinkError(f"job {jid} is {state}, not {'/'.join(states)}")


def status(rest: Rest, jid: str) -> dict[str, Any]:
    """A job's state in plain data: ``state``, ``parallelism``, ``records_in``, ``checkpoints``, ``last_failure``."""
    d = rest.job(jid)
    cps = rest.checkpoints(jid)
    vertices = d.get("vertices", [])
    latest = (cps.get("latest") or {}).get("completed") or {}
    failures = rest.exceptions(jid)
    return {
        "id": jid,
        "name": d.get("name"),
        "state": d.get("state"),
        "duration_s": round(int(d.get("duration", 0)) / 1000, 1),
        "parallelism": max((int(v.get("parallelism", 0)) for v in vertices), default=0),
        "records_in": int(vertices[0]["metrics"].get("write-records", 0)) if vertices else 0,  # the source's out
        "checkpoints": {
            "completed": cps.get("counts", {}).get("completed", 0),
            "failed": cps.get("counts", {}).get("failed", 0),
            "restored": cps.get("counts", {}).get("restored", 0),
            "latest": latest.get("external_path"),
        },  # fmt: skip
        "last_failure": failures[0].splitlines()[0] if failures else None,
    }


__all__ = [
    "FlinkError",
    "JOB_MODULE",
    "Rest",
    "connector_jar",
    "default_jobmanager",
    "flink_bin",
    "flink_python",
    "parse_jobmanager",
    "run_local",
    "status",
    "submit",
    "submit_command",
]

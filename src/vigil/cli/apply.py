"""``vigil apply``: change a running pipeline's thresholds and rules without a restart, versioned, reversible."""

from __future__ import annotations

import os
import time
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from vigil.config.spec import load_spec, parse_spec
from vigil.control import ConfigHistory, history_for, plan_changes
from vigil.errors import ConfigError


def _running(h: ConfigHistory, name: str) -> Any:
    cur = h.current()
    if cur is None:
        raise ConfigError(f"has no configuration history in {h.dir}", field="pipeline", value=name,
                          hint="start it with `vigil run FILE` (with the same --out) first")  # fmt: skip
    version, text = cur
    return version, parse_spec(yaml.safe_load(text), origin=f"{h.dir}/{version}.yaml")


def apply_cmd(path: str, *, out: str, dry_run: bool, who: str, why: str, wait_s: float,
              console: Console) -> dict[str, Any]:  # fmt: skip
    """Validate FILE, check every change is live-applicable, record it as the new current version."""
    new = load_spec(path)
    h = history_for(new.name, out)
    version, running = _running(h, new.name)
    plan = plan_changes(running, new, os.path.dirname(os.path.abspath(path)))
    if not plan.ok:
        raise ConfigError("can't be applied live:\n  - " + "\n  - ".join(plan.problems), field="file", value=path)
    if not plan.changes:
        console.print(f"no change against the current {version}")
        return {"version": version, "changes": [], "applied": h.applied() == version and h.applier() is not None}
    for c in plan.changes:
        console.print(f"  {c}")
    if dry_run:
        console.print(f"dry run: valid, and every change can be applied live to {version}")
        return {"version": None, "changes": plan.changes, "applied": False}
    with open(path, encoding="utf-8") as f:
        text = f.read()
    new_version = h.record(text, action="apply", who=who, why=why, changes=plan.changes)
    applied = _wait(h, new_version, wait_s)
    console.print(f"recorded {new_version} (was {version}); " + _outcome(h, applied, wait_s, path, out))
    return {"version": new_version, "changes": plan.changes, "applied": applied}


def rollback_cmd(path: str, version: str | None, *, out: str, who: str, why: str, wait_s: float,
                 console: Console) -> dict[str, Any]:  # fmt: skip
    """Make an earlier version current again (itself checked for live-applicability)."""
    name = load_spec(path).name
    h = history_for(name, out)
    cur, running = _running(h, name)
    if version is None:
        entries = [e["version"] for e in h.entries()]
        idx = max(i for i, v in enumerate(entries) if v == cur)
        prior = [v for v in entries[:idx] if v != cur]
        if not prior:
            raise ConfigError("has no earlier version to roll back to", field="pipeline", value=name)
        version = prior[-1]
    target = parse_spec(yaml.safe_load(h.text(version)), origin=version)
    plan = plan_changes(running, target)
    if not plan.ok:
        raise ConfigError("can't be rolled back to live:\n  - " + "\n  - ".join(plan.problems), field="version",
                          value=version)  # fmt: skip
    h.rollback(version, who=who, why=why)
    applied = _wait(h, version, wait_s, since=time.time())
    console.print(f"rolled back {cur} -> {version}; " + _outcome(h, applied, wait_s, path, out))
    for c in plan.changes:
        console.print(f"  {c}")
    return {"version": version, "changes": plan.changes, "applied": applied}


def history_cmd(path: str, *, out: str, console: Console) -> list[dict[str, Any]]:
    """Print the versions of a pipeline's configuration."""
    name = load_spec(path).name
    h = history_for(name, out)
    entries = h.entries()
    cur, applied = h.current_version(), h.applied()
    table = Table(title=f"configuration of `{name}` ({h.dir})")
    for col in ("version", "action", "when", "who", "why", "changes"):
        table.add_column(col)
    for e in entries:
        mark = " (current" + (", applied)" if e["version"] == applied else ")") if e["version"] == cur else ""
        table.add_row(e["version"] + mark, e["action"], time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"])),
                      e.get("who", ""), e.get("why", ""), "\n".join(e.get("changes", [])))  # fmt: skip
    console.print(table)
    return entries


def _outcome(h: ConfigHistory, applied: bool, wait_s: float, path: str, out: str) -> str:
    """What confirmed the change — or that nothing did (a stale marker of an earlier run is no confirmation)."""
    if applied:
        return f"applied by the running pipeline (pid {h.applier()})"
    pid = h.applier()
    if pid is None:
        return (f"nothing confirmed it: no pipeline is running with --out {out}; it is in force when the pipeline "
                f"next starts (`vigil run {path} --out {out}`)")  # fmt: skip
    return (f"the running pipeline (pid {pid}) has not confirmed it within {wait_s:g}s: it applies it between two "
            f"batches; check with `vigil apply {path} --history`")  # fmt: skip


def _wait(h: ConfigHistory, version: str, wait_s: float, since: float | None = None) -> bool:
    """True once a running process confirms ``version`` (after ``since``, for a version applied before)."""
    deadline = time.monotonic() + wait_s
    while True:
        if h.applier() is None:
            return False  # no process runs the pipeline: nothing will confirm it, and an old marker is stale
        if h.applied() == version and (since is None or h.applied_at() >= since):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)

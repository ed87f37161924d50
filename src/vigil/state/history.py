r"""Versioned pipeline configurations: every live change is a new version, and any version can come back.

A running pipeline keeps its configuration history in ``<out>/<pipeline>/config/``::

    v0001.yaml  v0002.yaml  ...   every version, as applied (the YAML text, byte for byte)
    CURRENT                       the version in force (one line, e.g. ``v0002``), replaced atomically
    history.jsonl                 one line per change: version, action (start/apply/rollback), who, why, when,
                                  and the changes it made
    applied                       the version the running process has applied (written by the process)

``vigil apply FILE`` validates the file, checks that every change can be applied live (see
:mod:`vigil.control.live`) and writes a new version; the running process follows ``CURRENT`` between
batches. ``vigil apply --rollback [VERSION]`` makes an earlier version current again (as a new history
entry, so the history only grows).

Examples:
    >>> import tempfile
    >>> h = ConfigHistory(tempfile.mkdtemp())
    >>> h.record("name: a\nsteps: []\n", action="start", who="vigil run")
    'v0001'
    >>> h.record("name: a\nsteps: [x]\n", action="apply", who="ops", why="quieter")
    'v0002'
    >>> h.current()[0], h.rollback(who="ops"), h.current()[0], [e["action"] for e in h.entries()]
    ('v0002', 'v0001', 'v0001', ['start', 'apply', 'rollback'])
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from vigil.errors import ConfigError, StateError
from vigil.state.runlock import process_alive

_VERSION = re.compile(r"^v(\d{4,})$")


class ConfigHistory:
    """The configuration versions of one pipeline (see the module docstring)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.dir = Path(directory)

    # -- reading -----------------------------------------------------------------------------------

    def versions(self) -> list[str]:
        """Every stored version, oldest first."""
        if not self.dir.is_dir():
            return []
        found = [p.stem for p in self.dir.glob("v*.yaml") if _VERSION.match(p.stem)]
        return sorted(found, key=lambda v: int(v[1:]))

    def text(self, version: str) -> str:
        """The YAML text of ``version``."""
        if not _VERSION.match(version):
            raise ConfigError("is not a version (e.g. v0003)", field="version", value=version)
        path = self.dir / f"{version}.yaml"
        try:
            return path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"does not exist in {self.dir}", field="version", value=version,
                              hint=f"versions: {', '.join(self.versions()) or 'none'}") from None  # fmt: skip

    def current(self) -> tuple[str, str] | None:
        """``(version, text)`` in force, or ``None`` before the first version."""
        try:
            version = (self.dir / "CURRENT").read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            return None
        return version, self.text(version)

    def current_version(self) -> str | None:
        """The version in force (cheap: one small file read)."""
        try:
            return (self.dir / "CURRENT").read_text(encoding="utf-8").strip() or None
        except FileNotFoundError:
            return None

    def entries(self) -> list[dict[str, Any]]:
        """The history, oldest first."""
        try:
            lines = (self.dir / "history.jsonl").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(x) for x in lines if x.strip()]

    def applied(self) -> str | None:
        """The version the last running process reported as applied, if any (it may have stopped since)."""
        try:
            return (self.dir / "applied").read_text(encoding="utf-8").split()[0]
        except (FileNotFoundError, IndexError):
            return None

    def applied_at(self) -> float:
        """When the ``applied`` marker was written (epoch s; 0 if there is none)."""
        try:
            parts = (self.dir / "applied").read_text(encoding="utf-8").split()
            return float(parts[1])
        except (FileNotFoundError, IndexError, ValueError):
            return 0.0

    def applier(self) -> int | None:
        """The pid of the process that wrote the ``applied`` marker, if that process is still running.

        ``None`` when no process runs the pipeline now: the marker is then a stale record of an earlier run, and
        nothing can confirm a change (``vigil apply`` must not claim it was applied).
        """
        try:
            parts = (self.dir / "applied").read_text(encoding="utf-8").split()
        except FileNotFoundError:
            return None
        pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else None
        return pid if pid is not None and process_alive(pid) else None

    # -- writing -----------------------------------------------------------------------------------

    def record(self, text: str, *, action: str, who: str = "", why: str = "",
               changes: list[str] | None = None) -> str:  # fmt: skip
        """Store ``text`` as a new version and make it current; return the version."""
        self.dir.mkdir(parents=True, exist_ok=True)
        versions = self.versions()
        version = f"v{(int(versions[-1][1:]) + 1) if versions else 1:04d}"
        _atomic_write(self.dir / f"{version}.yaml", text)
        self._point(version, action=action, who=who, why=why, changes=changes or [])
        return version

    def rollback(self, version: str | None = None, *, who: str = "", why: str = "") -> str:
        """Make ``version`` (default: the one before the current) current again; return it."""
        cur = self.current_version()
        if version is None:
            earlier = [e["version"] for e in self.entries()]
            if cur is None or len(earlier) < 2:
                raise ConfigError("has no earlier version to roll back to", field="history", value=str(self.dir))
            # the version that was current before the present one
            idx = max(i for i, v in enumerate(earlier) if v == cur)
            prior = [v for v in earlier[:idx] if v != cur]
            if not prior:
                raise ConfigError("has no earlier version to roll back to", field="history", value=str(self.dir))
            version = prior[-1]
        self.text(version)  # exists?
        self._point(version, action="rollback", who=who, why=why or f"rollback from {cur}", changes=[])
        return version

    def mark_applied(self, version: str) -> None:
        """Called by the running process once ``version`` is in force."""
        _atomic_write(self.dir / "applied", f"{version} {time.time():.3f} {os.getpid()}\n")

    def _point(self, version: str, **entry: Any) -> None:
        _atomic_write(self.dir / "CURRENT", version + "\n")
        line = json.dumps({"version": version, "at": round(time.time(), 3), **entry}, sort_keys=True)
        try:
            with open(self.dir / "history.jsonl", "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            raise StateError(f"can't append to {self.dir / 'history.jsonl'}: {exc.strerror}") from None


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    except OSError as exc:
        raise StateError(f"can't write {path}: {exc.strerror}") from None

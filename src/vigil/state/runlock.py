"""A lock file that keeps a second process off state only one may write (a pipeline's alert store, its outputs).

The file holds the owner's pid, host and start time as JSON. Taking it is an exclusive create; a lock left by a
process that is gone (killed, crashed: it had no chance to remove the file) is *stale* and taken over; one held
by a live process is refused, naming the pid. A lock written on another host can't be checked from here: it is
refused, with the path to delete once that process is known to be gone.

Examples:
    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "alerts.db.lock")
    >>> lock = RunLock(path, what="pipeline `fraud`")
    >>> lock.acquire() is None  # None: no stale lock was taken over
    True
    >>> RunLock(path, what="pipeline `fraud`").acquire()
    Traceback (most recent call last):
    ...
    vigil.errors.StateError: pipeline `fraud` is already running (pid ..., since ...; lock .../alerts.db.lock)...
    >>> lock.release(); os.path.exists(path)
    False
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from vigil.errors import StateError

_HELD: set[str] = set()  # lock files this process holds now (one of ours not in here was left behind: stale)


def process_alive(pid: int) -> bool:
    """True if a process with this pid exists on this host (one of another user's counts)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class RunLock:
    """An exclusive, pid-stamped lock file (see the module docstring).

    Args:
        path: the lock file (its folder is created when the lock is taken).
        what: what the lock guards, for messages (``pipeline `fraud```).
    """

    def __init__(self, path: str | os.PathLike[str], *, what: str) -> None:
        self.path = Path(path)
        self.what = what
        self._held = False

    def holder(self) -> dict[str, Any] | None:
        """The recorded owner (``pid``, ``host``, ``since``), or ``None`` when there is no readable lock."""
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> dict[str, Any] | None:
        """Take the lock; return the stale owner taken over (or ``None``).

        Raises:
            StateError: a live process (or one on another host) holds it.
        """
        stale: dict[str, Any] | None = None
        for _ in range(3):  # a stale lock removed under us by another starter: try again
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                fd = -1
            except OSError as exc:
                raise StateError(f"{self.what}: can't create the lock file {self.path}: {exc.strerror}") from None
            if fd < 0:
                owner = self.holder()
                if owner is None:
                    if self._young():  # being written by a starter right now
                        time.sleep(0.05)
                        continue
                    owner = {"pid": -1, "host": socket.gethostname(), "since": "?"}
                self._refuse_if_live(owner)
                stale = owner
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump({"pid": os.getpid(), "host": socket.gethostname(),
                           "since": time.strftime("%Y-%m-%d %H:%M:%S")}, f)  # fmt: skip
            self._held = True
            _HELD.add(str(self.path.resolve()))
            return stale
        raise StateError(f"{self.what}: can't take the lock file {self.path} (other processes keep taking it)")

    def _young(self) -> bool:
        try:
            return time.time() - self.path.stat().st_mtime < 1.0
        except OSError:
            return False

    def _refuse_if_live(self, owner: dict[str, Any]) -> None:
        pid, host = owner.get("pid"), owner.get("host")
        if host not in (None, socket.gethostname()):
            raise StateError(f"{self.what} is locked by pid {pid} on host {host} (lock {self.path}); if that process "
                             "is gone, delete the lock file")  # fmt: skip
        ours = pid == os.getpid() and str(self.path.resolve()) not in _HELD  # left by an earlier run in here
        if isinstance(pid, int) and process_alive(pid) and not ours:
            raise StateError(f"{self.what} is already running (pid {pid}, since {owner.get('since', '?')}; lock "
                             f"{self.path}): two runs would overwrite each other's alert state. Stop that one "
                             "first, or give this one another --out")  # fmt: skip

    def release(self) -> None:
        """Remove the lock file if this process holds it; idempotent."""
        if not self._held:
            return
        self._held = False
        _HELD.discard(str(self.path.resolve()))
        owner = self.holder()
        if owner is not None and owner.get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)

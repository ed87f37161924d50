"""Checkpoint files: a consistent snapshot of a pipeline's state and source positions, stored atomically.

A checkpoint is one file ``chk-<seq>.vck``::

    b"VIGILCKP" | format u16 | reserved u16 | body length u64 | CRC-32 of body u32 | body

The body is a snapshot envelope of the codec (:mod:`vigil.state.codec`, MessagePack, no pickle).
It is written to a temporary file, fsynced, renamed into place and the directory fsynced, so a
crash while checkpointing leaves the previous checkpoint intact and never a half-written one under
a checkpoint's name. Reading checks the magic, the length (a truncated file) and the CRC (a
corrupt one) and says which; :meth:`CheckpointStore.load_latest` falls back to the previous good
checkpoint and reports every file it skipped.
"""

from __future__ import annotations

import os
import re
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vigil.errors import CheckpointError, SnapshotError
from vigil.state import codec

MAGIC = b"VIGILCKP"
FORMAT = 1
_HEADER = struct.Struct("<8sHHQI")
_NAME = re.compile(r"^chk-(\d{10})\.vck$")
KIND = "checkpoint"
VERSION = 1


@dataclass
class Loaded:
    """The checkpoint :meth:`CheckpointStore.load_latest` chose, and the files it passed over."""

    seq: int
    path: Path
    state: dict[str, Any]
    skipped: list[tuple[Path, str]] = field(default_factory=list)


class CheckpointStore:
    """The checkpoints of one pipeline in a directory (the newest ``keep`` are kept).

    Examples:
        >>> import tempfile
        >>> store = CheckpointStore(tempfile.mkdtemp())
        >>> store.write(1, {"positions": {"0": 10}})
        PosixPath('...chk-0000000001.vck')
        >>> store.load_latest().state["positions"]
        {'0': 10}
    """

    def __init__(self, directory: str | os.PathLike[str], keep: int = 3) -> None:
        self.dir = Path(directory)
        self.keep = max(2, keep)

    def path(self, seq: int) -> Path:
        """The file of checkpoint ``seq``."""
        return self.dir / f"chk-{seq:010d}.vck"

    def list(self) -> list[tuple[int, Path]]:
        """Checkpoints present, oldest first."""
        if not self.dir.is_dir():
            return []
        out = []
        for p in self.dir.iterdir():
            m = _NAME.match(p.name)
            if m:
                out.append((int(m.group(1)), p))
        return sorted(out)

    def write(self, seq: int, state: dict[str, Any]) -> Path:
        """Store checkpoint ``seq`` atomically; drop checkpoints beyond the newest ``keep``."""
        body = codec.encode(KIND, VERSION, {}, state)
        header = _HEADER.pack(MAGIC, FORMAT, 0, len(body), zlib.crc32(body))
        self.dir.mkdir(parents=True, exist_ok=True)
        final = self.path(seq)
        tmp = final.with_suffix(".tmp")
        with open(tmp, "wb") as f:
            f.write(header)
            f.write(body)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, final)
        _fsync_dir(self.dir)
        for old_seq, old in self.list()[: -self.keep]:
            if old_seq < seq:
                old.unlink(missing_ok=True)
        return final

    @staticmethod
    def read(path: str | os.PathLike[str]) -> dict[str, Any]:
        """Read and verify one checkpoint file.

        Raises:
            CheckpointError: the file is missing, truncated, corrupt, or not a checkpoint.
        """
        p = Path(path)
        try:
            data = p.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"checkpoint {p} can't be read: {exc.strerror}") from None
        if len(data) < _HEADER.size:
            raise CheckpointError(f"checkpoint {p} is truncated: {len(data)} bytes, shorter than its header")
        magic, fmt, _, length, crc = _HEADER.unpack_from(data)
        if magic != MAGIC:
            raise CheckpointError(f"{p} is not a Vigil checkpoint (bad magic {magic!r})")
        if fmt != FORMAT:
            raise CheckpointError(f"checkpoint {p} has format {fmt}; this Vigil reads format {FORMAT}")
        body = data[_HEADER.size :]
        if len(body) != length:
            raise CheckpointError(f"checkpoint {p} is truncated: body has {len(body)} of {length} bytes")
        if zlib.crc32(body) != crc:
            raise CheckpointError(f"checkpoint {p} is corrupt: CRC mismatch")
        try:
            env = codec.decode(body, kind=KIND, version=VERSION)
        except SnapshotError as exc:
            raise CheckpointError(f"checkpoint {p} can't be decoded: {exc}") from None
        state: dict[str, Any] = env["state"]
        return state

    def load_latest(self, accept: Callable[[dict[str, Any]], str | None] | None = None) -> Loaded | None:
        """The newest checkpoint that reads cleanly and that ``accept`` doesn't refuse.

        ``accept(state)`` returns ``None`` to take the checkpoint or a reason to pass over it (e.g.
        its offsets were never committed to Kafka). Every file passed over is reported in
        ``skipped`` with the reason. Returns ``None`` when there is no usable checkpoint.
        """
        skipped: list[tuple[Path, str]] = []
        for seq, path in reversed(self.list()):
            try:
                state = self.read(path)
            except CheckpointError as exc:
                skipped.append((path, str(exc)))
                continue
            reason = accept(state) if accept is not None else None
            if reason is not None:
                skipped.append((path, reason))
                continue
            return Loaded(seq, path, state, skipped)
        if skipped:
            return Loaded(-1, Path(), {}, skipped)
        return None


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

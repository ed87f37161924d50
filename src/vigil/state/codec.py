"""Versioned snapshot codec: plain data ⇄ bytes, no pickle at rest.

A snapshot is a tree of ``None``/bool/int/float/str, lists, str-keyed dicts and numpy arrays. It is
stored in an envelope ``{kind, v, params, state}`` and encoded with MessagePack; numpy arrays travel
as an extension type carrying dtype, shape and raw bytes. :func:`decode` checks the kind and the
version and says what to do when they don't match.
"""

from __future__ import annotations

from typing import Any

import msgspec
import numpy as np

from vigil.errors import SnapshotError

_ND_EXT = 1


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        if obj.dtype == object:
            raise TypeError("object arrays are not plain data; convert to a list of str")
        arr = np.ascontiguousarray(obj)
        header = msgspec.msgpack.encode([arr.dtype.str, list(arr.shape)])
        return msgspec.msgpack.Ext(_ND_EXT, len(header).to_bytes(4, "little") + header + arr.tobytes())
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"not plain data: {type(obj).__name__} (snapshots hold numbers, str, lists, dicts, arrays)")


def _ext_hook(code: int, data: memoryview) -> Any:
    if code != _ND_EXT:
        raise SnapshotError(f"unknown extension type {code} in snapshot")
    n = int.from_bytes(data[:4], "little")
    dtype, shape = msgspec.msgpack.decode(data[4 : 4 + n])
    return np.frombuffer(data[4 + n :], dtype=np.dtype(dtype)).reshape(shape).copy()


_encoder = msgspec.msgpack.Encoder(enc_hook=_enc_hook)
_decoder = msgspec.msgpack.Decoder(ext_hook=_ext_hook)


def encode(kind: str, version: int, params: dict[str, Any], state: Any) -> bytes:
    """Encode a snapshot in its envelope.

    Examples:
        >>> blob = encode("detector/x", 1, {"a": 1}, {"arr": np.arange(3)})
        >>> env = decode(blob, kind="detector/x", version=1)
        >>> env["params"], env["state"]["arr"].tolist()
        ({'a': 1}, [0, 1, 2])
    """
    return _encoder.encode({"kind": kind, "v": version, "params": params, "state": state})


def decode(blob: bytes, *, kind: str | None = None, version: int | None = None) -> dict[str, Any]:
    """Decode an envelope, checking its kind and version.

    Raises:
        SnapshotError: the bytes are not a snapshot, or of another kind or version.
    """
    try:
        env = _decoder.decode(blob)
    except (msgspec.DecodeError, ValueError, TypeError) as exc:
        raise SnapshotError(f"not a readable snapshot ({exc})") from exc
    if not isinstance(env, dict) or "kind" not in env:
        raise SnapshotError("not a snapshot envelope")
    if kind is not None and env["kind"] != kind:
        raise SnapshotError(f"snapshot is of kind {env['kind']!r}, expected {kind!r}")
    if version is not None and env["v"] != version:
        raise SnapshotError(
            f"snapshot of {env['kind']!r} is version {env['v']}, this Vigil reads version {version}. "
            "Operator action: restore with the Vigil release that wrote it, or delete the state to start fresh."
        )
    return env  # type: ignore[no-any-return]


def to_jsonable(obj: Any, max_items: int = 8) -> Any:
    """A readable summary of a snapshot tree (arrays shown by dtype, shape and first items)."""
    if isinstance(obj, np.ndarray):
        head = obj.ravel()[:max_items].tolist()
        return {"array": obj.dtype.str, "shape": list(obj.shape), "head": head}
    if isinstance(obj, dict):
        return {k: to_jsonable(v, max_items) for k, v in obj.items()}
    if isinstance(obj, list):
        return [to_jsonable(v, max_items) for v in obj[:max_items]] + (["..."] if len(obj) > max_items else [])
    return obj

"""What every ``vigil`` command shares: the error console and the one way to fail."""

from __future__ import annotations

import json
import math
import os
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False, soft_wrap=True)
"""Messages for people (progress, errors) go to stderr; results (tables, ``--json``) to stdout."""


def fail(exc: Exception, code: int = 2) -> NoReturn:
    """Print one ``error:`` line and exit with ``code`` (2: bad input or config, 1: the work failed)."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code)


def fail_unexpected(exc: BaseException, code: int = 1) -> NoReturn:
    """An exception Vigil did not mean to raise: one ``error:`` line saying where, the traceback only on request.

    ``VIGIL_TRACEBACK=1`` prints the traceback too (for a bug report).
    """
    import traceback

    from vigil.errors import describe

    if os.environ.get("VIGIL_TRACEBACK"):
        traceback.print_exception(exc)
    err.print(f"[bold red]error:[/] {escape(describe(exc))}")
    raise typer.Exit(code)


def check_port(port: int | None, option: str) -> None:
    """A port option must be in [0, 65535] (0: any free port); else one ``error:`` line naming the option."""
    from vigil.errors import ConfigError

    if port is not None and not 0 <= port <= 65535:
        fail(ConfigError("must be a port number in [0, 65535] (0: any free port)", field=option, value=port))


def check_port_free(port: int, option: str, host: str = "127.0.0.1") -> None:
    """A port the user chose must be free now (SO_REUSEADDR, as the servers bind); else one ``error:`` line."""
    import socket

    from vigil.errors import ConfigError

    if port == 0:
        return
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        fail(ConfigError(f"is not free on {host} ({exc.strerror or exc})", field=option, value=port,
                         hint="pick another one, or 0 for any free port"))  # fmt: skip
    finally:
        sock.close()


def _plain(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [_plain(v) for v in obj]
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy scalars and arrays
        return _plain(obj.tolist())
    if isinstance(obj, bytes | bytearray):  # e.g. a model's ONNX bytes among detector params
        return f"<{len(obj):,} bytes>"
    return obj


def strict_json(obj: Any, *, indent: int | None = None, sort_keys: bool = False) -> str:
    """``obj`` as strict JSON (RFC 8259), what every ``--json`` prints: NaN and infinities become ``null``.

    Python's ``json`` writes a bare ``NaN`` that no strict parser (``jq``, browsers, Go) reads; numpy scalars
    and arrays become numbers and lists; anything else unknown its text.

    Examples:
        >>> import numpy as np
        >>> strict_json({"p99": float("nan"), "n": np.int64(3), "r": [np.float64("inf"), 0.5]})
        '{"p99": null, "n": 3, "r": [null, 0.5]}'
    """
    return json.dumps(_plain(obj), indent=indent, sort_keys=sort_keys, allow_nan=False, default=str)


def check_output_file(path: str | os.PathLike[str], option: str) -> None:
    """An output file named by ``option`` can be written: its folder exists (none is made) and it isn't a folder.

    Raises:
        ConfigError: naming the option, the path and what is wrong.
    """
    from pathlib import Path

    from vigil.errors import ConfigError

    p = Path(path)
    if p.is_dir():
        raise ConfigError("is a folder; name a file", field=option, value=os.fspath(path))
    folder = p.absolute().parent
    if not folder.is_dir():
        raise ConfigError(f"is in a folder that does not exist ({folder})", field=option, value=os.fspath(path),
                          hint="create the folder first")  # fmt: skip
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise ConfigError(f"can't be written (no permission in {folder})", field=option, value=os.fspath(path))


def shown(value: Any) -> str:
    r"""Data (a key, a label, a note) for a rich table or line: hidden characters visible, markup escaped.

    Examples:
        >>> shown("u1\u202e[red]x")
        'u1<U+202E>\\[red]x'
    """
    from vigil.io.display import visible

    return escape(visible("" if value is None else value))

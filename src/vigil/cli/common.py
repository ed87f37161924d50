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

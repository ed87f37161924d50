"""What every ``vigil`` command shares: the error console and the one way to fail."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape

err = Console(stderr=True, highlight=False, soft_wrap=True)
"""Messages for people (progress, errors) go to stderr; results (tables, ``--json``) to stdout."""


def fail(exc: Exception, code: int = 2) -> NoReturn:
    """Print one ``error:`` line and exit with ``code`` (2: bad input or config, 1: the work failed)."""
    err.print(f"[bold red]error:[/] {escape(str(exc))}")
    raise typer.Exit(code)

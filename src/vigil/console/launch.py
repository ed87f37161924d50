"""Start the console next to a running pipeline or alone: the token, the server thread, and what to tell people."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape


def start_console(*, store: Any, manager: Any = None, runner: Any = None, recorder: Any = None,
                  pipeline_name: str, host: str = "127.0.0.1", port: int = 8765,
                  state_dir: str | Path | None = None, console: Console | None = None, incidents: Any = None,
                  remediation: Any = None, approve: Any = None) -> tuple[Any, str]:  # fmt: skip
    """Load (or make) the token, serve the console from a daemon thread and say where: ``(handle, url)``.

    A token made now is printed once, with the link that signs the browser in; later starts only say which file
    holds it. ``handle.stop()`` ends the server. ``incidents``, ``remediation`` and ``approve`` feed the incident
    pages (see :func:`~vigil.console.app.create_app`).

    Raises:
        ConfigError: the state folder or the address is unusable.
    """
    from vigil.console.app import create_app
    from vigil.console.auth import default_state_dir, load_or_create_token
    from vigil.console.server import is_loopback, serve_console

    err = console or Console(stderr=True, highlight=False, soft_wrap=True)
    token, created, token_path = load_or_create_token(state_dir if state_dir is not None else default_state_dir())
    app = create_app(store=store, manager=manager, runner=runner, recorder=recorder, token=token,
                     pipeline_name=pipeline_name, incidents=incidents, remediation=remediation,
                     approve=approve)  # fmt: skip
    handle, url = serve_console(app, host, port)
    what = "live pipeline" if runner is not None else "no pipeline attached"
    err.print(f"console: [b]{escape(url)}[/] (alert store {escape(str(store.path))}, {what})")
    for label, st in (("incidents", incidents), ("playbook runs", remediation)):
        if st is not None:
            err.print(f"  {label}: {escape(str(st.path))}")
    if created:
        err.print(f"new access token, shown this once (kept in {escape(str(token_path))}, mode 0600):")
        err.print(f"  [b]{escape(token)}[/]")
        err.print(f"sign in: {escape(url)}?token={escape(token)}")
    else:
        err.print(f"access token: in {escape(str(token_path))}; sign in with {escape(url)}?token=<that token>, "
                  "API clients send `Authorization: Bearer <token>`")  # fmt: skip
    if not is_loopback(host):
        err.print(f"[yellow]warning[/]: listening on {escape(host)}, not only this machine; the token guards every "
                  "page, but the traffic is plain HTTP: put a TLS proxy in front of it")  # fmt: skip
    return handle, url

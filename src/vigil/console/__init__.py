"""The web console: a token-guarded FastAPI app with a hand-written single page (no build step, no CDN).

- :class:`~vigil.console.recorder.StreamRecorder`: a runner tap keeping recent points per key, for the charts.
- :func:`~vigil.console.app.create_app`: the app over an alert store (and optionally a live manager and runner).
- :func:`~vigil.console.server.serve_console`: uvicorn in a daemon thread; returns the handle and the URL.
- :mod:`vigil.console.auth`: the token file, the cookie and the security middleware.

The app and server modules are imported on first use, so a pipeline that only records pays no FastAPI import.
"""

from __future__ import annotations

from typing import Any

from vigil.console.recorder import StreamRecorder

__all__ = ["StreamRecorder", "create_app", "serve_console"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from vigil.console.app import create_app

        return create_app
    if name == "serve_console":
        from vigil.console.server import serve_console

        return serve_console
    raise AttributeError(f"module 'vigil.console' has no attribute {name!r}")

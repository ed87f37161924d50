"""Serve the console with uvicorn in a daemon thread, next to a running pipeline or alone.

Examples:
    >>> import tempfile, urllib.request, urllib.error
    >>> from vigil.alerting.store import AlertStore
    >>> from vigil.console.app import create_app
    >>> store = AlertStore(tempfile.mkdtemp() + "/alerts.db")
    >>> handle, url = serve_console(create_app(store=store, token="t0ken", pipeline_name="demo"))
    >>> url.startswith("http://127.0.0.1:")
    True
    >>> req = urllib.request.Request(url + "api/health", headers={"Authorization": "Bearer t0ken"})
    >>> with urllib.request.urlopen(req) as r:
    ...     r.status
    200
    >>> try:
    ...     urllib.request.urlopen(url + "api/health")
    ... except urllib.error.HTTPError as e:
    ...     e.code
    401
    >>> handle.stop()
"""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from typing import Any

import uvicorn

from vigil.errors import ConfigError


class ConsoleServer:
    """A running console: its ``url``, ``host`` and ``port``; :meth:`stop` shuts it down."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, sock: socket.socket, host: str,
                 port: int) -> None:  # fmt: skip
        self.server, self.thread, self._sock = server, thread, sock
        self.host, self.port = host, port
        self.url = f"http://{_url_host(host)}:{port}/"

    @property
    def running(self) -> bool:
        """Whether the server thread is still serving."""
        return self.thread.is_alive()

    def wait(self) -> None:
        """Block until the server stops (a Ctrl-C in the main thread interrupts the wait)."""
        while self.thread.is_alive():
            self.thread.join(0.5)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop serving and wait for the server thread (idempotent)."""
        self.server.should_exit = True
        self.thread.join(timeout_s)
        try:
            self._sock.close()
        except OSError:
            pass


def serve_console(app: Any, host: str = "127.0.0.1", port: int = 0, *, ready_timeout_s: float = 30.0
                  ) -> tuple[ConsoleServer, str]:  # fmt: skip
    """Serve ``app`` on ``host:port`` (``port=0``: any free port) from a daemon thread.

    Returns once the server accepts connections: ``(handle, url)``, the URL ending in ``/``.

    Raises:
        ConfigError: the address can't be bound (port taken, unknown host), naming the field and value.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio turns Nagle's algorithm off only on connections whose socket says it is TCP;
    # with it on, every response (headers, then body) waited ~40 ms for the client's delayed ACK
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        field, value = ("--port", port) if port and exc.errno in (98, 48, 10048) else ("--host", host)
        raise ConfigError(f"can't listen on {host}:{port} ({exc.strerror or exc})", field=field, value=value,
                          hint="pick another --port (0 for any free one)" if field == "--port" else None,
                          ) from exc  # fmt: skip
    sock.listen(128)
    bound = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", server_header=False,
                            timeout_graceful_shutdown=2)  # fmt: skip
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=f"vigil-console-{bound}",
                              daemon=True)  # fmt: skip
    thread.start()
    deadline = time.monotonic() + ready_timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            sock.close()
            raise ConfigError("the console server did not start", field="--port", value=bound)
        time.sleep(0.01)
    handle = ConsoleServer(server, thread, sock, host, bound)
    return handle, handle.url


def is_loopback(host: str) -> bool:
    """Whether ``host`` only listens on this machine.

    Examples:
        >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1"), is_loopback("0.0.0.0")
        (True, True, True, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host

"""The real programs integration tests drive (Debian packages) and free local ports.

Tests talk to real Prometheus, Alertmanager, node_exporter and Chromium, never fakes of them.
``make test`` installs the missing ones first (``deploy/system-deps.sh``); when a test runs on its own,
:func:`debian_program` installs the package itself, or fails saying what to install.
"""

from __future__ import annotations

import contextlib
import http.server
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def debian_program(path: str, package: str, timeout_s: float = 900) -> str:
    """``path`` once the Debian ``package`` providing it is installed (apt-get, as root); fails the test if it can't.

    Raises:
        pytest's Failed: no apt-get here, or the install failed (with apt's output).
    """
    import pytest

    if os.access(path, os.X_OK):
        return path
    if shutil.which("apt-get") is None:
        pytest.fail(f"{path} is missing and apt-get is unavailable: install the Debian package `{package}` "
                    f"(apt-get install -y --no-install-recommends {package})")  # fmt: skip
    cmd = ["apt-get", "install", "-y", "--no-install-recommends", package]
    env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    if subprocess.run(cmd, capture_output=True, env=env, timeout=timeout_s).returncode != 0:
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=timeout_s)
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        if proc.returncode != 0:
            pytest.fail(f"apt-get install {package} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return path


@contextlib.contextmanager
def serve_http(handler: type[http.server.BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on 127.0.0.1 (a free port) from a thread; yields ``http://127.0.0.1:PORT``."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(10)

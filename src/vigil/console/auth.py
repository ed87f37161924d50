"""The console's access token: made once, kept in a 0600 file, compared in constant time.

Anyone who can reach the console's port could otherwise read alerts and silence them, so every request needs
the token: API calls as ``Authorization: Bearer <token>``, the browser as a cookie set when the page is first
opened with ``?token=<token>``. The cookie holds a value derived from the token (an HMAC), not the token itself,
is ``HttpOnly`` (page scripts can't read it) and ``SameSite=Strict`` (other sites can't make the browser send it).
:class:`ConsoleGuard`, the ASGI middleware in front of the whole app, enforces all of it, adds the security
headers (a strict Content-Security-Policy among them) and refuses request bodies over 64 KiB.

Examples:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> token, created, path = load_or_create_token(d)
    >>> created, path.name, oct(path.stat().st_mode & 0o777)
    (True, 'console-token', '0o600')
    >>> load_or_create_token(d)[:2] == (token, False)
    True
    >>> token_matches(token, token), token_matches("nope", token), token_matches(None, token)
    (True, False, False)
    >>> cookie_matches(cookie_value(token), token)
    True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from http.cookies import CookieError, SimpleCookie
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from vigil.errors import ConfigError

log = logging.getLogger("vigil.console")
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

TOKEN_FILE = "console-token"
COOKIE_NAME = "vigil_console"
DEFAULT_STATE_DIR = Path("~/.vigil")
MAX_TOKEN_CHARS = 512
MAX_BODY_BYTES = 64 * 1024
COOKIE_MAX_AGE_S = 14 * 24 * 3600
SECURITY_HEADERS = (
    ("content-security-policy", "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                                "frame-ancestors 'none'; form-action 'self'"),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
)  # fmt: skip
CSRF_HEADER = "x-vigil-console"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_UNAUTHORIZED_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Vigil console: not signed in</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"><link rel="icon" href="/static/favicon.svg"></head>
<body class="unauthorized"><main class="card narrow"><h1>Not signed in</h1>
<p>This Vigil console needs its access token. Open the link that <code>vigil console</code> printed when the token
was made (it ends in <code>?token=...</code>), or append <code>?token=</code> and the token from the
<code>console-token</code> file in Vigil's state directory (by default <code>~/.vigil</code>).</p>
<p>API clients send the header <code>Authorization: Bearer &lt;token&gt;</code>.</p></main></body></html>
"""


def default_state_dir() -> Path:
    """``$VIGIL_STATE_DIR`` if set, else ``~/.vigil``."""
    env = os.environ.get("VIGIL_STATE_DIR")
    return Path(env).expanduser() if env else DEFAULT_STATE_DIR.expanduser()


def load_or_create_token(state_dir: str | os.PathLike[str]) -> tuple[str, bool, Path]:
    """The console token in ``<state_dir>/console-token``, made if missing: ``(token, created, path)``.

    A new token is ``secrets.token_urlsafe(32)`` written to a file created with mode 0600 (in a folder created
    with mode 0700); a file that others can read is tightened to 0600.

    Raises:
        ConfigError: the file can't be read or written, or holds no token.
    """
    folder = Path(state_dir).expanduser()
    path = folder / TOKEN_FILE
    try:
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        token = secrets.token_urlsafe(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_token(path), False, path
    except OSError as exc:
        raise ConfigError(f"can't create the console token file ({exc})", field="--state-dir", value=str(folder),
                          hint="pass a writable folder with --state-dir") from exc  # fmt: skip
    with os.fdopen(fd, "w", encoding="ascii") as fh:
        fh.write(token + "\n")
    return token, True, path


def _read_token(path: Path) -> str:
    try:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        token = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"can't read the console token ({exc})", field="console-token", value=str(path),
                          hint="delete the file: a new token is made at the next start") from exc  # fmt: skip
    if not token or len(token) > MAX_TOKEN_CHARS or any(c.isspace() for c in token):
        raise ConfigError("holds no valid token", field="console-token", value=str(path),
                          hint="delete the file: a new token is made at the next start")  # fmt: skip
    return token


def token_matches(given: str | None, token: str) -> bool:
    """Whether ``given`` is the token, in time independent of where they differ."""
    if not given or len(given) > MAX_TOKEN_CHARS:
        return False
    return hmac.compare_digest(given.encode("utf-8", "replace"), token.encode("utf-8"))


def bearer(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or ``None``.

    Examples:
        >>> bearer("Bearer abc"), bearer("bearer  abc "), bearer("Basic abc"), bearer(None)
        ('abc', 'abc', None, None)
    """
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


def cookie_value(token: str) -> str:
    """The session cookie's value: an HMAC of the token (the token itself never sits in the cookie jar)."""
    return hmac.new(token.encode("utf-8"), b"vigil-console-session-v1", hashlib.sha256).hexdigest()


def cookie_matches(given: str | None, token: str) -> bool:
    """Whether a cookie value was made from the token (constant-time)."""
    if not given or len(given) > 128:
        return False
    return hmac.compare_digest(given.encode("ascii", "replace"), cookie_value(token).encode("ascii"))


class ConsoleGuard:
    """ASGI middleware in front of the whole console: security headers, the token check and the body-size limit.

    - Every response gets :data:`SECURITY_HEADERS` (a strict Content-Security-Policy: no inline script at all),
      and ``Cache-Control: no-store`` outside ``/static/``.
    - ``/static/`` (the page's own CSS and JS, the same for every install) is public; so is nothing else.
    - ``GET /?token=<token>`` sets the session cookie and redirects to ``/`` (so the token leaves the address
      bar); a wrong token gets the 401 page.
    - Everything else needs ``Authorization: Bearer <token>`` or the session cookie; without, a 401 JSON error
      under ``/api/``, else the 401 page. A state-changing request authenticated by the cookie alone must also
      carry ``X-Vigil-Console: 1``, which a cross-site form can't send (defence in depth on top of SameSite).
    - A request body over ``max_body_bytes`` is refused with 413, whether announced by ``Content-Length`` or
      streamed; the body is read before the app runs, so the app never sees more than the limit.
    - An unexpected error is logged and answered as a JSON 500 (still with the security headers).
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], *, token: str,
                 max_body_bytes: int = MAX_BODY_BYTES) -> None:  # fmt: skip
        self.app, self.token, self.max_body_bytes = app, token, max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection (HTTP requests are checked; lifespan and the rest pass through)."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        public = path.startswith("/static/")
        send = _with_headers(send, no_store=not public)
        if public:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        api = path.startswith("/api/")
        if path == "/" and method in ("GET", "HEAD"):
            given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token")
            if given is not None:
                if token_matches(given[-1], self.token):
                    secure = "; Secure" if scope.get("scheme") == "https" else ""
                    cookie = (f"{COOKIE_NAME}={cookie_value(self.token)}; Path=/; Max-Age={COOKIE_MAX_AGE_S}; "
                              f"HttpOnly; SameSite=Strict{secure}")  # fmt: skip
                    await _respond(send, 303, b"", "text/plain", [("location", "/"), ("set-cookie", cookie)])
                else:
                    await self._unauthorized(send, api=False, why="the token in the link is not this console's")
                return
        by_bearer = token_matches(bearer(headers.get("authorization")), self.token)
        if not by_bearer and not cookie_matches(_cookie(headers.get("cookie")), self.token):
            why = "a wrong token" if headers.get("authorization") else "no token"
            await self._unauthorized(send, api=api, why=f"{why} (send `Authorization: Bearer <token>`)")
            return
        if not by_bearer and method in _UNSAFE and headers.get(CSRF_HEADER) != "1":
            await _error(send, 403, "a change made with the session cookie needs the header X-Vigil-Console: 1",
                         CSRF_HEADER, headers.get(CSRF_HEADER))  # fmt: skip
            return
        length = headers.get("content-length")
        if length is not None and (not length.strip().isdigit() or int(length) > self.max_body_bytes):
            await _error(send, 413, f"request body too large (at most {self.max_body_bytes} bytes)",
                         "Content-Length", length)  # fmt: skip
            return
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                return  # the client went away
            size += len(msg.get("body", b""))
            if size > self.max_body_bytes:
                await _error(send, 413, f"request body too large (at most {self.max_body_bytes} bytes)", "body",
                             f">{self.max_body_bytes} bytes")  # fmt: skip
                return
            chunks.append(msg.get("body", b""))
            if not msg.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, replay, tracked)
        except Exception:
            if started:
                raise
            log.exception("console: %s %s failed", method, path)  # a bug: answered as JSON, with the headers
            await _error(send, 500, "internal error (the console's log has the details)", None, None)

    async def _unauthorized(self, send: Send, *, api: bool, why: str) -> None:
        extra = [("www-authenticate", 'Bearer realm="vigil-console"')]
        if api:
            await _error(send, 401, f"unauthorized: {why}", "Authorization", None, extra)
        else:
            await _respond(send, 401, _UNAUTHORIZED_PAGE.encode(), "text/html; charset=utf-8", extra)


def _cookie(header: str | None) -> str | None:
    if not header:
        return None
    try:
        jar = SimpleCookie(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel is not None else None


def _with_headers(send: Send, *, no_store: bool) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            have = {k.lower() for k, _ in headers}
            add = [*SECURITY_HEADERS, *([("cache-control", "no-store")] if no_store else [])]
            headers += [(k.encode(), v.encode()) for k, v in add if k.encode() not in have]
            message["headers"] = headers
        await send(message)

    return wrapped


async def _respond(send: Send, status: int, body: bytes, content_type: str,
                   headers: list[tuple[str, str]] | None = None) -> None:  # fmt: skip
    raw = [(b"content-type", content_type.encode()), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode(), v.encode("latin-1")) for k, v in headers or []]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, status: int, error: str, field: str | None, value: Any,
                 headers: list[tuple[str, str]] | None = None) -> None:  # fmt: skip
    body = json.dumps({"error": error, "field": field, "value": value}).encode()
    await _respond(send, status, body, "application/json", headers)

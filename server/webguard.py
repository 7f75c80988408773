"""Browser-side defences, as one pure ASGI middleware (the outermost one of the app).

A page on another site can make a browser send requests to this server: an HTML form posts
``application/x-www-form-urlencoded``, ``multipart/form-data`` or ``text/plain``; a ``no-cors``
``fetch`` the same, or no body at all; an ``<iframe>`` shows the dashboard under someone
else's page; a DNS name the attacker controls can be pointed at 127.0.0.1 ("DNS rebinding")
so that their page is same-origin with this server. None of that needs a login to hurt an
open (no accounts) server on a laptop. So, for every request, before anything else runs:

- ``Host`` must be one of ``RUNYARD_ALLOWED_HOSTS`` (default: the bind address, ``localhost``,
  ``127.0.0.1``, ``::1``, the hosts of ``RUNYARD_PUBLIC_URL`` and ``RUNYARD_URL``, and the
  machine's host names when bound to every address; ``*``: any): else 400. This defeats DNS
  rebinding, whose requests name the attacker's host.
- A state-changing request (POST, PUT, PATCH, DELETE) with an ``Origin`` must come from this
  server's own origin (its ``Host``, or ``RUNYARD_PUBLIC_URL``); ``Origin: null`` and
  ``Sec-Fetch-Site: cross-site`` are refused: 403 (``server.auth.check_same_origin``).
- POST, PUT and PATCH need ``Content-Type: application/json``, also without a body (415):
  no form and no ``no-cors`` fetch can send that type without a CORS preflight, which this
  server never grants. The raw upload routes (:data:`UPLOAD_ROUTES`) take
  ``application/octet-stream`` instead (a code snapshot also ``application/gzip``), or no
  ``Content-Type`` (``curl -T``): a browser cannot send a PUT cross-origin without a
  preflight whatever it carries. DELETE has no body; any ``Content-Type`` it carries must be
  JSON.
- Every answer (HTML, JavaScript, JSON, errors) carries a Content-Security-Policy without
  inline script, ``frame-ancestors 'none'`` and ``X-Frame-Options: DENY`` (no framing),
  ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: same-origin`` and same-origin
  opener/resource policies. FastAPI's own ``/docs`` and ``/redoc`` pages load Swagger UI /
  ReDoc from their CDN and start it with an inline script: they get a policy of their own that
  allows that CDN and exactly their inline scripts, by hash.

:class:`DashboardFiles` serves ``webui/``: only the dashboard's own files (``index.html``,
``css/*.css``, ``js/**/*.js``, ``img/*``), never ``__init__.py``, ``__pycache__`` or anything
else that happens to lie in the folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.staticfiles import StaticFiles

from server.errors import ApiError, error_body

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})
NEEDS_BODY_TYPE = frozenset({"POST", "PUT", "PATCH"})
JSON = "application/json"
OCTET = "application/octet-stream"

# PUT routes whose body is raw bytes, and the types each takes (searched at the path's end: a
# deployment under a root path keeps them).
UPLOAD_ROUTES: tuple[tuple[re.Pattern[str], frozenset[str]], ...] = (
    (re.compile(r"/api/v1/runs/[^/]+/checkpoints/upload$"), frozenset({OCTET})),
    (re.compile(r"/api/v1/uploads/[^/]+$"), frozenset({OCTET})),
    (re.compile(r"/api/v1/snapshots/[^/]+$"), frozenset({OCTET, "application/gzip", "application/x-gzip"})),
)

CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; "
       "font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "form-action 'self'; frame-ancestors 'none'")
# Swagger UI (/docs) and ReDoc (/redoc), served from this server's own files (server/static.py),
# and their inline start-up scripts by hash ({scripts}).
DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_CSP = ("default-src 'self'; script-src 'self' {scripts}; style-src 'self' 'unsafe-inline'; "
            "img-src 'self' data: blob:; font-src 'self' data:; connect-src 'self'; "
            "worker-src 'self' blob:; object-src 'none'; base-uri 'none'; form-action 'self'; "
            "frame-ancestors 'none'")
INLINE_SCRIPT = re.compile(rb"<script(?![^>]*\bsrc=)[^>]*>(.*?)</script>", re.S | re.I)
HEADERS = (
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)
UNEXPECTED = ("The server hit an unexpected error; it is logged. Retry, or report it with the server log.")


def host_name(value: str) -> str:
    """The host of a ``Host`` header, without port, brackets or a final dot, lower case."""
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value[1:]
    if value.count(":") == 1:
        value = value.split(":", 1)[0]
    return value.rstrip(".")


def _url_host(url: str) -> str:
    try:
        return host_name(urlsplit(url).hostname or "") if url else ""
    except ValueError:
        return ""


def allowed_hosts(settings: Any) -> frozenset[str] | None:
    """The host names ``Host`` may carry, or None for any (``RUNYARD_ALLOWED_HOSTS=*``).

    An entry ``*.example.org`` (or ``.example.org``) also allows every name under example.org."""
    configured = [h.strip() for h in (settings.allowed_hosts or "").split(",") if h.strip()]
    if "*" in configured:
        return None
    if configured:
        return frozenset(host_name(h) if not h.startswith(("*.", ".")) else "." + h.lstrip("*.").lower()
                         for h in configured)
    hosts = {host_name(settings.host), "localhost", "127.0.0.1", "::1",
             _url_host(settings.public_url), _url_host(settings.url)}
    if host_name(settings.host) in ("0.0.0.0", "::", ""):  # every address: the machine's own names too
        try:
            hosts.add(host_name(socket.gethostname()))
            hosts.add(host_name(socket.getfqdn()))
        except OSError:  # pragma: no cover - no host name
            pass
    return frozenset(h for h in hosts if h)


def host_allowed(host: str, allowed: frozenset[str] | None) -> bool:
    if allowed is None:
        return True
    name = host_name(host)
    if name in allowed:
        return True
    return any(entry.startswith(".") and (name.endswith(entry) or name == entry[1:]) for entry in allowed)


def media_type(value: str | None) -> str | None:
    if value is None:
        return None
    return value.split(";", 1)[0].strip().lower()


def upload_types(method: str, path: str) -> frozenset[str] | None:
    """The body types a raw upload route takes, or None for a JSON route."""
    if method != "PUT":
        return None
    for pattern, types in UPLOAD_ROUTES:
        if pattern.search(path):
            return types
    return None


def check_content_type(method: str, path: str, content_type: str | None) -> None:
    """415 unless a state-changing request carries the body type its route takes."""
    kind = media_type(content_type)
    got = f"Content-Type: {content_type[:100]}" if content_type is not None else "no Content-Type"
    uploads = upload_types(method, path)
    if uploads is not None:
        if kind is not None and kind not in uploads:
            raise ApiError(415, f"{method} {path} takes the file's bytes as Content-Type: {OCTET} (it came with "
                                f"{got}).", "content-type")
        return
    if method in NEEDS_BODY_TYPE:
        if kind != JSON:
            raise ApiError(415, f"{method} {path} needs Content-Type: {JSON}, also without a body (it came with "
                                f"{got}): forms and other sites' pages cannot send that type.", "content-type")
    elif kind is not None and kind != JSON:  # DELETE: no body; if a type is named, JSON
        raise ApiError(415, f"{method} {path} takes no body; send no Content-Type or {JSON} (it came with "
                            f"{got}).", "content-type")


def _security_headers(raw: list[tuple[bytes, bytes]], csp: str) -> list[tuple[bytes, bytes]]:
    have = {k.lower() for k, _ in raw}
    out = list(raw)
    if b"content-security-policy" not in have:
        out.append((b"content-security-policy", csp.encode()))
    for name, value in HEADERS:
        if name not in have:
            out.append((name, value))
    return out


def docs_csp(body: bytes) -> str:
    hashes = " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(m).digest()).decode()}'"
                      for m in INLINE_SCRIPT.findall(body))
    return DOCS_CSP.format(scripts=hashes).replace("  ", " ")


class WebGuard:
    """The middleware: ``app.add_middleware(WebGuard, settings=settings)``, added last (outermost)."""

    def __init__(self, app: ASGIApp, settings: Any) -> None:
        self.app = app
        self.settings = settings
        self.allowed = allowed_hosts(settings)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        path = scope.get("path", "")
        try:
            self.check(request)
        except ApiError as exc:
            await self._refuse(exc, scope, receive, send)
            return
        if path in DOCS_PATHS:
            await self._docs(scope, receive, send)
            return
        started = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = _security_headers(list(message.get("headers", [])), CSP)
            await send(message)

        try:
            await self.app(scope, receive, guarded_send)
        except Exception:
            # The error handler answers outside this middleware (Starlette's ServerErrorMiddleware):
            # answer here, with the headers, and let it log the error.
            if not started:
                body = json.dumps(error_body(UNEXPECTED)).encode()
                await send({"type": "http.response.start", "status": 500, "headers": _security_headers(
                    [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())], CSP)})
                await send({"type": "http.response.body", "body": body})
            raise

    def check(self, request: Request) -> None:
        """Raise the ApiError that refuses ``request``, if any."""
        from server.auth import check_same_origin

        host = request.headers.get("host")
        if host is not None and not host_allowed(host, self.allowed):
            raise ApiError(400, f"The Host {(host_name(host) or host)[:100]!r} is not one this server answers to; add it to "
                                "RUNYARD_ALLOWED_HOSTS (comma separated, '*' for any) if it is really this server.",
                           "host")
        method = request.method.upper()
        if method in CHANGING:
            check_same_origin(request, public_url=self.settings.public_url)
            check_content_type(method, request.url.path, request.headers.get("content-type"))

    async def _refuse(self, exc: ApiError, scope: Scope, receive: Receive, send: Send) -> None:
        response = Response(json.dumps(error_body(exc.message, exc.field)), status_code=exc.status_code,
                            media_type="application/json")
        response.raw_headers[:] = _security_headers(response.raw_headers, CSP)
        await response(scope, receive, send)

    async def _docs(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's docs pages are small: hold the answer to hash its inline scripts."""
        start: Message | None = None
        chunks: list[bytes] = []

        async def hold(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            if message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
                if message.get("more_body"):
                    return
                body = b"".join(chunks)
                assert start is not None
                headers = list(start.get("headers", []))
                if scope.get("method") != "HEAD":  # a HEAD answer keeps the GET's length
                    headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
                    headers.append((b"content-length", str(len(body)).encode()))
                await send({**start, "headers": _security_headers(headers, docs_csp(body))})
                await send({"type": "http.response.body", "body": body})
                return
            await send(message)

        await self.app(scope, receive, hold)


# --------------------------------------------------------------------------- the dashboard's files

DASHBOARD_FILE = re.compile(r"^(?:index\.html|css/[A-Za-z0-9_.-]+\.css|js/(?:[A-Za-z0-9_-]+/)*[A-Za-z0-9_.-]+\.js"
                            r"|vendor/[A-Za-z0-9_.-]+\.js"
                            r"|img/[A-Za-z0-9_.-]+\.(?:svg|png|ico|webp))$")


def dashboard_file(path: str) -> str | None:
    """The file under webui/ that URL path ``path`` names, if it is one the dashboard uses."""
    rel = path.lstrip("/")
    if rel in ("", ".", "index.html"):
        return "index.html"
    if "__pycache__" in rel.split("/") or any(part.startswith(".") for part in rel.split("/")):
        return None
    return rel if DASHBOARD_FILE.match(rel) else None


class DashboardFiles(StaticFiles):
    """StaticFiles limited to :func:`dashboard_file`: anything else under webui/ is a 404."""

    def get_path(self, scope: Scope) -> str:
        return super().get_path(scope).replace("\\", "/").replace(os.sep, "/")

    async def get_response(self, path: str, scope: Scope) -> Response:
        if scope["method"] not in ("GET", "HEAD"):
            raise HTTPException(status_code=405, headers={"Allow": "GET, HEAD"})
        name = dashboard_file(path)
        if name is None:
            raise HTTPException(status_code=404)
        from server.static import dashboard_response  # compressed once, ETag (issue 14 point 7)

        answer = dashboard_response(Request(scope), Path(str(self.directory)), name)
        if answer is None:
            raise HTTPException(status_code=404)
        return answer

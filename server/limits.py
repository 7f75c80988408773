"""Bounded requests (issue 11, docs/security.md "Request limits"): a pure ASGI middleware.

Every request body but the upload routes' is counted while it streams in, whatever its
``Content-Length`` says (a chunked body counts too), against the limit of its kind:

==============================  ======================================
``POST /api/v1/runs/{id}/metrics``  ``RUNYARD_MAX_METRICS_BODY_BYTES`` (64 MiB)
``POST /api/v1/runs/{id}/logs``     ``RUNYARD_MAX_LOGS_BODY_BYTES`` (8 MiB)
every other request                 ``RUNYARD_MAX_BODY_BYTES`` (1 MiB)
==============================  ======================================

(``PUT /runs/{id}/environment`` and ``/code-schema`` keep their documented 2 MiB and 4 MiB, which
server/api/code.py enforces with its own 413, when ``RUNYARD_MAX_BODY_BYTES`` is smaller.)

Over it: 413 naming the limit and the setting, before anything is read when ``Content-Length``
declares it, else as soon as the count passes it (the route never runs, nothing is stored).
The upload routes (``PUT /api/v1/runs/{id}/checkpoints/upload``, ``PUT /api/v1/uploads/{id}``,
``PUT /api/v1/snapshots/{sha256}``) stream to disk under their own limits and pass untouched.

A body that has been read whole is then checked as JSON before any parser sees it: nesting at
most ``RUNYARD_MAX_JSON_DEPTH`` deep, at most ``RUNYARD_MAX_JSON_ITEMS`` values and keys, and no
NUL character in any string (PostgreSQL cannot store one; both backends answer the same 422 naming
the field). In a log batch a NUL is replaced by U+FFFD instead, so a program's output is kept.
A NUL in the path or the query string is a 422 as well. The checks work on the bytes (counts by
``bytes.count``, strings taken out by a numpy parity scan of the quotes, or a regex when a string
holds an escaped quote), so a refused document is never built.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from server.settings import Settings

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

UPLOAD_ROUTES = re.compile(r"/api/v1/(?:runs/[^/]+/checkpoints/upload|uploads/[^/]+|snapshots/[^/]+)/?")
METRICS_ROUTE = re.compile(r"/api/v1/runs/[^/]+/metrics/?")
LOGS_ROUTE = re.compile(r"/api/v1/runs/[^/]+/logs/?")

# A JSON string (escapes included), to blank out before counting structure.
JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# \u0000 in a JSON text, not preceded by an escaped backslash.
JSON_NUL = re.compile(rb"(?<!\\)((?:\\\\)*)\\u0000")
NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
EMPTY_PAIR = re.compile(rb"\[\]|\{\}")
DRAIN_BYTES = 64 * 2**20  # read at most this much more of a refused body, so the client sees the 413
DRAIN_SECONDS = 2.0


class Limit:
    """One kind of request: its body limit (a setting, or at least ``own`` bytes for a route
    that documents a larger limit of its own) and what the 413 says."""

    def __init__(self, setting: str, what: str, own: int = 0) -> None:
        self.setting, self.what, self.own = setting, what, own

    @property
    def env(self) -> str:
        return f"RUNYARD_{self.setting.upper()}"

    def allowed(self, settings: Settings) -> int:
        return max(getattr(settings, self.setting), self.own)


BODY = Limit("max_body_bytes", "a request body")
METRICS = Limit("max_metrics_body_bytes", "a metrics batch")
LOGS = Limit("max_logs_body_bytes", "a log batch")
# Routes whose own, larger limit is documented (server/api/code.py answers its own 413 below it).
ENVIRONMENT_ROUTE = re.compile(r"/api/v1/runs/[^/]+/environment/?")
CODE_SCHEMA_ROUTE = re.compile(r"/api/v1/runs/[^/]+/code-schema/?")
ENVIRONMENT = Limit("max_body_bytes", "an environment record", own=2 * 2**20 + 2**16)
CODE_SCHEMA = Limit("max_body_bytes", "a code schema", own=4 * 2**20 + 2**16)


def limit_of(method: str, path: str) -> Limit | None:
    """The limit a request's body is held to; None for the upload routes (their own limits)."""
    if method == "PUT" and UPLOAD_ROUTES.fullmatch(path):
        return None
    if method == "PUT" and ENVIRONMENT_ROUTE.fullmatch(path):
        return ENVIRONMENT
    if method == "PUT" and CODE_SCHEMA_ROUTE.fullmatch(path):
        return CODE_SCHEMA
    if method == "POST" and METRICS_ROUTE.fullmatch(path):
        return METRICS
    if method == "POST" and LOGS_ROUTE.fullmatch(path):
        return LOGS
    return BODY


def _size(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale and n % scale == 0:
            return f"{n // scale} {unit}"
    return f"{n} bytes"


class Refusal(Exception):
    def __init__(self, status: int, message: str, field: str) -> None:
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def json_structure(body: bytes, max_depth: int, max_items: int) -> None:
    """Raise :class:`Refusal` (422) when ``body``, read as JSON, nests deeper than ``max_depth``
    or holds more than ``max_items`` values and keys. Counts are over-estimates by at most one
    per empty array/object; text that is not JSON is left to the route's parser."""
    opens = body.count(b"[") + body.count(b"{")
    rough_items = body.count(b",") + body.count(b":") + opens + 1
    if rough_items <= max_items and opens <= max_depth:
        return  # strings can only add to these counts: nothing to look at closer
    structure = _without_strings(body)
    items = structure.count(b",") + structure.count(b":") + structure.count(b"[") + structure.count(b"{") + 1
    if items > max_items:
        raise Refusal(422, f"The JSON body holds about {items} values and keys; at most {max_items} are accepted "
                           "(RUNYARD_MAX_JSON_ITEMS). Send less per request.", "max_json_items")
    brackets = structure.translate(None, NOT_BRACKETS)
    # Each pass drops the pairs that are empty: the deepest nesting loses one level per pass.
    depth = 0
    while brackets and depth < max_depth:
        shorter = EMPTY_PAIR.sub(b"", brackets)
        if len(shorter) == len(brackets):
            break  # unbalanced (not JSON): count what is left, a parser could still recurse on it
        brackets = shorter
        depth += 1
    for c in brackets:  # at most max_items brackets
        depth = depth + 1 if c in (91, 123) else depth - 1  # [ {
        if depth > max_depth:
            raise Refusal(422, f"The JSON body nests arrays/objects deeper than {max_depth} levels "
                               "(RUNYARD_MAX_JSON_DEPTH); flatten it.", "max_json_depth")


def _without_strings(body: bytes) -> bytes:
    """``body`` with the text of its JSON strings taken out (what is left is structure)."""
    if b'"' not in body:
        return body
    if b'\\"' not in body:  # no escaped quote: a byte is inside a string when an odd number of quotes precede it
        import numpy as np

        data = np.frombuffer(body, dtype=np.uint8)
        inside = np.bitwise_xor.accumulate((data == 34).view(np.uint8))
        return data[inside == 0].tobytes()  # (closing quotes stay: they are no structure)
    return JSON_STRING.sub(b"", body)


def _nul_path(value: Any, path: str = "") -> str | None:
    """Where the first string (or key) holding a NUL is, e.g. ``params.note`` or ``lines[0].text``."""
    if isinstance(value, str):
        return (path or "body") if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if "\x00" in key:
                return where.replace("\x00", "\\u0000")
            found = _nul_path(item, where)
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_path(item, f"{path}[{i}]" if path else f"[{i}]")
            if found:
                return found
    return None


def json_nul_field(body: bytes) -> str | None:
    """The field of the first NUL character in a JSON body's strings, or None when there is none."""
    if b"\\u0000" not in body or not JSON_NUL.search(body):
        return None
    try:
        return _nul_path(json.loads(body)) or "body"
    except (ValueError, RecursionError):
        return "body"


def replace_json_nul(body: bytes) -> bytes:
    """Every escaped NUL of a JSON text becomes U+FFFD (same length: ``\\u0000`` -> ``\\ufffd``)."""
    if b"\\u0000" not in body:
        return body
    return JSON_NUL.sub(rb"\1\\ufffd", body)


def url_nul_field(scope: Scope) -> str | None:
    """The query parameter (or ``path``) that holds a NUL character, or None."""
    if "\x00" in scope.get("path", ""):
        return "path"
    query: bytes = scope.get("query_string", b"")
    if b"%00" in query or b"\x00" in query:
        for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "\\u0000") or "query"
        return "query"
    return None


class RequestLimits:
    """The middleware: ``app.add_middleware(RequestLimits, settings=settings)``."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        nul = url_nul_field(scope)
        if nul is not None:
            where = "the path" if nul == "path" else f"query parameter {nul}"
            await self._answer(send, 422, f"NUL characters are not allowed in {where}.", nul)
            return
        limit = limit_of(scope["method"], scope["path"])
        if limit is None:
            await self.app(scope, receive, send)
            return
        allowed = limit.allowed(self.settings)
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            text = declared.strip()
            if not text.isdigit():
                await self._answer(send, 400, "The Content-Length header must be a number of bytes.",
                                   "Content-Length", close=True)
                return
            if len(text) > 20 or int(text) > allowed:
                await self._answer(send, 413, self._too_large(limit, allowed, declared=len(text) <= 20 and int(text)),
                                   limit.setting, close=True)
                return
        chunks: list[bytes] = []
        total = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left; the route has nothing to do
            chunk = message.get("body", b"")
            total += len(chunk)
            if total > allowed:
                more = message.get("more_body", False)
                if more:
                    await self._drain(receive)
                await self._answer(send, 413, self._too_large(limit, allowed), limit.setting, close=True)
                return
            if chunk:
                chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body:
            try:
                json_structure(body, self.settings.max_json_depth, self.settings.max_json_items)
                if limit is LOGS:
                    body = replace_json_nul(body)
                else:
                    field = json_nul_field(body)
                    if field is not None:
                        raise Refusal(422, f"NUL characters (\\u0000) are not allowed in {field}; remove them.",
                                      field)
            except Refusal as refusal:
                await self._answer(send, refusal.status, refusal.message, refusal.field)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # e.g. a streaming response waiting for the disconnect

        await self.app(scope, replay, send)

    @staticmethod
    def _too_large(limit: Limit, allowed: int, declared: int | bool | None = None) -> str:
        size = f"is {declared} bytes" if declared else f"is over {allowed} bytes"
        return (f"The body {size}; {limit.what} may hold at most {allowed} bytes ({_size(allowed)}, "
                f"{limit.env}). Send less per request, or raise {limit.env}.")

    @staticmethod
    async def _drain(receive: Receive) -> None:
        """Read (and drop) a little more of a refused body, so that a client still sending it
        reads the 413 instead of a reset connection."""
        drained, deadline = 0, time.monotonic() + DRAIN_SECONDS
        while drained < DRAIN_BYTES and (left := deadline - time.monotonic()) > 0:
            try:
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return
            if message["type"] != "http.request":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                return

    @staticmethod
    async def _answer(send: Send, status: int, message: str, field: str, close: bool = False) -> None:
        body = json.dumps({"detail": message, "field": field}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

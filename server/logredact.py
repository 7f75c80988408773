"""Keep secrets that arrive in URLs out of the access log.

An OpenID Connect callback is ``/auth/oidc/callback?code=...&state=...``; uvicorn's access log
would print the one-time code and the state. :class:`RedactQuery` rewrites the values of
sensitive query parameters to ``REDACTED`` in every ``uvicorn.access`` record before any
handler formats it (the path stays, so the log still says which route was called).
"""

from __future__ import annotations

import logging
from urllib.parse import unquote_plus

SENSITIVE = frozenset({
    "code", "state", "token", "access_token", "id_token", "refresh_token", "link", "session_state",
    "password", "client_secret", "code_verifier",
})
REDACTED = "REDACTED"
ACCESS_LOGGER = "uvicorn.access"


def redact_url(target: str) -> str:
    """``target`` (a path with its query string) with sensitive parameters' values replaced."""
    path, sep, rest = target.partition("?")
    if not sep:
        return target
    query, hash_sep, fragment = rest.partition("#")
    pairs = []
    for pair in query.split("&"):
        name, eq, _ = pair.partition("=")
        if eq and unquote_plus(name).strip().lower() in SENSITIVE:
            pair = f"{name}={REDACTED}"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}{hash_sep}{fragment}"


class RedactQuery(logging.Filter):
    """For uvicorn's access records: ``args = (client_addr, method, full_path, http_version,
    status_code)``; ``full_path`` is replaced in a copy of the args."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], redact_url(args[2]), *args[3:])
        return True


def install() -> None:
    """Add the filter to uvicorn's access logger (once; uvicorn's logging set-up keeps it)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RedactQuery) for f in logger.filters):
        logger.addFilter(RedactQuery())

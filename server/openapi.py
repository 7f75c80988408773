"""The OpenAPI document: FastAPI's, with every status a route can answer and one error schema.

``install_openapi(app)`` replaces ``app.openapi`` by a function that post-processes FastAPI's
document once:

- one component, ``ErrorBody`` (``{"detail": str, "field"?: str, "errors"?: [...]}``,
  server/errors.py), replaces FastAPI's ``HTTPValidationError`` for 422 and is the body of every
  error response;
- each operation lists the errors the layers in front of its handler can answer (server/webguard.py:
  400 Host, 403 Origin, 415 Content-Type; server/limits.py: 413 body size, 422 JSON shape and NUL,
  400 Content-Length; authorize: 401, 403; the database: 503; ...) and those its handler raises
  (``ApiError(NNN`` and ``status_code = NNN`` found in its source: e.g. the 200 of a create that
  found an existing row, 416 of a range, 429, 507).

``tests/server/test_fuzz.py`` (schemathesis) checks that no answer is a status the document does
not list, and that error bodies follow ``ErrorBody``.
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
ERROR_BODY = {
    "title": "ErrorBody",
    "type": "object",
    "required": ["detail"],
    "properties": {
        "detail": {"type": "string", "description": "What went wrong, as a sentence (and how to fix it)."},
        "field": {"type": "string", "description": "The field, parameter, header or limit it is about."},
        "errors": {"type": "array", "description": "Request validation: every problem found, "
                   "[{loc, msg, type}].", "items": {"type": "object", "properties": {
                       "loc": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]}},
                       "msg": {"type": "string"}, "type": {"type": "string"}}}},
    },
    "additionalProperties": True,
}

DESCRIPTIONS = {
    200: "OK (an existing row: an idempotent create found it)",
    400: "Bad request: the Host header is not in RUNYARD_ALLOWED_HOSTS, or a header cannot be read",
    401: "Not authenticated (accounts are on and no valid session or token came)",
    403: "Forbidden: the caller's role, token kind or the request's Origin does not allow it",
    404: "Not found (an unknown id, or one the caller may not see; an integer id beyond any row's is the same)",
    409: "Conflict: the row is not in a state that allows this",
    413: "Too large: a body over its RUNYARD_MAX_* limit, or a quota (the sentence names it)",
    415: "Unsupported media type: state-changing requests need Content-Type: application/json "
         "(uploads: application/octet-stream)",
    416: "Range not satisfiable",
    422: "Invalid request: validation, JSON nested too deep or too many items, NUL characters",
    429: "Too many requests (failed logins, open live streams)",
    503: "The database is unavailable or busy; retry",
    507: "Insufficient storage: the disk is full (the sentence names the free space)",
}

WRITES = {"post", "put", "patch", "delete"}
RAISED = re.compile(r"(?:ApiError\(|status_code\s*=\s*|_error\(|_response\()\s*(\d{3})\b")
MISSING = re.compile(r"\b(?:missing_\w+|require_\w+|NotFound)\b|404")


def _handler_statuses(route: APIRoute) -> set[int]:
    try:
        source = inspect.getsource(route.endpoint)
    except (OSError, TypeError):
        return set()
    found = {int(code) for code in RAISED.findall(source)}
    if MISSING.search(source):
        found.add(404)
    return found


def statuses_for(method: str, path: str, route: APIRoute | None) -> set[int]:
    """The error (and extra success) statuses an operation can answer."""
    codes = {400, 401, 403, 422, 503}
    if "{" in path:
        codes.add(404)
    if method in WRITES:
        codes |= {404, 409, 413, 415, 507}
    if path.endswith("/events") or path.startswith("/api/v1/auth/"):
        codes.add(429)
    if route is not None:
        codes |= _handler_statuses(route)
    return codes


def complete(schema: dict[str, Any], routes: dict[tuple[str, str], APIRoute]) -> dict[str, Any]:
    """Add ``ErrorBody`` and every operation's statuses to FastAPI's document (in place)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components["ErrorBody"] = ERROR_BODY
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete", "head", "options"}:
                continue
            responses = operation.setdefault("responses", {})
            for code in sorted(statuses_for(method, path, routes.get((method.upper(), path)))):
                key = str(code)
                if code < 300:
                    if key not in responses:
                        responses[key] = {"description": DESCRIPTIONS.get(code, "OK"),
                                          "content": {"application/json": {"schema": {}}}}
                    continue
                entry = responses.setdefault(key, {"description": DESCRIPTIONS.get(code, "Error")})
                entry["description"] = entry.get("description") or DESCRIPTIONS.get(code, "Error")
                entry["content"] = {"application/json": {"schema": ERROR_REF}}
    for name in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{name}"' not in repr(schema).replace("'", '"'):
            components.pop(name, None)
    return schema


def api_routes(routes: Any) -> Any:
    """Every APIRoute, also inside included routers (FastAPI keeps those nested)."""
    for route in routes:
        if isinstance(route, APIRoute):
            yield route
        elif hasattr(route, "original_router"):
            yield from api_routes(route.original_router.routes)


def install_openapi(app: FastAPI) -> None:
    """``app.openapi()`` answers the completed document (built once)."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, openapi_version=app.openapi_version,
                                 description=app.description, routes=app.routes)
            routes = {(m, r.path): r for r in api_routes(app.routes) for m in r.methods}
            app.openapi_schema = complete(schema, routes)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

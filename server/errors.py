"""JSON error bodies, one schema for every error (the OpenAPI component ``ErrorBody``,
server/openapi.py): ``{"detail": "<sentence>", "field": "<name>"?, "errors": [...]?}``.

``detail`` is always a sentence; request validation keeps FastAPI's list of problems under
``errors`` (``[{"loc", "msg", "type"}]``). A path id that is an integer but beyond its
column's range (at most 2**31-1, the PostgreSQL ``integer`` of every id column, and not below 1)
answers the same 404 as a missing one, on every backend; a path id that is not an integer is 422."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server import health
from server.store import StoreError, json_safe

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None, errors: list[dict[str, Any]] | None = None,
                 column: int | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.field, self.headers = status_code, message, field, headers
        self.errors = errors  # every problem of a 422 ({"loc", "msg", "type"}), as request validation lists them
        self.column = column  # a query's error: its 1-based column (server/query.py)


def error_body(message: str, field: str | None = None, **extra: object) -> dict:
    body: dict = {"detail": message}
    if field:
        body["field"] = field
    body.update(extra)
    return body


def _field_of(loc: Sequence[Any]) -> str:
    # only the leading location kind is dropped: a body field may itself be named "query" (bulk actions)
    parts = [str(p) for p in (loc[1:] if loc and loc[0] in ("body", "query", "path", "header", "cookie") else loc)]
    return ".".join(parts) or "body"


def _missing_worker(worker_id: str) -> ApiError:
    return ApiError(404, f"Worker {worker_id} is not registered; register it with POST /api/v1/workers.")


def _missing_token(token_id: str) -> ApiError:
    return ApiError(404, f"Token {token_id} does not exist; list yours with GET /api/v1/tokens.")


def _missing_user(user_id: str) -> ApiError:
    return ApiError(404, f"User {user_id} does not exist; list users with GET /api/v1/users.")


def _missing_of(name: str) -> Callable[[Any], Exception] | None:
    """The path parameter's "missing" answer, or None."""
    from server import store

    answers: dict[str, Callable[[Any], Exception]] = {
            "run_id": store.missing_run, "checkpoint_id": store.missing_checkpoint,
            "snapshot_id": store.missing_snapshot, "project_id": store.missing_project,
            "worker_id": _missing_worker, "token_id": _missing_token, "user_id": _missing_user}
    return answers.get(name)


ID_RANGE_ERRORS = {"less_than_equal", "greater_than_equal", "int_parsing_size", "less_than", "greater_than"}


def _beyond_range_id(error: Mapping[str, Any]) -> ApiError | StoreError | None:
    """The 404 of a missing row for a path id that is an integer beyond its column's range."""
    loc = error.get("loc", ())
    if len(loc) != 2 or loc[0] != "path" or error.get("type") not in ID_RANGE_ERRORS:
        return None
    missing = _missing_of(str(loc[1]))
    raw = error.get("input")
    text = str(raw).strip() if isinstance(raw, int | str) and not isinstance(raw, bool) else ""
    if missing is None or not text.lstrip("+-").isdigit():
        return None
    found = missing(text if len(text) <= 40 else f"{text[:20]}...{text[-8:]}")
    assert isinstance(found, ApiError | StoreError)
    return found


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.field), status_code=exc.status_code)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        extra: dict[str, Any] = {"errors": json_safe(exc.errors)} if exc.errors else {}
        if exc.column is not None:
            extra["column"] = exc.column
        return JSONResponse(error_body(exc.message, exc.field, **extra), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        raw_errors = list(exc.errors())
        kept = [e for e in raw_errors if _beyond_range_id(e) is None]
        if raw_errors and not kept:  # only ids no row can have: the answer for a missing one
            missing = _beyond_range_id(raw_errors[0])
            assert missing is not None  # each of raw_errors has one
            return JSONResponse(error_body(missing.message, getattr(missing, "field", None)),
                                status_code=missing.status_code)
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in kept]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = _field_of(first["loc"])
        if first.get("type") == "json_invalid":
            message = "The request body is not valid JSON; send a JSON document with Content-Type: application/json."
        else:
            message = f"Invalid value for {field}: {str(first['msg'])[:300]}."
        return JSONResponse(error_body(message, field, errors=json_safe(errors)), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = exc.detail
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"There is no {request.url.path}; see /docs for the API."
        elif exc.status_code == 400 and detail == "There was an error parsing the body":
            detail = ("The request body could not be parsed (not JSON, or nested too deeply); "
                      "send a JSON object as described at /docs.")
        elif exc.status_code == 405:
            detail = f"{request.method} is not allowed on {request.url.path}; see /docs for the API."
        return JSONResponse(error_body(str(detail)), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(DataError)
    @app.exception_handler(IntegrityError)
    async def data_error(request: Request, exc: Exception) -> JSONResponse:
        log.info("database refused a value: %s", exc)
        return JSONResponse(error_body("The database refused a value in this request (out of range or "
                                       "inconsistent); check numbers and ids and try again."), status_code=422)

    @app.exception_handler(OverflowError)
    async def number_out_of_range(request: Request, exc: Exception) -> JSONResponse:
        # SQLite's driver refuses ints beyond 64 bits where PostgreSQL raises a DataError (422 above)
        log.info("a number did not fit: %s", exc)
        return JSONResponse(error_body("A number in this request is out of range for the database; check numbers "
                                       "and ids and try again."), status_code=422)

    @app.exception_handler(OperationalError)
    async def db_down(request: Request, exc: Exception) -> JSONResponse:
        full = insufficient_storage(request, exc)  # "database or disk is full", DiskFull: 507
        if full is not None:
            return full
        log.warning("database error: %s", exc)
        return JSONResponse(error_body("The database is unavailable or busy; retry in a moment."), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("The server hit an unexpected error; it is logged. Retry, or report it "
                                       "with the server log."), status_code=500)

    # A full or read-only disk (server/health.py): 507 naming the free space, on any route.
    @app.exception_handler(OSError)
    @app.exception_handler(DBAPIError)
    async def storage_error(request: Request, exc: Exception) -> JSONResponse:
        full = insufficient_storage(request, exc)
        return full if full is not None else await unexpected(request, exc)


    for key, handler in list(app.exception_handlers.items()):
        app.exception_handlers[key] = _for_browsers(handler)


BROWSER_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} - Runyard</title><style>body{{font:16px system-ui,sans-serif;max-width:40rem;margin:3rem auto;
padding:0 1rem;color:#222}}a.home{{display:inline-block;margin-top:1rem;font-weight:600}}</style></head>
<body><h1>{status} {reason}</h1><p>{detail}</p>
<p><a class="home" href="/#/runs">Back to the runs page</a></p></body></html>
"""


def wants_html(request: Request) -> bool:
    """A browser opening a page (``Accept: text/html``), not the dashboard's or a client's API call."""
    return request.method in ("GET", "HEAD") and "text/html" in request.headers.get("accept", "")


def browser_page(request: Request, response: Any) -> Any:
    """``response``, an error as JSON, as a small HTML page linking back to the runs page when a
    browser asked for a page (the JSON stays for everyone else)."""
    import html
    import json
    from http import HTTPStatus

    from fastapi.responses import HTMLResponse

    status = int(getattr(response, "status_code", 200))
    if status < 400 or not isinstance(response, JSONResponse) or not wants_html(request):
        return response
    try:
        detail = str(json.loads(bytes(response.body)).get("detail", ""))
    except ValueError:
        detail = ""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    page = BROWSER_PAGE.format(status=status, reason=html.escape(reason), detail=html.escape(detail))
    headers = {k: v for k, v in response.headers.items() if k.lower() not in ("content-length", "content-type")}
    return HTMLResponse(page, status_code=status, headers=headers)


def _for_browsers(handler: Callable[..., Any]) -> Callable[..., Any]:
    import inspect

    if inspect.iscoroutinefunction(handler):
        async def wrapped_async(request: Request, exc: Exception) -> Any:
            return browser_page(request, await handler(request, exc))
        return wrapped_async

    def wrapped(request: Request, exc: Exception) -> Any:
        return browser_page(request, handler(request, exc))
    return wrapped


def insufficient_storage(request: Request, exc: BaseException) -> JSONResponse | None:
    """The 507 answer when ``exc`` is a full or read-only disk (ENOSPC, EDQUOT, EROFS, or the
    database refusing a write for it), else None."""
    message = health.insufficient_storage_message(request.app, exc)
    if message is None:
        return None
    log.warning("%s %s: storage full or read-only: %s", request.method, request.url.path, exc)
    health.invalidate(request.app)
    return JSONResponse(error_body(message), status_code=507)

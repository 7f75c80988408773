"""JSON error bodies: ``{"detail": "<sentence>", "field": "<name>"?}`` for every error."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from server.store import StoreError, json_safe

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status_code: int, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status_code, self.message, self.field, self.headers = status_code, message, field, headers


def error_body(message: str, field: str | None = None, **extra: object) -> dict:
    body: dict = {"detail": message}
    if field:
        body["field"] = field
    body.update(extra)
    return body


def _field_of(loc: tuple | list) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StoreError)
    async def store_error(request: Request, exc: StoreError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.field), status_code=exc.status_code)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.message, exc.field), status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
                  for e in exc.errors()]
        first = errors[0] if errors else {"loc": [], "msg": "invalid request"}
        field = _field_of(first["loc"])
        if first.get("type") == "json_invalid":
            message = "The request body is not valid JSON; send a JSON document with Content-Type: application/json."
        else:
            message = f"Invalid value for {field}: {first['msg']}."
        return JSONResponse({"detail": json_safe(errors), "message": message, "field": field}, status_code=422)

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

    @app.exception_handler(OperationalError)
    async def db_down(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database error: %s", exc)
        return JSONResponse(error_body("The database is unavailable or busy; retry in a moment."), status_code=503)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse(error_body("The server hit an unexpected error; it is logged. Retry, or report it "
                                       "with the server log."), status_code=500)

"""Metrics: batch ingest (raw body + json.loads, no per-point pydantic), downsampled reads, keys.

Non-finite values travel as "NaN", "Infinity", "-Infinity" (JSON numbers/NaN tokens are
accepted too); NaN is stored as NULL and returned as "NaN".
"""

from __future__ import annotations

import json
import math
import time
from typing import Any, cast

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import store
from server.deps import MAX_KEYS, MAX_POINTS, RunId, get_session, key_list
from server.errors import ApiError
from server.schemas import Accepted, MetricKey
from server.store import INT32_MAX, INT64_MAX, encode_float

router = APIRouter(prefix="/api/v1", tags=["metrics"])

NON_FINITE = {"NaN": None, "nan": None, "Infinity": math.inf, "inf": math.inf, "-Infinity": -math.inf,
              "-inf": -math.inf}


def parse_points(payload: Any, limit: int) -> list[tuple]:
    """Validate ``{"points": [...]}`` into ``(key, step, value, epoch, wall_time)`` tuples."""
    if not isinstance(payload, dict) or not isinstance(payload.get("points"), list):
        raise ApiError(422, 'The body must be a JSON object {"points": [{"key", "step", "value"}, ...]}.', "points")
    points = payload["points"]
    if len(points) > limit:
        raise ApiError(413, f"{len(points)} points in one request; send at most {limit} per request "
                            "and split the rest into further requests.", "points")
    now = time.time()
    rows: list[Any] = []
    append = rows.append
    for i, p in enumerate(points):
        if type(p) is not dict:
            raise ApiError(422, f"points[{i}] must be an object with key, step and value.", f"points[{i}]")
        key = p.get("key")
        step = p.get("step")
        value = p.get("value")
        epoch = p.get("epoch")
        wall_time = p.get("wall_time")
        if type(key) is not str or not key or len(key) > 250 or "\x00" in key or not store.is_valid_text(key):
            raise ApiError(422, f"points[{i}].key must be a non-empty string of at most 250 characters "
                                "without NUL characters or lone surrogates.", f"points[{i}].key")
        if type(step) is not int or not 0 <= step <= INT64_MAX:
            if type(step) is float and step.is_integer() and 0 <= step <= INT64_MAX:
                step = int(step)
            else:
                raise ApiError(422, f"points[{i}].step must be an integer from 0 to 2**63-1, got {step!r:.40}.",
                               f"points[{i}].step")
        tv = type(value)
        if tv is float:
            if value != value:
                value = None
        elif tv is int:
            try:
                value = float(cast(int, value))
            except OverflowError:
                raise ApiError(422, f"points[{i}].value is too large for a 64-bit float.",
                               f"points[{i}].value") from None
        elif tv is str and value in NON_FINITE:
            value = NON_FINITE[value]
        elif value is not None:
            raise ApiError(422, f"points[{i}].value must be a number or one of \"NaN\", \"Infinity\", "
                                f"\"-Infinity\", got {value!r:.40}.", f"points[{i}].value")
        if epoch is not None and (type(epoch) is not int or not 0 <= epoch <= INT32_MAX):
            raise ApiError(422, f"points[{i}].epoch must be an integer from 0 to 2**31-1 or null.",
                           f"points[{i}].epoch")
        if wall_time is None:
            wall_time = now
        elif type(wall_time) in (int, float) and abs(wall_time) < 1e12:  # NaN fails too; a huge int does not overflow
            wall_time = float(wall_time)
        else:
            raise ApiError(422, f"points[{i}].wall_time must be seconds since the epoch (a finite number).",
                           f"points[{i}].wall_time")
        append((key, step, value, epoch, wall_time))
    return rows


def idempotency_key(request: Request, kind: str) -> str | None:
    """The batch's ``Idempotency-Key`` header (1-96 printable ASCII characters), or None; stored
    as ``<kind>:<key>`` so metric and log batches have keys of their own."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not 1 <= len(key) <= 96 or not key.isascii() or not key.isprintable():
        raise ApiError(422, "The Idempotency-Key header must be 1 to 96 printable ASCII characters.",
                       "Idempotency-Key")
    return f"{kind}:{key}"


def _insert(request: Request, run_id: RunId, rows: list[tuple], key: str | None) -> tuple[int, bool]:
    session: Session = request.app.state.sessionmaker()
    try:
        seen = store.seen_batch(session, run_id, key)
        if seen is not None:
            return seen, True
        try:
            return store.add_metric_points(session, run_id, rows, batch_key=key), False
        except IntegrityError:  # the same batch, stored by a concurrent retry just now
            session.rollback()
            seen = store.seen_batch(session, run_id, key)
            if seen is None:
                raise
            return seen, True
    finally:
        session.close()


@router.post("/runs/{run_id}/metrics", response_model=Accepted,
             openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                 "type": "object", "required": ["points"], "properties": {"points": {
                     "type": "array", "maxItems": 10000, "items": {"type": "object", "required": ["key", "step", "value"],
                     "properties": {"key": {"type": "string"}, "step": {"type": "integer"},
                                    "value": {"oneOf": [{"type": "number"}, {"type": "string",
                                              "enum": ["NaN", "Infinity", "-Infinity"]}]},
                                    "epoch": {"type": "integer"}, "wall_time": {"type": "number"}}}}}}}}}})
async def ingest_metrics(run_id: RunId, request: Request) -> Accepted:
    # The body's size (RUNYARD_MAX_METRICS_BODY_BYTES, counted as it streams), depth, item count and
    # NUL characters were checked by server/limits.py before this runs.
    body = await request.body()
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise ApiError(422, "The request body is not valid JSON; send {\"points\": [...]} as JSON.", "body") from None
    key = idempotency_key(request, "m")
    rows = parse_points(payload, request.app.state.settings.max_metric_points)
    accepted, duplicate = await run_in_threadpool(_insert, request, run_id, rows, key)
    return Accepted(accepted=accepted, duplicate=duplicate)


def _encode_series(series: dict[str, Any]) -> dict[str, Any]:
    series["values"] = [v if math.isfinite(v) else encode_float(v) for v in series["values"]]
    return series


@router.get("/runs/{run_id}/metrics")
def read_metrics(
    run_id: RunId,
    keys: str | None = Query(None, description=f"Comma-separated metric keys (at most {MAX_KEYS}); all keys "
                             "when left out."),
    min_step: int | None = Query(None, ge=0, le=2**63 - 1),
    max_step: int | None = Query(None, ge=0, le=2**63 - 1),
    max_points: int = Query(2000, ge=4, le=MAX_POINTS, description="Points per series at most (downsampled)."),
    session: Session = Depends(get_session),
) -> Response:
    wanted = key_list(keys, "keys") or None
    data = store.read_metrics(session, run_id, wanted, min_step, max_step, max_points)
    body = {"series": {k: _encode_series(v) for k, v in data.items()}}
    return Response(json.dumps(body, separators=(",", ":")), media_type="application/json")


@router.get("/runs/{run_id}/metric-keys", response_model=list[MetricKey])
def metric_keys(run_id: RunId, session: Session = Depends(get_session)) -> list[MetricKey]:
    return [MetricKey(key=k["key"], last_value=encode_float(k["last_value"] if k["last_value"] is not None else math.nan),
                      last_step=k["last_step"], count=k["count"]) for k in store.metric_keys(session, run_id)]

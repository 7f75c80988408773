"""Log lines of a run: tail N, or the lines after a cursor; append (workers and scripts)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import store
from server.api.metrics import idempotency_key
from server.deps import RunId, get_session
from server.schemas import Accepted, LogLineOut, LogLinesIn, LogLinesOut

router = APIRouter(prefix="/api/v1", tags=["logs"])


@router.get("/runs/{run_id}/logs", response_model=LogLinesOut)
def get_logs(run_id: RunId, tail: int | None = Query(None, ge=1, le=100_000),
             after: int | None = Query(None, ge=0, le=2**63 - 1), limit: int = Query(1000, ge=1, le=100_000),
             session: Session = Depends(get_session)) -> LogLinesOut:
    lines, cursor = store.get_log_lines(session, run_id, tail=tail, after=after, limit=limit)
    return LogLinesOut(lines=[LogLineOut(id=ln.id, stream=ln.stream, time=ln.time, text=ln.text) for ln in lines],
                       cursor=cursor)


@router.post("/runs/{run_id}/logs", status_code=201, response_model=Accepted)
def add_logs(run_id: RunId, body: LogLinesIn, request: Request, response: Response,
             session: Session = Depends(get_session)) -> Accepted:
    key = idempotency_key(request, "l")
    seen = store.seen_batch(session, run_id, key)
    if seen is None:
        try:
            return Accepted(accepted=store.add_log_lines(session, run_id, [ln.model_dump() for ln in body.lines],
                                                         batch_key=key))
        except IntegrityError:  # stored by a concurrent retry of the same batch
            session.rollback()
            seen = store.seen_batch(session, run_id, key)
            if seen is None:
                raise
    response.status_code = 200
    return Accepted(accepted=seen, duplicate=True)

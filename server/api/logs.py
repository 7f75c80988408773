"""Log lines of a run: tail N, or the lines after a cursor; append (workers and scripts)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query
from sqlalchemy.orm import Session

from server import store
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
def add_logs(run_id: RunId, body: LogLinesIn, session: Session = Depends(get_session)) -> Accepted:
    n = store.add_log_lines(session, run_id, [ln.model_dump() for ln in body.lines])
    return Accepted(accepted=n)

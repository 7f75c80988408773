"""Log lines of a run: tail N, or the lines after a cursor; append (workers and scripts).

A line longer than ``RUNYARD_MAX_LOG_LINE_BYTES`` (UTF-8) is stored cut, ending in
``… [cut: N bytes]`` (N: the bytes dropped); a NUL character in a batch was replaced by U+FFFD
(server/limits.py), as PostgreSQL cannot store one."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import store
from server.api.metrics import idempotency_key
from server.deps import MAX_LOG_LINES, RunId, get_session
from server.schemas import Accepted, LogLineOut, LogLinesIn, LogLinesOut

router = APIRouter(prefix="/api/v1", tags=["logs"])


def cut_line(text: str, max_bytes: int) -> str:
    """``text`` itself when it fits in ``max_bytes`` UTF-8 bytes, else its start (cut at a
    character boundary) and the marker ``… [cut: N bytes]``, in ``max_bytes`` bytes in all."""
    if len(text) * 4 <= max_bytes:
        return text
    data = text.encode("utf-8", "surrogatepass")
    if len(data) <= max_bytes:
        return text
    keep = max_bytes - len(f"… [cut: {len(data)} bytes]".encode())
    head = data[:keep].decode("utf-8", "ignore")
    dropped = len(data) - len(head.encode("utf-8", "surrogatepass"))
    return f"{head}… [cut: {dropped} bytes]"


@router.get("/runs/{run_id}/logs", response_model=LogLinesOut)
def get_logs(run_id: RunId, tail: int | None = Query(None, ge=1, le=MAX_LOG_LINES),
             after: int | None = Query(None, ge=0, le=2**63 - 1), limit: int = Query(1000, ge=1, le=MAX_LOG_LINES),
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
            limit = request.app.state.settings.max_log_line_bytes
            rows = []
            for ln in body.lines:
                row = ln.model_dump()
                row["text"] = cut_line(row["text"], limit)
                rows.append(row)
            return Accepted(accepted=store.add_log_lines(session, run_id, rows, batch_key=key))
        except IntegrityError:  # stored by a concurrent retry of the same batch
            session.rollback()
            seen = store.seen_batch(session, run_id, key)
            if seen is None:
                raise
    response.status_code = 200
    return Accepted(accepted=seen, duplicate=True)

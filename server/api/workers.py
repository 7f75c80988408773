"""Workers register themselves and the recipes they serve, and say they are alive."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Path, Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import store
from server.deps import get_session
from server.schemas import WorkerHeartbeat, WorkerIn

router = APIRouter(prefix="/api/v1", tags=["workers"])

WorkerId = Path(ge=1, le=2**31 - 1, description="A worker id.")


@router.post("/workers")
def register(body: WorkerIn, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    """A worker starting up: its name, queues and recipes (name, description, params JSON
    Schema, trainer schema). Submissions are validated against these schemas from now on."""
    worker = store.register_worker(session, body.name, body.queues, [r.model_dump() for r in body.recipes],
                                   request.state.principal.token_id, body.gpus)
    return {"id": worker.id, "name": worker.name, "queues": worker.queues, "recipes": worker.recipes,
            "gpus": worker.gpus}


@router.post("/workers/{worker_id}/heartbeat")
def heartbeat(body: WorkerHeartbeat, request: Request, worker_id: int = WorkerId,
              session: Session = Depends(get_session)) -> dict[str, Any]:
    worker = store.worker_heartbeat(session, worker_id, body.run_id, request.state.principal.token_id)
    return {"id": worker.id, "last_seen_at": worker.last_seen_at.isoformat()}


@router.get("/workers")
def list_workers(request: Request, session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    """Live workers; ``run_id`` (the run it trains) only when the caller may see that run."""
    from server.auth import visible_projects
    from server.models import Run

    settings = request.app.state.settings
    workers = store.live_workers(session, settings.heartbeat_timeout)
    visible = visible_projects(session, request.state.principal)
    busy = {w.run_id for w in workers if w.run_id is not None}
    shown = busy if visible is None else set(session.scalars(
        select(Run.id).where(Run.id.in_(busy or {-1}), Run.project_id.in_(visible or {-1}))))
    return [{"id": w.id, "name": w.name, "queues": w.queues, "recipes": w.recipes,
             "run_id": w.run_id if w.run_id in shown else None, "gpus": list(w.gpus or []),
             "last_seen_at": w.last_seen_at.isoformat()} for w in workers]

"""Health, projects and recipes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from server import auth, health, store
from server.deps import get_session, get_settings_dep
from server.schemas import ProjectOut, RecipeOut
from server.settings import Settings

router = APIRouter(tags=["service"])


@router.get("/healthz", responses={503: {"description": "The database cannot be reached."}})
def healthz(request: Request) -> JSONResponse:
    """``{"status", "database", "artifacts", "uploads"}``: each part ``"ok"`` or ``"degraded: <reason>"``
    when it cannot be written (write probes cached RUNYARD_HEALTH_PROBE_INTERVAL s, server/health.py);
    ``status`` is ``"ok"`` or ``"degraded"`` with 200 (reads are still served), ``"error"`` with 503
    when the database cannot be reached."""
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        report = health.storage_report(request.app)
    except Exception as exc:  # any failure means "not reachable"
        return JSONResponse({"status": "error", "database": f"unreachable: {type(exc).__name__}"}, status_code=503)
    degraded = any(value != "ok" for value in report.values())
    return JSONResponse({"status": "degraded" if degraded else "ok", **report})


@router.get("/api/v1/projects", response_model=list[ProjectOut])
def projects(request: Request, session: Session = Depends(get_session)) -> list[ProjectOut]:
    """The projects the caller may see, with their role in each."""
    principal = request.state.principal
    visible = auth.visible_projects(session, principal)
    return [ProjectOut(id=pid, name=name, run_count=count, role=auth.role_in(session, principal, pid))
            for pid, name, count in store.list_projects(session, visible)]


@router.get("/api/v1/recipes", response_model=list[RecipeOut])
def recipes(session: Session = Depends(get_session), settings: Settings = Depends(get_settings_dep)) -> list[RecipeOut]:
    """The recipes workers published; ``available`` says whether a live worker serves it now."""
    return [RecipeOut(name=r.name, description=r.description, params_schema=store.json_safe(r.params_schema or {}),
                      trainer_schema=store.json_safe(r.trainer_schema or {}), available=available, queues=queues)
            for r, queues, available in store.list_recipes(session, settings.heartbeat_timeout)]

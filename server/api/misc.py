"""Health, projects and recipes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.orm import Session

from server import store
from server.api.runs import _registry
from server.deps import get_session
from server.schemas import ProjectOut, RecipeOut

router = APIRouter(tags=["service"])


@router.get("/healthz")
def healthz(request: Request) -> JSONResponse:
    try:
        with request.app.state.engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        return JSONResponse({"status": "error", "database": f"unreachable: {type(exc).__name__}"}, status_code=503)
    return JSONResponse({"status": "ok", "database": "ok"})


@router.get("/api/v1/projects", response_model=list[ProjectOut])
def projects(session: Session = Depends(get_session)) -> list[ProjectOut]:
    return [ProjectOut(name=name, run_count=count) for name, count in store.list_projects(session)]


@router.get("/api/v1/recipes", response_model=list[RecipeOut])
def recipes() -> list[RecipeOut]:
    out = []
    for name, recipe in sorted(_registry().items()):
        trainer_schema = recipe.trainer_schema() if hasattr(recipe, "trainer_schema") else {}
        out.append(RecipeOut(name=name, description=getattr(recipe, "description", ""),
                             params_schema=recipe.params_schema(), trainer_schema=trainer_schema))
    return out

"""Issue 14's routes on runs and projects: tags, notes, bulk actions, saved views and the panel
layout (``docs/api.md``). The runs list, keys and groups are in ``server/api/runs.py``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from server import auth, runs_query, store
from server.api.runs import cancel_and_record, delete_and_record
from server.deps import RunId, get_session, get_settings_dep
from server.errors import ApiError
from server.models import Project, Run, SavedView
from server.query import QueryError
from server.schemas import BulkIn, LayoutIn, NoteIn, TagsIn, ViewIn
from server.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["runs"])


def _invalid(exc: runs_query.Invalid) -> ApiError:
    return ApiError(422, exc.message, exc.field)


@router.post("/runs/{run_id}/tags")
def add_tags(run_id: RunId, body: TagsIn, session: Session = Depends(get_session)) -> dict[str, Any]:
    """Add tags to a run (those it has stay); answers the run's tags."""
    run = store.require_run(session, run_id)
    try:
        return {"tags": runs_query.add_tags(session, run, body.tags)}
    except runs_query.Invalid as exc:
        raise _invalid(exc) from None


@router.delete("/runs/{run_id}/tags/{tag}", status_code=204)
def remove_tag(run_id: RunId, tag: str, session: Session = Depends(get_session)) -> Response:
    runs_query.remove_tags(session, store.require_run(session, run_id), [tag])
    return Response(status_code=204)


@router.put("/runs/{run_id}/note")
def put_note(run_id: RunId, body: NoteIn, session: Session = Depends(get_session)) -> dict[str, Any]:
    """Set the run's markdown note (empty: none); answers it raw and rendered."""
    run = store.require_run(session, run_id)
    run.note = body.note or None
    run.updated_at = store.utcnow()
    session.commit()
    return {"note": run.note, "note_html": runs_query.render_note(run.note)}


def _bulk_one(request: Request, session: Session, settings: Settings, run_id: int, body: BulkIn) -> str | None:
    """One id of a bulk action: None when done, else the error (as the single-run route's)."""
    principal = request.state.principal
    run = store.get_run(session, run_id) if 0 < run_id <= store.INT32_MAX else None
    role = None if run is None else auth.role_in(session, principal, run.project_id)
    if run is None or role is None:
        return f"Run {run_id} not found."
    need = "write" if body.action in ("tag", "untag") else "own"
    if not auth.may_change(role, need, principal, run.owner_id):
        return f"Your role in the project of run {run_id} is {role}; to change it you need " + (
            "member." if need == "write" else "admin (or member and the one who submitted it).")
    try:
        if body.action == "tag":
            runs_query.add_tags(session, run, body.tags)
        elif body.action == "untag":
            runs_query.remove_tags(session, run, body.tags)
        elif body.action == "cancel":
            cancel_and_record(session, request, settings, run_id)
        else:
            delete_and_record(session, request, settings, run_id, run.project_id)
    except runs_query.Invalid as exc:
        session.rollback()
        return exc.message
    except store.StoreError as exc:
        session.rollback()
        return exc.message
    return None


@router.post("/runs/bulk")
def bulk(body: BulkIn, request: Request, session: Session = Depends(get_session),
         settings: Settings = Depends(get_settings_dep)) -> dict[str, Any]:
    """Tag, untag, cancel or delete up to 1000 runs by id, or every run a query matches (at most
    RUNYARD_BULK_MAX, when the count is still the one the caller was shown); each run is checked
    as its single-run route would."""
    if body.ids is None and body.query is None:
        raise ApiError(422, "A bulk action needs ids (the runs to act on) or query (every run it matches).", "ids")
    if body.ids is not None and body.query is not None:
        raise ApiError(422, "A bulk action takes ids or query, not both.", "query")
    if body.action in ("tag", "untag"):
        if not body.tags:
            raise ApiError(422, f"A bulk {body.action} needs tags.", "tags")
        try:
            runs_query.check_tags(body.tags)
        except runs_query.Invalid as exc:
            raise _invalid(exc) from None
    extra: dict[str, Any] = {}
    if body.query is not None:
        ids = _query_ids(request, session, settings, body)
        extra["matched"] = len(ids)
    else:
        ids = list(dict.fromkeys(body.ids or []))
    results = []
    for run_id in ids:
        error = _bulk_one(request, session, settings, run_id, body)
        results.append({"id": run_id, "ok": True} if error is None else {"id": run_id, "ok": False, "error": error})
    return {"results": results, **extra}


def _query_ids(request: Request, session: Session, settings: Settings, body: BulkIn) -> list[int]:
    """The ids of the runs the caller may see that ``body.query`` matches now, in one query;
    422 past RUNYARD_BULK_MAX, 409 when their number is not ``body.expected``."""
    spec = body.query
    assert spec is not None
    cap = settings.bulk_max
    if body.expected is None:
        raise ApiError(422, "A bulk action by query needs expected: the number of matching runs the user was "
                            "shown.", "expected")
    if body.expected > cap:
        raise ApiError(422, f"A bulk action by query acts on at most {cap} runs (RUNYARD_BULK_MAX); this one "
                            f"would act on {body.expected}. Narrow the query.", "query")
    visible = auth.visible_projects(session, request.state.principal)
    if spec.project is not None and ((visible is not None and spec.project not in visible)
                                     or session.get(Project, spec.project) is None):
        raise store.missing_project(spec.project)
    try:
        query = runs_query.filtered(session, project=None, q=spec.q or None, project_ids=visible,
                                    status=spec.status, recipe=spec.recipe)
    except QueryError as exc:
        raise ApiError(422, exc.message, "query.q", column=exc.column) from None
    except runs_query.Invalid as exc:
        raise ApiError(422, exc.message, f"query.{exc.field}") from None
    query = query.with_only_columns(Run.id)
    if spec.project is not None:
        query = query.where(Run.project_id == spec.project)
    ids = list(session.scalars(query.order_by(Run.id).limit(cap + 1)))
    if len(ids) != body.expected:
        # past the cap only the first cap + 1 were read: count them all for the message (this error only)
        count = len(ids) if len(ids) <= cap else session.scalar(
            select(func.count()).select_from(query.subquery())) or 0
        raise ApiError(409, f"The query now matches {count} runs, not the {body.expected} you were shown; nothing "
                            "was changed. Look at the list again and repeat the action.", "expected")
    return ids


# --------------------------------------------------------------------------- saved views


def _view_out(view: SavedView) -> dict[str, Any]:
    return {"id": view.id, "project_id": view.project_id, "name": view.name, "query": view.query,
            "columns": list(view.columns or []), "sort": view.sort, "group_by": view.group_by,
            "created_at": view.created_at, "updated_at": view.updated_at}


def _checked_view(body: ViewIn, session: Session) -> dict[str, Any]:
    from server.query import QueryError, compile_query

    try:
        compile_query(body.query, session.get_bind().dialect.name)
    except QueryError as exc:
        raise ApiError(422, exc.message, "query") from None
    try:
        runs_query.column_fields(body.columns)
        if body.group_by:
            runs_query.column_fields([body.group_by], "group_by")
        if body.sort:
            runs_query.column_fields([body.sort.lstrip("-+")], "sort")
    except runs_query.Invalid as exc:
        raise _invalid(exc) from None
    return body.model_dump()


def _project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise store.missing_project(project_id)
    return project


@router.get("/projects/{project_id}/views")
def list_views(project_id: int, session: Session = Depends(get_session)) -> dict[str, Any]:
    _project(session, project_id)
    return {"items": [_view_out(v) for v in runs_query.list_views(session, project_id)]}


@router.post("/projects/{project_id}/views", status_code=201)
def create_view(project_id: int, body: ViewIn, request: Request,
                session: Session = Depends(get_session)) -> dict[str, Any]:
    _project(session, project_id)
    view = runs_query.save_view(session, None, project_id, _checked_view(body, session),
                                request.state.principal.user_id)
    return _view_out(view)


def _view_for(request: Request, session: Session, view_id: int, need: str) -> SavedView:
    """The view, after the caller's role in its project (404 when they may not see it)."""
    view = runs_query.get_view(session, view_id) if 0 < view_id <= store.INT32_MAX else None
    principal = request.state.principal
    role = None if view is None else auth.role_in(session, principal, view.project_id)
    if view is None or role is None:
        raise ApiError(404, f"View {view_id} not found; list a project's views with GET "
                            "/api/v1/projects/{project_id}/views.")
    if not auth.may_change(role, need, principal, principal.user_id):
        raise ApiError(403, f"Your role in the project of view {view_id} is {role}; to change it you need member.")
    return view


@router.get("/views/{view_id}")
def get_view(view_id: int, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    return _view_out(_view_for(request, session, view_id, "read"))


@router.put("/views/{view_id}")
def put_view(view_id: int, body: ViewIn, request: Request,
             session: Session = Depends(get_session)) -> dict[str, Any]:
    view = _view_for(request, session, view_id, "write")
    return _view_out(runs_query.save_view(session, view, view.project_id, _checked_view(body, session), None))


@router.delete("/views/{view_id}", status_code=204)
def delete_view(view_id: int, request: Request, session: Session = Depends(get_session)) -> Response:
    runs_query.delete_view(session, _view_for(request, session, view_id, "write"))
    return Response(status_code=204)


# --------------------------------------------------------------------------- panel layout


@router.get("/projects/{project_id}/layout")
def get_layout(project_id: int, session: Session = Depends(get_session)) -> dict[str, Any]:
    _project(session, project_id)
    return runs_query.get_layout(session, project_id)


@router.put("/projects/{project_id}/layout")
def put_layout(project_id: int, body: LayoutIn, session: Session = Depends(get_session)) -> dict[str, Any]:
    _project(session, project_id)
    ids = [p.id for p in body.panels]
    if len(set(ids)) != len(ids):
        raise ApiError(422, "Each panel needs its own id.", "panels")
    return runs_query.set_layout(session, project_id, body.model_dump())


__all__ = ["Run", "router"]

"""Runs: create (recipe or external), list, get, update, cancel, resume, delete,
hyperparameters and model summary."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import APIRouter, Body, Depends, Query, Response
from sqlalchemy.orm import Session

from server import queue, store
from server.deps import RunId, get_session, get_settings_dep
from server.errors import ApiError
from server.schemas import ResumeRequest, RunCreate, RunList, RunOut, RunPatch, run_out
from server.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["runs"])


def _registry() -> dict[str, Any]:
    try:
        from worker.recipes import get_registry
    except ImportError:  # the worker package is optional for a tracking-only server
        return {}
    try:
        return get_registry()
    except Exception as exc:  # noqa: BLE001 - a broken recipe module must not look like a server bug
        log.exception("recipes could not be loaded")
        raise ApiError(503, f"The recipes could not be loaded ({type(exc).__name__}: {exc}); fix the recipe "
                            "modules (RUNYARD_RECIPES) and restart the server.") from exc


def _validation_message(exc: Exception, prefix: str) -> tuple[str, str]:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            loc = ".".join(str(p) for p in items[0].get("loc", ()))
            field = f"{prefix}.{loc}" if loc else prefix
            return f"Invalid value for {field}: {items[0].get('msg', 'invalid')}.", field
    return f"Invalid {prefix}: {exc}", prefix


def _enqueue(session: Session, run_id: RunId, run_queue: str, settings: Settings) -> str:
    task_id = uuid.uuid4().hex
    store.set_task_id(session, run_id, task_id)
    try:
        queue.enqueue_run(run_id, task_id, queue=run_queue, settings=settings)
    except Exception as exc:  # noqa: BLE001 - report the broker, keep the run queued
        log.exception("enqueue of run %s failed", run_id)
        raise ApiError(503, f"Run {run_id} was created but the job queue ({settings.broker_url}) did not take it: "
                            f"{exc}. Check the broker and resume or resubmit the run.") from exc
    return task_id


@router.post("/runs", status_code=201, response_model=RunOut)
def create_run(body: RunCreate, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    if body.recipe == store.EXTERNAL_RECIPE:
        run = store.create_run(session, recipe=body.recipe, name=body.name, project=body.project,
                               params=body.params, trainer=body.trainer, hyperparameters=body.hyperparameters,
                               status="running", max_attempts=1)
        return run_out(run, settings.public_url)
    registry = _registry()
    recipe = registry.get(body.recipe)
    if recipe is None:
        known = ", ".join(sorted(registry)) or "none registered"
        raise ApiError(422, f"Unknown recipe {body.recipe!r}; use one of: {known}, or \"external\" for a script.",
                       "recipe")
    try:
        params = recipe.validate_params(body.params)
    except Exception as exc:  # noqa: BLE001 - pydantic ValidationError or the recipe's own check
        raise ApiError(422, *_validation_message(exc, "params")) from exc
    trainer = body.trainer
    validate_trainer = getattr(recipe, "validate_trainer", None)
    if callable(validate_trainer):
        try:
            trainer = validate_trainer(body.trainer)
        except Exception as exc:  # noqa: BLE001
            raise ApiError(422, *_validation_message(exc, "trainer")) from exc
    run = store.create_run(session, recipe=body.recipe, name=body.name, project=body.project, params=params,
                           trainer=trainer, hyperparameters=body.hyperparameters,
                           max_attempts=settings.max_attempts, queue=body.queue)
    _enqueue(session, run.id, run.queue, settings)
    return run_out(store.require_run(session, run.id), settings.public_url)


@router.get("/runs", response_model=RunList)
def list_runs(
    project: str | None = None,
    status: str | None = None,
    recipe: str | None = None,
    q: str | None = Query(None, max_length=200, description="Text in the run name."),
    sort: str = Query("-created_at", description="[-]field (id, name, project, duration, created_at, updated_at, "
                      "started_at, ended_at, status, recipe) or [-]metric:<key>; NULLs last."),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0, le=2**31),
    metric_keys: str | None = Query(None, description="Comma-separated keys whose last values to include."),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> RunList:
    runs, total = store.list_runs(session, project=project, status=status, recipe=recipe, q=q, sort=sort,
                                  limit=limit, offset=offset)
    keys = [k.strip() for k in (metric_keys or "").split(",") if k.strip()]
    if not keys and sort.lstrip("-+").startswith("metric:"):
        keys = [sort.lstrip("-+").removeprefix("metric:")]
    last = store.last_metric_values(session, [r.id for r in runs], keys) if keys else {}
    items = [run_out(r, settings.public_url, last.get(r.id, {}) if keys else None) for r in runs]
    return RunList(items=items, total=total, limit=limit, offset=offset)


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: RunId, session: Session = Depends(get_session),
            settings: Settings = Depends(get_settings_dep)) -> RunOut:
    return run_out(store.require_run(session, run_id), settings.public_url)


@router.patch("/runs/{run_id}", response_model=RunOut)
def update_run(run_id: RunId, body: RunPatch, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    store.require_run(session, run_id)
    if body.name is not None or body.hyperparameters is not None or (body.error is not None and body.status is None):
        store.update_run(session, run_id, name=body.name, hyperparameters=body.hyperparameters,
                         error=body.error if body.status is None else None)
    if body.status is not None:
        store.set_status(session, run_id, body.status, error=body.error)
    return run_out(store.require_run(session, run_id), settings.public_url)


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: RunId, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    run = store.request_cancel(session, run_id)
    if run.status == "cancelled" and run.task_id:
        queue.revoke(run.task_id, settings=settings)
    return run_out(run, settings.public_url)


@router.post("/runs/{run_id}/resume", status_code=201, response_model=RunOut)
def resume_run(run_id: RunId, body: ResumeRequest | None = Body(None), session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    new = store.resume_run(session, run_id, checkpoint_id=body.checkpoint_id if body else None,
                           queue=body.queue if body else None)
    _enqueue(session, new.id, new.queue, settings)
    return run_out(store.require_run(session, new.id), settings.public_url)


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: RunId, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> Response:
    store.delete_run(session, run_id, settings.artifact_root)
    return Response(status_code=204)


@router.get("/runs/{run_id}/hyperparameters")
def get_hyperparameters(run_id: RunId, session: Session = Depends(get_session)) -> dict[str, Any]:
    return store.json_safe(store.require_run(session, run_id).hyperparameters or {})


@router.put("/runs/{run_id}/hyperparameters")
def put_hyperparameters(run_id: RunId, body: dict[str, Any], merge: bool = False,
                        session: Session = Depends(get_session)) -> dict[str, Any]:
    return store.json_safe(store.set_hyperparameters(session, run_id, body, merge=merge).hyperparameters)


@router.get("/runs/{run_id}/summary")
def get_summary(run_id: RunId, session: Session = Depends(get_session)) -> dict[str, Any]:
    summary = store.get_summary(session, run_id)
    if summary is None:
        raise ApiError(404, f"Run {run_id} has no model summary yet; it is stored when training starts.")
    return store.json_safe(summary)


@router.put("/runs/{run_id}/summary")
def put_summary(run_id: RunId, body: dict[str, Any], session: Session = Depends(get_session)) -> dict[str, Any]:
    store.set_summary(session, run_id, body)
    return store.json_safe(store.get_summary(session, run_id))

"""Runs: create (recipe or external), list, get, update, cancel, resume, delete,
hyperparameters and model summary."""

from __future__ import annotations

import logging
import uuid
from typing import Any, cast

from fastapi import APIRouter, Body, Depends, Query, Request, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server import audit, auth, queue, quotas, recipes, runs_query, snapshots, store, users
from server.auth import Principal, create_token
from server.deps import MAX_KEYS, MAX_LIST_LIMIT, RunId, get_session, get_settings_dep, key_list
from server.errors import ApiError
from server.models import Run
from server.query import QueryError
from server.schemas import (
    ClaimRequest,
    FinishRequest,
    HeartbeatIn,
    RequeueRequest,
    ResumeRequest,
    RunCreate,
    RunList,
    RunOut,
    RunPatch,
    checkpoint_out,
    run_out,
)
from server.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["runs"])


def _enqueue(session: Session, run_id: int, run_queue: str, settings: Settings) -> str | None:
    """Send the run's message; on a broker failure the run stays queued with ``enqueued_at``
    NULL and the server's reaper sends it when the broker is back. Returns a warning or None."""
    run = store.require_run(session, run_id)
    task_id = run.task_id or uuid.uuid4().hex
    if run.task_id is None:
        store.set_task_id(session, run_id, task_id)
    try:
        queue.enqueue_run(run_id, task_id, queue=run_queue, settings=settings)
    except Exception as exc:  # report the broker, keep the run queued
        log.warning("enqueue of run %s failed: %s", run_id, exc)
        return (f"The job queue did not take run {run_id} ({type(exc).__name__}: {exc}); it stays queued and "
                "the server sends it again when the broker answers.")
    store.mark_enqueued(session, run_id, task_id)
    return None


def _availability_warning(session: Session, recipe: str, run_queue: str, settings: Settings) -> str | None:
    for published, queues, available in store.list_recipes(session, settings.heartbeat_timeout):
        if published.name != recipe:
            continue
        if not available:
            return (f"No live worker serves recipe {recipe!r} now; the run waits in queue {run_queue!r} until "
                    "one starts.")
        if run_queue not in queues:
            return (f"No live worker takes recipe {recipe!r} from queue {run_queue!r} (they serve "
                    f"{', '.join(queues)}); the run waits until one does.")
    return None


@router.post("/runs", status_code=201, response_model=RunOut)
def create_run(body: RunCreate, request: Request, response: Response, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    principal = _principal(request)
    new_project = auth.require_project_role(session, principal, body.project, "write") is None
    if body.client_key is not None:
        existing = store.run_by_client_key(session, body.client_key)
        if existing is not None:
            if auth.role_in(session, principal, existing.project_id) is None or existing.owner_id != principal.user_id:
                raise ApiError(409, "This client_key belongs to another run; use a new key.", "client_key")
            response.status_code = 200
            return run_out(existing, settings.public_url)
    if body.recipe == store.CODE_RECIPE:
        return _create_code_run(body, request, session, settings, new_project)
    if body.code is not None:
        raise ApiError(422, f'code is only for recipe "code" (a run of a project\'s own code), not {body.recipe!r}.',
                       "code")
    if body.recipe == store.EXTERNAL_RECIPE:
        try:
            run = store.create_run(session, recipe=body.recipe, name=body.name, project=body.project,
                                   params=body.params, trainer=body.trainer, hyperparameters=body.hyperparameters,
                                   status="running", max_attempts=1, client_key=body.client_key,
                                   owner_id=principal.user_id, tags=_tags(body.tags))
        except IntegrityError:  # a concurrent create with the same client_key won
            session.rollback()
            existing = store.run_by_client_key(session, body.client_key or "")
            if existing is None:
                raise
            response.status_code = 200
            return run_out(existing, settings.public_url)
        _submitted(request, session, run, new_project)
        return run_out(run, settings.public_url)
    recipe = store.get_recipe(session, body.recipe)
    if recipe is None:
        known = ", ".join(r.name for r, _, _ in store.list_recipes(session, settings.heartbeat_timeout))
        raise ApiError(422, f"Unknown recipe {body.recipe!r}; use one of: {known or 'none published yet (start a worker)'}"
                            ", or \"external\" for a script.", "recipe")
    params, trainer = recipes.validate_each((recipe.params_schema or {}, body.params, "params"),
                                            (recipe.trainer_schema or {}, body.trainer, "trainer"))
    trainer = _bounded_trainer(session, body.project, trainer, settings)
    run = store.create_run(session, recipe=body.recipe, name=body.name, project=body.project, params=params,
                           trainer=trainer, hyperparameters=body.hyperparameters,
                           max_attempts=settings.max_attempts, queue=body.queue, client_key=body.client_key,
                           owner_id=principal.user_id, tags=_tags(body.tags))
    _submitted(request, session, run, new_project)
    warnings = [w for w in (_availability_warning(session, body.recipe, run.queue, settings),
                            _enqueue(session, run.id, run.queue, settings)) if w]
    out = run_out(store.require_run(session, run.id), settings.public_url)
    out.warnings = warnings
    return out


def _tags(tags: list[str]) -> list[str]:
    try:
        return runs_query.check_tags(tags)
    except runs_query.Invalid as exc:
        raise ApiError(422, exc.message, "tags") from None


def _command_params(params: dict[str, Any]) -> dict[str, Any]:
    """A command entry's params: options after the command, each a string, number or boolean."""
    for key, value in params.items():
        if not key or not isinstance(value, str | int | float | bool) and value is not None:
            raise ApiError(422, f"Invalid value for params.{key}: a command's params are its options, each a "
                                "string, number or boolean (true: the bare flag, false: left out).", f"params.{key}")
    return params


def _published_trainer_schema(session: Session, settings: Settings) -> dict[str, Any] | None:
    """The trainer arguments' schema the workers publish with their recipes (the same for all)."""
    for recipe, _, _ in store.list_recipes(session, settings.heartbeat_timeout):
        if recipe.trainer_schema:
            return recipe.trainer_schema
    return None


def _create_code_run(body: RunCreate, request: Request, session: Session, settings: Settings,
                     new_project: bool) -> RunOut:
    """A run of a snapshot of the project's own code (docs/code-runs.md)."""
    principal = _principal(request)
    if body.code is None:
        raise ApiError(422, 'A code run needs "code": {"snapshot_id": ..., "entry": {...}} (runyard submit '
                            "uploads a folder and sends it).", "code")
    project = store.project_by_name(session, body.project)
    snapshot = store.get_snapshot(session, body.code.snapshot_id)
    if snapshot is None or project is None or snapshot.project_id != project.id:
        raise ApiError(422, f"Snapshot {body.code.snapshot_id} is not a snapshot of project {body.project!r}; "
                            f"upload the folder to this project (PUT /api/v1/snapshots/{{sha256}}?project="
                            f"{body.project}) and use the id it answers.", "code.snapshot_id")
    paths = cast("set[str]", {f.get("path") for f in store.snapshot_files(session, snapshot.id)})
    try:
        entry = snapshots.validate_entry(body.code.entry, paths)
    except snapshots.EntryError as exc:
        raise ApiError(422, f"Invalid value for code.entry.{exc.field}: {exc}", f"code.entry.{exc.field}") from None
    schema = store.get_code_schema(session, snapshot.id, snapshots.entry_key(entry))
    if schema is not None and schema.params_schema:
        params = recipes.validate(schema.params_schema, body.params, "params")
    elif entry["kind"] == "command":
        params = _command_params(dict(body.params))
    else:  # validated by the run's process, which records the schema first
        params = dict(body.params)
    if entry["kind"] != "module":
        if body.trainer:
            where = "its config's trainer section" if entry["kind"] == "cli" else "the command's own options"
            raise ApiError(422, f"A {entry['kind']} run takes no trainer arguments; set them in {where}.",
                           "trainer")
        trainer: dict[str, Any] = {}
    else:
        trainer_schema = (schema.trainer_schema if schema is not None and schema.trainer_schema
                          else _published_trainer_schema(session, settings))
        trainer = recipes.validate(trainer_schema, body.trainer, "trainer") if trainer_schema else dict(body.trainer)
        trainer = _bounded_trainer(session, body.project, trainer, settings)
    run = store.create_run(session, recipe=store.CODE_RECIPE, name=body.name, project=body.project, params=params,
                           trainer=trainer, hyperparameters=body.hyperparameters,
                           max_attempts=settings.max_attempts, queue=body.queue, client_key=body.client_key,
                           owner_id=principal.user_id, snapshot_id=snapshot.id, entry=entry, tags=_tags(body.tags))
    _submitted(request, session, run, new_project)
    warnings = [w for w in (_availability_warning(session, store.CODE_RECIPE, run.queue, settings),
                            _enqueue(session, run.id, run.queue, settings)) if w]
    out = run_out(store.require_run(session, run.id), settings.public_url)
    out.warnings = warnings
    return out


def _bounded_trainer(session: Session, project: str, trainer: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """A run that never ends is refused (422 naming trainer.max_epochs); every other gets the
    project's longest run time as ``max_time`` when it has none or a longer one (server/quotas.py)."""
    quotas.refuse_endless(trainer)
    store.refuse_too_many_gpus(session, trainer, settings.heartbeat_timeout)
    return quotas.apply_max_time(trainer, quotas.effective_by_name(session, project, settings))


def _submitted(request: Request, session: Session, run: Any, new_project: bool) -> None:
    """The audit event of a new run; the creator of a new project becomes its admin."""
    principal = _principal(request)
    if new_project and principal.user_id is not None:
        users.set_role(session, run.project, users.get_user(session, principal.user_id), "admin", commit=False)
    audit.record(session, "run_submitted", request=request, target=f"run {run.id}", project_id=run.project_id,
                 recipe=run.recipe, name=run.name)


@router.get("/runs", response_model=RunList)
def list_runs(
    request: Request,
    project: str | None = None,
    status: str | None = None,
    recipe: str | None = None,
    q: str | None = Query(None, max_length=4000, description="A query (docs/dashboard.md), e.g. "
                          "'params.lr < 0.01 and tag:baseline'; a bare word: the run name contains it."),
    sort: str = Query("-created_at", max_length=300, description="[-]<field>: any query field (e.g. "
                      "-metrics.val_loss.min, params.lr, created_at) or the old [-]metric:<key>; NULLs last."),
    limit: int = Query(50, ge=1, le=MAX_LIST_LIMIT),
    offset: int = Query(0, ge=0, le=2**31),
    columns: str | None = Query(None, max_length=8000, description="Comma-separated query fields; each item "
                                "then has values: {column: value}."),
    metric_keys: str | None = Query(None, description=f"Comma-separated keys whose last values to include (at "
                                    f"most {MAX_KEYS})."),
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> RunList:
    """The runs of the projects the caller may see. A name, error, params, trainer or hyperparameters
    larger than RUNYARD_MAX_VALUE_BYTES is shown cut (named in each item's ``truncated``)."""
    visible = auth.visible_projects(session, _principal(request))
    fields = _columns(columns)
    try:
        runs, total = runs_query.list_runs(session, project=project, status=status, recipe=recipe, q=q, sort=sort,
                                           limit=limit, offset=offset, project_ids=visible)
    except QueryError as exc:
        raise ApiError(422, exc.message, "q", column=exc.column) from None
    except runs_query.Invalid as exc:
        raise ApiError(422, exc.message, exc.field) from None
    keys = key_list(metric_keys, "metric_keys")
    if not keys and sort.lstrip("-+").startswith("metric:"):
        keys = [sort.lstrip("-+").removeprefix("metric:")]
    last = store.last_metric_values(session, [r.id for r in runs], keys) if keys else {}
    tags = runs_query.tags_of(session, [r.id for r in runs])
    values = runs_query.column_values(session, runs, fields) if fields else {}
    items = []
    for r in runs:
        item = run_out(r, settings.public_url, last.get(r.id, {}) if keys else None, cap=settings.max_value_bytes)
        item.tags = tags.get(r.id, [])
        if fields:
            item.values = {k: store.json_safe(v) if not isinstance(v, float) else store.encode_float(v)
                           for k, v in values.get(r.id, {}).items()}
        items.append(item)
    return RunList(items=items, total=total, limit=limit, offset=offset)


def _columns(columns: str | None) -> list[Any]:
    names = key_list(columns, "columns", limit=100)
    try:
        return runs_query.column_fields(names)
    except runs_query.Invalid as exc:
        raise ApiError(422, exc.message, "columns") from None


@router.get("/runs/keys")
def run_keys(request: Request, project: str | None = None, session: Session = Depends(get_session)) -> dict[str, Any]:
    """The fields, param / hyperparameter / metric keys and tags of the runs the caller may see
    (for completion and the column chooser; at most 500 of each)."""
    visible = auth.visible_projects(session, _principal(request))
    return runs_query.list_keys(session, project=project, project_ids=visible)


@router.get("/runs/groups")
def run_groups(request: Request, group_by: str = Query(..., max_length=300), project: str | None = None,
               q: str | None = Query(None, max_length=4000), columns: str | None = Query(None, max_length=8000),
               session: Session = Depends(get_session)) -> dict[str, Any]:
    """The runs matching ``q`` grouped by a field: count, and mean/min/max of each numeric column."""
    visible = auth.visible_projects(session, _principal(request))
    names = key_list(columns, "columns", limit=100)
    try:
        found = runs_query.groups(session, project=project, q=q, group_by=group_by, columns=names,
                                  project_ids=visible)
    except QueryError as exc:
        raise ApiError(422, exc.message, "q", column=exc.column) from None
    except runs_query.Invalid as exc:
        raise ApiError(422, exc.message, exc.field) from None
    return {"groups": [{**g, "value": store.json_safe(g["value"]),
                        "aggregates": {c: {k: store.encode_float(v) for k, v in a.items()}
                                       for c, a in g["aggregates"].items()}} for g in found]}


@router.get("/runs/{run_id}", response_model=RunOut)
def get_run(run_id: RunId, session: Session = Depends(get_session),
            settings: Settings = Depends(get_settings_dep)) -> RunOut:
    run = store.require_run(session, run_id)
    out = run_out(run, settings.public_url)
    out.tags = runs_query.tags_of(session, [run.id]).get(run.id, [])
    out.note = run.note
    out.note_html = runs_query.render_note(run.note)
    return out


@router.patch("/runs/{run_id}", response_model=RunOut)
def update_run(run_id: RunId, body: RunPatch, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    run = store.require_run(session, run_id)
    if body.status is not None and run.recipe != store.EXTERNAL_RECIPE:
        raise ApiError(409, f"Run {run_id} is trained by a worker; only an external run's status can be set. "
                            f"Cancel it with POST /api/v1/runs/{run_id}/cancel.", "status")
    if body.name is not None or body.hyperparameters is not None or (body.error is not None and body.status is None):
        store.update_run(session, run_id, name=body.name, hyperparameters=body.hyperparameters,
                         error=body.error if body.status is None else None)
    if body.status is not None:
        store.set_status(session, run_id, body.status, error=body.error)
    return run_out(store.require_run(session, run_id), settings.public_url)


@router.post("/runs/{run_id}/cancel", response_model=RunOut)
def cancel_run(run_id: RunId, request: Request, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> RunOut:
    return run_out(cancel_and_record(session, request, settings, run_id), settings.public_url)


def cancel_and_record(session: Session, request: Request, settings: Settings, run_id: int) -> Run:
    """Cancel a run (a queued one's task revoked) and audit it: the single-run route's and the bulk action's."""
    run = store.request_cancel(session, run_id)
    audit.record(session, "run_cancelled", request=request, target=f"run {run_id}", project_id=run.project_id)
    if run.status == "cancelled" and run.task_id:
        queue.revoke(run.task_id, settings=settings)
    return run


@router.post("/runs/{run_id}/resume", status_code=201, response_model=RunOut)
def resume_run(run_id: RunId, request: Request, body: ResumeRequest | None = Body(None),
               session: Session = Depends(get_session), settings: Settings = Depends(get_settings_dep)) -> RunOut:
    new = store.resume_run(session, run_id, checkpoint_id=body.checkpoint_id if body else None,
                           queue=body.queue if body else None, owner_id=_principal(request).user_id)
    if new.recipe != store.CODE_RECIPE or (new.entry or {}).get("kind") == "module":
        # the project's longest run time as it is now (trainer arguments: recipe and module runs)
        new.trainer = quotas.apply_max_time(new.trainer, quotas.effective(session, new.project_id, settings))
        session.commit()
    audit.record(session, "run_resumed", request=request, target=f"run {new.id}", project_id=new.project_id,
                 resumed_from=run_id)
    warning = _enqueue(session, new.id, new.queue, settings)
    out = run_out(store.require_run(session, new.id), settings.public_url)
    out.warnings = [warning] if warning else []
    return out


@router.delete("/runs/{run_id}", status_code=204)
def delete_run(run_id: RunId, request: Request, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> Response:
    delete_and_record(session, request, settings, run_id, store.require_run(session, run_id).project_id)
    return Response(status_code=204)


def delete_and_record(session: Session, request: Request, settings: Settings, run_id: int, project_id: int) -> None:
    """Delete a run with its files and audit it: the single-run route's and the bulk action's."""
    store.delete_run(session, run_id, request.app.state.artifacts, uploads_dir=settings.upload_dir)
    audit.record(session, "run_deleted", request=request, target=f"run {run_id}", project_id=project_id)


@router.get("/runs/{run_id}/hyperparameters")
def get_hyperparameters(run_id: RunId, session: Session = Depends(get_session)) -> dict[str, Any]:
    return store.json_safe(store.require_run(session, run_id).hyperparameters or {})


@router.put("/runs/{run_id}/hyperparameters")
def put_hyperparameters(run_id: RunId, body: dict[str, Any], merge: bool = False,
                        session: Session = Depends(get_session)) -> dict[str, Any]:
    return store.json_safe(store.set_hyperparameters(session, run_id, body, merge=merge).hyperparameters)


@router.get("/runs/{run_id}/summary")
def get_summary(run_id: RunId, session: Session = Depends(get_session),
                optional: bool = Query(False, description="Answer 200 with null (not 404) when the run has no "
                                                          "model summary yet (the dashboard asks so).")
                ) -> dict[str, Any] | None:
    summary = store.get_summary(session, run_id)
    if summary is None:
        if optional and store.get_run(session, run_id) is not None:
            return None
        store.require_run(session, run_id)
        raise ApiError(404, f"Run {run_id} has no model summary yet; it is stored when training starts.")
    return store.json_safe(summary)


@router.put("/runs/{run_id}/summary")
def put_summary(run_id: RunId, body: dict[str, Any], session: Session = Depends(get_session)) -> dict[str, Any]:
    store.set_summary(session, run_id, body)
    return store.json_safe(store.get_summary(session, run_id))


# --------------------------------------------------------------------------- run processes and workers


def _principal(request: Request) -> Principal:
    return request.state.principal


def _writer_attempt(request: Request, run: Any, attempt: int | None, doing: str) -> int | None:
    """The attempt a write to a running run is guarded by: the run token's, or the one a worker
    names (422 without it); None for an external run written without either (403 for a
    worker's run)."""
    principal = _principal(request)
    if principal.kind == "run":
        return principal.attempt
    if principal.kind == "worker":
        if attempt is None:
            raise ApiError(422, f"A worker that {doing} a run names the attempt it runs.", "attempt")
        return attempt
    if run.recipe != store.EXTERNAL_RECIPE:
        raise ApiError(403, f"Run {run.id} is trained by a worker; only its run process or worker {doing} it. "
                            f"Cancel it with POST /api/v1/runs/{run.id}/cancel.")
    return None


@router.post("/runs/{run_id}/heartbeat")
def heartbeat(run_id: RunId, request: Request, body: HeartbeatIn | None = Body(None),
              session: Session = Depends(get_session)) -> dict[str, Any]:
    """The run's process is alive. The answer says whether to stop (cancel requested); 409:
    the run is no longer running (as this attempt), stop training it. Sent by the run's process
    (its run token) and by the worker watching that process (worker token and ``attempt``): a
    busy training process on a loaded machine may be late with its own."""
    run = store.require_run(session, run_id)
    attempt = _writer_attempt(request, run, body.attempt if body else None, "sends heartbeats for")
    return store.heartbeat_run(session, run_id, attempt)


@router.post("/runs/{run_id}/finish", response_model=RunOut)
def finish(run_id: RunId, body: FinishRequest, request: Request, session: Session = Depends(get_session),
           settings: Settings = Depends(get_settings_dep)) -> RunOut:
    """The final status of a running run: an external run's script, a run process (run token,
    its attempt) or the worker that ran it (worker token and ``attempt``, e.g. the process died)."""
    run = store.require_run(session, run_id)
    attempt = _writer_attempt(request, run, body.attempt, "finishes")
    return run_out(store.finish_run(session, run_id, body.status, error=body.error, attempt=attempt),
                   settings.public_url)


def _inputs(session: Session, params: dict[str, Any]) -> list[Any]:
    """Checkpoints of other runs a recipe's parameters name, which its run token may download:
    parameters ending in ``checkpoint_id`` (a checkpoint) and ``source_run_id`` (that run's
    best, else last checkpoint)."""
    out = []
    for name, value in (params or {}).items():
        if not isinstance(value, int) or isinstance(value, bool) or not 0 < value <= store.INT32_MAX:  # id columns
            continue
        checkpoint = None
        if name.endswith("checkpoint_id"):
            checkpoint = store.get_checkpoint(session, value)
        elif name == "source_run_id" or name.endswith("_source_run_id"):
            checkpoint = store.best_or_last_checkpoint(session, value)
        if checkpoint is not None:
            out.append(checkpoint)
    return out


def _delete_files(request: Request, keys: list[str]) -> None:
    artifacts = getattr(request.app.state, "artifacts", None)
    for key in keys:
        try:
            if artifacts is not None:
                artifacts.delete(key)
        except Exception:  # a missing file is no reason to fail a claim
            log.warning("could not delete %s from the artifact store", key, exc_info=True)


@router.post("/runs/{run_id}/claim")
def claim(run_id: RunId, body: ClaimRequest, request: Request, session: Session = Depends(get_session),
          settings: Settings = Depends(get_settings_dep)) -> dict[str, Any]:
    """A worker takes a queued run: it becomes running (attempt + 1), its history is cut back
    to its resume point, and a run token for this attempt is issued (shown only here)."""
    claimed = store.claim_run(session, run_id, body.worker, body.device)
    if claimed is None:
        run = store.get_run(session, run_id)
        state = "gone" if run is None else run.status + (" (cancel requested)" if run.cancel_requested else "")
        raise ApiError(409, f"Run {run_id} is not claimable: it is {state}.", "status")
    run, resume, dropped = claimed
    _delete_files(request, dropped)
    inputs = _inputs(session, run.params or {})
    _, secret = create_token(session, "run", name=f"run {run_id} attempt {run.attempt}", run_id=run_id,
                             attempt=run.attempt, reads=[c.id for c in inputs])
    return {
        "run": run_out(store.require_run(session, run_id), settings.public_url).model_dump(mode="json"),
        "token": secret,
        "attempt": run.attempt,
        "heartbeat_interval": settings.heartbeat_interval,
        "resume": None if resume is None else {
            **checkpoint_out(resume).model_dump(mode="json"), "checkpoint_id": resume.id,
            "filename": resume.path.rsplit("/", 1)[-1],
        },
        "inputs": [checkpoint_out(c).model_dump(mode="json") for c in inputs],
    }


@router.post("/runs/{run_id}/requeue", response_model=RunOut)
def requeue(run_id: RunId, body: RequeueRequest, session: Session = Depends(get_session),
            settings: Settings = Depends(get_settings_dep)) -> RunOut:
    """A worker shutting down hands its run back (saved, not counted as an attempt); with ``error``,
    a crashed attempt goes back counted (failed after max_attempts)."""
    if body.error:
        run = store.requeue_after_crash(session, run_id, body.attempt, body.error)
        if run is not None and run.status != "queued":
            return run_out(run, settings.public_url)
    else:
        run = store.requeue_after_shutdown(session, run_id, body.attempt)
    if run is None:
        current = store.require_run(session, run_id)
        raise ApiError(409, f"Run {run_id} is {current.status} (attempt {current.attempt}), not running as "
                            f"attempt {body.attempt}; nothing to requeue.", "attempt")
    warning = _enqueue(session, run_id, run.queue, settings)
    out = run_out(store.require_run(session, run_id), settings.public_url)
    out.warnings = [warning] if warning else []
    return out

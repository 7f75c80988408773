"""Checkpoints: list, register, upload (resumable or one-shot), flag, delete, and streamed download
with Range and a sha256 header. Files live in the artifact store (``server/artifacts.py``,
``app.state.artifacts``) under ``"<run_id>/checkpoints/<filename>"``; every key is checked there and
must stay inside the store's root.

Uploads are streamed to a staging file on the server's disk (``RUNYARD_UPLOAD_DIR``,
``<run_id>/<upload_id>.part``) chunk by chunk as they arrive, never held in memory: a cut
connection keeps what was written, and the staging file's size is the upload's offset. When the
last byte is in, the sha256 is verified by streaming the staged file, the file goes to the store
and the checkpoint is registered (names are immutable: an existing name in the run is 409).

A later PUT on the same upload takes over from an earlier one that is still open (a client that
reconnected while the server had not noticed the old connection die): the old one stops at its
next chunk without writing it. This coordination is per server process.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from server import audit, health, quotas, store
from server.api.downloads import continues, stream_artifact
from server.artifacts import ArtifactNotFound, ArtifactStore, UnsafeKey, artifact_store, check_key
from server.deps import CheckpointId, RunId, get_session, get_settings_dep
from server.errors import ApiError, error_body
from server.models import Upload, utcnow
from server.schemas import (
    CheckpointOut,
    CheckpointPatch,
    CheckpointRegister,
    UploadCreate,
    UploadCreated,
    UploadProgress,
    UploadStatus,
    checkpoint_out,
)
from server.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["checkpoints"])

CHUNK = 1024 * 1024
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")
UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")
BINARY_BODY = {"requestBody": {"required": True, "content": {"application/octet-stream": {
    "schema": {"type": "string", "format": "binary"}}}}}
UploadId = PathParam(min_length=1, max_length=100, description="An upload id (from POST .../checkpoints/uploads).")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def artifacts_of(request: Request) -> ArtifactStore:
    """The app's artifact store (built once from the settings and kept on ``app.state.artifacts``)."""
    artifacts = getattr(request.app.state, "artifacts", None)
    if artifacts is None:
        artifacts = request.app.state.artifacts = artifact_store(request.app.state.settings)
    return artifacts


def checkpoint_key(run_id: int, filename: str) -> str:
    return f"{run_id}/checkpoints/{filename}"


def _check_filename(filename: str) -> None:
    if not SAFE_NAME.match(filename):
        raise ApiError(422, f"File name {filename!r} is not allowed; use letters, digits and ._=+- only (starting "
                            "with a letter or digit), without folders.", "filename")


def _check_writable(artifacts: ArtifactStore, run_id: int, key: str) -> None:
    try:
        artifacts.validate(key)
    except UnsafeKey:
        # e.g. the run's folder or its checkpoints folder is a symlink out of the root
        raise ApiError(403, f"The checkpoint folder of run {run_id} points outside the artifact root; nothing is "
                            "written there.") from None


def _attempt(request: Request) -> int | None:
    return getattr(request.state, "run_attempt", None)


async def _in_session(request: Request, fn: Any, *args: Any) -> Any:
    """``fn(session, *args)`` in the thread pool with a session of its own."""

    def call() -> Any:
        session: Session = request.app.state.sessionmaker()
        try:
            return fn(session, *args)
        finally:
            session.close()

    return await run_in_threadpool(call)


def _conflict_response(run_id: int, existing: Any) -> JSONResponse:
    return JSONResponse(error_body(
        f"Run {run_id} already has a checkpoint named {store.checkpoint_filename(existing.path)!r} (id "
        f"{existing.id}); checkpoints are immutable: use another file name.", "filename",
        checkpoint=checkpoint_out(existing).model_dump(mode="json")), status_code=409)


class _KeyLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (None, 0))
        if lock is None:
            lock = asyncio.Lock()
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users <= 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)


# Finalising a name (check, store, register) is serialised per artifact key in this process.
_finalising = _KeyLocks()
# The PUT that currently writes each upload (a later PUT takes over; see the module docstring).
_writers: dict[str, object] = {}


# --------------------------------------------------------------------------- list, register


@router.get("/runs/{run_id}/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(run_id: RunId, session: Session = Depends(get_session)) -> list[CheckpointOut]:
    return [checkpoint_out(c) for c in store.list_checkpoints(session, run_id)]


@router.post("/runs/{run_id}/checkpoints", status_code=201, response_model=CheckpointOut)
def register_checkpoint(run_id: RunId, body: CheckpointRegister, request: Request,
                        session: Session = Depends(get_session)) -> Any:
    """Register a file that is already in the artifact store, under the run's own folder ``<run_id>/``."""
    store.require_run(session, run_id)
    artifacts = artifacts_of(request)
    try:
        key = check_key(body.path)
    except UnsafeKey:
        raise ApiError(422, f"Checkpoint path {body.path!r} is not a plain relative path; give a path relative to "
                            f"the artifact root under '{run_id}/'.", "path") from None
    if key.split("/", 1)[0] != str(run_id) or "/" not in key:
        raise ApiError(422, f"Checkpoint path {body.path!r} is not under this run's folder; give a path like "
                            f"'{run_id}/checkpoints/<file>' (a run registers only its own files).", "path")
    try:
        size = artifacts.size(key)
    except UnsafeKey:
        raise ApiError(422, f"Checkpoint path {body.path!r} is outside the artifact root; give a path relative "
                            f"to the artifact root under '{run_id}/'.", "path") from None
    except ArtifactNotFound:
        raise ApiError(422, f"There is no file at {body.path!r} in the artifact store; save the checkpoint there "
                            "first, or upload it (POST .../checkpoints/uploads or PUT .../checkpoints/upload).",
                       "path") from None
    existing = store.checkpoint_named(session, run_id, store.checkpoint_filename(key))
    if existing is not None:
        return _conflict_response(run_id, existing)
    checkpoint = store.add_checkpoint(
        session, run_id, key, epoch=body.epoch, step=body.step, monitor=body.monitor, score=body.score,
        size=size, sha256=artifacts.sha256(key), is_best=body.is_best, is_last=body.is_last,
        attempt=_attempt(request), resumable=body.resumable, exclusive=True, retain=True)
    return checkpoint_out(checkpoint)


# --------------------------------------------------------------------------- flags, delete


@router.patch("/checkpoints/{checkpoint_id}", response_model=CheckpointOut)
def patch_checkpoint(checkpoint_id: CheckpointId, body: CheckpointPatch,
                     session: Session = Depends(get_session)) -> CheckpointOut:
    """Set or clear ``is_best`` / ``is_last`` (true takes the flag from the run's other checkpoints)."""
    return checkpoint_out(store.set_checkpoint_flags(session, checkpoint_id, is_best=body.is_best,
                                                     is_last=body.is_last))


@router.delete("/checkpoints/{checkpoint_id}", status_code=204)
def delete_checkpoint(checkpoint_id: CheckpointId, request: Request,
                      session: Session = Depends(get_session)) -> Response:
    """Remove a checkpoint and its file (top-k rotation)."""
    checkpoint = store.get_checkpoint(session, checkpoint_id)
    run = store.get_run(session, checkpoint.run_id) if checkpoint is not None else None
    key = store.delete_checkpoint(session, checkpoint_id)
    if request.state.principal.is_user:  # not the run's own top-k rotation
        audit.record(session, "checkpoint_deleted", request=request, target=f"checkpoint {checkpoint_id}",
                     project_id=run.project_id if run else None)
    if key is not None:
        try:
            artifacts_of(request).delete(key)
        except UnsafeKey:
            pass  # a legacy row pointing outside the root: nothing of ours to delete
    return Response(status_code=204)


# --------------------------------------------------------------------------- resumable uploads


def _staged_path(settings: Settings, run_id: int, upload_id: str) -> Path:
    return settings.upload_dir / str(run_id) / f"{upload_id}.part"


def _staged_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _upload_view(upload: Upload) -> dict[str, Any]:
    return {"id": upload.id, "run_id": upload.run_id, "filename": upload.filename, "size": upload.size,
            "sha256": upload.sha256, "meta": dict(upload.meta or {}), "attempt": upload.attempt,
            "received": upload.received}


def _load_upload(session: Session, upload_id: str) -> dict[str, Any] | None:
    upload = session.get(Upload, upload_id)
    return None if upload is None else _upload_view(upload)


def _missing_upload(upload_id: str) -> Exception:
    return store.missing_upload(upload_id)


def _require_space(request: Request, run_id: int, body: UploadCreate, pending: list[Upload]) -> None:
    """507 when what is left to send of this file (less what an upload it continues staged) does
    not fit the staging folder, or the artifact store (server/health.py)."""
    settings: Settings = request.app.state.settings
    staged = max((_staged_size(_staged_path(settings, run_id, u.id)) for u in pending
                  if u.sha256 == body.sha256.lower() and u.size == body.size and "checkpoint_id" not in (u.meta or {})),
                 default=0)
    health.require_space(request.app, body.size - staged, total=body.size)


@router.post("/runs/{run_id}/checkpoints/uploads", status_code=201, response_model=UploadCreated,
             responses={200: {"description": "An unfinished upload of the same file (name, size and sha256) "
                                             "exists: continue it from its offset."}})
async def create_upload(run_id: RunId, body: UploadCreate, request: Request) -> Any:
    """Start (or continue) a resumable upload; then PUT /api/v1/uploads/{upload_id}?offset=N."""
    settings: Settings = request.app.state.settings
    _check_filename(body.filename)
    if body.size > settings.max_checkpoint_bytes:
        raise ApiError(413, f"A checkpoint of {body.size} bytes is larger than this server takes "
                            f"(RUNYARD_MAX_CHECKPOINT_BYTES={settings.max_checkpoint_bytes}).", "size")
    key = checkpoint_key(run_id, body.filename)
    _check_writable(artifacts_of(request), run_id, key)
    sha = body.sha256.lower()
    meta = store.json_safe({"epoch": body.epoch, "step": body.step, "monitor": body.monitor, "score": body.score,
                            "is_best": body.is_best, "is_last": body.is_last, "resumable": body.resumable},
                           "meta")
    attempt = _attempt(request)

    def create(session: Session) -> tuple[str, Any]:
        store.require_run(session, run_id)
        existing = store.checkpoint_named(session, run_id, body.filename)
        if existing is not None:
            return "conflict", existing
        quotas.check_checkpoint_bytes(session, run_id, body.size)  # 413 by the declared size
        pending = list(session.scalars(select(Upload).where(Upload.run_id == run_id,
                                                            Upload.filename == body.filename)))
        _require_space(request, run_id, body, pending)  # 507 before anything is registered
        for upload in pending:
            if "checkpoint_id" in (upload.meta or {}):
                continue
            if upload.sha256 == sha and upload.size == body.size:
                upload.meta = meta
                upload.attempt = attempt if attempt is not None else upload.attempt
                upload.updated_at = utcnow()
                session.commit()
                return "continue", upload.id
        superseded = [u.id for u in pending if "checkpoint_id" not in (u.meta or {})]
        for upload_id in superseded:  # an unfinished upload of another file under this name is dropped
            session.delete(session.get(Upload, upload_id))
            _writers.pop(upload_id, None)
            _staged_path(settings, run_id, upload_id).unlink(missing_ok=True)
        upload = Upload(id=secrets.token_hex(16), run_id=run_id, filename=body.filename, size=body.size,
                        sha256=sha, received=0, meta=meta, attempt=attempt, created_at=utcnow(), updated_at=utcnow())
        session.add(upload)
        session.commit()
        return "created", upload.id

    outcome, value = await _in_session(request, create)
    if outcome == "conflict":
        return _conflict_response(run_id, value)
    offset = _staged_size(_staged_path(settings, run_id, value))
    answer = {"upload_id": value, "offset": min(offset, body.size), "size": body.size}
    return JSONResponse(answer, status_code=201 if outcome == "created" else 200)


@router.get("/uploads/{upload_id}", response_model=UploadStatus)
async def upload_status(request: Request, upload_id: str = UploadId) -> Any:
    settings: Settings = request.app.state.settings
    if not UPLOAD_ID.match(upload_id):
        raise _missing_upload(upload_id)

    def load(session: Session) -> dict[str, Any] | None:
        upload = _load_upload(session, upload_id)
        if upload is not None and "checkpoint_id" in upload["meta"]:
            checkpoint = store.get_checkpoint(session, int(upload["meta"]["checkpoint_id"]))
            upload["checkpoint"] = None if checkpoint is None else checkpoint_out(checkpoint)
        return upload

    upload = await _in_session(request, load)
    if upload is None:
        raise _missing_upload(upload_id)
    if "checkpoint_id" in upload["meta"]:
        return UploadStatus(offset=upload["size"], size=upload["size"], done=True, checkpoint=upload["checkpoint"])
    offset = _staged_size(_staged_path(settings, upload["run_id"], upload_id))
    return UploadStatus(offset=min(offset, upload["size"]), size=upload["size"], done=False)


def _offset_error(status: int, message: str, offset: int, field: str | None = None) -> JSONResponse:
    return JSONResponse(error_body(message, field, offset=offset), status_code=status)


@router.put("/uploads/{upload_id}", response_model=UploadProgress, openapi_extra=BINARY_BODY,
            responses={409: {"description": "offset is not the server's offset (the body has it)"},
                       413: {"description": "the body goes past the declared size"},
                       422: {"description": "sha256 mismatch: the upload restarts at offset 0"}})
async def upload_part(request: Request, upload_id: str = UploadId,
                      offset: int = Query(..., ge=0, le=2**63 - 1, description="Where these bytes start: must be "
                                          "the server's offset (GET /api/v1/uploads/{upload_id}).")) -> Any:
    """Append raw bytes at ``offset``. The answer is the new offset; when it reaches the size, the
    file was verified, stored and registered, and the answer carries the checkpoint."""
    settings: Settings = request.app.state.settings
    if not UPLOAD_ID.match(upload_id):
        raise _missing_upload(upload_id)
    upload = await _in_session(request, _load_upload, upload_id)
    if upload is None:
        raise _missing_upload(upload_id)
    size = upload["size"]
    if "checkpoint_id" in upload["meta"]:
        return await _finish(request, upload)  # a repeat of the last PUT whose answer was lost
    staged = _staged_path(settings, upload["run_id"], upload_id)
    current = _staged_size(staged)
    if current > size:  # cannot happen through this API; start over rather than store garbage
        staged.unlink(missing_ok=True)
        current = 0
    if offset != current:
        return _offset_error(409, f"This upload is at offset {current}, not {offset}; send the bytes from "
                                  f"{current} on.", current, "offset")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and offset + int(declared) > size:
        return _offset_error(413, f"{declared} bytes at offset {offset} go past the upload's declared size of "
                                  f"{size} bytes.", current)
    health.require_space(request.app, size - current, "offset", total=size)  # 507 before a byte is read
    # 413 before a byte is read: the whole upload must still fit the project's checkpoint quota (its
    # bytes are bounded by the declared size). Then no await since the size was read: this PUT takes
    # over from an older one still open (that one writes nothing more), and continues exactly where it
    # stopped.
    await _in_session(request, lambda session: quotas.check_checkpoint_bytes(session, upload["run_id"], size))
    current = _staged_size(staged)
    if offset != current:
        return _offset_error(409, f"This upload is at offset {current}, not {offset}; send the bytes from "
                                  f"{current} on.", current, "offset")
    token = object()
    _writers[upload_id] = token
    written = current
    outcome = "done"
    try:
        staged.parent.mkdir(parents=True, exist_ok=True)
        # unbuffered: what write() returned is in the file, so its size is always exactly what was
        # received, also when a newer PUT takes over or the client goes away
        with open(staged, "ab", buffering=0) as f:
            try:
                async for chunk in request.stream():
                    if not chunk:
                        continue
                    if _writers.get(upload_id) is not token:
                        outcome = "superseded"
                        break
                    view = memoryview(chunk)
                    if written + len(view) > size:
                        outcome = "too_big"
                        view = view[:size - written]  # keep what fits, refuse the rest
                    while view:
                        n = f.write(view)
                        view = view[n:]
                        written += n
                    if outcome == "too_big":
                        break
            except ClientDisconnect:
                outcome = "disconnected"
    except OSError as exc:
        if health.storage_errno(exc) is not None:  # full or read-only: 507, this PUT's bytes dropped
            _truncate_staged(staged, current)
        raise
    finally:
        if _writers.get(upload_id) is token:
            del _writers[upload_id]

    def record(session: Session) -> None:
        row = session.get(Upload, upload_id)
        if row is not None:
            row.received = _staged_size(staged)
            row.updated_at = utcnow()
            session.commit()

    if outcome != "superseded":  # the newer PUT keeps the count
        await _in_session(request, record)
    if outcome == "disconnected":
        log.info("upload %s: the client went away at offset %s of %s", upload_id, written, size)
        return Response(status_code=400)  # nobody reads it
    if outcome == "superseded":
        now = _staged_size(staged)
        return _offset_error(409, "A newer PUT took over this upload; continue from its offset.", now, "offset")
    if outcome == "too_big":
        return _offset_error(413, f"The body goes past the upload's declared size of {size} bytes; the bytes up to "
                                  f"offset {written} were kept.", written)
    if written < size:
        return UploadProgress(offset=written, size=size)
    return await _finish(request, upload)


def _truncate_staged(staged: Path, offset: int) -> None:
    """Cut a staged upload back to ``offset`` (where the failed PUT started; 0: remove it)."""
    try:
        if offset == 0:
            staged.unlink(missing_ok=True)
        else:
            os.truncate(staged, offset)
    except OSError as exc:
        log.warning("could not cut %s back to %s bytes: %s", staged, offset, exc)


async def _finish(request: Request, upload: dict[str, Any]) -> Any:
    """Verify, store and register a complete upload (idempotent: a repeat answers the same)."""
    settings: Settings = request.app.state.settings
    artifacts = artifacts_of(request)
    upload_id, run_id, size = upload["id"], upload["run_id"], upload["size"]
    key = checkpoint_key(run_id, upload["filename"])
    staged = _staged_path(settings, run_id, upload_id)
    async with _finalising.hold(key):
        upload = await _in_session(request, _load_upload, upload_id)
        if upload is None:
            raise _missing_upload(upload_id)

        def registered(session: Session) -> tuple[str, Any]:
            done_id = upload["meta"].get("checkpoint_id")
            if done_id is not None:
                checkpoint = store.get_checkpoint(session, int(done_id))
                return "done", None if checkpoint is None else checkpoint_out(checkpoint)
            existing = store.checkpoint_named(session, run_id, upload["filename"])
            if existing is None:
                return "free", None
            if existing.path == key and existing.sha256 == upload["sha256"] and existing.size == size:
                _mark_done(session, upload_id, existing.id)  # registered, but the answer was lost
                return "done", checkpoint_out(existing)
            return "conflict", existing

        state, value = await _in_session(request, registered)
        if state == "done":
            return UploadProgress(offset=size, size=size, checkpoint=value)
        if state == "conflict":
            return _conflict_response(run_id, value)
        if _staged_size(staged) == size and staged.is_file():
            digest = await run_in_threadpool(sha256_of, staged)
            if digest != upload["sha256"]:
                staged.unlink(missing_ok=True)
                await _in_session(request, _reset, upload_id)
                return _offset_error(422, f"The {size} bytes received have sha256 {digest}, not the declared "
                                          f"{upload['sha256']}; the upload restarts at offset 0.", 0, "sha256")
            try:  # 413 before the file reaches the artifact store (the quota may be used up meanwhile)
                await _in_session(request, lambda session: quotas.check_checkpoint_bytes(session, run_id, size))
            except quotas.QuotaExceeded:
                staged.unlink(missing_ok=True)
                await _in_session(request, _reset, upload_id)
                raise
            await _in_session(request, _mark_verified, upload_id)
            await run_in_threadpool(artifacts.put_file, key, staged, move=True)
        elif not (upload["meta"].get("verified") and await run_in_threadpool(_stored_size, artifacts, key) == size):
            # neither the staged bytes nor a verified stored copy (e.g. the staging folder was cleaned)
            current = _staged_size(staged)
            return _offset_error(409, f"This upload is at offset {current}, not complete; send the bytes from "
                                      f"{current} on.", current, "offset")
        meta = upload["meta"]
        attempt = _attempt(request)
        attempt = upload["attempt"] if attempt is None else attempt

        def register(session: Session) -> CheckpointOut:
            checkpoint = store.add_checkpoint(
                session, run_id, key, epoch=meta.get("epoch"), step=meta.get("step"), monitor=meta.get("monitor"),
                score=_float(meta.get("score")), size=size, sha256=upload["sha256"],
                is_best=bool(meta.get("is_best")), is_last=bool(meta.get("is_last")), attempt=attempt,
                resumable=bool(meta.get("resumable")), exclusive=True, retain=True)
            _mark_done(session, upload_id, checkpoint.id)
            return checkpoint_out(checkpoint)

        checkpoint = await _registered_or_removed(request, artifacts, key, register)
        return UploadProgress(offset=size, size=size, checkpoint=checkpoint)


async def _registered_or_removed(request: Request, artifacts: ArtifactStore, key: str, register: Any) -> Any:
    """Register a stored file; when its run was deleted meanwhile (a later run given the same id on
    SQLite must not find it) or the project's checkpoint quota refuses it, take the file out again."""
    try:
        return await _in_session(request, register)
    except (store.NotFound, quotas.QuotaExceeded):
        await run_in_threadpool(artifacts.delete, key)
        raise
    except DBAPIError as exc:
        if health.database_storage_problem(exc) is not None:  # a full database disk (507): no file without its row
            await run_in_threadpool(artifacts.delete, key)
        raise


def _float(value: Any) -> float | None:
    return None if value is None else float(value)  # "NaN"/"Infinity" as json_safe stored them


def _stored_size(artifacts: ArtifactStore, key: str) -> int | None:
    try:
        return artifacts.size(key)
    except ArtifactNotFound:
        return None


def _update_meta(session: Session, upload_id: str, **changes: Any) -> None:
    row = session.get(Upload, upload_id)
    if row is not None:
        row.meta = {**(row.meta or {}), **changes}
        row.updated_at = utcnow()
        session.commit()


def _mark_verified(session: Session, upload_id: str) -> None:
    _update_meta(session, upload_id, verified=True)


def _mark_done(session: Session, upload_id: str, checkpoint_id: int) -> None:
    _update_meta(session, upload_id, checkpoint_id=checkpoint_id)


def _reset(session: Session, upload_id: str) -> None:
    row = session.get(Upload, upload_id)
    if row is not None:
        row.received = 0
        row.meta = {k: v for k, v in (row.meta or {}).items() if k != "verified"}
        row.updated_at = utcnow()
        session.commit()


# --------------------------------------------------------------------------- one-shot upload


@router.put("/runs/{run_id}/checkpoints/upload", status_code=201, response_model=CheckpointOut,
            openapi_extra=BINARY_BODY)
async def upload_checkpoint(
    run_id: RunId,
    request: Request,
    filename: str = Query(..., description="File name (no folders), e.g. epoch=3-step=120.ckpt."),
    epoch: int | None = Query(None, ge=0, le=2**31 - 1),
    step: int | None = Query(None, ge=0, le=2**63 - 1),
    monitor: str | None = Query(None, max_length=250),
    score: float | None = None,
    is_best: bool = False,
    is_last: bool = False,
    resumable: bool = False,
) -> Any:
    """Upload a whole checkpoint in one request (curl -T); streamed to disk, then to the store."""
    settings: Settings = request.app.state.settings
    _check_filename(filename)
    artifacts = artifacts_of(request)
    key = checkpoint_key(run_id, filename)
    limit = settings.max_checkpoint_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"A checkpoint of {declared} bytes is larger than this server takes "
                            f"(RUNYARD_MAX_CHECKPOINT_BYTES={limit}).")

    def check(session: Session) -> Any:
        store.require_run(session, run_id)
        return store.checkpoint_named(session, run_id, filename)

    existing = await _in_session(request, check)
    if existing is not None:
        return _conflict_response(run_id, existing)
    _check_writable(artifacts, run_id, key)
    # the project's checkpoint quota: the declared length before a byte is read, then while it streams
    left, project_quotas = await _in_session(request, quotas.checkpoint_bytes_left, run_id)
    if declared is not None and declared.isdigit():
        await _in_session(request, lambda session: quotas.check_checkpoint_bytes(session, run_id, int(declared)))
    if declared is not None and declared.isdigit():
        health.require_space(request.app, int(declared), None)  # 507 before a byte is read
    staged = settings.upload_dir / str(run_id) / f"oneshot-{secrets.token_hex(16)}.part"
    staged.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    try:
        with open(staged, "xb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(413, f"The body is larger than this server takes "
                                        f"(RUNYARD_MAX_CHECKPOINT_BYTES={limit}).")
                if project_quotas is not None and size > left:
                    raise quotas.streamed_past(project_quotas, size, left)
                digest.update(chunk)
                f.write(chunk)
        async with _finalising.hold(key):
            existing = await _in_session(request, check)
            if existing is not None:
                return _conflict_response(run_id, existing)
            await run_in_threadpool(artifacts.put_file, key, staged, move=True)

            def register(session: Session) -> CheckpointOut:
                return checkpoint_out(store.add_checkpoint(
                    session, run_id, key, epoch=epoch, step=step, monitor=monitor, score=score, size=size,
                    sha256=digest.hexdigest(), is_best=is_best, is_last=is_last, attempt=_attempt(request),
                    resumable=resumable, exclusive=True, retain=True))

            return await _registered_or_removed(request, artifacts, key, register)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody reads it
    finally:
        staged.unlink(missing_ok=True)


# --------------------------------------------------------------------------- download


@router.get("/checkpoints/{checkpoint_id}/download", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"}})
def download_checkpoint(checkpoint_id: CheckpointId, request: Request, session: Session = Depends(get_session),
                        settings: Settings = Depends(get_settings_dep)) -> Response:
    checkpoint = store.get_checkpoint(session, checkpoint_id)
    if checkpoint is None:
        raise store.missing_checkpoint(checkpoint_id)
    artifacts = artifacts_of(request)
    key, sha = checkpoint.path, checkpoint.sha256
    if request.state.principal.is_user and not continues(request.headers.get("range")):
        run = store.get_run(session, checkpoint.run_id)
        audit.record(session, "checkpoint_downloaded", request=request, target=f"checkpoint {checkpoint_id}",
                     project_id=run.project_id if run else None, run_id=checkpoint.run_id)
    session.close()  # a long download holds no database connection
    missing = f"The file of checkpoint {checkpoint_id} ({key}) is missing from the artifact store."
    try:
        size = artifacts.size(key)
    except UnsafeKey:
        raise ApiError(403, f"Checkpoint {checkpoint_id} points outside the artifact root; it is not served.") from None
    except ArtifactNotFound:
        raise ApiError(404, missing) from None
    return stream_artifact(artifacts, key, size=size, sha256=sha or artifacts.sha256(key),
                           range_header=request.headers.get("range"), media_type="application/octet-stream",
                           filename=store.checkpoint_filename(key), missing=missing)

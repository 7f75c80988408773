"""Code snapshots (upload, list, browse, download) and what a code run's process records: the
schema of its entry point and its environment (docs/code-runs.md).

A snapshot is uploaded as the raw tar.gz body of ``PUT /api/v1/snapshots/{sha256}?project=``:
streamed to a staging file under ``RUNYARD_UPLOAD_DIR/snapshots/`` with a running size limit
(``RUNYARD_SNAPSHOT_MAX_BYTES``; 413 the moment it is passed), its sha256 verified, every
member checked by :func:`server.snapshots.inspect` (tar-slip, links, devices, the unpacked size
and file-count limits), then stored once per sha256 in the artifact store at
``snapshots/<sha[:2]>/<sha>.tar.gz``. Each project that uploads the same bytes gets its own row.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import re
import secrets
from collections.abc import Iterator
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from server import audit, auth, health, snapshots, store, users
from server.api.downloads import continues, stream_artifact
from server.artifacts import ArtifactNotFound, ArtifactStore, artifact_store
from server.deps import RunId, get_session, get_settings_dep
from server.errors import ApiError
from server.schemas import (
    CodeSchemaIn,
    CodeSchemaOut,
    EnvironmentOut,
    SnapshotFile,
    SnapshotList,
    SnapshotOut,
    snapshot_out,
)
from server.settings import Settings

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["code"])

SHA256 = re.compile(r"^[0-9a-fA-F]{64}$")
TEXT_LIMIT = 2**20  # a file's text is shown up to this many bytes
ENVIRONMENT_LIMIT = 2 * 2**20  # the largest environment record
SCHEMA_LIMIT = 4 * 2**20  # the largest code schema (params + trainer), as JSON
CHUNK = 2**20
BINARY_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/gzip": {"schema": {"type": "string", "format": "binary"}}},
    }
}
JSON_BODY = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
}
SnapshotId = PathParam(ge=1, le=2**31 - 1, description="A snapshot id.")  # server/deps.py ID_MAX


def _artifacts(request: Request) -> ArtifactStore:
    artifacts = getattr(request.app.state, "artifacts", None)
    if artifacts is None:
        artifacts = request.app.state.artifacts = artifact_store(request.app.state.settings)
    return artifacts


async def _in_session(request: Request, fn: Any, *args: Any) -> Any:
    """``fn(session, *args)`` in the thread pool with a session of its own."""

    def call() -> Any:
        session: Session = request.app.state.sessionmaker()
        try:
            return fn(session, *args)
        finally:
            session.close()

    return await run_in_threadpool(call)


class _ChunkReader(io.RawIOBase):
    """A binary file object over an iterator of byte chunks (an artifact store's ``open_range``)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        while not self._buffer:
            try:
                self._buffer = next(self._chunks)
            except StopIteration:
                return 0
        n = min(len(b), len(self._buffer))
        b[:n] = self._buffer[:n]
        self._buffer = self._buffer[n:]
        return n

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if callable(close):
            close()
        super().close()


def _missing_archive(snapshot_id: int, key: str) -> str:
    return (
        f"The archive of snapshot {snapshot_id} ({key}) is missing from the artifact store; "
        "upload the folder again (runyard submit)."
    )


def _open_blob(artifacts: ArtifactStore, snapshot: Any) -> io.BufferedReader:
    key = store.snapshot_key(snapshot.sha256)
    try:
        return io.BufferedReader(_ChunkReader(artifacts.open_range(key)), CHUNK)
    except ArtifactNotFound:
        raise ApiError(404, _missing_archive(snapshot.id, key)) from None


def _limits(settings: Settings, snapshot: Any) -> dict[str, int]:
    """Read limits for a stored snapshot: the settings, or the snapshot's own size if it is larger
    (it passed the limits of its upload)."""
    return {
        "max_unpacked_bytes": max(settings.snapshot_max_unpacked_bytes, snapshot.unpacked_bytes),
        "max_files": max(settings.snapshot_max_files, snapshot.file_count),
    }


# --------------------------------------------------------------------------- list, upload


@router.get("/snapshots", response_model=SnapshotList)
def list_snapshots(
    request: Request,
    project: str | None = Query(None, min_length=1, max_length=200, description="Only this project's."),
    sha256: str | None = Query(None, pattern=SHA256.pattern, description="Only snapshots with this sha256."),
    limit: int = Query(100, ge=1, le=store.SNAPSHOT_LIST_LIMIT),
    session: Session = Depends(get_session),
) -> SnapshotList:
    """Snapshots of the projects the caller may see, newest first (without their file lists)."""
    visible = auth.visible_projects(session, request.state.principal)
    found = store.list_snapshots(session, project_ids=visible, project=project, sha256=sha256, limit=limit)
    return SnapshotList(items=[snapshot_out(s) for s in found])


def _upload_allowed(session: Session, principal: Any, project: str) -> bool:
    """403 unless the caller may submit to the project; True when the project is new."""
    return auth.require_project_role(session, principal, project, "write") is None


@router.put(
    "/snapshots/{sha256}",
    status_code=201,
    response_model=SnapshotOut,
    openapi_extra=BINARY_BODY,
    responses={
        200: {"description": "The project already has this snapshot."},
        413: {"description": "Over RUNYARD_SNAPSHOT_MAX_BYTES, or unpacked over the limits."},
        422: {"description": "The sha256 does not match, or the archive is not a safe snapshot."},
    },
)
async def upload_snapshot(
    request: Request,
    sha256: str = PathParam(..., pattern=SHA256.pattern, description="The tar.gz's sha256 (hex)."),
    project: str = Query("default", min_length=1, max_length=200, description="The project it belongs to."),
) -> Any:
    """Upload a snapshot (the raw tar.gz ``runyard submit`` packs) to a project; needs the member
    role there (a project that does not exist yet is created, its creator becoming its admin)."""
    settings: Settings = request.app.state.settings
    principal = request.state.principal
    sha = sha256.lower()
    limit = settings.snapshot_max_bytes
    await _in_session(request, _upload_allowed, principal, project)  # 403 before any byte is read
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(
            413,
            f"A snapshot of {declared} bytes is larger than this server takes "
            f"(RUNYARD_SNAPSHOT_MAX_BYTES={limit}); leave data and checkpoints out of the folder "
            "with a .runyardignore.",
            "body",
        )
    if declared is not None and declared.isdigit():
        health.require_space(request.app, int(declared), "body")  # 507 before a byte is read
    staging = settings.upload_dir / "snapshots"
    staging.mkdir(parents=True, exist_ok=True)
    staged = staging / f"{secrets.token_hex(16)}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with open(staged, "xb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise ApiError(
                        413,
                        f"The snapshot is larger than this server takes "
                        f"(RUNYARD_SNAPSHOT_MAX_BYTES={limit}); leave data and checkpoints out "
                        "of the folder with a .runyardignore.",
                        "body",
                    )
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha:
            raise ApiError(
                422,
                f"The body's sha256 is {digest.hexdigest()}, not {sha} as the URL says; the "
                f"upload was damaged or the URL names another snapshot ({size} bytes arrived).",
                "sha256",
            )
        try:
            inspected = await run_in_threadpool(
                snapshots.inspect,
                staged,
                max_bytes=settings.snapshot_max_unpacked_bytes,
                max_files=settings.snapshot_max_files,
            )
        except snapshots.SnapshotTooLarge as exc:
            raise ApiError(
                413,
                f"{exc} (server limits: RUNYARD_SNAPSHOT_MAX_UNPACKED_BYTES="
                f"{settings.snapshot_max_unpacked_bytes}, RUNYARD_SNAPSHOT_MAX_FILES="
                f"{settings.snapshot_max_files})",
                "body",
            ) from None
        except snapshots.SnapshotError as exc:
            raise ApiError(422, f"This is not a snapshot the server accepts: {exc}", "body") from None
        artifacts = _artifacts(request)
        key = store.snapshot_key(sha)
        if not await run_in_threadpool(artifacts.exists, key):  # each blob once, whichever project
            await run_in_threadpool(artifacts.put_file, key, staged, move=True)

        def register(session: Session) -> tuple[SnapshotOut, bool]:
            new_project = _upload_allowed(session, principal, project)
            project_row = store.get_or_create_project(session, project)
            row, created = store.add_snapshot(
                session,
                project_id=project_row.id,
                sha256=sha,
                size=size,
                unpacked_bytes=inspected.unpacked_bytes,
                files=inspected.files,
                git=inspected.git,
                created_by=principal.user_id,
            )
            if created:
                if new_project and principal.user_id is not None:
                    users.set_role(
                        session,
                        project_row,
                        users.get_user(session, principal.user_id),
                        "admin",
                        commit=False,
                    )
                audit.record(
                    session,
                    "snapshot_uploaded",
                    request=request,
                    target=f"snapshot {row.id}",
                    project_id=project_row.id,
                    sha256=sha,
                    size=size,
                )
                auth.clear_caches()
            return snapshot_out(store.require_snapshot(session, row.id)), created

        out, created = await _in_session(request, register)
        return JSONResponse(out.model_dump(mode="json"), status_code=201 if created else 200)
    except ClientDisconnect:
        return Response(status_code=400)  # nobody reads it
    finally:
        staged.unlink(missing_ok=True)


# --------------------------------------------------------------------------- browse, download


@router.get("/snapshots/{snapshot_id}", response_model=SnapshotOut)
def get_snapshot(snapshot_id: int = SnapshotId, session: Session = Depends(get_session)) -> SnapshotOut:
    """A snapshot with its file list ``[{path, size}]``."""
    snapshot = store.require_snapshot(session, snapshot_id)
    return snapshot_out(snapshot, files=store.snapshot_files(session, snapshot_id))


def _as_text(data: bytes, truncated: bool) -> str | None:
    """The UTF-8 text of ``data`` (a cut multi-byte character at the end of a truncated read is
    dropped), or None for binary content."""
    if b"\0" in data:
        return None
    for cut in range(4 if truncated else 1):
        try:
            return data[: len(data) - cut].decode("utf-8")
        except UnicodeDecodeError:
            continue
    return None


@router.get(
    "/snapshots/{snapshot_id}/files/{path:path}",
    response_model=SnapshotFile,
    response_model_exclude_none=True,
)
def read_snapshot_file(
    request: Request,
    path: str,
    snapshot_id: int = SnapshotId,
    session: Session = Depends(get_session),
    settings: Settings = Depends(get_settings_dep),
) -> Any:
    """One file of a snapshot: its text (the first 1 MiB), or ``"binary": true``."""
    snapshot = store.require_snapshot(session, snapshot_id)
    sizes = {f.get("path"): f.get("size", 0) for f in store.snapshot_files(session, snapshot_id)}
    if path not in sizes:
        raise ApiError(
            404,
            f"Snapshot {snapshot_id} has no file {path!r}; its files are listed by "
            f"GET /api/v1/snapshots/{snapshot_id}.",
            "path",
        )
    limits = _limits(settings, snapshot)
    session.close()  # reading the archive holds no database connection
    blob = _open_blob(_artifacts(request), snapshot)
    try:
        data = snapshots.read_member(blob, path, max_bytes=TEXT_LIMIT, **limits)
    except snapshots.SnapshotError as exc:
        log.error("stored snapshot %s cannot be read: %s", snapshot_id, exc)
        raise ApiError(
            409,
            f"The stored archive of snapshot {snapshot_id} cannot be read ({exc}); upload the folder again.",
        ) from None
    finally:
        blob.close()
    if data is None:
        raise ApiError(404, f"Snapshot {snapshot_id} has no file {path!r} in its archive.", "path")
    size = int(sizes[path] or 0)
    truncated = size > len(data)
    text = _as_text(data, truncated)
    if text is None:
        return SnapshotFile(path=path, size=size, binary=True)
    return SnapshotFile(path=path, size=size, text=text, truncated=truncated)


@router.get(
    "/snapshots/{snapshot_id}/download",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/gzip": {}}}, 206: {"description": "Partial content"}},
)
def download_snapshot(
    request: Request, snapshot_id: int = SnapshotId, session: Session = Depends(get_session)
) -> Response:
    """The snapshot's tar.gz, with its sha256 in ``X-Checksum-SHA256`` (a ``Range`` is served as
    for a checkpoint)."""
    snapshot = store.require_snapshot(session, snapshot_id)
    if request.state.principal.is_user and not continues(request.headers.get("range")):
        audit.record(
            session,
            "snapshot_downloaded",
            request=request,
            target=f"snapshot {snapshot_id}",
            project_id=snapshot.project_id,
        )
    sha, size = snapshot.sha256, snapshot.size
    session.close()  # a long download holds no database connection
    key = store.snapshot_key(sha)
    return stream_artifact(
        _artifacts(request),
        key,
        size=size,
        sha256=sha,
        range_header=request.headers.get("range"),
        media_type="application/gzip",
        filename=f"snapshot-{sha[:12]}.tar.gz",
        missing=_missing_archive(snapshot_id, key),
    )


# --------------------------------------------------------------------------- what a code run records


def _code_run(session: Session, run_id: int) -> Any:
    run = store.require_run(session, run_id)
    if run.snapshot_id is None or run.entry is None:
        raise ApiError(
            409,
            f"Run {run_id} is not a code run (recipe {run.recipe!r}); only code runs have a code schema.",
            "run_id",
        )
    return run


@router.get("/runs/{run_id}/code-schema", response_model=CodeSchemaOut)
def get_code_schema(run_id: RunId, session: Session = Depends(get_session)) -> CodeSchemaOut:
    """The params (and trainer) schema the run's process recorded for its snapshot and entry point."""
    run = store.require_run(session, run_id)
    schema = store.code_schema_of_run(session, run)
    if schema is None:
        what = "is not a code run" if run.snapshot_id is None else "has no recorded code schema yet"
        raise ApiError(
            404,
            f"Run {run_id} {what}; a code run's process records the schema of its entry point "
            "when it starts.",
        )
    return CodeSchemaOut(
        params_schema=store.json_safe(schema.params_schema or {}),
        trainer_schema=store.json_safe(schema.trainer_schema) if schema.trainer_schema else None,
    )


def _check_schema(schema: dict[str, Any] | None, field: str) -> None:
    if schema is None:
        return
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        raise ApiError(422, f"{field} is not a valid JSON Schema: {exc.message}.", field) from None


@router.put("/runs/{run_id}/code-schema", response_model=CodeSchemaOut)
def put_code_schema(
    run_id: RunId, body: CodeSchemaIn, request: Request, session: Session = Depends(get_session)
) -> CodeSchemaOut:
    """Record the schema of the run's entry point (its run process, before it validates params)."""
    run = _code_run(session, run_id)
    if len(json.dumps(store.json_safe(body.model_dump()), default=str)) > SCHEMA_LIMIT:
        raise ApiError(413, f"The code schema is larger than {SCHEMA_LIMIT} bytes as JSON.", "params_schema")
    _check_schema(body.params_schema, "params_schema")
    _check_schema(body.trainer_schema, "trainer_schema")
    row = store.set_code_schema(
        session, run.snapshot_id, snapshots.entry_key(run.entry), body.params_schema, body.trainer_schema
    )
    return CodeSchemaOut(
        params_schema=store.json_safe(row.params_schema or {}),
        trainer_schema=store.json_safe(row.trainer_schema) if row.trainer_schema else None,
    )


@router.get("/runs/{run_id}/environment", response_model=EnvironmentOut | None)
def get_environment(run_id: RunId, session: Session = Depends(get_session),
                    optional: bool = Query(False, description="Answer 200 with null (not 404) when the run has no "
                                                              "environment record yet (the dashboard asks so).")
                    ) -> EnvironmentOut | None:
    """The run's reproducibility record (command, Python, torch, CUDA, packages, git, ...)."""
    store.require_run(session, run_id)
    row = store.get_run_environment(session, run_id)
    if row is None and optional:
        return None
    if row is None:
        raise ApiError(
            404, f"Run {run_id} has no environment record yet; RunyardLogger sends it when training starts."
        )
    return EnvironmentOut(record=store.json_safe(row.record or {}), updated_at=row.updated_at)


@router.put("/runs/{run_id}/environment", response_model=EnvironmentOut, openapi_extra=JSON_BODY)
async def put_environment(run_id: RunId, request: Request) -> EnvironmentOut | Response:
    """Store (replace) the run's environment record: a JSON object of at most 2 MiB."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > ENVIRONMENT_LIMIT:
        raise ApiError(
            413,
            f"The environment record is {declared} bytes; at most {ENVIRONMENT_LIMIT} are taken.",
            "record",
        )
    body = bytearray()
    try:
        async for chunk in request.stream():
            body.extend(chunk)
            if len(body) > ENVIRONMENT_LIMIT:
                raise ApiError(
                    413, f"The environment record is larger than {ENVIRONMENT_LIMIT} bytes.", "record"
                )
    except ClientDisconnect:
        return Response(status_code=400)  # nobody reads it
    try:
        record = json.loads(bytes(body) or b"null")
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise ApiError(
            422,
            "The environment record is not valid JSON (or nested too deeply); send a JSON object.",
            "record",
        ) from None
    if not isinstance(record, dict):
        raise ApiError(422, "The environment record must be a JSON object.", "record")

    def save(session: Session) -> EnvironmentOut:
        try:
            row = store.set_run_environment(session, run_id, record)
        except RecursionError:
            session.rollback()
            raise ApiError(422, "The environment record is nested too deeply.", "record") from None
        return EnvironmentOut(record=store.json_safe(row.record or {}), updated_at=row.updated_at)

    return await _in_session(request, save)

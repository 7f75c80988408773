"""Checkpoints: list, register, upload, and streamed download with Range and a sha256 header.

Every path is resolved and must stay inside the artifact root; anything else is refused.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, StreamingResponse
from sqlalchemy.orm import Session

from server import store
from server.deps import CheckpointId, RunId, get_session, get_settings_dep
from server.errors import ApiError, error_body
from server.schemas import CheckpointOut, CheckpointRegister, checkpoint_out
from server.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["checkpoints"])

CHUNK = 1024 * 1024
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,199}$")


def resolve_inside(root: Path, relative: str) -> Path | None:
    """The absolute path of ``relative`` under ``root``, or None when it escapes the root."""
    if "\x00" in relative or Path(relative).is_absolute():
        return None
    try:  # symlinks are followed: one pointing outside the root resolves outside it
        root = root.resolve()
        target = (root / relative).resolve()
    except (OSError, RuntimeError):  # a name too long, a symlink loop
        return None
    if target == root or not target.is_relative_to(root):
        return None
    return target


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # e.g. a name too long for the file system
        return False


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


@router.get("/runs/{run_id}/checkpoints", response_model=list[CheckpointOut])
def list_checkpoints(run_id: RunId, session: Session = Depends(get_session)) -> list[CheckpointOut]:
    return [checkpoint_out(c) for c in store.list_checkpoints(session, run_id)]


@router.post("/runs/{run_id}/checkpoints", status_code=201, response_model=CheckpointOut)
def register_checkpoint(run_id: RunId, body: CheckpointRegister, session: Session = Depends(get_session),
                        settings: Settings = Depends(get_settings_dep)) -> CheckpointOut:
    store.require_run(session, run_id)
    target = resolve_inside(settings.artifact_root, body.path)
    if target is None:
        raise ApiError(422, f"Checkpoint path {body.path!r} is outside the artifact root; give a path relative "
                            f"to {settings.artifact_root}.", "path")
    if not _is_file(target):
        raise ApiError(422, f"There is no file at {body.path!r} under the artifact root; save the checkpoint "
                            "there first, or upload it with PUT .../checkpoints/upload.", "path")
    checkpoint = store.add_checkpoint(
        session, run_id, target.relative_to(settings.artifact_root.resolve()).as_posix(), epoch=body.epoch,
        step=body.step, monitor=body.monitor, score=body.score, size=target.stat().st_size,
        sha256=sha256_of(target), is_best=body.is_best, is_last=body.is_last)
    return checkpoint_out(checkpoint)


@router.put("/runs/{run_id}/checkpoints/upload", status_code=201, response_model=CheckpointOut,
            openapi_extra={"requestBody": {"required": True, "content": {"application/octet-stream": {
                "schema": {"type": "string", "format": "binary"}}}}})
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
) -> CheckpointOut:
    settings: Settings = request.app.state.settings
    if not SAFE_NAME.match(filename) or filename in (".", ".."):
        raise ApiError(422, f"File name {filename!r} is not allowed; use letters, digits and ._=+- only, "
                            "without folders.", "filename")

    def check_run() -> None:
        session = request.app.state.sessionmaker()
        try:
            store.require_run(session, run_id)
        finally:
            session.close()

    await run_in_threadpool(check_run)
    folder = settings.artifact_root / str(run_id) / "checkpoints"
    folder.mkdir(parents=True, exist_ok=True)
    if resolve_inside(settings.artifact_root, f"{run_id}/checkpoints") != folder.resolve():
        # the run's folder or its checkpoints folder is a symlink out of the root
        raise ApiError(403, f"The checkpoint folder of run {run_id} points outside the artifact root; "
                            "nothing is written there.")
    final = folder / filename
    temp = folder / f".{filename}.{os.getpid()}.{id(request)}.part"
    digest = hashlib.sha256()
    size = 0
    try:
        with temp.open("wb") as f:
            async for chunk in request.stream():
                digest.update(chunk)
                f.write(chunk)
                size += len(chunk)
        os.replace(temp, final)
    finally:
        temp.unlink(missing_ok=True)

    def register() -> CheckpointOut:
        session = request.app.state.sessionmaker()
        try:
            return checkpoint_out(store.add_checkpoint(
                session, run_id, final.relative_to(settings.artifact_root).as_posix(), epoch=epoch, step=step,
                monitor=monitor, score=score, size=size, sha256=digest.hexdigest(), is_best=is_best,
                is_last=is_last))
        finally:
            session.close()

    return await run_in_threadpool(register)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        length = int(last)
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def _stream(path: Path, start: int, length: int) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(start)
        while length > 0:
            chunk = f.read(min(CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk


@router.get("/checkpoints/{checkpoint_id}/download", response_class=StreamingResponse,
            responses={200: {"content": {"application/octet-stream": {}}}, 206: {"description": "Partial content"}})
def download_checkpoint(checkpoint_id: CheckpointId, request: Request, session: Session = Depends(get_session),
                        settings: Settings = Depends(get_settings_dep)) -> Response:
    checkpoint = store.get_checkpoint(session, checkpoint_id)
    if checkpoint is None:
        raise ApiError(404, f"Checkpoint {checkpoint_id} does not exist; list a run's checkpoints with "
                            "GET /api/v1/runs/{id}/checkpoints.")
    path = resolve_inside(settings.artifact_root, checkpoint.path)
    if path is None:
        raise ApiError(403, f"Checkpoint {checkpoint_id} points outside the artifact root; it is not served.")
    if not _is_file(path):
        raise ApiError(404, f"The file of checkpoint {checkpoint_id} ({checkpoint.path}) is missing from the "
                            "artifact root.")
    size = path.stat().st_size
    sha = checkpoint.sha256 or sha256_of(path)
    headers = {
        "Accept-Ranges": "bytes",
        "X-Checksum-SHA256": sha,
        "Content-Disposition": f'attachment; filename="{path.name}"',
    }
    range_header = request.headers.get("range")
    if range_header:
        parsed = _parse_range(range_header, size)
        if parsed is None:
            return JSONResponse(
                error_body(f"Range {range_header!r} is not one satisfiable byte range of the file's {size} bytes; "
                           "send e.g. 'bytes=0-1023', 'bytes=1024-' or 'bytes=-1024'.", "Range"),
                status_code=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
        start, end = parsed
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        headers["Content-Length"] = str(end - start + 1)
        return StreamingResponse(_stream(path, start, end - start + 1), status_code=206,
                                 media_type="application/octet-stream", headers=headers)
    headers["Content-Length"] = str(size)
    return StreamingResponse(_stream(path, 0, size), media_type="application/octet-stream", headers=headers)

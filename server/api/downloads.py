"""A streamed download of one artifact-store file (a checkpoint, a code snapshot's archive):
``Range`` (one byte range: 206 with ``Content-Range``; one that cannot be served: 416 with
``Content-Range: bytes */<size>``), ``Accept-Ranges``, ``Content-Length`` and the sha256 in
``X-Checksum-SHA256``, so that a client can resume a cut download and verify what it got."""

from __future__ import annotations

import re
from collections.abc import Iterator

from fastapi.responses import JSONResponse, Response, StreamingResponse

from server.artifacts import ArtifactNotFound, ArtifactStore
from server.errors import ApiError, error_body


def continues(range_header: str | None) -> bool:
    """A Range request that continues a download (not from byte 0): not audited again."""
    return range_header is not None and bool(range_header) and not range_header.replace(" ", "").startswith("bytes=0-")


def _position(digits: str) -> int:
    """A Range position; beyond 64 bits (int() refuses over 4,300 digits) it is past any file."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 19 else 2**63


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """``(first, last)`` byte of a ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` header over a file of
    ``size`` bytes; None when it is not one satisfiable range."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", header)
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:
        length = _position(last)
        if length == 0:
            return None
        return max(0, size - length), size - 1
    start = _position(first)
    end = _position(last) if last else size - 1
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


def stream_artifact(
    artifacts: ArtifactStore,
    key: str,
    *,
    size: int,
    sha256: str,
    range_header: str | None,
    media_type: str,
    filename: str,
    missing: str,
) -> Response:
    """The file under ``key`` (``size`` bytes) as an attachment ``filename``, or the part of it
    ``range_header`` asks for; ``missing`` is the 404's sentence when the store has no such file."""
    headers = {
        "Accept-Ranges": "bytes",
        "X-Checksum-SHA256": sha256,
        "Content-Disposition": f'attachment; filename="{filename}"',
    }
    start, length, status = 0, size, 200
    if range_header:
        parsed = parse_range(range_header, size)
        if parsed is None:
            return JSONResponse(
                error_body(f"Range {range_header[:100]!r} is not one satisfiable byte range of the file's {size} bytes; "
                           "send e.g. 'bytes=0-1023', 'bytes=1024-' or 'bytes=-1024'.", "Range"),
                status_code=416, headers={"Content-Range": f"bytes */{size}", "Accept-Ranges": "bytes"})
        start, end = parsed
        length, status = end - start + 1, 206
        headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(length)
    try:
        chunks: Iterator[bytes] = artifacts.open_range(key, start, length)
    except ArtifactNotFound:
        raise ApiError(404, missing) from None
    return StreamingResponse(chunks, status_code=status, media_type=media_type, headers=headers)

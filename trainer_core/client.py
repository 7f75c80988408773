"""The one HTTP client for Runyard's REST API: standard library only (urllib, json, hashlib).

Used by :class:`~trainer_core.loggers.RunyardLogger`, the worker and the ``runyard`` CLI.

- ``Client(url=None, token=None, timeout=10)``: ``url`` defaults to ``RUNYARD_URL``, else
  ``http://127.0.0.1:8000``; ``token`` to ``RUNYARD_TOKEN`` (sent as ``Authorization: Bearer``,
  only to the client's own server, and never written into a message or an exception).
- ``request(method, path, json=..., data=..., query=..., headers=..., retry_for=0)``: ``path`` is
  relative to ``/api/v1`` (``"/runs/3"``) unless it starts with ``/api/`` or is ``/healthz``, or is
  a full URL. Connection failures and 5xx/429 answers are retried with back-off until
  ``retry_for`` seconds have passed; then :class:`Unreachable` (no answer) or :class:`ApiError`
  (``status``, ``detail`` — the server's sentence —, ``field``, ``body``). 4xx is never retried.
- ``upload_file(run_id, path, meta)``: the resumable checkpoint upload of the API contract.
- ``download(path_or_url, dest, sha256=None)``: streamed to a temporary file, resumed with
  ``Range`` after a cut connection, verified, then moved into place.

Non-finite floats travel as the strings ``"NaN"``, ``"Infinity"``, ``"-Infinity"``
(:func:`json_safe`, :func:`dumps`); :func:`encode_entries` is the fast path for metric batches.
"""

from __future__ import annotations

import hashlib
import http.client
import json as _json
import math
import os
import random
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any, BinaryIO, cast

__all__ = [
    "API_PREFIX",
    "CHUNK_SIZE",
    "ApiError",
    "ChecksumMismatch",
    "Client",
    "ClientError",
    "Unreachable",
    "decode_float",
    "dumps",
    "encode_entries",
    "encode_points",
    "json_safe",
    "points_of",
    "safe_filename",
    "sha256_file",
]

API_PREFIX = "/api/v1"
DEFAULT_URL = "http://127.0.0.1:8000"
CHUNK_SIZE = 8 << 20  # bytes per PUT of a resumable upload
_READ_BLOCK = 1 << 20
_ROOT_PATHS = ("/healthz",)
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._=+-]")


# --------------------------------------------------------------------------- errors


class ClientError(RuntimeError):
    """Base of the client's errors."""


class ApiError(ClientError):
    """The server answered with an error status. ``detail`` is its sentence, ``field`` the
    request field it names (if any), ``body`` the whole JSON answer (e.g. ``offset`` on 409)."""

    def __init__(self, status: int, detail: str, field: str | None = None, *, method: str | None = None,
                 path: str | None = None, body: Any = None) -> None:
        self.status = status
        self.detail = detail
        self.field = field
        self.method = method
        self.path = path
        self.body = body if body is not None else {}
        where = f"{method} {path} " if method and path else ""
        super().__init__(f"{where}failed with {status}: {detail}")

    @property
    def route_missing(self) -> bool:
        """The server has no such endpoint (an older server), as opposed to a missing object."""
        return self.status == 405 or (self.status == 404 and str(self.detail).startswith("There is no /"))


class Unreachable(ClientError):
    """No answer from the server (refused, reset, timed out, DNS)."""


class ChecksumMismatch(ClientError):
    """A download's bytes do not have the expected sha256."""


# --------------------------------------------------------------------------- JSON codec

_NON_FINITE = {math.inf: "Infinity", -math.inf: "-Infinity"}
_NON_FINITE_JSON = {math.inf: '"Infinity"', -math.inf: '"-Infinity"'}
_DECODE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}


def encode_float(value: float) -> float | str:
    if value != value:
        return "NaN"
    return _NON_FINITE.get(value, value)


def decode_float(value: Any) -> Any:
    """``"NaN"``/``"Infinity"``/``"-Infinity"`` back to floats; anything else unchanged."""
    if isinstance(value, str):
        return _DECODE.get(value, value)
    return value


def json_safe(value: Any) -> Any:
    """A JSON-serialisable copy: non-finite floats as strings, tensors/numpy scalars as numbers,
    tuples as lists, paths and unknown objects as strings."""
    if isinstance(value, float):
        return value if math.isfinite(value) else encode_float(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    isoformat = getattr(value, "isoformat", None)
    if callable(isoformat):
        try:
            return isoformat()
        except TypeError:
            pass
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return json_safe(item())
        except (TypeError, ValueError, RuntimeError):
            pass
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        try:
            return json_safe(tolist())
        except (TypeError, ValueError, RuntimeError):
            pass
    return str(value)


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of ``json_safe(value)`` (never a bare ``NaN`` token)."""
    return _json.dumps(json_safe(value), allow_nan=False, separators=(",", ":"), ensure_ascii=False).encode()


def to_float(value: Any) -> float | None:
    item = getattr(value, "item", None)
    if callable(item):
        try:
            value = item()
        except (TypeError, ValueError, RuntimeError):
            return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def encode_entries(entries: list[tuple[int, float, dict[str, Any]]]) -> bytes:
    """``{"points": [...]}`` straight from ``(step, wall_time, metrics)`` entries, as text: the same
    JSON as ``encode_points(points_of(entries))`` at a third of the CPU (no dict per point, no
    generic encoder walk), which matters because a logger's sender shares the GIL with training."""
    prefixes: dict[Any, str] = {}
    parts = []
    for step, now, metrics in entries:
        epoch = metrics.get("epoch")
        if epoch is not None and type(epoch) is not int:
            epoch = to_float(epoch)
            epoch = int(epoch) if epoch is not None and math.isfinite(epoch) else None
        tail = f',"step":{int(step)},"epoch":{"null" if epoch is None else int(epoch)},"wall_time":{float(now)!r}}}'
        for key, value in metrics.items():
            if type(value) is not float:
                value = to_float(value)
                if value is None:
                    continue
            prefix = prefixes.get(key)
            if prefix is None:
                prefix = prefixes[key] = '{"key":' + _json.dumps(key if isinstance(key, str) else str(key)) + ',"value":'
            if value != value:
                text = '"NaN"'
            elif value in _NON_FINITE_JSON:
                text = _NON_FINITE_JSON[value]
            else:
                text = repr(value)  # a finite float's repr is valid JSON
            parts.append(prefix + text + tail)
    return ('{"points":[' + ",".join(parts) + "]}").encode()


def points_of(entries: list[tuple[int, float, dict[str, Any]]]) -> list[tuple[Any, ...]]:
    """``(key, step, value, epoch, wall_time)`` tuples from ``(step, wall_time, metrics)`` entries
    (tensors' ``.item()`` and non-numeric values are dealt with here)."""
    points = []
    for step, now, metrics in entries:
        epoch = metrics.get("epoch")
        for key, value in metrics.items():
            if type(value) is not float:
                value = to_float(value)
                if value is None:
                    continue
            points.append((key if isinstance(key, str) else str(key), step, value, epoch, now))
    return points


def encode_points(points: list[tuple[Any, ...]]) -> bytes:
    """``{"points": [...]}`` from ``(key, step, value, epoch, wall_time)`` tuples."""
    out = []
    for key, step, value, epoch, wall_time in points:
        if value != value:
            value = "NaN"
        elif value in _NON_FINITE:
            value = _NON_FINITE[value]
        if epoch is not None and type(epoch) is not int:
            epoch = to_float(epoch)
            epoch = int(epoch) if epoch is not None and math.isfinite(epoch) else None
        out.append({"key": key, "step": step, "value": value, "epoch": epoch, "wall_time": wall_time})
    return _json.dumps({"points": out}, separators=(",", ":")).encode()


# --------------------------------------------------------------------------- helpers


def safe_filename(name: str) -> str:
    """A file name the server takes (letters, digits, ``._=+-``, starting with a letter or digit)."""
    name = _SAFE_NAME.sub("_", os.path.basename(name)) or "checkpoint"
    if not name[0].isalnum():
        name = "ckpt" + name
    return name[:200]


def sha256_file(f: BinaryIO) -> tuple[int, str]:
    """``(size, sha256 hex)`` of an open binary file, read from its start in 1 MiB blocks."""
    f.seek(0)
    digest = hashlib.sha256()
    size = 0
    while block := f.read(_READ_BLOCK):
        digest.update(block)
        size += len(block)
    return size, digest.hexdigest()


class _Slice:
    """``n`` bytes of an open file from ``offset``, read in blocks as http.client sends them."""

    def __init__(self, f: BinaryIO, offset: int, n: int) -> None:
        self._f, self._pos, self._left = f, offset, n

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        size = self._left if size is None or size < 0 else min(size, self._left)
        self._f.seek(self._pos)
        data = self._f.read(size)
        self._pos += len(data)
        self._left -= len(data)
        if not data:
            self._left = 0
        return data


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects are not followed: they would carry the token to another address."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _strip_userinfo(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _origin(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    return parts.scheme.lower(), (parts.hostname or "").lower() + f":{parts.port or ''}"


# --------------------------------------------------------------------------- the client


class Client:
    """A Runyard server's REST API. Thread-safe: every request opens its own connection."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 10.0) -> None:
        self.url = (url or os.environ.get("RUNYARD_URL") or DEFAULT_URL).rstrip("/")
        self._token = token if token is not None else (os.environ.get("RUNYARD_TOKEN") or None)
        self.timeout = timeout
        self._opener = urllib.request.build_opener(_NoRedirect)

    def __repr__(self) -> str:
        return f"Client({_strip_userinfo(self.url)!r}, token={'set' if self._token else None})"

    @property
    def has_token(self) -> bool:
        return bool(self._token)

    # -- addressing ------------------------------------------------------------------------------
    def url_for(self, path: str, query: Mapping[str, Any] | None = None) -> str:
        if path.startswith(("http://", "https://")):
            url = path
        else:
            if not path.startswith("/"):
                path = "/" + path
            if path.startswith("/api/") or path.split("?", 1)[0] in _ROOT_PATHS:
                url = self.url + path
            else:
                url = self.url + API_PREFIX + path
        if query:
            items = {k: _query_value(v) for k, v in query.items() if v is not None}
            if items:
                url += ("&" if "?" in url else "?") + urllib.parse.urlencode(items)
        return url

    def _headers(self, url: str, extra: Mapping[str, str] | None) -> dict[str, str]:
        headers = {"Accept": "application/json", "User-Agent": "runyard-client"}
        if self._token and _origin(url) == _origin(self.url):
            headers["Authorization"] = f"Bearer {self._token}"
        if extra:
            headers.update(extra)
        return headers

    def _where(self, url: str) -> str:
        """``url`` without scheme/host/query for messages (``/api/v1/runs/3/metrics``)."""
        parts = urllib.parse.urlsplit(url)
        return parts.path or "/"

    # -- requests --------------------------------------------------------------------------------
    def request(self, method: str, path: str, json: Any = None, data: bytes | str | None = None,
                query: Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None,
                retry_for: float = 0, timeout: float | None = None) -> Any:
        """One API call; the parsed JSON answer (``None`` for an empty one, ``bytes`` for a non-JSON one).

        ``json`` is encoded with :func:`dumps`; ``data`` is sent as is (``application/octet-stream``
        unless ``headers`` say otherwise). Connection failures and 429/5xx answers are retried with
        back-off until ``retry_for`` seconds have passed."""
        method = method.upper()
        url = self.url_for(path, query)
        hdrs = self._headers(url, None)
        body: bytes | None = None
        if json is not None:
            body = dumps(json)
            hdrs["Content-Type"] = "application/json"
        elif data is not None:
            body = data.encode() if isinstance(data, str) else bytes(data)
            hdrs["Content-Type"] = "application/octet-stream"
        if headers:
            hdrs.update(headers)
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = b""  # urllib would call an empty body a form; the server takes only JSON (server/webguard.py)
            hdrs.setdefault("Content-Type", "application/json")
        deadline = time.monotonic() + max(0.0, retry_for)
        delay = 0.1
        while True:
            try:
                with self._open(method, url, body, hdrs, timeout) as response:
                    payload = response.read()
                    ctype = response.headers.get("Content-Type", "")
                return _decode(payload, ctype)
            except ApiError as exc:
                if exc.status not in _RETRY_STATUS or time.monotonic() + delay > deadline:
                    raise
                wait = _retry_after(exc) or delay
            except Unreachable:
                if time.monotonic() + delay > deadline:
                    raise
                wait = delay
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())) * (0.8 + 0.4 * random.random()))
            delay = min(delay * 2, 5.0)

    def _open(self, method: str, url: str, body: Any, headers: dict[str, str], timeout: float | None) -> Any:
        """Send one request; the open response (2xx), else :class:`ApiError` / :class:`Unreachable`."""
        request = urllib.request.Request(url, data=body, method=method, headers=headers)
        try:
            return self._opener.open(request, timeout=self.timeout if timeout is None else timeout)
        except urllib.error.HTTPError as exc:
            raise self._api_error(exc, method, url) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise Unreachable(f"The Runyard server at {_strip_userinfo(self.url)} did not answer {method} "
                              f"{self._where(url)} ({type(reason).__name__}: {reason}); start it or check "
                              "the url (RUNYARD_URL).") from None

    def _api_error(self, exc: urllib.error.HTTPError, method: str, url: str) -> ApiError:
        try:
            raw = exc.read()
        except Exception:  # the status alone still says what happened
            raw = b""
        finally:
            exc.close()
        body: Any = None
        detail = raw.decode(errors="replace")[:500].strip() or (exc.reason or "no detail")
        field = None
        try:
            body = _json.loads(raw) if raw else None
        except ValueError:
            body = None
        if isinstance(body, dict):
            value = body.get("detail")
            if isinstance(value, str):
                detail = value
            elif isinstance(body.get("message"), str):  # servers before the one error schema (detail a list)
                detail = body["message"]
            elif value is not None:
                detail = _json.dumps(value)[:500]
            field = body.get("field") if isinstance(body.get("field"), str) else None
        if 300 <= exc.code < 400:
            detail = (f"the server redirected to {exc.headers.get('Location', '?')}; set the url to the "
                      "server's own address")
        error = ApiError(exc.code, str(detail), field, method=method, path=self._where(url), body=body)
        error.headers = dict(exc.headers or {})  # type: ignore[attr-defined]
        return error

    def healthy(self, timeout: float | None = None) -> bool:
        """``GET /healthz`` answered 200 (the server and its database are up)."""
        try:
            self.request("GET", "/healthz", timeout=timeout)
            return True
        except ClientError:
            return False

    # -- resumable upload ------------------------------------------------------------------------
    def upload_file(self, run_id: int, path: str | os.PathLike[str], meta: Mapping[str, Any] | None = None, *,
                    chunk_size: int = CHUNK_SIZE, retry_for: float = 60.0, fileobj: BinaryIO | None = None,
                    replace: bool = False) -> dict[str, Any]:
        """Upload a checkpoint file to run ``run_id`` and return the registered Checkpoint.

        ``meta``: ``filename`` (default: the file's name, made safe), ``epoch``, ``step``,
        ``monitor``, ``score``, ``is_best``, ``is_last``, ``resumable``. The size and sha256 are
        computed by streaming the file (``fileobj``, when given, is read instead of opening
        ``path``: the bytes hashed are the bytes sent). Chunks of ``chunk_size`` go as
        ``PUT /uploads/{id}?offset=N``; after a cut connection, a 5xx or a 409 the server's offset
        is asked for (``GET /uploads/{id}``) and the upload continues from there, as long as some
        progress is made within ``retry_for`` seconds. A restarted client continues an unfinished
        upload of the same file (the server returns it). When the run already has a checkpoint of
        that name: the same bytes (sha256) -> that checkpoint is returned; other bytes -> 409
        :class:`ApiError`, or with ``replace=True`` the old one is deleted and the upload made.
        A server without resumable uploads gets the one-shot ``PUT .../checkpoints/upload``."""
        meta = dict(meta or {})
        filename = safe_filename(str(meta.pop("filename", None) or os.path.basename(os.fspath(path))))
        own = fileobj is None
        f: BinaryIO = open(path, "rb") if fileobj is None else fileobj
        try:
            size, sha = sha256_file(f)
            body = {"filename": filename, "size": size, "sha256": sha,
                    **{k: v for k, v in meta.items() if v is not None}}
            if isinstance(body.get("score"), float) and not math.isfinite(body["score"]):
                body.pop("score")
            for attempt in range(3):
                try:
                    start = self.request("POST", f"/runs/{run_id}/checkpoints/uploads", json=body,
                                         retry_for=retry_for)
                    break
                except ApiError as exc:
                    if exc.route_missing:
                        return self._upload_one_shot(run_id, f, size, filename, meta, retry_for)
                    if exc.status != 409 or attempt == 2:
                        raise
                    existing = exc.body.get("checkpoint") if isinstance(exc.body, dict) else None
                    if existing is None:
                        existing = self._checkpoint_named(run_id, filename)
                    if existing is None:
                        raise
                    if existing.get("sha256") == sha:
                        return existing  # uploaded before (an earlier try whose answer was lost)
                    if not replace:
                        raise
                    self.delete_checkpoint(existing["id"], retry_for=retry_for)
            return self._send_chunks(start, f, size, chunk_size, retry_for)
        finally:
            if own:
                f.close()

    def _send_chunks(self, start: dict[str, Any], f: BinaryIO, size: int, chunk_size: int,
                     retry_for: float) -> dict[str, Any]:
        if start.get("checkpoint"):
            return cast("dict[str, Any]", start["checkpoint"])
        upload_id = start["upload_id"]
        offset = int(start.get("offset") or 0)
        progress_deadline = time.monotonic() + retry_for
        delay = 0.2
        sent_any = False
        conflicts = 0
        while True:
            if offset >= size and sent_any:
                state = self.request("GET", f"/uploads/{upload_id}", retry_for=retry_for)
                if state.get("done") and state.get("checkpoint"):
                    return cast("dict[str, Any]", state["checkpoint"])
                if int(state.get("offset", 0)) >= size:
                    raise ClientError(f"Upload {upload_id} has all {size} bytes but the server did not register it.")
                offset = int(state.get("offset", 0))
            n = min(chunk_size, size - offset)
            url = self.url_for(f"/uploads/{upload_id}", {"offset": offset})
            headers = self._headers(url, {"Content-Type": "application/octet-stream", "Content-Length": str(n)})
            try:
                with self._open("PUT", url, _Slice(f, offset, n), headers, None) as response:
                    answer = _decode(response.read(), response.headers.get("Content-Type", ""))
            except ApiError as exc:
                problem: ClientError = exc
                if exc.status == 409 and isinstance(exc.body, dict) and isinstance(exc.body.get("offset"), int):
                    conflicts += 1
                    if conflicts > 20:
                        raise
                    offset = exc.body["offset"]
                    sent_any = sent_any or offset > 0
                    continue
                if exc.status == 422 and exc.field == "sha256":
                    raise  # the bytes sent are not the bytes hashed (the file changed in place)
                if exc.status not in _RETRY_STATUS and exc.status not in (400, 409):
                    raise
            except Unreachable as exc:
                problem = exc
            else:
                sent_any = True
                if answer.get("checkpoint"):
                    return cast("dict[str, Any]", answer["checkpoint"])
                new = int(answer.get("offset", offset))
                if new > offset:
                    progress_deadline = time.monotonic() + retry_for
                    delay = 0.2
                offset = new
                continue
            # a cut connection or a server error: ask where the upload is and go on from there
            if time.monotonic() > progress_deadline:
                raise problem
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            try:
                state = self.request("GET", f"/uploads/{upload_id}",
                                     retry_for=max(0.0, progress_deadline - time.monotonic()))
            except Unreachable:
                if time.monotonic() > progress_deadline:
                    raise
                continue
            if state.get("done") and state.get("checkpoint"):
                return cast("dict[str, Any]", state["checkpoint"])
            new = int(state.get("offset", 0))
            if new > offset:
                progress_deadline = time.monotonic() + retry_for
            offset = new
            sent_any = sent_any or offset > 0

    def _upload_one_shot(self, run_id: int, f: BinaryIO, size: int, filename: str, meta: dict[str, Any],
                         retry_for: float) -> dict[str, Any]:
        """An older server's ``PUT /runs/{id}/checkpoints/upload?filename=...`` (whole file)."""
        query = {"filename": filename, **{k: v for k, v in meta.items()
                                          if k in ("epoch", "step", "monitor", "score", "is_best", "is_last")}}
        url = self.url_for(f"/runs/{run_id}/checkpoints/upload", query)
        deadline = time.monotonic() + retry_for
        delay = 0.2
        while True:
            headers = self._headers(url, {"Content-Type": "application/octet-stream", "Content-Length": str(size)})
            try:
                with self._open("PUT", url, _Slice(f, 0, size), headers, None) as response:
                    return cast("dict[str, Any]", _decode(response.read(), response.headers.get("Content-Type", "")))
            except ApiError as exc:
                if exc.status not in _RETRY_STATUS or time.monotonic() + delay > deadline:
                    raise
            except Unreachable:
                if time.monotonic() + delay > deadline:
                    raise
            time.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _checkpoint_named(self, run_id: int, filename: str) -> dict[str, Any] | None:
        for checkpoint in self.request("GET", f"/runs/{run_id}/checkpoints", retry_for=10) or []:
            name = checkpoint.get("filename") or str(checkpoint.get("path", "")).rsplit("/", 1)[-1]
            if name == filename:
                return cast("dict[str, Any]", checkpoint)
        return None

    def delete_checkpoint(self, checkpoint_id: int, retry_for: float = 0) -> bool:
        """``DELETE /checkpoints/{id}``; False when it was gone already."""
        try:
            self.request("DELETE", f"/checkpoints/{checkpoint_id}", retry_for=retry_for)
            return True
        except ApiError as exc:
            if exc.status == 404 and not exc.route_missing:
                return False
            raise

    # -- download --------------------------------------------------------------------------------
    def download(self, path_or_url: str, dest: str | os.PathLike[str], sha256: str | None = None, *,
                 retry_for: float = 60.0) -> Path:
        """Stream ``path_or_url`` (e.g. a checkpoint's ``download_url``) to ``dest``.

        Written to ``dest``'s folder as a temporary file, continued with ``Range`` after a cut
        connection (while progress is made within ``retry_for`` seconds), checked against
        ``sha256`` (or the server's ``X-Checksum-SHA256``), then moved over ``dest`` with
        ``os.replace``: ``dest`` never holds a partial or corrupt file."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        url = self.url_for(path_or_url)
        expected = sha256.lower() if sha256 else None
        digest = hashlib.sha256()
        received = 0
        total: int | None = None
        deadline = time.monotonic() + retry_for
        delay = 0.2
        try:
            with open(tmp, "wb") as out:
                while True:
                    extra = {"Accept": "*/*"}
                    if received:
                        extra["Range"] = f"bytes={received}-"
                    try:
                        with self._open("GET", url, None, self._headers(url, extra), None) as response:
                            if received and response.status != 206:  # the server sent it all again
                                out.seek(0)
                                out.truncate()
                                digest, received = hashlib.sha256(), 0
                            if expected is None:
                                header = response.headers.get("X-Checksum-SHA256")
                                expected = header.lower() if header else None
                            if total is None:
                                length = response.headers.get("Content-Length")
                                total = received + int(length) if length and length.isdigit() else None
                            while block := response.read(_READ_BLOCK):
                                out.write(block)
                                digest.update(block)
                                received += len(block)
                                deadline = time.monotonic() + retry_for
                        if total is None or received >= total:
                            break
                        problem: ClientError = Unreachable(f"The download of {self._where(url)} stopped at "
                                                           f"{received} of {total} bytes.")
                    except ApiError as exc:
                        if exc.status not in _RETRY_STATUS:
                            raise
                        problem = exc
                    except (Unreachable, OSError, http.client.HTTPException) as exc:
                        problem = exc if isinstance(exc, ClientError) else Unreachable(
                            f"The download of {self._where(url)} was cut at {received} bytes ({exc}).")
                    if time.monotonic() > deadline:
                        raise problem
                    time.sleep(delay)
                    delay = min(delay * 2, 5.0)
            actual = digest.hexdigest()
            if expected and actual != expected:
                raise ChecksumMismatch(f"{self._where(url)} downloaded with sha256 {actual}, expected {expected}; "
                                       f"{dest} was not written.")
            os.replace(tmp, dest)
            return dest
        finally:
            tmp.unlink(missing_ok=True)


def _query_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return encode_float(value)
    return value


def _decode(payload: bytes, content_type: str) -> Any:
    if not payload:
        return None
    if "json" in content_type or not content_type:
        try:
            return _json.loads(payload)
        except ValueError:
            if "json" in content_type:
                raise
    return payload


def _retry_after(exc: ApiError) -> float | None:
    value = getattr(exc, "headers", {}).get("Retry-After") if hasattr(exc, "headers") else None
    try:
        return min(float(value), 30.0) if value else None
    except ValueError:
        return None

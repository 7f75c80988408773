"""Storage health: the write probes behind ``/healthz``, free space, and the 507 answers of a full
or read-only disk.

**Probes** (:func:`storage_report`, cached ``RUNYARD_HEALTH_PROBE_INTERVAL`` seconds per app, so
``/healthz`` stays cheap; while one request probes, the others get the previous answer):

- the database: one committed ``UPDATE`` of the one-row ``health_probe`` table (migration 0008).
  A write that is rolled back proves nothing on SQLite (it never reaches the disk); a commit
  appends to the WAL (or the journal), which fails with ``SQLITE_FULL`` on a full disk and
  ``SQLITE_READONLY`` on a read-only one. On PostgreSQL the UPDATE fits in its page (and the WAL
  may be on another disk), so the same transaction also inserts a row into a new temporary table
  (``ON COMMIT DROP``): its file must grow, which fails with ``DiskFull`` (53100, "could not
  extend file") on a full tablespace; a read-only server answers ``ReadOnlySqlTransaction``
  (25006). Lock waits are bounded (1 s): a busy database is not degraded.
- the artifact store and the upload staging folder: a small file written and removed
  (``ArtifactStore.probe``; on S3 a small object put and deleted).

Each part is ``"ok"`` or ``"degraded: <reason>"``; the reasons name no server paths (``/healthz``
is public). An error answered 507 drops the cache, so the next ``/healthz`` probes again.

**507** (:func:`require_space`, :func:`insufficient_storage_response`): an upload whose declared
size does not fit the free space of the staging folder (and of the artifact store when that is
another file system) is refused before a byte is read; an ``OSError`` with ``ENOSPC``, ``EDQUOT``
or ``EROFS`` raised by any route, and a database write refused for a full or read-only disk,
answer 507 naming the free space of each server-local storage place.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, OperationalError

if TYPE_CHECKING:
    from fastapi import FastAPI

log = logging.getLogger(__name__)

#: errno -> what it means for the storage (the errors a full or read-only disk raises)
STORAGE_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                  errno.EROFS: "read-only file system"}
PROBE_LOCK_TIMEOUT_S = 1.0
PROBE_ID = 1


# --------------------------------------------------------------------------- free space


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes a write under ``path`` may still use (its nearest existing folder), or None when
    unknown. Root may write into the blocks a file system reserves, others may not."""
    current = Path(path)
    while True:
        try:
            st = os.statvfs(current)
        except FileNotFoundError:
            if current.parent == current:
                return None
            current = current.parent
            continue
        except OSError:
            return None
        blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
        return blocks * st.f_frsize


def _device(path: str | os.PathLike[str]) -> int | None:
    current = Path(path)
    while True:
        try:
            return os.stat(current).st_dev
        except FileNotFoundError:
            if current.parent == current:
                return None
            current = current.parent
        except OSError:
            return None


def human_bytes(n: int | None) -> str:
    """``1.5 MiB``, ``512 B``; ``an unknown amount`` for None."""
    if n is None:
        return "an unknown amount"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover


def storage_places(app: FastAPI) -> list[tuple[str, Path]]:
    """The server-local places the server writes: ``[(description, folder)]``."""
    settings = app.state.settings
    places: list[tuple[str, Path]] = [("the upload staging folder", Path(settings.upload_dir))]
    artifacts = getattr(app.state, "artifacts", None)
    root = getattr(artifacts, "root", None) if artifacts is not None else None
    if root is not None:
        places.append(("the artifact store", Path(root)))
    database = _sqlite_file(app.state.engine)
    if database is not None:
        places.append(("the database folder", database.parent))
    return places


def _sqlite_file(engine: Engine) -> Path | None:
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:" \
            or url.database.startswith("file:"):
        return None
    return Path(url.database).resolve()


def free_space_text(places: list[tuple[str, Path]]) -> str:
    """``the upload staging folder (/srv/uploads) has 1.2 MiB free; the artifact store (...) ...``;
    places on one file system are named together."""
    seen: dict[int | None, list[tuple[str, Path]]] = {}
    for description, folder in places:
        seen.setdefault(_device(folder) or id(folder), []).append((description, folder))
    parts = []
    for group in seen.values():
        names = " and ".join(f"{d} ({f})" for d, f in group)
        verb = "have" if len(group) > 1 else "has"
        parts.append(f"{names} {verb} {human_bytes(free_bytes(group[0][1]))} free")
    return "; ".join(parts)


def require_space(app: FastAPI, size: int, field: str | None = "size", *, total: int | None = None) -> None:
    """ApiError 507 when ``size`` bytes (still to arrive) do not fit the upload staging folder, or
    the whole file (``total``, default ``size``) does not fit the artifact store when that is
    another file system (on the same one the staged file is renamed into place, taking no more)."""
    from server.errors import ApiError

    places = storage_places(app)
    staging = places[0]
    checked = [(staging, size)]
    artifacts = next((p for p in places if p[0] == "the artifact store"), None)
    if artifacts is not None and _device(artifacts[1]) != _device(staging[1]):
        checked.append((artifacts, size if total is None else total))
    for (description, folder), needed in checked:
        free = free_bytes(folder) if needed > 0 else None
        if free is not None and needed > free:
            invalidate(app)
            raise ApiError(507, f"This upload needs {human_bytes(needed)} ({needed} bytes) but {description} "
                                f"({folder}) has only {human_bytes(free)} ({free} bytes) free; free some space "
                                "there (delete runs or checkpoints no longer needed), then retry.", field)


# --------------------------------------------------------------------------- errors -> 507


def storage_errno(exc: BaseException) -> int | None:
    """The errno of a full or read-only disk behind ``exc`` (an OSError, or one it was raised
    from), else None."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS:
            return exc.errno
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
        seen += 1
    return None


def database_storage_problem(exc: BaseException) -> str | None:
    """``"full"`` / ``"read-only"`` when a database error says its disk is full or read-only."""
    if not isinstance(exc, DBAPIError):
        return None
    orig = getattr(exc, "orig", None)
    code = getattr(orig, "sqlite_errorcode", None)
    if code is not None:
        primary = code & 0xFF
        if primary == 13:  # SQLITE_FULL
            return "full"
        if primary == 8:  # SQLITE_READONLY
            return "read-only"
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate == "53100":  # disk_full ("could not extend file", "could not write")
        return "full"
    if sqlstate == "25006":  # read_only_sql_transaction (a standby, or default_transaction_read_only)
        return "read-only"
    text = str(orig or exc).lower()
    if "database or disk is full" in text or "no space left on device" in text or "could not extend file" in text:
        return "full"
    if "readonly database" in text or "read-only file system" in text:
        return "read-only"
    return None


def insufficient_storage_message(app: FastAPI, exc: BaseException) -> str | None:
    """The 507 sentence for ``exc``, or None when it is not a full or read-only disk."""
    problem = database_storage_problem(exc)
    if problem is not None:
        if _sqlite_file(app.state.engine) is not None:
            where = free_space_text([p for p in storage_places(app) if p[0] == "the database folder"])
            return (f"The database cannot be written: its disk is {problem} ({_first_line(exc)}); {where}. "
                    "Free some space (delete runs or checkpoints no longer needed), then retry.")
        return (f"The database cannot be written: its disk is {problem} ({_first_line(exc)}); free space on "
                "the database server's disk, then retry.")
    code = storage_errno(exc)
    if code is None:
        return None
    filename = next((getattr(e, "filename", None) for e in _chain(exc) if getattr(e, "filename", None)), None)
    writing = f" writing {filename}" if filename else ""
    return (f"The server's storage cannot take this request: {STORAGE_ERRNOS[code]}{writing}; "
            f"{free_space_text(storage_places(app))}. Free some space (delete runs or checkpoints no longer "
            "needed), then retry.")


def _chain(exc: BaseException | None) -> list[BaseException]:
    out: list[BaseException] = []
    while exc is not None and len(out) < 8:
        out.append(exc)
        exc = exc.__cause__ or exc.__context__
    return out


def _first_line(exc: BaseException) -> str:
    """The database's message, first line, without quoted names (PostgreSQL quotes file paths)."""
    orig = getattr(exc, "orig", None) or exc
    line = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
    return re.sub(r'\s*"[^"]*"', "", line)[:200]


# --------------------------------------------------------------------------- probes


def probe_database(engine: Engine) -> str:
    """``"ok"``, ``"busy"`` (the write lock was held beyond the probe's wait: not degraded) or
    ``"degraded: <reason>"``. Raises when the database cannot be reached at all."""
    from server.models import HealthProbe, utcnow

    table = HealthProbe.__table__
    sqlite = engine.url.get_backend_name() == "sqlite"
    with engine.connect() as conn:
        try:
            with conn.begin():
                if sqlite:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={int(PROBE_LOCK_TIMEOUT_S * 1000)}")
                else:
                    conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{int(PROBE_LOCK_TIMEOUT_S * 1000)}ms'")
                    conn.exec_driver_sql("SET LOCAL statement_timeout = '5s'")
                now = utcnow()
                done = conn.execute(update(table).where(table.c.id == PROBE_ID)  # type: ignore[arg-type]
                                    .values(checked_at=now, writes=table.c.writes + 1)).rowcount
                if not done:
                    conn.execute(insert(table).values(id=PROBE_ID, checked_at=now, writes=1))  # type: ignore[arg-type]
                if not sqlite:
                    # an UPDATE fits in its page and its WAL is elsewhere: a full tablespace shows
                    # only when a file must grow, as a new (temporary) table's first page does
                    conn.exec_driver_sql("CREATE TEMPORARY TABLE runyard_health_probe (x integer) ON COMMIT DROP")
                    conn.exec_driver_sql("INSERT INTO runyard_health_probe VALUES (1)")
        except DBAPIError as exc:
            problem = database_storage_problem(exc)
            if problem is not None:
                return f"degraded: the database's disk is {problem} ({_first_line(exc)})"
            text = str(getattr(exc, "orig", exc)).lower()
            if isinstance(exc, OperationalError) and ("locked" in text or "busy" in text or "lock timeout" in text):
                return "busy"
            if exc.connection_invalidated:
                raise
            return f"degraded: the write probe failed ({_first_line(exc)})"
        finally:
            if sqlite:
                from server.db import SQLITE_BUSY_TIMEOUT_MS

                try:
                    conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                    conn.commit()
                except DBAPIError:
                    conn.invalidate()  # never hand a connection with the short timeout back to the pool
    return "ok"


def probe_folder(folder: str | os.PathLike[str]) -> str:
    """``"ok"`` when a small file can be written and removed in ``folder``, else ``"degraded: ..."``."""
    from server.artifacts import write_probe

    try:
        write_probe(Path(folder))
    except OSError as exc:
        return _folder_reason(exc, folder)
    return "ok"


def _folder_reason(exc: OSError, folder: str | os.PathLike[str] | None) -> str:
    what = STORAGE_ERRNOS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    free = f", {human_bytes(free_bytes(folder))} free" if folder is not None and exc.errno == errno.ENOSPC else ""
    return f"degraded: cannot be written ({what}{free})"


def probe_artifacts(artifacts: Any) -> str:
    try:
        artifacts.probe()
    except OSError as exc:
        return _folder_reason(exc, getattr(artifacts, "root", None))
    except Exception as exc:  # e.g. an S3 error: the store cannot be written
        return f"degraded: cannot be written ({type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''})"
    return "ok"


class StorageHealth:
    """The cached probe results of one app (``app.state.storage_health``)."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self._lock = threading.Lock()
        self._result: dict[str, str] | None = None
        self._until = float("-inf")  # time.monotonic() until which the result stands

    def invalidate(self) -> None:
        self._until = float("-inf")

    def report(self, app: FastAPI) -> dict[str, str]:
        result = self._result
        if result is not None and time.monotonic() < self._until:
            return result
        if not self._lock.acquire(blocking=result is None):
            assert result is not None  # acquire() blocks while there is none
            return result  # another request is probing: the previous answer meanwhile
        try:
            if self._result is not None and time.monotonic() < self._until:
                return self._result  # probed while this one waited for the lock
            fresh = self._probe(app, previous=self._result)
            self._result, self._until = fresh, time.monotonic() + self.interval
            return fresh
        finally:
            self._lock.release()

    @staticmethod
    def _probe(app: FastAPI, previous: dict[str, str] | None) -> dict[str, str]:
        database = probe_database(app.state.engine)
        if database == "busy":  # a long writer holds the lock: the database is being written, fine
            database = (previous or {}).get("database", "ok")
        artifacts = getattr(app.state, "artifacts", None)
        if artifacts is None:
            from server.artifacts import artifact_store

            artifacts = app.state.artifacts = artifact_store(app.state.settings)
        return {"database": database, "artifacts": probe_artifacts(artifacts),
                "uploads": probe_folder(app.state.settings.upload_dir)}


def _health(app: FastAPI) -> StorageHealth:
    # imported here: server.errors imports this module, and server.deps imports server.errors
    from server.deps import app_state

    return app_state(app, "storage_health", lambda: StorageHealth(app.state.settings.health_probe_interval))


def storage_report(app: FastAPI) -> dict[str, str]:
    """``{"database", "artifacts", "uploads"}``: each ``"ok"`` or ``"degraded: <reason>"`` (cached)."""
    return _health(app).report(app)


def invalidate(app: FastAPI) -> None:
    """Make the next ``/healthz`` probe again (a write just failed for lack of space)."""
    _health(app).invalidate()

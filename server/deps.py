"""FastAPI dependencies: the app's settings and a database session per request."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

from fastapi import Path, Request
from sqlalchemy.orm import Session

from server.errors import ApiError
from server.settings import Settings

T = TypeVar("T")

# Caps on what one read may ask for (a bigger ask is a 422 naming the parameter).
MAX_KEYS = 1000  # keys= of GET /runs/{id}/metrics, metric_keys= of GET /runs
MAX_POINTS = 100_000  # max_points= per series
MAX_LIST_LIMIT = 1000  # limit= of list routes
MAX_LOG_LINES = 100_000  # tail= / limit= of GET /runs/{id}/logs


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def app_state(app: Any, name: str, make: Callable[[], T]) -> T:
    """``app.state.<name>``, made by ``make()`` on first use (per-process helpers of the app:
    limiters, caches, probes)."""
    found = getattr(app.state, name, None)
    if found is None:
        found = make()
        setattr(app.state, name, found)
    return found


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


# Every id column is a 32-bit integer on PostgreSQL (``integer``): an id beyond it cannot exist, and
# refusing it here keeps it away from the database driver. An integer outside [1, ID_MAX] answers
# the same 404 as a missing row (server/errors.py), a non-integer 422, on every backend.
ID_MAX = 2**31 - 1
RunId = Annotated[int, Path(ge=1, le=ID_MAX, description="A run id.")]
CheckpointId = Annotated[int, Path(ge=1, le=ID_MAX, description="A checkpoint id.")]


def key_list(raw: str | None, name: str, limit: int = MAX_KEYS) -> list[str]:
    """A comma-separated ``keys=``-style query value as a list (blanks dropped), at most ``limit`` keys."""
    keys = [k.strip() for k in (raw or "").split(",") if k.strip()]
    if len(keys) > limit:
        raise ApiError(422, f"{name} names {len(keys)} keys; ask for at most {limit} per request.", name)
    return keys

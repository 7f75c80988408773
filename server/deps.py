"""FastAPI dependencies: the app's settings and a database session per request."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Path, Request
from sqlalchemy.orm import Session

from server.settings import Settings


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    session: Session = request.app.state.sessionmaker()
    try:
        yield session
    finally:
        session.close()


# Ids beyond 64 bits cannot exist; refusing them here keeps them away from the database driver.
RunId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A run id.")]
CheckpointId = Annotated[int, Path(ge=1, le=2**63 - 1, description="A checkpoint id.")]

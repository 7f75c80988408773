"""Single sign-on with OpenID Connect (being written: see docs/security.md)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

router = APIRouter(tags=["accounts"])


def install(app: Any, settings: Any) -> None:
    """Nothing yet."""


def logout_url(request: Any, session: Any, session_id: int) -> str | None:
    return None

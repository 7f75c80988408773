"""The audit log: who did what and when, kept in the ``audit_events`` table.

Actions: ``login``, ``login_failed``, ``login_blocked``, ``logout``, ``token_created``,
``token_revoked``, ``user_created``, ``user_updated``, ``user_disabled``, ``user_enabled``,
``password_reset``, ``password_changed``, ``login_link_created``, ``role_changed``, ``run_submitted``,
``run_cancelled``, ``run_resumed``, ``run_deleted``, ``checkpoint_downloaded``,
``checkpoint_deleted``, ``snapshot_uploaded``, ``snapshot_downloaded``, ``quotas_changed``. Secrets are never written here (token prefixes only).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Request
from sqlalchemy import select
from sqlalchemy.orm import Session

from server.models import AuditEvent, utcnow

log = logging.getLogger(__name__)


def client_address(request: Request | None) -> str | None:
    if request is None or request.client is None:
        return None
    return (request.client.host or "")[:64] or None


def record(session: Session, action: str, *, request: Request | None = None, principal: Any = None,
           user_id: int | None = None, actor: str | None = None, target: str = "", project_id: int | None = None,
           commit: bool = True, **detail: Any) -> None:
    """Append one event. ``principal`` (or ``user_id``/``actor``) names who did it."""
    if principal is None and request is not None:
        principal = getattr(request.state, "principal", None)
    if principal is not None:
        user_id = user_id if user_id is not None else principal.user_id
        actor = actor if actor is not None else principal.label
    session.add(AuditEvent(time=utcnow(), user_id=user_id, actor=(actor or "")[:200], action=action,
                           target=target[:300], project_id=project_id, address=client_address(request),
                           detail={k: v for k, v in detail.items() if v is not None}))
    if commit:
        session.commit()


def list_events(session: Session, *, project_ids: set[int] | None, limit: int, before: int | None = None,
                action: str | None = None, user_id: int | None = None) -> list[AuditEvent]:
    """Newest first. ``project_ids`` None: all events; else only those of these projects."""
    query = select(AuditEvent).order_by(AuditEvent.id.desc()).limit(limit)
    if project_ids is not None:
        query = query.where(AuditEvent.project_id.in_(project_ids or {-1}))
    if before is not None:
        query = query.where(AuditEvent.id < before)
    if action:
        query = query.where(AuditEvent.action == action)
    if user_id is not None:
        query = query.where(AuditEvent.user_id == user_id)
    return list(session.scalars(query))


def event_out(event: AuditEvent) -> dict[str, Any]:
    return {"id": event.id, "time": event.time.isoformat(), "user_id": event.user_id, "actor": event.actor,
            "action": event.action, "target": event.target, "project_id": event.project_id,
            "address": event.address, "detail": event.detail or {}}

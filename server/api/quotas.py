"""A project's quotas (issue 11, point 2; ``server/quotas.py``): read by its members, set by server admins.

``GET /api/v1/projects/{project_id}/quotas`` -> the effective quotas, what the admin set (``overrides``;
null: the ``RUNYARD_QUOTA_*`` default), the defaults and the project's checkpoint usage.
``PUT`` the same path with some of ``checkpoint_bytes``, ``keep_best``, ``keep_last``, ``keep_every``,
``metric_keys_per_run``, ``points_per_run``, ``max_run_seconds``: a value sets it, null resets it to the
default, a quota left out stays as it is. Audited as ``quotas_changed``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.orm import Session

from server import audit, quotas, store
from server.deps import get_session, get_settings_dep
from server.models import Project
from server.settings import Settings

router = APIRouter(prefix="/api/v1", tags=["projects"])

ProjectId = PathParam(ge=1, le=2**31 - 1, description="A project id (GET /api/v1/projects).")  # an integer column
INT64 = 2**63 - 1


class QuotaValues(BaseModel):
    """Quotas of a project; in a PUT, a value sets one, null resets it to the default, absent leaves it."""

    model_config = ConfigDict(extra="forbid")

    checkpoint_bytes: int | None = Field(None, ge=1, le=INT64, description="Bytes all of the project's "
                                         "checkpoints may hold (an upload past it: 413).")
    keep_best: int | None = Field(None, ge=0, le=100_000, description="Retention: the k best checkpoints of a "
                                  "run by score are kept.")
    keep_last: int | None = Field(None, ge=1, le=100_000, description="Retention: the n newest checkpoints of a "
                                  "run are kept (at least 1).")
    keep_every: int | None = Field(None, ge=0, le=2**31 - 1, description="Retention: the first checkpoint of every N "
                                   "training steps is kept too (0: off).")
    metric_keys_per_run: int | None = Field(None, ge=1, le=2**31 - 1, description="Metric keys one run may log.")
    points_per_run: int | None = Field(None, ge=1, le=INT64, description="Metric points one run may hold.")
    max_run_seconds: float | None = Field(None, gt=0, le=10 * 365 * 86400.0, description="The longest a run may "
                                          "run (trainer max_time of queued runs; the reaper fails runs past it).")


class QuotaUsage(BaseModel):
    checkpoint_bytes: int
    checkpoints: int


class QuotasOut(BaseModel):
    project_id: int
    project: str
    quotas: dict[str, int | float] = Field(description="The effective quotas.")
    overrides: dict[str, int | float | None] = Field(description="What a server admin set (null: the default).")
    defaults: dict[str, int | float] = Field(description="The RUNYARD_QUOTA_* settings.")
    usage: QuotaUsage
    updated_at: datetime | None = None
    updated_by: str | None = None


def _project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise store.missing_project(project_id)
    return project


@router.get("/projects/{project_id}/quotas", response_model=QuotasOut)
def get_quotas(project_id: int = ProjectId, session: Session = Depends(get_session),
               settings: Settings = Depends(get_settings_dep)) -> Any:
    """The project's effective quotas, its own settings, the defaults and its checkpoint usage."""
    _project(session, project_id)
    return quotas.describe(session, project_id, settings)


@router.put("/projects/{project_id}/quotas", response_model=QuotasOut)
def put_quotas(body: QuotaValues, request: Request, project_id: int = ProjectId,
               session: Session = Depends(get_session), settings: Settings = Depends(get_settings_dep)) -> Any:
    """Set (a value) or reset (null) some of the project's quotas; server admins only. Retention
    applies from each run's next checkpoint on."""
    project = _project(session, project_id)
    changes = {name: getattr(body, name) for name in body.model_fields_set}
    principal = request.state.principal
    before, after = quotas.set_quotas(session, project_id, changes, principal.user_id)
    changed = {name: {"before": before[name], "after": after[name]} for name in changes
               if before[name] != after[name]}
    if changed:
        audit.record(session, "quotas_changed", request=request, target=f"project {project.name}",
                     project_id=project_id, changes=changed)
    return quotas.describe(session, project_id, settings)

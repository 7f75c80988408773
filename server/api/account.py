"""Accounts over HTTP: login/logout, who am I, personal API tokens, users (server admins),
project members and roles, the audit log. Access is decided by ``server/policy.py``."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from server import audit, users
from server.auth import (
    COOKIE,
    Principal,
    check_same_origin,
    clear_caches,
    create_token,
    role_in,
    visible_projects,
)
from server.deps import app_state, get_session, get_settings_dep
from server.errors import ApiError
from server.models import Project, Token, User, utcnow
from server.settings import Settings
from server.store import missing_project

router = APIRouter(prefix="/api/v1", tags=["accounts"])
DbId = Annotated[int, Path(ge=1, le=2**31 - 1)]  # server/deps.py ID_MAX: beyond it, 404


class LoginIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    login: str = Field(..., max_length=320, description="User name or email.")
    password: str = Field(..., max_length=4096)


class LinkIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: str = Field(..., max_length=200)


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: str = Field("", max_length=4096)
    new_password: str = Field(..., max_length=4096)


class PasswordSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    password: str = Field(..., max_length=4096)


class TokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., min_length=1, max_length=200)
    scope: Literal["read", "read+write"] = "read"
    expires_in_days: int | None = Field(90, ge=1, le=3650, description="null: never expires.")
    project: str | None = Field(None, max_length=200, description="Limit the token to this project.")


class UserCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(..., max_length=100)
    display_name: str = Field("", max_length=200)
    email: str | None = Field(None, max_length=320)
    password: str | None = Field(None, max_length=4096, description="None: log in by a one-time link or SSO.")
    is_admin: bool = False


class UserPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    display_name: str | None = Field(None, max_length=200)
    email: str | None = Field(None, max_length=320)
    is_admin: bool | None = None
    disabled: bool | None = None


class MemberSet(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["viewer", "member", "admin"]


def user_out(user: User) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "display_name": user.display_name, "email": user.email,
            "is_admin": user.is_admin, "disabled": user.disabled_at is not None,
            "has_password": bool(user.password_hash), "sso": bool(user.oidc_subject),
            "created_at": user.created_at.isoformat(),
            "last_login_at": user.last_login_at.isoformat() if user.last_login_at else None}


def token_out(token: Token, project_names: dict[int, str]) -> dict[str, Any]:
    return {"id": token.id, "name": token.name, "prefix": token.prefix, "scope": token.scope,
            "user_id": token.user_id, "project": project_names.get(token.project_id) if token.project_id else None,
            "created_at": token.created_at.isoformat(),
            "expires_at": token.expires_at.isoformat() if token.expires_at else None,
            "last_used_at": token.last_used_at.isoformat() if token.last_used_at else None,
            "revoked": token.revoked_at is not None}


def _principal(request: Request) -> Principal:
    return request.state.principal


def _secure(request: Request, settings: Settings) -> bool:
    return request.url.scheme == "https" or settings.public_url.startswith("https://")


def start_session(request: Request, session: Session, user: User, response: Response, method: str,
                  id_token: str | None = None) -> None:
    """Log ``user`` in on this browser: a new session (an old cookie is revoked, never reused),
    the cookie set on ``response``, an audit event."""
    settings: Settings = request.app.state.settings
    old = request.cookies.get(COOKIE)
    if old:
        row = users.lookup_session(session, old, settings.session_idle_timeout)
        if row is not None:
            users.revoke_session(session, row.id)
    _, secret = users.create_session(session, user, max_age_s=settings.session_max_age, method=method,
                                     address=audit.client_address(request),
                                     user_agent=request.headers.get("user-agent"), id_token=id_token)
    response.set_cookie(COOKIE, secret, max_age=int(settings.session_max_age), httponly=True, samesite="lax",
                        secure=_secure(request, settings), path="/")
    audit.record(session, "login", request=request, user_id=user.id, actor=user.name, target=f"user {user.name}",
                 method=method)


def end_session(request: Request, session: Session, response: Response) -> None:
    principal = _principal(request)
    if principal.session_id is not None:
        users.revoke_session(session, principal.session_id)
    response.delete_cookie(COOKIE, path="/")


# --------------------------------------------------------------------------- login


@router.get("/me")
def me(request: Request, session: Session = Depends(get_session),
       settings: Settings = Depends(get_settings_dep)) -> dict[str, Any]:
    """Who is calling: the user, their roles per project and the session's CSRF token (send it
    as ``X-CSRF-Token`` with every change made with the cookie); or how to log in."""
    principal = _principal(request)
    sso = {"name": settings.oidc_name, "url": "/auth/oidc/login"} if settings.oidc_enabled else None
    if not principal.is_user:
        return {"authenticated": False, "open": False, "sso": sso}
    if principal.kind == "open":
        return {"authenticated": True, "open": True, "user": None, "is_admin": True, "roles": {}, "csrf": None,
                "sso": sso, "limits": _limits(settings)}
    user = users.get_user(session, cast(int, principal.user_id))  # not open: a user's principal
    names = dict(session.execute(select(Project.id, Project.name)).all())
    from server.auth import roles as roles_of

    roles = {names[pid]: role for pid, role in roles_of(session, principal).items() if pid in names}
    return {"authenticated": True, "open": False, "user": user_out(user), "is_admin": principal.is_admin,
            "roles": roles, "csrf": principal.csrf, "via": principal.kind, "scope": principal.scope,
            "token_project": names.get(principal.project_id) if principal.project_id else None, "sso": sso,
            "limits": _limits(settings)}


def _limits(settings: Settings) -> dict[str, int]:
    """The server's limits a client should know before it asks (the dashboard offers no more)."""
    return {"bulk_max": settings.bulk_max}


def _limiter(request: Request) -> users.LoginLimiter:
    s: Settings = request.app.state.settings
    return app_state(request.app, "login_limiter", lambda: users.LoginLimiter(
        s.login_max_failures, s.login_max_failures_per_address, s.login_window))


@router.post("/auth/login")
async def login(body: LoginIn, request: Request, response: Response) -> dict[str, Any]:
    """Log in with a name (or email) and password; sets the session cookie. Every failure says
    the same; too many failures for one account or one address answer 429 for a while."""
    check_same_origin(request)
    limiter = _limiter(request)
    address = audit.client_address(request) or "?"

    def attempt() -> tuple[dict[str, Any] | None, str | None, int, float | None]:
        session = request.app.state.sessionmaker()
        try:
            key = users.limit_key(session, body.login)
            wait = limiter.retry_after(key, address)
            if wait is not None:
                audit.record(session, "login_blocked", request=request, actor=body.login[:200],
                             target=f"login {body.login[:100]}")
                return None, f"Too many failed logins; try again in {int(wait) + 1} s.", 429, wait
            user, reason = users.authenticate(session, body.login, body.password)
            if user is None:
                limiter.failed(key, address)
                audit.record(session, "login_failed", request=request, actor=body.login[:200],
                             target=f"login {body.login[:100]}", reason=reason)
                return None, reason, 401, None
            limiter.succeeded(key)
            start_session(request, session, user, response, "password")
            return {"user": user_out(user)}, None, 200, None
        finally:
            session.close()

    out, reason, status, wait = await run_in_threadpool(attempt)
    if out is None:
        headers = {"Retry-After": str(int(wait) + 1)} if wait is not None else None
        raise ApiError(status, reason or users.LOGIN_FAILED, headers=headers)
    return out


@router.post("/auth/link")
def login_link(body: LinkIn, request: Request, response: Response,
               session: Session = Depends(get_session)) -> dict[str, Any]:
    """Log in with a one-time login link's token (``runyard up`` prints one; admins make them)."""
    check_same_origin(request)
    from server.auth import hash_secret

    token = session.scalar(select(Token).where(Token.secret_hash == hash_secret(body.token), Token.kind == "login"))
    now = utcnow()
    if token is None or token.revoked_at is not None or (token.expires_at and token.expires_at <= now):
        audit.record(session, "login_failed", request=request, actor="", target="login link", reason="bad link")
        raise ApiError(401, "This login link is unknown, used or expired; ask for a new one "
                            "(`runyard user login-link NAME`).")
    token.revoked_at = now  # one-time
    session.commit()
    user = session.get(User, token.user_id)
    if user is None or user.disabled_at is not None:
        raise ApiError(401, "This account is disabled; ask an administrator.")
    start_session(request, session, user, response, "link")
    return {"user": user_out(user)}


@router.post("/auth/logout")
def logout(request: Request, response: Response, session: Session = Depends(get_session),
           settings: Settings = Depends(get_settings_dep)) -> dict[str, Any]:
    """End this browser's session. For an SSO login, ``redirect`` is the IdP's logout page."""
    principal = _principal(request)
    redirect = None
    if principal.session_id is not None and settings.oidc_enabled:
        from server.oidc import logout_url

        redirect = logout_url(request, session, principal.session_id)
    end_session(request, session, response)
    audit.record(session, "logout", request=request, target=f"user {principal.name}")
    return {"logged_out": True, "redirect": redirect}


@router.post("/me/password", status_code=204)
def change_password(body: PasswordChange, request: Request, session: Session = Depends(get_session)) -> Response:
    """Change your own password (the current one is asked for when you have one). Ends your
    other sessions."""
    principal = _principal(request)
    if principal.kind == "open":
        raise ApiError(409, "No account is logged in (no accounts exist yet).")
    user = users.get_user(session, cast(int, principal.user_id))  # not open: a user's principal
    if user.password_hash:
        limiter, key, address = _limiter(request), f"user:{user.id}", audit.client_address(request) or "?"
        wait = limiter.retry_after(key, address)
        if wait is not None:
            raise ApiError(429, f"Too many wrong passwords; try again in {int(wait) + 1} s.",
                           headers={"Retry-After": str(int(wait) + 1)})
        ok, _ = users.authenticate(session, user.name, body.current_password)
        if ok is None:
            limiter.failed(key, address)
            audit.record(session, "login_failed", request=request, target=f"user {user.name}",
                         reason="wrong current password")
            raise ApiError(403, "The current password is wrong.", "current_password")
    users.check_password(body.new_password, "new_password")
    users.set_password(session, user, body.new_password, keep_session_id=principal.session_id)
    audit.record(session, "password_changed", request=request, target=f"user {user.name}")
    return Response(status_code=204)


# --------------------------------------------------------------------------- tokens


@router.get("/tokens")
def list_tokens(request: Request, all: bool = False,  # the query parameter's name
                session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    """Your personal tokens (a server admin may ask for ``all=true``: every user's). Secrets are
    never shown again; ``prefix`` identifies a token."""
    principal = _principal(request)
    query = select(Token).where(Token.kind == "personal").order_by(Token.id.desc())
    if not (all and principal.is_admin):
        query = query.where(Token.user_id == (principal.user_id if principal.user_id is not None else -1))
    names = dict(session.execute(select(Project.id, Project.name)).all())
    return [token_out(t, names) for t in session.scalars(query.limit(1000))]


@router.post("/tokens", status_code=201)
def new_token(body: TokenCreate, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    """Make a personal API token; ``token`` in the answer is its secret, shown only this once.
    Tokens are made from a logged-in browser (or `runyard token create` on the server), not by
    other tokens."""
    principal = _principal(request)
    if principal.kind != "session":
        raise ApiError(403, "API tokens are made from a logged-in dashboard session (Tokens page) or with "
                            "`runyard token create --user NAME` on the server, not with another token.")
    project_id = None
    if body.project:
        project = session.scalar(select(Project).where(Project.name == body.project))
        if project is None or role_in(session, principal, project.id) is None:
            raise ApiError(404, f"Project {body.project!r} does not exist; list projects with GET /api/v1/projects.",
                           "project")
        project_id = project.id
    expires = utcnow() + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    token, secret = create_token(session, "personal", name=body.name, scope=body.scope, user_id=principal.user_id,
                                 expires_at=expires, project_id=project_id)
    audit.record(session, "token_created", request=request, target=f"token {token.prefix}", project_id=project_id,
                 name=body.name, scope=body.scope)
    names = dict(session.execute(select(Project.id, Project.name)).all())
    return {**token_out(token, names), "token": secret}


@router.delete("/tokens/{token_id}", status_code=204)
def delete_token(token_id: DbId, request: Request, session: Session = Depends(get_session)) -> Response:
    """Revoke one of your tokens (a server admin: anyone's)."""
    principal = _principal(request)
    token = session.get(Token, token_id)
    if token is None or token.kind != "personal" or (token.user_id != principal.user_id and not principal.is_admin):
        raise ApiError(404, f"Token {token_id} does not exist; list yours with GET /api/v1/tokens.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.commit()
        clear_caches()
        audit.record(session, "token_revoked", request=request, target=f"token {token.prefix}", name=token.name)
    return Response(status_code=204)


# --------------------------------------------------------------------------- users (server admins)


def _user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise ApiError(404, f"User {user_id} does not exist; list users with GET /api/v1/users.")
    return user


@router.get("/users")
def list_users(session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    return [user_out(u) for u in session.scalars(select(User).order_by(User.name).limit(10_000))]


@router.post("/users", status_code=201)
def create_user(body: UserCreate, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    user = users.create_user(session, body.name, display_name=body.display_name, email=body.email,
                             password=body.password or None, is_admin=body.is_admin)
    audit.record(session, "user_created", request=request, target=f"user {user.name}", is_admin=body.is_admin)
    return user_out(user)


@router.patch("/users/{user_id}")
def update_user(user_id: DbId, body: UserPatch, request: Request, session: Session = Depends(get_session)) -> dict[str, Any]:
    user = _user(session, user_id)
    principal = _principal(request)
    if user.id == principal.user_id and (body.disabled or body.is_admin is False):
        raise ApiError(409, "You cannot disable yourself or drop your own admin role; ask another admin.",
                       "disabled" if body.disabled else "is_admin")
    changes: dict[str, Any] = {}
    if body.display_name is not None:
        user.display_name = body.display_name
        changes["display_name"] = body.display_name
    if body.email is not None:
        email = users.check_email(body.email)
        if email is not None and session.scalar(select(User.id).where(User.email == email, User.id != user.id)):
            raise ApiError(409, "Another user has this email.", "email")
        user.email = email
        changes["email"] = user.email
    if body.is_admin is not None and body.is_admin != user.is_admin:
        user.is_admin = body.is_admin
        changes["is_admin"] = body.is_admin
    session.commit()
    clear_caches()
    if changes:
        audit.record(session, "role_changed" if "is_admin" in changes else "user_updated", request=request,
                     target=f"user {user.name}", **changes)
    if body.disabled is not None and body.disabled != (user.disabled_at is not None):
        users.set_disabled(session, user, body.disabled)
        audit.record(session, "user_disabled" if body.disabled else "user_enabled", request=request,
                     target=f"user {user.name}")
    return user_out(user)


@router.post("/users/{user_id}/password", status_code=204)
def reset_password(user_id: DbId, body: PasswordSet, request: Request,
                   session: Session = Depends(get_session)) -> Response:
    """Set a user's password (ends their sessions)."""
    user = _user(session, user_id)
    users.set_password(session, user, body.password)
    audit.record(session, "password_reset", request=request, target=f"user {user.name}")
    return Response(status_code=204)


@router.post("/users/{user_id}/login-link", status_code=201)
def make_login_link(user_id: DbId, request: Request, session: Session = Depends(get_session),
                    settings: Settings = Depends(get_settings_dep)) -> dict[str, Any]:
    """A one-time login link for a user (e.g. to set their first password); shown once."""
    user = _user(session, user_id)
    if user.disabled_at is not None:
        raise ApiError(409, f"User {user.name} is disabled; enable them first.", "disabled")
    url = login_link_for(session, user, settings)
    audit.record(session, "login_link_created", request=request, target=f"user {user.name}")
    return {"url": url}


def login_link_for(session: Session, user: User, settings: Settings) -> str:
    """A new one-time login link. The secret is in the URL's fragment, which browsers never
    send to the server, so no access log can hold it."""
    # a new link replaces the user's earlier unused ones
    session.execute(update(Token).where(Token.kind == "login", Token.user_id == user.id, Token.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    _, secret = create_token(session, "login", name=f"login link for {user.name}", scope="login", user_id=user.id,
                             expires_at=utcnow() + timedelta(seconds=settings.login_link_ttl))
    return f"{settings.public_url.rstrip('/')}/#/login?link={secret}"


# --------------------------------------------------------------------------- project members


def _project(session: Session, project_id: int) -> Project:
    project = session.get(Project, project_id)
    if project is None:
        raise missing_project(project_id)
    return project


@router.get("/projects/{project_id}/members")
def list_members(project_id: DbId, session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    project = _project(session, project_id)
    return [{"user": u.name, "display_name": u.display_name, "role": m.role, "source": m.source}
            for u, m in users.members(session, project.id)]


@router.put("/projects/{project_id}/members/{user_name}")
def set_member(project_id: DbId, user_name: str, body: MemberSet, request: Request,
               session: Session = Depends(get_session)) -> dict[str, Any]:
    project = _project(session, project_id)
    user = users.user_by_name(session, user_name)
    if user is None:
        raise ApiError(404, f"No user is named {user_name!r}.", "user_name")
    previous = users.set_role(session, project, user, body.role)
    audit.record(session, "role_changed", request=request, target=f"user {user.name}", project_id=project.id,
                 project=project.name, before=previous, after=body.role)
    return {"user": user.name, "role": body.role, "project": project.name}


@router.delete("/projects/{project_id}/members/{user_name}", status_code=204)
def remove_member(project_id: DbId, user_name: str, request: Request,
                  session: Session = Depends(get_session)) -> Response:
    project = _project(session, project_id)
    user = users.user_by_name(session, user_name)
    if user is None:
        raise ApiError(404, f"No user is named {user_name!r}.", "user_name")
    previous = users.set_role(session, project, user, None)
    if previous is not None:
        audit.record(session, "role_changed", request=request, target=f"user {user.name}", project_id=project.id,
                     project=project.name, before=previous, after=None)
    return Response(status_code=204)


# --------------------------------------------------------------------------- audit


@router.get("/audit")
def audit_log(request: Request, limit: int = Query(100, ge=1, le=1000),
              before: int | None = Query(None, ge=1, le=2**63 - 1),  # bounds: the columns' ranges
              action: str | None = Query(None, max_length=64), user_id: int | None = Query(None, ge=1, le=2**31 - 1),
              session: Session = Depends(get_session)) -> list[dict[str, Any]]:
    """Newest first. Server admins read every event; a project admin reads their projects'."""
    principal = _principal(request)
    if principal.is_admin and principal.project_id is None:
        project_ids = None
    else:
        from server.auth import roles

        project_ids = {pid for pid, role in roles(session, principal).items() if role == "admin"}
        visible = visible_projects(session, principal)
        if visible is not None:
            project_ids &= visible
        if not project_ids:
            raise ApiError(403, "Only admins read the audit log (server admins, or a project's admins for it).")
    return [audit.event_out(e) for e in audit.list_events(session, project_ids=project_ids, limit=limit,
                                                             before=before, action=action, user_id=user_id)]

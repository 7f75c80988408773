"""Who is calling, and may they call this route: tokens, browser sessions, and the one check.

A token is ``ry<k>_<43 random url-safe characters>`` (``k``: ``w`` worker, ``r`` run, ``p``
personal, ``l`` a one-time login link), made by :func:`secrets.token_urlsafe`; the database
keeps only its SHA-256 (a random 256-bit secret needs no slow password hash: nothing can be
guessed from the hash) and a short prefix to show in lists. The secret is returned once.

Kinds (``tokens.kind``):

- ``worker``: made by ``runyard token create --worker`` (or by ``runyard up`` for its local
  worker). Registers the worker and its recipes, claims runs (which issues a run token),
  reports a run process that died, hands a run back on a warm shutdown. Nothing else.
- ``run``: made when a worker claims a run, bound to that run and attempt, given only to the
  run's own process. It reads the run and its resume checkpoint (and the checkpoints the
  claim named as inputs), downloads the code snapshot of a code run, and writes that run's
  metrics, logs, checkpoints, summary, hyperparameters, code schema, environment record,
  heartbeat and final status, while the run is running as its attempt. Revoked when the
  attempt ends.
- ``personal``: a user's API token: scope ``read`` (GET only) or ``read+write``, optionally
  limited to one project; it acts with its user's roles.
- ``login``: a one-time login link (``POST /api/v1/auth/link``); never accepted as a Bearer token.

A browser sends the ``runyard_session`` cookie instead (``server/users.py``); every
state-changing request made with it must carry the session's CSRF token (``X-CSRF-Token``) and
come from our origin. With no credentials and no account in the database yet, a caller on this
machine is a server admin ("open mode", the single-user default before any account exists).

:func:`authorize` is one app-wide dependency: it looks at the route template and method of
every request and decides with ``server/policy.py``'s rule for it, so no router can forget a
check. A run, checkpoint, upload or project the caller may not read answers 404 as if it did
not exist.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, cast

from fastapi import Request
from sqlalchemy import CursorResult, bindparam, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from server import health
from server.errors import ApiError
from server.models import Checkpoint, CodeSnapshot, Project, Run, Token, Upload, User, utcnow

log = logging.getLogger(__name__)
KIND_PREFIX = {"worker": "ryw", "run": "ryr", "personal": "ryp", "login": "ryl"}
SCOPES = {"worker": "worker", "run": "run"}
LAST_USED_EVERY_S = 60.0
CACHE_TTL_S = 2.0


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(session: Session, kind: str, *, name: str = "", scope: str | None = None, run_id: int | None = None,
                 attempt: int | None = None, user_id: int | None = None, reads: list[int] | None = None,
                 expires_at: datetime | None = None, project_id: int | None = None,
                 commit: bool = True) -> tuple[Token, str]:
    """A new token and its secret (shown once; only its hash is stored)."""
    if kind not in KIND_PREFIX:
        raise ValueError(f"kind must be one of {', '.join(KIND_PREFIX)}, not {kind!r}")
    secret = f"{KIND_PREFIX[kind]}_{secrets.token_urlsafe(32)}"
    token = Token(kind=kind, name=name[:200], secret_hash=hash_secret(secret), prefix=secret[:10],
                  scope=scope or SCOPES.get(kind, "read"), run_id=run_id, attempt=attempt, user_id=user_id,
                  reads=list(reads or []), created_at=utcnow(), expires_at=expires_at, project_id=project_id)
    session.add(token)
    session.flush()
    if commit:
        session.commit()
    return token, secret


def revoke_run_tokens(session: Session, run_id: int) -> None:
    """End every run token of ``run_id`` (its attempt ended or a new one starts). No commit."""
    session.execute(update(Token).where(Token.run_id == run_id, Token.kind == "run", Token.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))
    clear_caches()


def revoke_token(session: Session, token_id: int) -> bool:
    result = session.execute(update(Token).where(Token.id == token_id, Token.revoked_at.is_(None))
                             .values(revoked_at=utcnow()))
    session.commit()
    clear_caches()
    return cast("CursorResult[Any]", result).rowcount == 1


@dataclass(frozen=True)
class Principal:
    """Who is calling. ``kind``: ``anonymous`` (no credentials), ``open`` (no credentials and no
    account exists yet: single-user mode, a server admin), ``worker``, ``run``, ``personal``
    (a user's API token) or ``session`` (a logged-in browser)."""

    kind: str
    token_id: int | None = None
    run_id: int | None = None
    attempt: int | None = None
    user_id: int | None = None
    scope: str = "all"
    name: str = ""
    reads: frozenset[int] = field(default_factory=frozenset)  # checkpoint ids a run token may download
    is_admin: bool = False
    project_id: int | None = None  # a personal token limited to one project
    session_id: int | None = None
    csrf: str | None = None

    @property
    def is_user(self) -> bool:
        return self.kind in ("personal", "session", "open")

    @property
    def label(self) -> str:
        """The actor's name for the audit log."""
        if self.kind == "open":
            return "local (no accounts yet)"
        if self.kind in ("worker", "run"):
            return f"{self.kind} token {self.name}"
        return self.name


ANONYMOUS = Principal(kind="anonymous")
OPEN = Principal(kind="open", is_admin=True)

class _TTLCache:
    """A small thread-safe map whose entries live CACHE_TTL_S (cleared whole past 10,000 keys)."""

    def __init__(self) -> None:
        self._data: dict[Any, tuple[float, Any]] = {}

    def get(self, key: Any) -> tuple[bool, Any]:
        with _cache_lock:
            hit = self._data.get(key)
        if hit is not None and time.monotonic() - hit[0] < CACHE_TTL_S:
            return True, hit[1]
        return False, None

    def put(self, key: Any, value: Any) -> None:
        with _cache_lock:
            if len(self._data) > 10_000:
                self._data.clear()
            self._data[key] = (time.monotonic(), value)

    def clear(self) -> None:
        with _cache_lock:
            self._data.clear()


_cache_lock = threading.Lock()
_principals = _TTLCache()  # token digest / "s:" + session digest -> Principal | None
_roles_cache = _TTLCache()  # user id -> {project id: role}
_valid_cache = _TTLCache()  # (kind, session or token id) -> still valid


def clear_caches() -> None:
    """Forget cached tokens, sessions and roles (after a revocation or a role change here; other
    server processes notice within CACHE_TTL_S)."""
    for cache in (_principals, _roles_cache, _valid_cache):
        cache.clear()


def _lookup(session: Session, secret: str) -> Principal | None:
    digest = hash_secret(secret)
    found, principal = _principals.get(digest)
    if found:
        return principal
    token = session.scalar(select(Token).where(Token.secret_hash == digest))
    principal = None
    now = utcnow()
    if (token is not None and token.kind != "login" and token.revoked_at is None
            and (token.expires_at is None or token.expires_at > now)):
        reads: frozenset[int] = frozenset()
        user = session.get(User, token.user_id) if token.user_id is not None else None
        if token.kind == "run" and token.run_id is not None:
            run = session.get(Run, token.run_id)
            ids = {int(i) for i in (token.reads or [])}
            if run is not None and run.resume_checkpoint_id is not None:
                ids.add(run.resume_checkpoint_id)
            reads = frozenset(ids)
        if token.kind == "personal" and (user is None or user.disabled_at is not None):
            token = None
        else:
            principal = Principal(kind=token.kind, token_id=token.id, run_id=token.run_id, attempt=token.attempt,
                                  user_id=token.user_id, scope=token.scope,
                                  name=user.name if user is not None else token.name, reads=reads,
                                  is_admin=bool(user is not None and user.is_admin), project_id=token.project_id)
        if token is not None and (token.last_used_at is None
                                  or (now - token.last_used_at) > timedelta(seconds=LAST_USED_EVERY_S)):
            try:
                session.execute(update(Token).where(Token.id == token.id).values(last_used_at=now))
                session.commit()
            except OperationalError as exc:  # a full or read-only disk: serve the request, unrecorded
                session.rollback()
                if health.database_storage_problem(exc) is None:
                    raise
                log.warning("could not record the use of token %s: %s", token.id, exc)
    _principals.put(digest, principal)
    return principal


def _session_principal(session: Session, secret: str, settings: Any) -> Principal | None:
    from server import users

    key = "s:" + hash_secret(secret)
    found, principal = _principals.get(key)
    if found:
        return principal
    row = users.lookup_session(session, secret, settings.session_idle_timeout)
    principal = None
    if row is not None:
        user = session.get(User, row.user_id)
        if user is not None and user.disabled_at is None:
            principal = Principal(kind="session", user_id=user.id, name=user.name, is_admin=user.is_admin,
                                  scope="read+write", session_id=row.id, csrf=row.csrf_token)
            if utcnow() - row.last_seen_at > timedelta(seconds=LAST_USED_EVERY_S):
                try:
                    users.touch_session(session, row.id)
                except OperationalError as exc:  # a full or read-only disk: serve the request, unrecorded
                    session.rollback()
                    if health.database_storage_problem(exc) is None:
                        raise
                    log.warning("could not record the use of session %s: %s", row.id, exc)
    _principals.put(key, principal)
    return principal


def still_valid(session: Session, principal: Principal) -> bool:
    """Whether the credentials a long request (an event stream) started with still hold: the
    session or token not revoked or expired, the user not disabled, open mode not ended by a
    first account. Cached for CACHE_TTL_S."""
    from server.models import BrowserSession

    if principal.kind == "anonymous":
        return True
    key = (principal.kind, principal.session_id if principal.kind == "session" else principal.token_id)
    found, valid = _valid_cache.get(key)
    if found:
        return valid
    now = utcnow()
    if principal.kind == "open":
        from server.users import any_user

        valid = not any_user(session)
    elif principal.kind == "session":
        row = session.get(BrowserSession, principal.session_id, populate_existing=True)
        valid = row is not None and row.revoked_at is None and row.expires_at > now
    else:
        token = session.get(Token, principal.token_id, populate_existing=True)
        valid = token is not None and token.revoked_at is None and (token.expires_at is None or token.expires_at > now)
    if valid and principal.user_id is not None:
        user = session.get(User, principal.user_id, populate_existing=True)
        valid = user is not None and user.disabled_at is None
    _valid_cache.put(key, valid)
    return valid


def roles(session: Session, principal: Principal) -> dict[int, str]:
    """project id -> role of the principal's user (cached for CACHE_TTL_S)."""
    if principal.user_id is None:
        return {}
    found, cached = _roles_cache.get(principal.user_id)
    if found:
        return cached
    from server.users import roles_of

    cached = roles_of(session, principal.user_id)
    _roles_cache.put(principal.user_id, cached)
    return cached


def role_in(session: Session, principal: Principal, project_id: int) -> str | None:
    """The principal's role in a project: ``admin`` for a server admin, None: may not see it."""
    if principal.kind == "open":
        return "admin"
    if not principal.is_user:
        return None
    if principal.project_id is not None and principal.project_id != project_id:
        return None
    if principal.is_admin:
        return "admin"
    return roles(session, principal).get(project_id)


def visible_projects(session: Session, principal: Principal) -> set[int] | None:
    """The project ids the principal may read; None: every project."""
    if principal.kind == "open" or (principal.is_admin and principal.project_id is None):
        return None
    if principal.is_admin:
        return {cast(int, principal.project_id)}  # an admin token of one project
    ids = set(roles(session, principal))
    if principal.project_id is not None:
        ids &= {principal.project_id}
    return ids


def may_change(role: str | None, need: str, principal: Principal, owner_id: int | None) -> bool:
    from server.policy import NEED_RANK
    from server.users import ROLE_RANK

    if role is None or ROLE_RANK[role] < NEED_RANK[need]:
        return False
    return need != "own" or role == "admin" or (owner_id is not None and owner_id == principal.user_id)


def require_project_role(session: Session, principal: Principal, project_name: str, need: str = "write") -> Project | None:
    """For routes whose project is in the body (creating a run): 403 unless the principal may
    ``need`` there. A project that does not exist yet may be created by any user who may write.
    Returns the project, or None when it is new."""
    from server.store import project_by_name

    project = project_by_name(session, project_name)
    if project is None:
        if principal.project_id is not None:
            raise ApiError(403, "This token is limited to one project; it cannot create another.", "project")
        return None
    role = role_in(session, principal, project.id)
    if not may_change(role, need, principal, principal.user_id):
        from server.policy import ROLE_FOR_NEED

        raise ApiError(403, f"Submitting runs to project {project.name!r} needs the role "
                            f"{ROLE_FOR_NEED[need]} there; ask one of its admins.", "project")
    return project


# --------------------------------------------------------------------------- rules

WORKER_ROUTES = {
    ("POST", "/api/v1/workers"),
    ("POST", "/api/v1/workers/{worker_id}/heartbeat"),
    ("POST", "/api/v1/runs/{run_id}/claim"),
    ("POST", "/api/v1/runs/{run_id}/requeue"),
}
# What a worker token may call besides its own routes.
WORKER_ALSO = {
    ("POST", "/api/v1/runs/{run_id}/finish"),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"),
    ("GET", "/api/v1/runs/{run_id}"),
    ("GET", "/api/v1/recipes"),
    ("GET", "/healthz"),
}
# A run token: routes on its own run ({run_id} must be its run).
RUN_READS = {
    ("GET", "/api/v1/runs/{run_id}"),
    ("GET", "/api/v1/runs/{run_id}/checkpoints"),
    ("GET", "/healthz"),
}
RUN_WRITES = {
    ("POST", "/api/v1/runs/{run_id}/metrics"),
    ("POST", "/api/v1/runs/{run_id}/logs"),
    ("PUT", "/api/v1/runs/{run_id}/summary"),
    ("PUT", "/api/v1/runs/{run_id}/hyperparameters"),
    ("POST", "/api/v1/runs/{run_id}/heartbeat"),
    ("POST", "/api/v1/runs/{run_id}/finish"),
    ("POST", "/api/v1/runs/{run_id}/checkpoints/uploads"),
    ("PUT", "/api/v1/runs/{run_id}/checkpoints/upload"),
    ("PUT", "/api/v1/runs/{run_id}/code-schema"),
    ("PUT", "/api/v1/runs/{run_id}/environment"),
}
# A run token may download the snapshot its own (code) run runs, no other.
RUN_SNAPSHOT_ROUTES = {
    ("GET", "/api/v1/snapshots/{snapshot_id}/download"),
}
RUN_CHECKPOINT_ROUTES = {
    ("GET", "/api/v1/checkpoints/{checkpoint_id}/download"),
    ("PATCH", "/api/v1/checkpoints/{checkpoint_id}"),
    ("DELETE", "/api/v1/checkpoints/{checkpoint_id}"),
}
RUN_UPLOAD_ROUTES = {
    ("PUT", "/api/v1/uploads/{upload_id}"),
    ("GET", "/api/v1/uploads/{upload_id}"),
}
RUN_TOKEN_MAY = ("read its run (GET /api/v1/runs/{id}), its resume checkpoint and its code snapshot, and write "
                 "its run's metrics, logs, checkpoints, summary, hyperparameters, code schema, environment, "
                 "heartbeat and final status")


def _route(request: Request) -> tuple[str, str]:
    route = request.scope.get("route")
    # path_format: the template without converters ("{path:path}" -> "{path}"), as the OpenAPI
    # document (and so server/policy.py) names it
    return request.method, str(getattr(route, "path_format", None) or getattr(route, "path", request.url.path))


COOKIE = "runyard_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
NEED_LOGIN = ("Log in (POST /api/v1/auth/login, or the dashboard's login page) or send an API token as "
              "'Authorization: Bearer <token>'.")


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiError(401, "The Authorization header must be 'Bearer <token>'.")
    return secret.strip()


def is_local(request: Request) -> bool:
    """A caller on this machine: loopback, a unix socket, or an in-process client."""
    client = request.client
    if client is None or not client.host:
        return True
    try:
        return ipaddress.ip_address(client.host).is_loopback
    except ValueError:
        return True  # not an IP address: e.g. the in-process test client


def request_origin(request: Request) -> str:
    return f"{request.url.scheme}://{request.headers.get('host', '')}".lower()


def check_same_origin(request: Request, public_url: str | None = None) -> None:
    """Refuse a state-changing browser request that another site's page made (the browser says
    so in ``Sec-Fetch-Site`` / ``Origin``). Requests without those headers are not from a
    browser page (curl, scripts) or are same-origin navigations. Our origin: the request's
    ``Host``, or ``public_url`` (default RUNYARD_PUBLIC_URL). ``server/webguard.py`` applies this
    to every state-changing request, with or without credentials; ``authorize`` again to cookie
    and open-mode ones."""
    if request.headers.get("sec-fetch-site", "").lower() == "cross-site":
        raise ApiError(403, "Cross-site requests may not change anything here (Sec-Fetch-Site: cross-site).")
    origin = request.headers.get("origin")
    if origin and origin.lower() != "null":
        allowed = {request_origin(request)}
        public = request.app.state.settings.public_url if public_url is None else public_url
        if public:
            parts = public.split("/")
            allowed.add("/".join(parts[:3]).lower())
        if origin.lower().rstrip("/") not in allowed:
            raise ApiError(403, f"Requests from {origin} may not change anything here (a different origin).")
    elif origin and origin.lower() == "null":
        raise ApiError(403, "Requests from an opaque origin (Origin: null) may not change anything here.")


def _authenticate(request: Request, session: Session) -> Principal:
    secret = _bearer(request)
    if secret is not None:
        principal = _lookup(session, secret)
        if principal is None:
            raise ApiError(401, "The token is unknown, revoked or expired; create a new one.")
        return principal
    cookie = request.cookies.get(COOKIE)
    if cookie:
        principal = _session_principal(session, cookie, request.app.state.settings)
        if principal is not None:
            return principal
        request.state.session_ended = True
    from server.users import any_user

    if not any_user(session):
        return OPEN if is_local(request) else ANONYMOUS
    return ANONYMOUS


def authorize(request: Request) -> Principal:
    """The app-wide dependency: who is calling, and may they call this route (401/403/404 if not)."""
    from server.policy import rule_for

    method, path = _route(request)
    key = ("GET" if method == "HEAD" else method, path)
    rule = rule_for(method, path)
    request.state.principal = ANONYMOUS
    request.state.run_attempt = None
    session: Session = request.app.state.sessionmaker()
    try:
        if rule is not None and rule.target == "public":
            try:  # a public route answers even when the database or the credentials do not
                principal = _authenticate(request, session)
            except Exception:
                session.rollback()
                principal = ANONYMOUS
            if principal.kind not in ("worker", "run"):
                request.state.principal = principal
                return principal
        else:
            principal = _authenticate(request, session)
        request.state.principal = principal
        request.state.run_attempt = principal.attempt if principal.kind == "run" else None
        if principal.kind == "worker":
            if key not in WORKER_ROUTES and key not in WORKER_ALSO:
                raise ApiError(403, "A worker token may only register its worker and recipes, claim runs, report "
                                    "a run it ran and requeue it; use a personal token for anything else.")
            return principal
        if principal.kind == "run":
            _check_run_token(session, request, principal, key)
            return principal
        if rule is None:
            log.error("no access rule for %s %s: refused (add it to server/policy.py)", method, path)
            raise ApiError(403, "This route has no access rule yet; it is refused for everyone.")
        if rule.target == "worker":
            if principal.kind in ("anonymous", "open"):
                raise ApiError(401, "This endpoint is for workers: send a worker token (runyard token create "
                                    "--worker) as 'Authorization: Bearer <token>'.")
            raise ApiError(403, "This endpoint is for workers: use a worker token.")
        if rule.target == "public":
            return principal
        if principal.kind == "anonymous":
            if getattr(request.state, "session_ended", False):
                raise ApiError(401, "Your session has ended (expired, logged out or revoked); log in again.")
            from server.users import any_user

            if not any_user(session):
                raise ApiError(401, "No account exists yet and this request is not from this machine: create "
                                    "an admin with `runyard user create NAME --admin` on the server.")
            raise ApiError(401, NEED_LOGIN)
        if method not in SAFE_METHODS:
            if principal.kind == "open":
                check_same_origin(request)  # a page on another site must not drive a local open server
            if principal.kind == "session":
                check_same_origin(request)
                sent = request.headers.get(CSRF_HEADER, "")
                if not sent or not hmac.compare_digest(sent, principal.csrf or ""):
                    raise ApiError(403, "Missing or wrong CSRF token: the dashboard sends the X-CSRF-Token header "
                                        "from GET /api/v1/me with every change; reload the page.")
            if principal.scope == "read":
                raise ApiError(403, "This token may only read (scope 'read'); use a read+write token to change "
                                    "things.")
        if rule.target == "user":
            return principal
        if rule.target == "admin":
            if not principal.is_admin or principal.project_id is not None:
                raise ApiError(403, "Only a server admin may do this.")
            return principal
        _check_target(session, request, principal, rule)
        return principal
    finally:
        session.close()


# The lookups of every targeted request, on a plain connection: a quarter of an ORM session's cost.
_PROJECT_EXISTS = select(Project.id).where(Project.id == bindparam("id"))
_CHECKPOINT_RUN = select(Checkpoint.run_id).where(Checkpoint.id == bindparam("id"))
_UPLOAD_RUN = select(Upload.run_id).where(Upload.id == bindparam("id"))
_RUN_PROJECT_OWNER = select(Run.project_id, Run.owner_id).where(Run.id == bindparam("id"))
_SNAPSHOT_PROJECT = select(CodeSnapshot.project_id).where(CodeSnapshot.id == bindparam("id"))
_RUN_SNAPSHOT = select(Run.snapshot_id).where(Run.id == bindparam("id"))


def _one(request: Request, statement: Any, **params: Any) -> Any:
    with request.app.state.engine.connect() as connection:
        return connection.execute(statement, params).first()


def _check_target(session: Session, request: Request, principal: Principal, rule: Any) -> None:
    """A route on one run, checkpoint, upload, snapshot or project: the caller's role in its project."""
    from server.policy import DOING, ROLE_FOR_NEED
    from server.store import (
        missing_checkpoint,
        missing_project,
        missing_run,
        missing_snapshot,
        missing_upload,
    )

    params = request.path_params
    owner_id: int | None = None
    if rule.target in ("project", "run", "checkpoint", "snapshot"):
        raw = _int_param(params, f"{rule.target}_id")
        if raw is None:
            return  # not an id: the route answers 422
    if rule.target == "project":
        project_id = cast(int, raw)  # not None: returned above
        missing: Exception = missing_project(project_id)
        if _one(request, _PROJECT_EXISTS, id=project_id) is None:
            raise missing
        what = f"project {project_id}"
    elif rule.target == "snapshot":
        found = _one(request, _SNAPSHOT_PROJECT, id=raw)
        if found is None:
            return  # the handler answers 404
        project_id = found[0]
        missing = missing_snapshot(cast(int, raw))
        what = f"snapshot {raw}"
    else:
        if rule.target == "run":
            run_id: int | None = cast(int, raw)
            missing = missing_run(cast(int, raw))
        elif rule.target == "checkpoint":
            checkpoint_id = cast(int, raw)
            found = _one(request, _CHECKPOINT_RUN, id=checkpoint_id)
            run_id = found[0] if found else None
            missing = missing_checkpoint(checkpoint_id)
        else:  # upload
            found = _one(request, _UPLOAD_RUN, id=str(params.get("upload_id", "")))
            run_id = found[0] if found else None
            missing = missing_upload(str(params.get("upload_id", "")))
        row = None if run_id is None else _one(request, _RUN_PROJECT_OWNER, id=run_id)
        if row is None:
            return  # the handler answers 404
        project_id, owner_id = row
        what = f"run {run_id}"
    role = role_in(session, principal, project_id)
    if role is None:
        raise missing
    if not may_change(role, rule.need, principal, owner_id):
        needed = ROLE_FOR_NEED[rule.need]
        extra = " (or member and the one who submitted it)" if rule.need == "own" else ""
        raise ApiError(403, f"Your role in the project of {what} is {role}; to {DOING[rule.need]} you need "
                            f"{'admin' if rule.need == 'own' else needed}{extra}.")


def _int_param(params: Any, name: str) -> int | None:
    try:
        value = int(str(params.get(name, "")))
    except ValueError:
        return None
    return value if 0 < value <= 2**31 - 1 else None  # server/deps.py ID_MAX: beyond, the route answers 404


def _check_run_token(session: Session, request: Request, principal: Principal, key: tuple[str, str]) -> None:
    params = request.path_params
    deny = ApiError(403, f"This run token belongs to run {principal.run_id}; it may only {RUN_TOKEN_MAY}.")
    if key in RUN_READS or key in RUN_WRITES:
        if key == ("GET", "/healthz"):
            return
        if _int_param(params, "run_id") != principal.run_id:
            raise deny
        if key in RUN_WRITES:
            _check_attempt(session, principal)
        return
    if key in RUN_CHECKPOINT_ROUTES:
        checkpoint_id = _int_param(params, "checkpoint_id")
        checkpoint = session.get(Checkpoint, checkpoint_id) if checkpoint_id is not None else None
        if checkpoint is None:
            return  # the route answers 404
        if key[0] == "GET" and (checkpoint.run_id == principal.run_id or checkpoint.id in principal.reads):
            return
        if checkpoint.run_id != principal.run_id:
            raise deny
        if key[0] != "GET":
            _check_attempt(session, principal)
        return
    if key in RUN_SNAPSHOT_ROUTES:
        snapshot_id = _int_param(params, "snapshot_id")
        if snapshot_id is None or _one(request, _SNAPSHOT_PROJECT, id=snapshot_id) is None:
            return  # the route answers 422 / 404
        row = _one(request, _RUN_SNAPSHOT, id=principal.run_id)
        if row is None or row[0] != snapshot_id:
            raise deny
        return
    if key in RUN_UPLOAD_ROUTES:
        upload = session.get(Upload, str(params.get("upload_id", "")))
        if upload is None:
            return
        if upload.run_id != principal.run_id:
            raise deny
        if key[0] != "GET":
            _check_attempt(session, principal)
        return
    raise deny


def _check_attempt(session: Session, principal: Principal) -> None:
    """Writes of a run token count only while the run is running as the token's attempt."""
    row = session.execute(select(Run.status, Run.attempt).where(Run.id == principal.run_id)).first()
    if row is None:
        return  # the route answers 404
    if row.status != "running" or row.attempt != principal.attempt:
        raise ApiError(409, f"Run {principal.run_id} is no longer running as attempt {principal.attempt} "
                            f"(it is {row.status}, attempt {row.attempt}); this process must stop.", "attempt")
